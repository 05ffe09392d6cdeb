"""`dotdo approvals | approve | reject | send`: the human and event side of hibernation.

Deciding an approval records the decision first. The run's code is never looked up from the
database (that would import whatever module a row names): with `--app MODULE|FILE.flow`
naming it, this process drives the run on to its next wait or its end itself; without, the
run is left due and a worker (`dotdo worker --app ...`) picks it up. `send --app` likewise
delivers its event here and drives the runs it wakes or starts.
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

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
    parse_json,
    selected_db,
)
from dotdo.cli.output import console, describe_approval, format_time, one_line, to_json
from dotdo.engine.engine import Engine
from dotdo.engine.models import Approval

__all__ = ["approvals", "approve", "reject", "send"]

_STATUSES = ("pending", "approved", "rejected", "expired", "all")
_NO_CODE = "a worker with its code resumes it (`dotdo worker --app MODULE|FILE.flow`)"


def _approval_id(value: str) -> str:
    """`RUN/STEP`: the run part follows the run id rules; the whole stays printable."""
    run_id, slash, key = value.partition("/")
    checked_id(run_id, "run id of the approval")
    if not slash or not key or len(key) > 500 or not key.isprintable():
        raise CliError(f"bad approval id {value[:80]!r}: expected RUN/STEP", USAGE)
    return value


def _approver(value: str) -> str:
    if not value or len(value) > 200 or not value.isprintable():
        raise CliError(f"bad --as {value[:80]!r}: one printable name, at most 200", USAGE)
    return value


async def _decide(
    db: Db, approval_id: str, by: str, reason: str | None, comment: str | None, apps: list[str]
) -> int:
    _approval_id(approval_id)
    _approver(by)
    targets = load_apps(apps)
    async with opened(db, *targets, existing=True) as engine:
        if reason is None:
            decided = await engine.approve(approval_id, by=by, comment=comment)
        else:
            decided = await engine.reject(approval_id, by=by, reason=reason)
        click.echo(_decision_line(decided, by))
        if decided.status == "pending":
            return 0
        run = await engine.get_run(decided.run_id)
        if run.workflow not in engine.workflows:
            known = " (it is not in --app)" if apps else ""
            click.echo(f"run {decided.run_id} is due{known}; {_NO_CODE}")
            return 0
        await _report(engine, decided.run_id)
    return 0


async def _report(engine: Engine, run_id: str) -> None:
    """Drive a run this process can load until it finishes or waits, and say where it is."""
    info = await engine.idle(run_id)
    if info.status == "completed":
        click.echo(f"run {info.run_id} completed: {to_json(info.result, indent=None)}")
    elif info.status == "waiting":
        waits = [a for a in await engine.approvals() if a.run_id == info.run_id]
        what = describe_approval(waits[0]) if waits else f"until {format_time(info.wake_at)}"
        click.echo(f"run {info.run_id} waiting for {what}")
    else:
        detail = f": {one_line(str(info.error))}" if info.error else ""
        click.echo(f"run {info.run_id} ended {info.status}{detail}")


def _decision_line(approval: Approval, by: str) -> str:
    if approval.status == "pending":
        return f"approved by {by}; approval {approval.id} now waits on {approval.waiting_on}"
    if approval.status == "rejected":
        return f"approval {approval.id} rejected by {by}: {approval.rejection_reason}"
    return f"approval {approval.id} approved by {by}"


async def _list(db: Db, approver: str | None, status: str) -> int:
    async with opened(db, read_only=True) as engine:
        found = await engine.approvals(
            approver=approver, status=None if status == "all" else status
        )
    table = Table(title="approvals")
    table.add_column("id", overflow="fold")  # an id is copied into `dotdo approve`: never cut
    for column in ("status", "title", "amount", "waiting on", "approvers", "deadline"):
        table.add_column(column)
    for a in found:
        table.add_row(
            a.id,
            a.status,
            a.title,
            "" if a.amount is None else f"{a.amount:,.2f}",
            a.waiting_on or "",
            " → ".join(a.approvers),
            format_time(a.deadline) if a.deadline else "",
        )
    console().print(table if found else "no approvals")
    return 0


async def _send(db: Db, name: str, data: str | None, apps: list[str]) -> int:
    payload: Any = parse_json(data, "--data") if data is not None else None
    targets = load_apps(apps)
    async with opened(db, *targets) as engine:
        event_id = await engine.send(name, payload)
        if not targets:
            click.echo(
                f"event {name} sent (id {event_id}); a worker with the code of its waiting runs "
                "and handlers delivers it (`dotdo worker --app MODULE|FILE.flow`)"
            )
            return 0
        await engine.settle()
    click.echo(f"event {name} sent (id {event_id}) and delivered to the runs of --app")
    return 0


@click.command()
@click.option("--as", "approver", metavar="WHO", help="Only those waiting on this approver.")
@click.option("--status", type=click.Choice(_STATUSES), default="pending", show_default=True)
@db_option()
def approvals(approver: str | None, status: str) -> None:
    """List approvals (pending ones by default)."""
    execute(_list(selected_db(), approver, status))


@click.command()
@click.argument("approval_id", metavar="ID")
@click.option("--as", "by", required=True, metavar="WHO", help="The approver deciding.")
@click.option("--comment", help="Kept in the approval's audit trail.")
@app_option("The run's code: drive the run on here (else a worker resumes it).")
@db_option()
def approve(approval_id: str, by: str, comment: str | None, apps: tuple[str, ...]) -> None:
    """Approve; the last approver of a chain makes the run due (drives it, with --app)."""
    execute(_decide(selected_db(), approval_id, by, None, comment, list(apps)))


@click.command()
@click.argument("approval_id", metavar="ID")
@click.option("--as", "by", required=True, metavar="WHO", help="The approver deciding.")
@click.option("--reason", required=True, help="Why; the workflow sees it.")
@app_option("The run's code: drive the run on here (else a worker resumes it).")
@db_option()
def reject(approval_id: str, by: str, reason: str, apps: tuple[str, ...]) -> None:
    """Reject with a reason; the run resumes with the rejection (here, with --app)."""
    execute(_decide(selected_db(), approval_id, by, reason, reason, list(apps)))


@click.command()
@click.argument("event")
@click.option("--data", metavar="JSON", help="The event's data as JSON.")
@app_option("Deliver the event here and drive the runs of this code it wakes or starts.")
@db_option()
def send(event: str, data: str | None, apps: tuple[str, ...]) -> None:
    """Publish EVENT (like Order.placed) to waiting runs and @on handlers."""
    execute(_send(selected_db(), event, data, list(apps)))
