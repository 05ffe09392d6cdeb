"""The console's reads on PostgreSQL: an approver's inbox, a page of runs, counts, schedules.

The same bounded, index-backed queries as on SQLite: the runs list pages by keyset
(`runs_by_created`, never OFFSET), the inbox reads only the pending rows of the asking
person's approver names, a run's approvals come by `approvals_by_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dotdo.engine.store.interface import (
    PRIORITY_ORDER,
    RunFilter,
    StoredApproval,
    StoredRun,
    StoredSchedule,
)
from dotdo.engine.store.postgres.database import Database
from dotdo.engine.store.postgres.runs import RUN_COLUMNS, stored_run

__all__ = ["inbox", "run_approvals", "runs_page", "schedules", "status_counts"]

_APPROVAL = "SELECT id, run_id, status, body::text FROM approvals"
_PRIORITY_RANK = (
    "CASE body->'v'->>'priority' "
    + " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(PRIORITY_ORDER))
    + " ELSE 2 END"
)


def _approval(row: Any) -> StoredApproval:
    return StoredApproval(row[0], row[1], row[2], row[3])


async def inbox(
    db: Database, names: Sequence[str], now: float, kind: str | None, limit: int
) -> list[StoredApproval]:
    if not names:
        return []
    where = (
        "status = 'pending' AND approver = ANY($1::text[]) AND (deadline IS NULL OR deadline > $2)"
    )
    params: list[Any] = [list(names), now]
    if kind:
        params.append(kind)
        where += f" AND body->'v'->>'type' = ${len(params)}"
    params.append(limit)
    rows = await db.fetch(
        f"{_APPROVAL} WHERE {where} ORDER BY {_PRIORITY_RANK}, "
        f"deadline IS NULL, deadline, created_at, id LIMIT ${len(params)}",
        *params,
    )
    return [_approval(r) for r in rows]


async def run_approvals(db: Database, run_id: str) -> list[StoredApproval]:
    rows = await db.fetch(f"{_APPROVAL} WHERE run_id = $1 ORDER BY created_at, id", run_id)
    return [_approval(r) for r in rows]


async def runs_page(
    db: Database, filters: RunFilter, after: tuple[float, str] | None, limit: int
) -> list[StoredRun]:
    clauses: list[str] = []
    params: list[Any] = []

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if filters.status:
        clauses.append(f"status = {arg(filters.status)}")
    if filters.workflow:
        clauses.append(f"workflow = {arg(filters.workflow)}")
    if filters.prefix:
        # A range, not LIKE: the prefix is data. COLLATE "C": byte order, as on SQLite.
        clauses.append(
            f'run_id COLLATE "C" >= {arg(filters.prefix)} '
            f'AND run_id COLLATE "C" < {arg(filters.prefix + chr(0x10FFFF))}'
        )
    if filters.since is not None:
        clauses.append(f"created_at >= {arg(filters.since)}")
    if filters.until is not None:
        clauses.append(f"created_at < {arg(filters.until)}")
    if after is not None:
        stamp, run_id = arg(after[0]), arg(after[1])
        clauses.append(
            f'(created_at < {stamp} OR (created_at = {stamp} AND run_id COLLATE "C" > {run_id}))'
        )
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = await db.fetch(
        f'SELECT {RUN_COLUMNS} FROM runs {where} ORDER BY created_at DESC, run_id COLLATE "C" '
        f"LIMIT {arg(limit + 1)}",
        *params,
    )
    return [stored_run(r) for r in rows]


async def status_counts(db: Database, workflow: str | None) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT status, COUNT(*) FROM runs WHERE ($1::text IS NULL OR workflow = $1) "
        "GROUP BY status",
        workflow,
    )
    return {str(r[0]): int(r[1]) for r in rows}


async def schedules(db: Database) -> list[StoredSchedule]:
    rows = await db.fetch("SELECT name, spec, next_fire, last_fire FROM schedules ORDER BY name")
    return [StoredSchedule(r[0], r[1], r[2], r[3]) for r in rows]
