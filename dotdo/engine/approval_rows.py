"""Approvals as rows: reading them back, and what a reader sees before the timer fires.

An approval past its deadline is expired as soon as anyone looks, not only once a worker's
timer has fired and resumed its run: `get_approval`, `approvals()` and the CLI compute it
on read, and a decision on it is refused as expired. The row itself changes (status
`expired`) when the run resumes, as before, in the same transaction pattern as always.

A stored body is data: it decodes part by part (`records.readable`), so an approval whose
`extra` or decision value names a class this process does not know is still listed, with
that value as stored JSON; a body that is not an approval at all is skipped by listings
and reported by `get_approval`, never a crash of the caller.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dotdo.engine import serde
from dotdo.engine.interpreter import Suspend
from dotdo.engine.models import Approval, request_fields
from dotdo.engine.records import readable

__all__ = [
    "approval_event",
    "as_seen",
    "is_expired",
    "new_approval",
    "parse_approval",
]


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def new_approval(approval_id: str, run_id: str, command: Suspend, now: float) -> Approval:
    """The approval a run hibernating at an approval node asks for."""
    fields = request_fields(command.request)
    amount = fields.get("amount")
    return Approval(
        id=approval_id,
        run_id=run_id,
        status="pending",
        type=str(fields.get("type", "approval")),
        title=str(fields.get("title", "")),
        amount=float(amount) if amount is not None else None,
        requested_by=fields.get("requested_by"),
        approvers=list(fields["approvers"]),
        deadline=_time(command.until),
        priority=str(fields.get("priority", "normal")),
        extra=fields.get("extra", {}),
        created_at=_time(now),
    )


def parse_approval(body: Any) -> Approval | None:
    """The approval a stored body holds, or None when it holds something else."""
    value = readable(body) if isinstance(body, str) else None
    return value if isinstance(value, Approval) else None


def is_expired(approval: Approval, now: float) -> bool:
    """Pending, with a deadline that has passed (the same rule as deciding uses)."""
    return (
        approval.status == "pending"
        and approval.deadline is not None
        and now >= approval.deadline.timestamp()
    )


def as_seen(approval: Approval, now: float) -> Approval:
    """The approval as a reader should see it at `now`."""
    if is_expired(approval, now):
        return approval.model_copy(update={"status": "expired"})
    return approval


def approval_event(name: str, approval: Approval) -> tuple[str, str]:
    """The event announcing an approval (`Approval.requested` / `Approval.decided`) as
    (name, JSON data), which the store writes in the transaction that stores the approval,
    so an `@on` handler can mail or post a link. It is the engine's event, not the run's:
    its run id is in the data, not the outbox row's run id."""
    last = approval.decisions[-1] if approval.decisions else None
    data = {
        "approval_id": approval.id,
        "run_id": approval.run_id,
        "status": approval.status,
        "type": approval.type,
        "title": approval.title,
        "amount": approval.amount,
        "requested_by": approval.requested_by,
        "approvers": list(approval.approvers),
        "waiting_on": approval.waiting_on,
        "priority": approval.priority,
        "deadline": approval.deadline.isoformat() if approval.deadline else None,
        "decided_by": last.by if last else None,
        "decided_user": last.user if last else None,
        "comment": last.comment if last else None,
    }
    return name, serde.dumps(data)
