"""`@approval` methods and the seed's inline `self.approval_flow.request_approval(...)`.

In a workflow the compiler turns both into an approval node: the run hibernates until the
approvers decide. Called as plain Python (unit tests of workflow code, no engine), a
request is approved at once, so the happy path can be exercised without a human.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dotdo.compiler.ir import Policy
from dotdo.dsl.python.hoist import StepInfo
from dotdo.engine.models import Approval, Decision, request_fields

__all__ = ["ApprovalDef", "ApprovalFlow", "approval", "auto_approved"]


def auto_approved(fields: dict[str, Any], run_id: str = "plain") -> Approval:
    """The decision a plain-Python run gets: approved by every approver, now."""
    fields = request_fields(fields)
    approvers = fields.get("approvers") or ["auto"]
    if isinstance(approvers, str):
        approvers = [approvers]
    now = datetime.now(UTC)
    return Approval(
        id=f"{run_id}/approval",
        run_id=run_id,
        status="approved",
        type=fields.get("type", "approval"),
        title=fields.get("title", ""),
        amount=fields.get("amount"),
        requested_by=fields.get("requested_by"),
        approvers=list(approvers),
        level=len(approvers),
        priority=fields.get("priority", "normal"),
        extra=fields.get("extra", {}),
        decisions=[Decision(by=a, at=now, decision="approved") for a in approvers],
    )


class ApprovalDef:
    """A method returning an approval request's fields (title, amount, ...)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        approvers: list[str] | str | None,
        deadline: timedelta | None,
        priority: str | None,
    ) -> None:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"@approval method {fn.__name__} must be a plain def returning a dict")
        self.fn = fn
        self.name = fn.__name__
        self.options: dict[str, Any] = {}
        if approvers is not None:
            self.options["approvers"] = [approvers] if isinstance(approvers, str) else approvers
        if deadline is not None:
            self.options["deadline"] = deadline.total_seconds()
        if priority is not None:
            self.options["priority"] = priority

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return _BoundApproval(self, instance)

    def info(self) -> StepInfo:
        return StepInfo(policy=Policy(retries=0), kind="approval", options=dict(self.options))


class _BoundApproval:
    def __init__(self, definition: ApprovalDef, instance: object) -> None:
        self.definition = definition
        self.instance = instance

    def fields(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The request: the method's dict over the decorator's defaults."""
        raw = self.definition.fn(self.instance, *args, **kwargs)
        if not isinstance(raw, dict):
            raise TypeError(f"@approval method {self.definition.name} must return a dict")
        merged = {**self.definition.options, **raw}
        if "deadline" in self.definition.options and "deadline" not in raw:
            merged["deadline"] = timedelta(seconds=self.definition.options["deadline"])
        return merged

    async def __call__(self, *args: Any, **kwargs: Any) -> Approval:
        return auto_approved(self.fields(*args, **kwargs))


def approval(
    fn: Callable[..., Any] | None = None,
    *,
    approvers: list[str] | str | None = None,
    deadline: timedelta | None = None,
    priority: str | None = None,
) -> Any:
    """Mark a method as an approval request; awaiting it in a workflow hibernates the run.

    The method returns the request's fields (title, amount, requested_by, ...); `approvers`
    is one approver or a chain deciding in order; past `deadline` the approval expires.
    """
    if fn is not None:
        return ApprovalDef(fn, approvers, deadline, priority)
    return lambda f: ApprovalDef(f, approvers, deadline, priority)


class ApprovalFlow:
    """`self.approval_flow`: the seed's inline form. Plain Python approves at once."""

    def __init__(self, owner: object) -> None:
        self.owner = owner

    async def request_approval(self, **fields: Any) -> Approval:
        return auto_approved(fields, getattr(self.owner, "run_id", None) or "plain")


def bind(obj: object) -> ApprovalFlow:
    return ApprovalFlow(obj)
