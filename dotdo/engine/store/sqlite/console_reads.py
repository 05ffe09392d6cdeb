"""The console's reads on SQLite: an approver's inbox, a page of runs, counts, schedules.

Each is bounded and index-backed so the console stays fast with 100,000+ runs: the runs
list pages by keyset (`runs_by_created`: the (created_at, run_id) of the last row shown,
never OFFSET), the inbox reads only the pending rows of the asking person's approver names
(`approvals_by_status`), a run's approvals come by `approvals_by_run`.
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
from dotdo.engine.store.sqlite.connection import Database
from dotdo.engine.store.sqlite.runs import RUN_COLUMNS, stored_run

__all__ = ["inbox", "run_approvals", "runs_page", "schedules", "status_counts"]

_APPROVAL = "SELECT id, run_id, status, body FROM approvals"
_PRIORITY_RANK = (
    "CASE json_extract(body, '$.v.priority') "
    + " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(PRIORITY_ORDER))
    + " ELSE 2 END"
)


async def inbox(
    db: Database, names: Sequence[str], now: float, kind: str | None, limit: int
) -> list[StoredApproval]:
    if not names:
        return []
    marks = ",".join("?" * len(names))
    params: list[Any] = [*names, now]
    where = f"status = 'pending' AND approver IN ({marks}) AND (deadline IS NULL OR deadline > ?)"
    if kind:
        where += " AND json_extract(body, '$.v.type') = ?"
        params.append(kind)
    rows = await db.fetch(
        f"{_APPROVAL} WHERE {where} ORDER BY {_PRIORITY_RANK}, "
        "deadline IS NULL, deadline, created_at, id LIMIT ?",
        (*params, limit),
    )
    return [StoredApproval(*r) for r in rows]


async def run_approvals(db: Database, run_id: str) -> list[StoredApproval]:
    rows = await db.fetch(f"{_APPROVAL} WHERE run_id = ? ORDER BY created_at, id", (run_id,))
    return [StoredApproval(*r) for r in rows]


async def runs_page(
    db: Database, filters: RunFilter, after: tuple[float, str] | None, limit: int
) -> list[StoredRun]:
    clauses: list[str] = []
    params: list[Any] = []
    if filters.status:
        clauses.append("status = ?")
        params.append(filters.status)
    if filters.workflow:
        clauses.append("workflow = ?")
        params.append(filters.workflow)
    if filters.prefix:
        # A range, not LIKE: the prefix is data, and the primary key index serves it.
        clauses.append("run_id >= ? AND run_id < ?")
        params += [filters.prefix, filters.prefix + "\U0010ffff"]
    if filters.since is not None:
        clauses.append("created_at >= ?")
        params.append(filters.since)
    if filters.until is not None:
        clauses.append("created_at < ?")
        params.append(filters.until)
    if after is not None:
        clauses.append("(created_at < ? OR (created_at = ? AND run_id > ?))")
        params += [after[0], after[0], after[1]]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    index = "INDEXED BY runs_by_created" if not filters.prefix else ""
    rows = await db.fetch(
        f"SELECT {RUN_COLUMNS} FROM runs {index} {where} ORDER BY created_at DESC, run_id LIMIT ?",
        (*params, limit + 1),
    )
    return [stored_run(r) for r in rows]


async def status_counts(db: Database, workflow: str | None) -> dict[str, int]:
    if workflow:
        rows = await db.fetch(
            "SELECT status, COUNT(*) FROM runs WHERE workflow = ? GROUP BY status", (workflow,)
        )
    else:
        rows = await db.fetch("SELECT status, COUNT(*) FROM runs GROUP BY status")
    return {str(r[0]): int(r[1]) for r in rows}


async def schedules(db: Database) -> list[StoredSchedule]:
    rows = await db.fetch("SELECT name, spec, next_fire, last_fire FROM schedules ORDER BY name")
    return [StoredSchedule(*r) for r in rows]
