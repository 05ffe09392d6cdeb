"""The `dotdo` command line: start runs, inspect and cancel them, keep a worker going.

Every command opens its own Engine inside `asyncio.run` and closes it before exiting: the CLI
keeps no state between invocations, so all it shows comes from the store and any process can
pick up where another left off. A user mistake becomes one line on stderr (exit 2 for usage
errors, 1 for everything else); only unexpected errors offer a traceback, and only on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import uuid
from typing import Any

import click
from pydantic import ValidationError

from dotdo import __version__
from dotdo.cli.common import (
    USAGE,
    CliError,
    Db,
    allowed_modules,
    app_option,
    checked_id,
    db_option,
    execute,
    import_module,
    load_apps,
    opened,
    parse_json,
    selected_db,
)
from dotdo.cli.db import db
from dotdo.cli.diff import diff
from dotdo.cli.flow import check, fmt, render_command, resolve_flow
from dotdo.cli.ops import WorkerOps, export, operating, prune, retry, worker_options
from dotdo.cli.output import (
    console,
    describe_approval,
    explain_invalid,
    format_time,
    log_to_stderr,
    one_line,
    read_run,
    read_runs,
    render_runs,
    render_status,
    to_json,
)
from dotdo.cli.serve import serve
from dotdo.cli.ui import ui
from dotdo.cli.upgrade import upgrade
from dotdo.cli.users import users
from dotdo.cli.waits import approvals, approve, reject, send
from dotdo.dsl.python.decorators import WorkflowDef
from dotdo.dsl.python.do import DO
from dotdo.engine import serde
from dotdo.engine.engine import Engine
from dotdo.engine.records import RunInfo
from dotdo.engine.store.interface import ACTIVE, FINISHED
from dotdo.errors import RunFailed

__all__ = ["cli", "main"]

STATUSES = (*ACTIVE, *FINISHED)


def _resolve(target: str) -> tuple[WorkflowDef[Any], type[DO]]:
    if ".flow" in target:
        return resolve_flow(target, allowed_modules())
    module_name, _, path = target.partition(":")
    class_path, _, method = path.rpartition(".")
    if not module_name or not class_path or not method:
        raise CliError(
            f"bad target {target!r}: expected module:Class.method (e.g. app.orders:Shop.checkout)",
            USAGE,
        )
    found: object = import_module(module_name)
    for part in class_path.split("."):
        found = getattr(found, part, None)
    if not (isinstance(found, type) and issubclass(found, DO)):
        what = "not a DO subclass" if isinstance(found, type) else "not a DO class"
        what = "not defined" if found is None else what
        raise CliError(f"{module_name}:{class_path} is {what}", USAGE)
    wf = found.__dotdo_workflows__.get(method)
    if wf is None:
        known = ", ".join(sorted(found.__dotdo_workflows__)) or "none"
        raise CliError(
            f"{class_path}.{method} is not a @workflow (workflows of {class_path}: {known})", USAGE
        )
    return wf, found


# ---------------------------------------------------------------------------- inputs
def _parse_input(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    value = parse_json(text, "--input")
    if not isinstance(value, dict):
        raise CliError(
            "--input must be a JSON object of the workflow's arguments by name, "
            f"not a {type(value).__name__}",
            USAGE,
        )
    return value


def _bind(wf: WorkflowDef[Any], given: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Validate before anything is stored, so a typo never leaves a half-created run.

    Arguments go positional where the signature allows it, so that a parameter named like one
    of `Engine.start`'s own keywords (`run_id`, `entity_id`) does not collide with them.
    """
    signature = wf.signature()
    params = list(signature.parameters)[1:]
    unknown = [name for name in given if name not in params]
    if unknown and all(p.kind != p.VAR_KEYWORD for p in signature.parameters.values()):
        raise CliError(
            f"unknown argument {unknown[0]!r} for {wf.qualname} "
            f"(parameters: {', '.join(params) or 'none'})",
            USAGE,
        )
    try:
        bound = signature.bind(None, **given)
    except TypeError as exc:
        raise CliError(f"bad arguments for {wf.qualname}: {exc}", USAGE) from None
    hints = wf.type_hints()
    for name, value in list(bound.arguments.items())[1:]:
        try:
            serde.coerce(value, hints.get(name, inspect.Parameter.empty))
        except ValidationError as exc:
            raise CliError(
                f"invalid input for {wf.qualname}: {explain_invalid(name, exc)}", USAGE
            ) from None
    return bound.args[1:], bound.kwargs


# -------------------------------------------------------------------------- commands
async def _run(db: Db, target: str, text: str | None, run_id: str | None, apps: list[str]) -> int:
    run_id = uuid.uuid4().hex if run_id is None else checked_id(run_id)
    wf, cls = _resolve(target)
    given = _parse_input(text)
    args, kwargs = _bind(wf, given)
    targets = [cls, *(t for t in load_apps(apps) if t is not cls)]
    async with opened(db, *targets) as engine:
        handle = await engine.start(wf, *args, run_id=run_id, **kwargs)
        try:
            info = await engine.idle(run_id)
        except asyncio.CancelledError:  # Ctrl-C: the run stays in the store, unfinished
            raise CliError(f"interrupted; `dotdo worker` resumes run {run_id}", 130) from None
        if info.status == "completed":
            result = await handle.result()
            click.echo(f"run {run_id} completed ({wf.qualname})", err=True)
            click.echo(to_json(result))
            return 0
        if info.status == "waiting":
            click.echo(f"run {run_id} waiting {await _waiting_on(engine, info)}".rstrip())
            return 0
    raise CliError(str(RunFailed(run_id, info.status, info.error)))


async def _waiting_on(engine: Engine, info: RunInfo) -> str:
    for row in await engine.store.pending_approvals(info.run_id):
        approval = await engine.get_approval(row.id)
        if approval.status == "expired":  # its deadline passed; the timer resumes the run
            return f"for {describe_approval(approval)} (expired: a worker resumes the run)"
        return f"for {describe_approval(approval)}"
    return f"until {format_time(info.wake_at)}" if info.wake_at else ""


async def _status(db: Db, run_id: str) -> int:
    checked_id(run_id)
    async with opened(db, read_only=True) as engine:
        info, journal = await read_run(engine, run_id)
        waits = await _waiting_on(engine, info) if info.status == "waiting" else ""
    render_status(console(), info, journal, waits)
    return 0


async def _runs(db: Db, status: str | None, workflow: str | None, limit: int) -> int:
    async with opened(db, read_only=True) as engine:
        runs = await read_runs(engine, status, workflow, limit)
    render_runs(console(), runs)
    return 0


async def _cancel(db: Db, run_id: str, apps: list[str]) -> int:
    checked_id(run_id)
    targets = load_apps(apps)
    async with opened(db, *targets, existing=True) as engine:
        info = await engine.cancel(run_id)
        if info.status != "cancelled" and info.lease_owner == engine.owner:
            # Its code is registered here and this engine was advancing it (an orphan it
            # recovered on open): it stops at its next step, in this process.
            with contextlib.suppress(TimeoutError):
                info = await engine.idle(run_id, timeout=30)
    if info.status == "cancelled":
        click.echo(f"run {run_id} cancelled")
    else:
        click.echo(
            f"run {run_id} is {info.status} in another process; "
            "cancel requested, it stops at its next step"
        )
    return 0


async def _worker(db: Db, apps: list[str], ops: WorkerOps | None = None) -> int:
    targets = load_apps(apps)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        async with opened(db, *targets) as engine:
            count = len(engine.workflows)
            click.echo(
                f"dotdo worker: {count} workflow{'s' if count != 1 else ''} registered "
                f"from {', '.join(apps)}; db {db}; Ctrl-C stops"
            )
            async with operating(engine, ops or WorkerOps()):
                await stop.wait()
    finally:
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    click.echo("dotdo worker: stopped")
    return 0


# ------------------------------------------------------------------------------ click
class _OneLineUsage(click.ClickException):
    """Click's usage errors, shown as the same single `error:` line as every other error."""

    exit_code = USAGE

    def __init__(self, error: click.UsageError) -> None:
        command = error.ctx.command_path if error.ctx else "dotdo"
        super().__init__(f"{error.format_message()} (see '{command} --help')")

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {one_line(self.format_message())}", err=True)


class _Group(click.Group):
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            raise _OneLineUsage(error) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise _OneLineUsage(error) from None


@click.group(cls=_Group, invoke_without_command=True)
@db_option(on_group=True)
@click.version_option(__version__, prog_name="dotdo")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Durable workflows from the command line."""
    log_to_stderr(logging.WARNING)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command()
@click.argument("target")
@click.option("--input", "input_", metavar="JSON", help="Workflow arguments as a JSON object.")
@click.option("--run-id", help="Run id; starting the same id again returns that run.")
@app_option("Also register this module's DO classes, or this .flow file's workflows.")
@db_option()
def run(target: str, input_: str | None, run_id: str | None, apps: tuple[str, ...]) -> None:
    """Start TARGET (module:Class.method) and print its result, or what it waits on."""
    execute(_run(selected_db(), target, input_, run_id, list(apps)))


@cli.command()
@click.argument("run_id", metavar="RUN")
@db_option()
def status(run_id: str) -> None:
    """Show a run and its journal."""
    execute(_status(selected_db(), run_id))


@cli.command()
@click.option("--status", "status_", type=click.Choice(STATUSES), help="Only runs in this status.")
@click.option("--workflow", metavar="NAME", help="Only runs of this workflow (Class.method).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@db_option()
def runs(status_: str | None, workflow: str | None, limit: int) -> None:
    """List runs, newest first."""
    execute(_runs(selected_db(), status_, workflow, limit))


@cli.command()
@click.argument("run_id", metavar="RUN")
@app_option("The run's code, so this process can stop it itself (see `dotdo approve`).")
@db_option()
def cancel(run_id: str, apps: tuple[str, ...]) -> None:
    """Cancel a run that has not finished."""
    execute(_cancel(selected_db(), run_id, list(apps)))


@cli.command()
@app_option(
    "Drive the runs of this module's DO classes, or of this .flow file's workflows.",
    required=True,
)
@worker_options
@db_option()
def worker(apps: tuple[str, ...], ops: WorkerOps) -> None:
    """Resume unfinished runs, fire timers and schedules, deliver events, for each --app."""
    log_to_stderr(logging.INFO)
    execute(_worker(selected_db(), list(apps), ops))


for _command in (
    approvals,
    approve,
    reject,
    send,
    check,
    fmt,
    render_command,
    serve,
    db,
    ui,
    users,
):
    cli.add_command(_command)
for _command in (retry, prune, export, upgrade, diff):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="dotdo")


if __name__ == "__main__":
    main()
