"""Approvals and schedule cursors on SQLite.

An approval row keeps its whole request and decisions as one serde body (the engine's
`Approval`), plus the columns listings filter on: status, whom it waits on, its deadline.
What a decision changes is the engine's rule, passed in as `decide`; this module reads the
row and writes the change in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite

from dotdo.engine.store.interface import (
    ApprovalChange,
    Lease,
    StoredApproval,
    StoredSchedule,
    Waker,
)
from dotdo.engine.store.sqlite.connection import Database
from dotdo.engine.store.sqlite.runs import wake

__all__ = [
    "approval",
    "decide_approval",
    "expire_approval",
    "list_approvals",
    "pending_approvals",
    "schedule",
    "schedule_fired",
    "set_schedule",
    "withdraw_approvals",
]

T = TypeVar("T")

_APPROVAL = "SELECT id, run_id, status, body FROM approvals"


def _approval(row: Sequence[Any]) -> StoredApproval:
    return StoredApproval(*row)


async def approval(db: Database, approval_id: str) -> StoredApproval | None:
    row = await db.fetch_one(f"{_APPROVAL} WHERE id = ?", (approval_id,))
    return None if row is None else _approval(row)


async def pending_approvals(db: Database, run_id: str) -> list[StoredApproval]:
    rows = await db.fetch(
        f"{_APPROVAL} WHERE run_id = ? AND status = 'pending' ORDER BY created_at, id", (run_id,)
    )
    return [_approval(r) for r in rows]


def _listing_filter(
    status: str | None, approver: str | None, now: float
) -> tuple[list[str], list[Any]]:
    """Clauses selecting approvals by their status as seen at `now` (a pending approval
    past its deadline reads as expired)."""
    clauses: list[str] = []
    params: list[Any] = []
    if status == "pending":
        clauses.append("status = 'pending' AND (deadline IS NULL OR deadline > ?)")
        params.append(now)
        if approver:
            clauses.append("approver = ?")
            params.append(approver)
    elif status == "expired":
        clauses.append("(status = 'expired' OR (status = 'pending' AND deadline <= ?))")
        params.append(now)
    elif status:
        clauses.append("status = ?")
        params.append(status)
    return clauses, params


async def list_approvals(
    db: Database, status: str | None, approver: str | None, now: float, limit: int
) -> list[StoredApproval]:
    clauses, params = _listing_filter(status, approver, now)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = await db.fetch(f"{_APPROVAL} {where} ORDER BY created_at, id LIMIT ?", (*params, limit))
    return [_approval(r) for r in rows]


async def expire_approval(db: Database, approval_id: str, body: str, now: float) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "UPDATE approvals SET status = 'expired', approver = NULL, body = ?, "
            "updated_at = ? WHERE id = ? AND status = 'pending'",
            (body, now, approval_id),
        )

    await db.write(job)


async def withdraw_approvals(
    db: Database, run_id: str, rewrite: Callable[[str], str], now: float
) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        rows = await conn.execute_fetchall(
            "SELECT id, body FROM approvals WHERE run_id = ? AND status = 'pending'", (run_id,)
        )
        for approval_id, body in rows:
            await conn.execute(
                "UPDATE approvals SET status = 'withdrawn', approver = NULL, body = ?, "
                "updated_at = ? WHERE id = ?",
                (rewrite(body), now, approval_id),
            )

    await db.write(job)


async def decide_approval(
    db: Database,
    approval_id: str,
    decide: Callable[[str | None], tuple[ApprovalChange, T]],
    waker: Waker,
) -> tuple[T, Lease | None]:
    async def job(conn: aiosqlite.Connection) -> tuple[T, Lease | None]:
        rows = list(
            await conn.execute_fetchall(
                "SELECT body, run_id FROM approvals WHERE id = ?", (approval_id,)
            )
        )
        change, value = decide(rows[0][0] if rows else None)
        await conn.execute(
            "UPDATE approvals SET status = ?, approver = ?, body = ?, updated_at = ? WHERE id = ?",
            (change.status, change.approver, change.body, waker.now, approval_id),
        )
        if change.event is not None:
            await conn.execute(
                "INSERT INTO outbox(run_id, event, data, created_at) VALUES (NULL, ?, ?, ?)",
                (*change.event, waker.now),
            )
        lease = None
        if change.wake and rows:
            lease = await wake(conn, db.owner, rows[0][1], waker)
        return value, lease

    return await db.write(job)


# ----------------------------------------------------------------------- schedules
async def schedule(db: Database, name: str) -> StoredSchedule | None:
    row = await db.fetch_one(
        "SELECT name, spec, next_fire, last_fire FROM schedules WHERE name = ?", (name,)
    )
    return None if row is None else StoredSchedule(*row)


async def set_schedule(db: Database, name: str, spec: str, next_fire: float) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "INSERT INTO schedules(name, spec, next_fire) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, "
            "next_fire = excluded.next_fire",
            (name, spec, next_fire),
        )

    await db.write(job)


async def schedule_fired(db: Database, name: str, fire: float, next_fire: float) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "UPDATE schedules SET next_fire = ?, last_fire = ? WHERE name = ?",
            (next_fire, fire, name),
        )

    await db.write(job)
