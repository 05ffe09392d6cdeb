"""`dotdo approvals | approve | reject | send`: the human and event side of hibernation.

Deciding an approval records the decision first; then, if this process can load the run's
code (the module the workflow was registered from, stored with its graph), it drives the run
on to its next wait or its end itself, so no other process is needed. Otherwise the run is
left due and a worker picks it up.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from dotdo._cli_common import USAGE, CliError, db_option, execute, opened, selected_db
from dotdo._cli_output import console, describe_approval, format_time, to_json
from dotdo.dsl.do import DO
from dotdo.engine.engine import Engine
from dotdo.engine.models import Approval

__all__ = ["approvals", "approve", "reject", "send"]

_STATUSES = ("pending", "approved", "rejected", "expired", "all")


async def _classes_of_run(engine: Engine, run_id: str) -> list[type[DO]]:
    """The DO classes of the module a run's workflow came from, if importable here."""
    row = await engine.store.fetch_one(
        "SELECT g.module FROM runs r JOIN graphs g ON g.hash = r.graph_hash WHERE r.run_id = ?",
        (run_id,),
    )
    if row is None or not row["module"]:
        return []
    try:
        module = importlib.import_module(row["module"])
    except Exception:
        return []
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, DO) and obj is not DO
    ]


async def _decide(
    db: Path, approval_id: str, by: str, reason: str | None, comment: str | None
) -> int:
    async with opened(db, existing=True) as engine:
        approval = await engine.get_approval(approval_id)
        classes = await _classes_of_run(engine, approval.run_id)
        engine.register(*classes)
        if reason is None:
            decided = await engine.approve(approval_id, by=by, comment=comment)
        else:
            decided = await engine.reject(approval_id, by=by, reason=reason)
        click.echo(_decision_line(decided, by))
        if decided.status == "pending":
            return 0
        if not classes:
            click.echo(f"run {decided.run_id} is due; a worker with its code resumes it")
            return 0
        info = await engine.idle(decided.run_id)
        if info.status == "completed":
            click.echo(f"run {info.run_id} completed: {to_json(info.result, indent=None)}")
        elif info.status == "waiting":
            waits = [a for a in await engine.approvals() if a.run_id == info.run_id]
            what = describe_approval(waits[0]) if waits else f"until {format_time(info.wake_at)}"
            click.echo(f"run {info.run_id} waiting for {what}")
        else:
            detail = f": {info.error}" if info.error else ""
            click.echo(f"run {info.run_id} ended {info.status}{detail}")
    return 0


def _decision_line(approval: Approval, by: str) -> str:
    if approval.status == "pending":
        return f"approved by {by}; approval {approval.id} now waits on {approval.waiting_on}"
    if approval.status == "rejected":
        return f"approval {approval.id} rejected by {by}: {approval.rejection_reason}"
    return f"approval {approval.id} approved by {by}"


async def _list(db: Path, approver: str | None, status: str) -> int:
    async with opened(db, existing=True) as engine:
        found = await engine.approvals(
            approver=approver, status=None if status == "all" else status
        )
    table = Table(title="approvals")
    for column in ("id", "status", "title", "amount", "waiting on", "approvers", "deadline"):
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


async def _send(db: Path, name: str, data: str | None) -> int:
    try:
        payload: Any = json.loads(data) if data is not None else None
    except json.JSONDecodeError as exc:
        raise CliError(f"--data is not valid JSON: {exc}", USAGE) from None
    async with opened(db) as engine:
        event_id = await engine.send(name, payload)
    click.echo(f"event {name} sent (id {event_id})")
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
@db_option()
def approve(approval_id: str, by: str, comment: str | None) -> None:
    """Approve; the last approver of a chain resumes the run."""
    execute(_decide(selected_db(), approval_id, by, None, comment))


@click.command()
@click.argument("approval_id", metavar="ID")
@click.option("--as", "by", required=True, metavar="WHO", help="The approver deciding.")
@click.option("--reason", required=True, help="Why; the workflow sees it.")
@db_option()
def reject(approval_id: str, by: str, reason: str) -> None:
    """Reject with a reason; the run resumes with the rejection."""
    execute(_decide(selected_db(), approval_id, by, reason, reason))


@click.command()
@click.argument("event")
@click.option("--data", metavar="JSON", help="The event's data as JSON.")
@db_option()
def send(event: str, data: str | None) -> None:
    """Publish EVENT (like Order.placed) to waiting runs and @on handlers."""
    execute(_send(selected_db(), event, data))
