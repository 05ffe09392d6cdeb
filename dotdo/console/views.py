"""What pages and the API show: stored rows turned into plain, JSON-ready values.

Rows are untrusted data: they decode part by part (`records.readable`), a body that is not
an approval is skipped, and any value is shown through `jsonable` (JSON values, or the
text of what JSON cannot hold), never executed or imported.
"""

from __future__ import annotations

import math
import re
import traceback
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_jsonable_python

from dotdo.engine.approval_rows import as_seen, parse_approval
from dotdo.engine.models import Approval
from dotdo.engine.records import readable
from dotdo.engine.store.interface import StoredRun, StoredStep

__all__ = [
    "approval_view",
    "countdown",
    "error_view",
    "iso",
    "jsonable",
    "run_view",
    "step_view",
]

_LOOP_SUFFIX = re.compile(r"(\[\d+\])+$")


def jsonable(value: Any) -> Any:
    return to_jsonable_python(value, fallback=repr)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def countdown(deadline: datetime | None, now: float) -> str | None:
    """`in 2h 5m`, `expired`, or None without a deadline."""
    if deadline is None:
        return None
    left = deadline.timestamp() - now
    if left <= 0:
        return "expired"
    minutes = math.ceil(left / 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"in {days}d {hours}h"
    if hours:
        return f"in {hours}h {mins}m"
    return f"in {mins}m"


def error_view(text: str | None) -> dict[str, Any] | None:
    """A stored error as type, message and the user's traceback (as text)."""
    if text is None:
        return None
    value = readable(text)
    if isinstance(value, BaseException):
        tb = "".join(traceback.format_exception(value)) if value.__traceback__ else ""
        cause = getattr(value, "__dotdo_traceback__", None) or tb
        return {"type": type(value).__name__, "message": str(value), "traceback": cause or None}
    return {"type": "Error", "message": str(value), "traceback": None}


def approval_view(body: str | None, now: float) -> dict[str, Any] | None:
    approval = parse_approval(body)
    if approval is None:
        return None
    return approval_dict(as_seen(approval, now), now)


def approval_dict(approval: Approval, now: float) -> dict[str, Any]:
    data: dict[str, Any] = jsonable(approval.model_dump(mode="python"))
    data["waiting_on"] = approval.waiting_on
    data["countdown"] = countdown(approval.deadline, now) if approval.status == "pending" else None
    key = approval.id[len(approval.run_id) + 1 :]
    data["step"] = _LOOP_SUFFIX.sub("", key.split(":")[0])
    data["candidates"] = approval.extra.get("candidates") if approval.type == "cascade" else None
    return data


def run_view(row: StoredRun, *, with_input: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run_id": row.run_id,
        "workflow": row.workflow,
        "entity_id": row.entity_id,
        "status": row.status,
        "node": row.node,
        "graph_hash": row.graph_hash,
        "steps_done": row.steps_done,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "wake_at": iso(row.wake_at),
        "result": jsonable(readable(row.result)),
        "error": error_view(row.error),
    }
    if with_input:
        out["input"] = jsonable(readable(row.input))
    return out


def step_view(row: StoredStep) -> dict[str, Any]:
    started, finished = row.started_at, row.finished_at
    duration = None
    if started is not None and finished is not None:
        duration = round((finished - started) * 1000, 1)
    return {
        "key": row.key,
        "status": row.status,
        "attempts": row.attempts,
        "seq": row.seq,
        "value": jsonable(readable(row.value)),
        "error": error_view(row.error),
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_ms": duration,
    }
