"""The SQL of operating a database: retries, retention, exports, upgrades, run history.

Kept in one module, apart from the hot path (`sqlite.py`), so the statements an operator's
command runs are easy to audit in one place. Writers take a plain `sqlite3.Connection` and
run on the store's writer thread inside its group transaction (`Store.write_on_thread`), so
each operation is all-or-nothing; readers take the `Store` and use its reader connection.
Nothing here decodes stored values: rows come back as JSON text or plain Python data.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dotdo.engine.store.sqlite import FINISHED, Store

__all__ = [
    "REUSED",
    "PruneFilter",
    "add_history",
    "copy_reused",
    "delete_runs",
    "export_rows",
    "graph_body",
    "history",
    "journal_rows",
    "parked_runs",
    "prunable_runs",
    "repin_run",
    "reused_rows",
    "run_row",
]

REUSED = "reused"
"""Status of a journal row a retry copied from the run it continues: its value is handed
back to the step instead of running it, and the row becomes `completed` as it is used."""


async def run_row(store: Store, run_id: str) -> sqlite3.Row | None:
    return await store.fetch_one("SELECT * FROM runs WHERE run_id = ?", (run_id,))


async def journal_rows(store: Store, run_id: str) -> list[sqlite3.Row]:
    """A run's journal in the order its steps completed (failed and started ones last)."""
    return await store.fetch(
        "SELECT * FROM steps WHERE run_id = ? ORDER BY seq IS NULL, seq, started_at",
        (run_id,),
    )


async def reused_rows(store: Store, run_id: str) -> dict[str, str | None]:
    """The copied results a retried run has not used yet, by step key."""
    rows = await store.fetch(
        "SELECT step_key, value FROM steps WHERE run_id = ? AND status = ?", (run_id, REUSED)
    )
    return {r["step_key"]: r["value"] for r in rows}


def copy_reused(
    conn: sqlite3.Connection, run_id: str, retry_of: str, rows: Iterable[sqlite3.Row]
) -> None:
    """Link a retry to its original and give it the results it reuses (writer thread)."""
    conn.execute("UPDATE runs SET retry_of = ? WHERE run_id = ?", (retry_of, run_id))
    conn.executemany(
        "INSERT INTO steps(run_id, step_key, status, attempts, value, error, seq, "
        "started_at, finished_at) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?) "
        "ON CONFLICT(run_id, step_key) DO NOTHING",
        [
            (run_id, key, REUSED, attempts, value, started, finished)
            for key, attempts, value, started, finished in map(_journal_line, rows)
        ],
    )


def _journal_line(row: sqlite3.Row) -> tuple[Any, ...]:
    return (row["step_key"], row["attempts"], row["value"], row["started_at"], row["finished_at"])


def add_history(
    conn: sqlite3.Connection, run_id: str, kind: str, body: dict[str, Any], now: float
) -> None:
    conn.execute(
        "INSERT INTO history(run_id, kind, body, created_at) VALUES (?, ?, ?, ?)",
        (run_id, kind, json.dumps(body, sort_keys=True), now),
    )


async def history(store: Store, run_id: str) -> list[dict[str, Any]]:
    """A run's recorded operations (retries, upgrades), oldest first."""
    rows = await store.fetch(
        "SELECT kind, body, created_at FROM history WHERE run_id = ? ORDER BY id", (run_id,)
    )
    return [{"kind": r["kind"], "at": r["created_at"], **json.loads(r["body"])} for r in rows]


# ---------------------------------------------------------------------------- retention
@dataclass(frozen=True)
class PruneFilter:
    """Which finished runs to remove: ended before `before`, in `statuses`, of `workflow`."""

    before: float | None = None
    statuses: tuple[str, ...] = FINISHED
    workflow: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        marks = ",".join("?" * len(self.statuses))
        clauses, params = [f"status IN ({marks})"], list[Any](self.statuses)
        if self.before is not None:
            clauses.append("updated_at < ?")
            params.append(self.before)
        if self.workflow is not None:
            clauses.append("workflow = ?")
            params.append(self.workflow)
        return " AND ".join(clauses), params


async def prunable_runs(store: Store, where: PruneFilter, limit: int) -> list[str]:
    sql, params = where.where()
    rows = await store.fetch(
        f"SELECT run_id FROM runs WHERE {sql} ORDER BY updated_at LIMIT ?", (*params, limit)
    )
    return [r["run_id"] for r in rows]


_BY_RUN = (
    "DELETE FROM steps WHERE run_id IN ({m})",
    "DELETE FROM waits WHERE run_id IN ({m})",
    "DELETE FROM approvals WHERE run_id IN ({m}) AND status != 'pending'",
    "DELETE FROM entity_outbox WHERE run_id IN ({m}) AND delivered_at IS NOT NULL",
    "DELETE FROM outbox WHERE run_id IN ({m}) AND dispatched_at IS NOT NULL",
    "DELETE FROM history WHERE run_id IN ({m})",
)


def delete_runs(
    conn: sqlite3.Connection,
    run_ids: Sequence[str],
    where: PruneFilter,
    calls_before: float | None,
) -> list[str]:
    """Remove finished runs with everything recorded for them (writer thread); a run that
    changed since it was selected (still matching is checked again here) is kept. Entity
    call records and run-less events older than `calls_before` go too."""
    sql, params = where.where()
    marks = ",".join("?" * len(run_ids))
    ids = (
        [
            r[0]
            for r in conn.execute(
                f"SELECT run_id FROM runs WHERE run_id IN ({marks}) AND {sql}", (*run_ids, *params)
            ).fetchall()
        ]
        if run_ids
        else []
    )
    if ids:
        m = ",".join("?" * len(ids))
        for statement in _BY_RUN:
            conn.execute(statement.format(m=m), ids)
        conn.execute(f"DELETE FROM runs WHERE run_id IN ({m})", ids)
    if calls_before is None:
        return ids
    conn.execute("DELETE FROM entity_calls WHERE created_at < ?", (calls_before,))
    conn.execute(
        "DELETE FROM outbox WHERE run_id IS NULL AND dispatched_at IS NOT NULL "
        "AND created_at < ? AND id NOT IN (SELECT event_id FROM waits WHERE event_id > 0)",
        (calls_before,),
    )
    return ids


# ------------------------------------------------------------------------------- export
def _parsed(value: Any) -> Any:
    """A stored JSON column as data (json only: never decodes to the app's classes)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return value


def _rows(rows: Iterable[sqlite3.Row], json_columns: set[str]) -> list[dict[str, Any]]:
    return [{k: _parsed(r[k]) if k in json_columns else r[k] for k in r.keys()} for r in rows]


async def export_rows(store: Store, run_id: str) -> dict[str, Any] | None:
    """Everything stored about one run, as JSON-ready data; None when there is no such run."""
    row = await run_row(store, run_id)
    if row is None:
        return None
    run = _rows([row], {"state", "input", "result", "error"})[0]
    graph = await store.fetch_one(
        "SELECT hash, name, module, created_at FROM graphs WHERE hash = ?", (row["graph_hash"],)
    )
    by_run = (run_id,)
    return {
        "run": run,
        "graph": dict(graph) if graph is not None else None,
        "steps": _rows(await journal_rows(store, run_id), {"value", "error"}),
        "events": _rows(
            await store.fetch(
                "SELECT id, event, data, created_at, dispatched_at FROM outbox "
                "WHERE run_id = ? ORDER BY id",
                by_run,
            ),
            {"data"},
        ),
        "approvals": _rows(
            await store.fetch(
                "SELECT * FROM approvals WHERE run_id = ? ORDER BY created_at", by_run
            ),
            {"body"},
        ),
        "waits": _rows(await store.fetch("SELECT * FROM waits WHERE run_id = ?", by_run), set()),
        "entity_calls": _rows(
            await store.fetch(
                "SELECT * FROM entity_outbox WHERE run_id = ? ORDER BY created_at", by_run
            ),
            {"request", "outcome", "error"},
        ),
        "history": await history(store, run_id),
        "retries": [
            r["run_id"]
            for r in await store.fetch(
                "SELECT run_id FROM runs WHERE retry_of = ? ORDER BY created_at", by_run
            )
        ],
    }


# ------------------------------------------------------------------------------ upgrades
async def parked_runs(store: Store, workflows: Sequence[str] | None = None) -> list[sqlite3.Row]:
    """Unfinished runs with what an upgrade check needs (not their state or input)."""
    sql = (
        "SELECT run_id, workflow, graph_hash, node, status, steps_done FROM runs "
        "WHERE status IN ('running', 'waiting')"
    )
    params: list[Any] = []
    if workflows is not None:
        sql += f" AND workflow IN ({','.join('?' * len(workflows))})"
        params = list(workflows)
    return await store.fetch(sql + " ORDER BY run_id", params)


async def graph_body(store: Store, graph_hash: str) -> str | None:
    row = await store.fetch_one("SELECT body FROM graphs WHERE hash = ?", (graph_hash,))
    return None if row is None else str(row["body"])


def repin_run(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    old_hash: str,
    new_hash: str,
    graph: tuple[str, str, str | None],
    node: str,
    state: str,
    now: float,
    lease_now: float,
    mac: tuple[str, str] | None = None,
) -> bool:
    """Move a parked run onto another graph (writer thread): only if it is still pinned to
    `old_hash`, waiting, and nobody holds it. `graph` is (name, body, module) of the new
    graph, stored if it is not yet; `mac` its signature row (key, value) when signing."""
    conn.execute(
        "INSERT INTO graphs(hash, name, body, created_at, module) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(hash) DO NOTHING",
        (new_hash, graph[0], graph[1], now, graph[2]),
    )
    if mac is not None:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            mac,
        )
    changed = conn.execute(
        "UPDATE runs SET graph_hash = ?, node = ?, state = ?, updated_at = ? "
        "WHERE run_id = ? AND graph_hash = ? AND status = 'waiting' "
        "AND (lease_owner IS NULL OR lease_until < ?)",
        (new_hash, node, state, now, run_id, old_hash, lease_now),
    ).rowcount
    return bool(changed)


# ------------------------------------------------------------------------------ telemetry
SET_TRACE = "UPDATE runs SET trace = ? WHERE run_id = ? AND trace IS NULL"
"""Store a run's trace (its first stretch's W3C traceparent) once."""


def waiting_by_kind(conn: sqlite3.Connection) -> dict[str, int]:
    """Waiting runs by what they wait on: approval, event or timer (a sleep or a retry)."""
    counts = dict.fromkeys(("approval", "event", "timer"), 0)
    for kind, count in conn.execute(
        "SELECT CASE "
        "WHEN EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = runs.run_id "
        "AND a.status = 'pending') THEN 'approval' "
        "WHEN EXISTS (SELECT 1 FROM waits w WHERE w.run_id = runs.run_id "
        "AND w.event_id IS NULL) THEN 'event' ELSE 'timer' END AS kind, COUNT(*) "
        "FROM runs WHERE status = 'waiting' GROUP BY kind"
    ):
        counts[kind] = count
    return counts
