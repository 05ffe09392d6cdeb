"""The console's reads: an approver's inbox, the runs list, one run's page, schedules.

Each query is bounded and index-backed so the pages stay fast with 100,000+ runs: the runs
list pages by keyset (`created_at, run_id` of the last row shown, never OFFSET), the inbox
reads the pending rows of the signed-in person's approver names only (`approvals_by_status`),
and counts by status read the `runs_by_status` index. Rows come back as plain dicts of stored
columns; decoding them into models (and treating them as untrusted data) is the caller's job.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "PRIORITY_ORDER",
    "ReadStore",
    "RunFilter",
    "approval_body",
    "graph_body",
    "inbox",
    "run_approvals",
    "run_row",
    "run_steps",
    "runs_page",
    "schedules",
    "status_counts",
]

PRIORITY_ORDER = ("urgent", "high", "normal", "low")


class ReadStore(Protocol):
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]: ...

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None: ...


@dataclass(frozen=True)
class RunFilter:
    status: str | None = None
    workflow: str | None = None
    prefix: str | None = None
    since: float | None = None
    until: float | None = None


_PRIORITY_RANK = (
    "CASE json_extract(body, '$.v.priority') "
    + " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(PRIORITY_ORDER))
    + " ELSE 2 END"
)


async def inbox(
    store: ReadStore,
    names: Sequence[str],
    *,
    now: float,
    kind: str | None = None,
    limit: int = 100,
) -> list[str]:
    """Bodies of the approvals pending on any of `names` (not past their deadline), most
    urgent first, then by deadline (none last), then oldest."""
    if not names:
        return []
    marks = ",".join("?" * len(names))
    params: list[Any] = ["pending", *names, now]
    where = f"status = ? AND approver IN ({marks}) AND (deadline IS NULL OR deadline > ?)"
    if kind:
        where += " AND json_extract(body, '$.v.type') = ?"
        params.append(kind)
    rows = await store.fetch(
        f"SELECT body FROM approvals WHERE {where} ORDER BY {_PRIORITY_RANK}, "
        "deadline IS NULL, deadline, created_at, id LIMIT ?",
        (*params, limit),
    )
    return [r["body"] for r in rows]


async def approval_body(store: ReadStore, approval_id: str) -> str | None:
    row = await store.fetch_one("SELECT body FROM approvals WHERE id = ?", (approval_id,))
    return None if row is None else str(row["body"])


async def run_approvals(store: ReadStore, run_id: str) -> list[str]:
    rows = await store.fetch(
        "SELECT body FROM approvals WHERE run_id = ? ORDER BY created_at, id", (run_id,)
    )
    return [r["body"] for r in rows]


_RUN_COLUMNS = (
    "run_id, workflow, entity_id, status, node, graph_hash, steps_done, created_at, "
    "updated_at, wake_at, lease_owner, result, error"
)


async def runs_page(
    store: ReadStore,
    filters: RunFilter,
    *,
    after: tuple[float, str] | None = None,
    limit: int = 50,
) -> list[sqlite3.Row]:
    """One page of runs, newest first; `after` is the (created_at, run_id) of the last row of
    the previous page. Returns up to `limit + 1` rows: one more tells there is a next page."""
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
    return await store.fetch(
        f"SELECT {_RUN_COLUMNS} FROM runs {index} {where} ORDER BY created_at DESC, run_id LIMIT ?",
        (*params, limit + 1),
    )


async def status_counts(store: ReadStore, workflow: str | None = None) -> dict[str, int]:
    if workflow:
        rows = await store.fetch(
            "SELECT status, COUNT(*) AS n FROM runs WHERE workflow = ? GROUP BY status",
            (workflow,),
        )
    else:
        rows = await store.fetch("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def run_row(store: ReadStore, run_id: str) -> sqlite3.Row | None:
    return await store.fetch_one(
        f"SELECT {_RUN_COLUMNS}, input FROM runs WHERE run_id = ?", (run_id,)
    )


async def run_steps(store: ReadStore, run_id: str, limit: int = 500) -> list[sqlite3.Row]:
    return await store.fetch(
        "SELECT * FROM steps WHERE run_id = ? ORDER BY seq IS NULL, seq, started_at LIMIT ?",
        (run_id, limit),
    )


async def graph_body(store: ReadStore, graph_hash: str) -> str | None:
    row = await store.fetch_one("SELECT body FROM graphs WHERE hash = ?", (graph_hash,))
    return None if row is None else str(row["body"])


async def schedules(store: ReadStore, recent: int = 5) -> list[dict[str, Any]]:
    """Each stored schedule with its next fire and its most recent runs (`Name@time` ids)."""
    out: list[dict[str, Any]] = []
    for row in await store.fetch("SELECT name, spec, next_fire, last_fire FROM schedules"):
        name = row["name"]
        runs = await store.fetch(
            "SELECT run_id, status, created_at FROM runs WHERE run_id >= ? AND run_id < ? "
            "ORDER BY run_id DESC LIMIT ?",
            (f"{name}@", f"{name}A", recent),
        )
        out.append({**dict(row), "runs": [dict(r) for r in runs]})
    return out
