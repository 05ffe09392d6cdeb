"""`dotdo retry | prune | export`: operating a database of runs (docs/operations.md).

`retry` needs the current code (`--app`): the new run executes on it. `prune` and `export`
work on the store alone and never import anything a row names.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from dotdo.cli.common import (
    USAGE,
    CliError,
    Db,
    app_option,
    checked_id,
    db_option,
    execute,
    load_apps,
    opened,
    selected_db,
)
from dotdo.cli.output import to_json
from dotdo.engine.engine import Engine
from dotdo.engine.logs import JsonFormatter
from dotdo.engine.retention import check_filter, keep_pruning, parse_age
from dotdo.engine.store.interface import FINISHED
from dotdo.errors import DotdoError

__all__ = ["WorkerOps", "export", "operating", "prune", "retain_age", "retry", "worker_options"]


async def _retry(
    db: Db, run_id: str, from_step: str | None, new_id: str | None, apps: list[str]
) -> int:
    checked_id(run_id)
    if new_id is not None:
        checked_id(new_id, "--run-id")
    targets = load_apps(apps)
    async with opened(db, *targets, existing=True) as engine:
        handle = await engine.retry(run_id, from_step=from_step, new_run_id=new_id)
        try:
            info = await engine.idle(handle.run_id)
        except asyncio.CancelledError:
            raise CliError(
                f"interrupted; `dotdo worker` resumes run {handle.run_id}", 130
            ) from None
    line = f"run {handle.run_id} (retry of {run_id}) {info.status}"
    if info.status == "completed":
        click.echo(line, err=True)
        click.echo(to_json(info.result))
        return 0
    click.echo(line)
    return 0 if info.status == "waiting" else 1


def _age(value: str | None, option: str = "--older-than") -> float | None:
    if value is None:
        return None
    try:
        return parse_age(value)
    except DotdoError as exc:
        raise CliError(f"{option}: {exc}", USAGE) from None


def retain_age(value: str | None) -> float | None:
    """`dotdo worker --retain AGE`: checked before the worker starts."""
    try:
        return _age(value, "--retain")
    except CliError as exc:
        raise click.BadParameter(exc.message.removeprefix("--retain: ")) from None


async def _prune(
    db: Db,
    older_than: str | None,
    statuses: tuple[str, ...],
    workflow: str | None,
    export_to: Path | None,
    dry_run: bool,
) -> int:
    seconds = _age(older_than)
    async with opened(db, existing=True, read_only=dry_run) as engine:
        if dry_run:
            where, _ = check_filter(seconds, statuses or None, workflow, engine.clock.now())
            ids = await engine.store.prunable_runs(where, 1_000_000)
            click.echo(f"would remove {len(ids)} finished run{'s' * (len(ids) != 1)}")
            return 0
        removed = await engine.prune(
            older_than=seconds,
            statuses=statuses or None,
            workflow=workflow,
            export_to=export_to,
        )
    saved = f" (exported to {export_to})" if export_to is not None and removed else ""
    click.echo(f"removed {len(removed)} finished run{'s' * (len(removed) != 1)}{saved}")
    return 0


async def _export(db: Db, run_id: str, output: Path | None) -> int:
    checked_id(run_id)
    async with opened(db, read_only=True) as engine:
        data = await engine.export(run_id)
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(f"run {run_id} exported to {output}", err=True)
    return 0


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--from", "from_step", metavar="STEP", help="Rerun from this step (default: where it failed)."
)
@click.option("--run-id", "new_id", metavar="ID", help="Id of the new run (default RUN~retry-…).")
@app_option("The current code of the run's workflow (the retry runs on it).", required=True)
@db_option()
def retry(run_id: str, from_step: str | None, new_id: str | None, apps: tuple[str, ...]) -> None:
    """Start a new run continuing a failed, compensated or cancelled RUN."""
    execute(_retry(selected_db(), run_id, from_step, new_id, list(apps)))


@click.command()
@click.option("--older-than", metavar="AGE", help="Finished longer ago than this: 30d, 12h, 90m.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(FINISHED),
    help="Only runs that ended so (repeatable).",
)
@click.option("--workflow", metavar="NAME", help="Only runs of this workflow (Class.method).")
@click.option(
    "--export-to",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Write each run's JSON export into this folder before removing it.",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; remove nothing.")
@db_option()
def prune(
    older_than: str | None,
    statuses: tuple[str, ...],
    workflow: str | None,
    export_to: Path | None,
    dry_run: bool,
) -> None:
    """Remove finished runs (and their journals, events, approvals) matching every filter."""
    execute(_prune(selected_db(), older_than, statuses, workflow, export_to, dry_run))


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: stdout).",
)
@db_option()
def export(run_id: str, output: Path | None) -> None:
    """Write RUN's whole stored history as JSON (for audits)."""
    execute(_export(selected_db(), run_id, output))


# ------------------------------------------------------------------ the worker's extras
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class WorkerOps:
    """What `dotdo worker` does besides driving runs: retention, metrics, JSON logs."""

    retain: float | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_json: bool = False


class _JsonLine(logging.Handler):
    """Log records as JSON lines on stderr (through click, like the CLI's other lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def worker_options(fn: _F) -> _F:
    """`--retain AGE`, `--metrics-port N`, `--metrics-host`, `--log-json`, gathered (and
    checked, before anything opens) into one `ops: WorkerOps` argument."""

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        retain: str | None,
        metrics_port: int | None,
        metrics_host: str,
        log_json: bool,
        **kwargs: Any,
    ) -> Any:
        if metrics_port is not None:
            try:
                from dotdo.engine.metrics import check_metrics_host
            except ImportError:
                raise click.UsageError(
                    "--metrics-port needs prometheus-client: pip install 'dotdo[metrics]'"
                ) from None
            try:
                check_metrics_host(metrics_host)
            except DotdoError as exc:
                raise click.BadParameter(str(exc), param_hint="--metrics-host") from None
        ops = WorkerOps(retain_age(retain), metrics_port, metrics_host, log_json)
        return fn(*args, ops=ops, **kwargs)

    options = [
        click.option("--retain", metavar="AGE", help="Prune finished runs older than AGE hourly."),
        click.option(
            "--metrics-port",
            type=click.IntRange(0, 65535),
            metavar="N",
            help="Serve Prometheus /metrics on this port (needs dotdo[metrics]).",
        ),
        click.option(
            "--metrics-host", default="127.0.0.1", show_default=True, help="Loopback only."
        ),
        click.option("--log-json", is_flag=True, help="Log one JSON object per line."),
    ]
    decorated: Any = wrapper
    for option in options:
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def operating(engine: Engine, ops: WorkerOps) -> AsyncIterator[None]:
    """Start the worker's extras on an open engine; stop them when the worker stops."""
    restore: list[Callable[[], None]] = []
    if ops.log_json:
        dotdo_logger, root = logging.getLogger("dotdo"), logging.getLogger()
        plain = list(dotdo_logger.handlers)
        line = _JsonLine()
        dotdo_logger.handlers[:] = [line]
        root.addHandler(line)  # the app's own records, with their run ids
        restore.append(lambda: setattr(dotdo_logger, "handlers", plain))
        restore.append(lambda: root.removeHandler(line))
    pruning = asyncio.create_task(keep_pruning(engine, ops.retain)) if ops.retain else None
    metrics: Any = None
    if ops.metrics_port is not None:
        from dotdo.engine.metrics import PrometheusMetrics  # importable: checked above

        metrics = PrometheusMetrics()
        engine.observe(metrics)
        try:
            port = metrics.serve(ops.metrics_port, ops.metrics_host)
        except OSError as exc:
            raise CliError(f"cannot serve metrics on port {ops.metrics_port}: {exc}") from None
        click.echo(f"dotdo worker: metrics on http://{ops.metrics_host}:{port}/metrics")
    try:
        yield
    finally:
        if pruning is not None:
            pruning.cancel()
            await asyncio.gather(pruning, return_exceptions=True)
        if metrics is not None:
            metrics.close()
        for undo in restore:
            undo()
