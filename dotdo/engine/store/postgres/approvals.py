"""Approvals and schedule cursors on PostgreSQL.

A decision reads the approval's row `FOR UPDATE`, so two workers deciding the same approval
at once take turns: the second sees the first's decision (and is refused by the domain rule
it passes in), never a lost update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg

from dotdo.engine.store.interface import (
    ApprovalChange,
    Lease,
    StoredApproval,
    StoredSchedule,
    Waker,
)
from dotdo.engine.store.postgres.database import Database
from dotdo.engine.store.postgres.runs import wake

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
_COLUMNS = "id, run_id, status, body::text"


def _approval(row: Any) -> StoredApproval:
    return StoredApproval(row[0], row[1], row[2], row[3])


async def approval(db: Database, approval_id: str) -> StoredApproval | None:
    row = await db.fetch_one(f"SELECT {_COLUMNS} FROM approvals WHERE id = $1", approval_id)
    return None if row is None else _approval(row)


async def pending_approvals(db: Database, run_id: str) -> list[StoredApproval]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM approvals WHERE run_id = $1 AND status = 'pending' "
        "ORDER BY created_at, id",
        run_id,
    )
    return [_approval(r) for r in rows]


async def list_approvals(
    db: Database, status: str | None, approver: str | None, now: float, limit: int
) -> list[StoredApproval]:
    clauses: list[str] = []
    params: list[Any] = []

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if status == "pending":
        clauses.append(f"status = 'pending' AND (deadline IS NULL OR deadline > {arg(now)})")
        if approver:
            clauses.append(f"approver = {arg(approver)}")
    elif status == "expired":
        clauses.append(f"(status = 'expired' OR (status = 'pending' AND deadline <= {arg(now)}))")
    elif status:
        clauses.append(f"status = {arg(status)}")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    bound = f"LIMIT {arg(limit)}" if limit >= 0 else ""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM approvals {where} ORDER BY created_at, id {bound}", *params
    )
    return [_approval(r) for r in rows]


async def expire_approval(db: Database, approval_id: str, body: str, now: float) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE approvals SET status = 'expired', approver = NULL, body = $1::json, "
            "updated_at = $2 WHERE id = $3 AND status = 'pending'",
            body,
            now,
            approval_id,
        )

    await db.write(job)


async def withdraw_approvals(
    db: Database, run_id: str, rewrite: Callable[[str], str], now: float
) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            "SELECT id, body::text FROM approvals WHERE run_id = $1 AND status = 'pending' "
            "FOR UPDATE",
            run_id,
        )
        for approval_id, body in rows:
            await conn.execute(
                "UPDATE approvals SET status = 'withdrawn', approver = NULL, body = $1::json, "
                "updated_at = $2 WHERE id = $3",
                rewrite(body),
                now,
                approval_id,
            )

    await db.write(job)


async def decide_approval(
    db: Database,
    approval_id: str,
    decide: Callable[[str | None], tuple[ApprovalChange, T]],
    waker: Waker,
) -> tuple[T, Lease | None]:
    async def job(conn: asyncpg.Connection) -> tuple[T, Lease | None]:
        row = await conn.fetchrow(
            "SELECT run_id, body::text FROM approvals WHERE id = $1 FOR UPDATE", approval_id
        )
        change, answer = decide(None if row is None else row[1])
        if row is None:
            return answer, None
        await conn.execute(
            "UPDATE approvals SET status = $1, approver = $2, body = $3::json, updated_at = $4 "
            "WHERE id = $5",
            change.status,
            change.approver,
            change.body,
            waker.now,
            approval_id,
        )
        if change.event is not None:
            await conn.execute(
                "INSERT INTO outbox(run_id, event, data, created_at) "
                "VALUES (NULL, $1, $2::json, $3)",
                *change.event,
                waker.now,
            )
        lease = await wake(conn, db, row[0], waker) if change.wake else None
        return answer, lease

    return await db.write(job, notify=True, events=True)


# ------------------------------------------------------------------------- schedules
async def schedule(db: Database, name: str) -> StoredSchedule | None:
    row = await db.fetch_one(
        "SELECT name, spec, next_fire, last_fire FROM schedules WHERE name = $1", name
    )
    return None if row is None else StoredSchedule(row[0], row[1], row[2], row[3])


async def set_schedule(db: Database, name: str, spec: str, next_fire: float) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "INSERT INTO schedules(name, spec, next_fire) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, next_fire = excluded.next_fire",
            name,
            spec,
            next_fire,
        )

    await db.write(job)


async def schedule_fired(db: Database, name: str, fire: float, next_fire: float) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE schedules SET last_fire = $1, next_fire = $2 WHERE name = $3",
            fire,
            next_fire,
            name,
        )

    await db.write(job)
