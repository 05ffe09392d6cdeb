"""Values a workflow receives from the outside world: approvals, events, cascade results.

They are pydantic models so they persist in a run's locals like any other value and come
back typed after a crash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "REQUEST_FIELDS",
    "Approval",
    "CascadeResult",
    "Decision",
    "EventRecord",
    "request_fields",
]


class Decision(BaseModel):
    """One approver's decision: the audit trail of an approval."""

    by: str
    at: datetime
    decision: Literal["approved", "rejected"]
    comment: str | None = None
    value: Any = None
    """For a cascade's human tier: the answer the human gave."""
    user: str | None = None
    """The person who decided, when not `by` itself: a member of the group `by` names, or
    the console user signed in as `by`."""


class Approval(BaseModel):
    """A request for human approval and its outcome."""

    id: str
    run_id: str
    status: Literal["pending", "approved", "rejected", "expired", "withdrawn"]
    """`withdrawn` when its run was cancelled before anyone decided."""
    type: str = "approval"
    title: str = ""
    amount: float | None = None
    requested_by: str | None = None
    approvers: list[str]
    level: int = 0
    """Index in `approvers` of the one whose turn it is (chains decide in order)."""
    deadline: datetime | None = None
    priority: str = "normal"
    extra: dict[str, Any] = Field(default_factory=dict)
    decisions: list[Decision] = Field(default_factory=list)
    rejection_reason: str | None = None
    created_at: datetime | None = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @property
    def waiting_on(self) -> str | None:
        """The approver whose decision is awaited, while pending."""
        return self.approvers[self.level] if self.status == "pending" else None


class EventRecord(BaseModel):
    """An event as delivered to a waiting workflow or an `@on` handler."""

    id: int
    name: str
    data: Any = None
    run_id: str | None = None
    """The run that sent it, if a run did."""
    created_at: datetime | None = None


class CascadeResult(BaseModel):
    """Which tier answered a cascade, with every tier's confidence."""

    task: str
    value: Any = None
    tier: str | None = None
    confidence: float = 0.0
    confidences: dict[str, float] = Field(default_factory=dict)
    accepted: bool = True
    """False when no tier reached the threshold (the best candidate is returned)."""


REQUEST_FIELDS = ("type", "title", "amount", "requested_by", "approvers", "deadline", "priority")
"""The fields of an approval request that `Approval` has a place for; others go to `extra`."""


def request_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Split a request into its known fields and the rest (`extra`)."""
    known = {k: raw[k] for k in REQUEST_FIELDS if k in raw}
    extra = {k: v for k, v in raw.items() if k not in REQUEST_FIELDS and k != "extra"}
    extra.update(raw.get("extra") or {})
    known["extra"] = extra
    return known
