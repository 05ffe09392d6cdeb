"""Operating a database on SQLite: retries, run history, retention, exports, upgrades and
the few reads telemetry makes (the "operations" section of the `Store` protocol).

Writers run on the writer thread inside the group transaction (`write_on_thread`), so each
operation is all-or-nothing; readers use the reader connection. Nothing here decodes a
stored value: rows come back as JSON text or plain data.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from dotdo.engine.store.interface import (
    REUSED,
    HistoryEntry,
    PruneFilter,
    Repin,
    RetryToCreate,
    RunExport,
    StartOutcome,
    UnfinishedRun,
)
from dotdo.engine.store.sqlite.connection import Database
from dotdo.engine.store.sqlite.runs import create_run

__all__ = [
    "create_retry",
    "delete_runs",
    "export_run",
    "graph_hashes",
    "graphs_with_prefix",
    "history",
    "prunable_runs",
    "prune_unowned",
    "repin_run",
    "reused_results",
    "set_trace",
    "unfinished_runs",
    "waiting_by_kind",
]


# ---------------------------------------------------------------------------- retries
def _add_history(conn: sqlite3.Connection, run_id: str, kind: str, body: str, now: float) -> None:
    conn.execute(
        "INSERT INTO history(run_id, kind, body, created_at) VALUES (?, ?, ?, ?)",
        (run_id, kind, body, now),
    )


async def create_retry(db: Database, retry: RetryToCreate) -> StartOutcome:
    new, owner = retry.run, db.owner

    def job(conn: sqlite3.Connection) -> StartOutcome:
        outcome = create_run(conn, new, owner)
        if not outcome.created:
            return outcome
        conn.execute("UPDATE runs SET retry_of = ? WHERE run_id = ?", (retry.retry_of, new.run_id))
        conn.executemany(
            "INSERT INTO steps(run_id, step_key, status, attempts, value, error, seq, "
            "started_at, finished_at) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?) "
            "ON CONFLICT(run_id, step_key) DO NOTHING",
            [
                (new.run_id, s.key, REUSED, s.attempts, s.value, s.started_at, s.finished_at)
                for s in retry.reused
            ],
        )
        _add_history(conn, retry.retry_of, "retried", retry.note, new.now)
        _add_history(conn, new.run_id, "retry", retry.note, new.now)
        return outcome

    return await db.write_on_thread(job)


async def reused_results(db: Database, run_id: str) -> dict[str, str | None]:
    rows = await db.fetch(
        "SELECT step_key, value FROM steps WHERE run_id = ? AND status = ?", (run_id, REUSED)
    )
    return {r["step_key"]: r["value"] for r in rows}


async def history(db: Database, run_id: str) -> list[HistoryEntry]:
    rows = await db.fetch(
        "SELECT kind, body, created_at FROM history WHERE run_id = ? ORDER BY id", (run_id,)
    )
    return [HistoryEntry(r["kind"], r["body"], r["created_at"]) for r in rows]


# -------------------------------------------------------------------------- retention
def _where(where: PruneFilter) -> tuple[str, list[Any]]:
    marks = ",".join("?" * len(where.statuses))
    clauses, params = [f"status IN ({marks})"], list[Any](where.statuses)
    if where.before is not None:
        clauses.append("updated_at < ?")
        params.append(where.before)
    if where.workflow is not None:
        clauses.append("workflow = ?")
        params.append(where.workflow)
    return " AND ".join(clauses), params


async def prunable_runs(db: Database, where: PruneFilter, limit: int) -> list[str]:
    sql, params = _where(where)
    rows = await db.fetch(
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
    "DELETE FROM runs WHERE run_id IN ({m})",
)


async def delete_runs(db: Database, run_ids: Sequence[str], where: PruneFilter) -> list[str]:
    if not run_ids:
        return []
    sql, params = _where(where)
    marks = ",".join("?" * len(run_ids))

    def job(conn: sqlite3.Connection) -> list[str]:
        ids = [
            r[0]
            for r in conn.execute(
                f"SELECT run_id FROM runs WHERE run_id IN ({marks}) AND {sql}", (*run_ids, *params)
            ).fetchall()
        ]
        if ids:
            m = ",".join("?" * len(ids))
            for statement in _BY_RUN:
                conn.execute(statement.format(m=m), ids)
        return ids

    return await db.write_on_thread(job)


async def prune_unowned(db: Database, before: float) -> None:
    def job(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM entity_calls WHERE created_at < ?", (before,))
        conn.execute(
            "DELETE FROM outbox WHERE run_id IS NULL AND dispatched_at IS NOT NULL "
            "AND created_at < ? AND id NOT IN (SELECT event_id FROM waits WHERE event_id > 0)",
            (before,),
        )

    await db.write_on_thread(job)


# ----------------------------------------------------------------------------- export
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


async def export_run(db: Database, run_id: str) -> RunExport | None:
    by_run = (run_id,)
    row = await db.fetch_one("SELECT * FROM runs WHERE run_id = ?", by_run)
    if row is None:
        return None
    graph = await db.fetch_one(
        "SELECT hash, name, module, created_at FROM graphs WHERE hash = ?", (row["graph_hash"],)
    )
    return RunExport(
        run=_rows([row], {"state", "input", "result", "error"})[0],
        graph=dict(graph) if graph is not None else None,
        steps=_rows(
            await db.fetch(
                "SELECT * FROM steps WHERE run_id = ? ORDER BY seq IS NULL, seq, started_at",
                by_run,
            ),
            {"value", "error"},
        ),
        events=_rows(
            await db.fetch(
                "SELECT id, event, data, created_at, dispatched_at FROM outbox "
                "WHERE run_id = ? ORDER BY id",
                by_run,
            ),
            {"data"},
        ),
        approvals=_rows(
            await db.fetch("SELECT * FROM approvals WHERE run_id = ? ORDER BY created_at", by_run),
            {"body"},
        ),
        waits=_rows(await db.fetch("SELECT * FROM waits WHERE run_id = ?", by_run), set()),
        entity_calls=_rows(
            await db.fetch(
                "SELECT * FROM entity_outbox WHERE run_id = ? ORDER BY created_at", by_run
            ),
            {"request", "outcome", "error"},
        ),
        history=await history(db, run_id),
        retries=[
            r["run_id"]
            for r in await db.fetch(
                "SELECT run_id FROM runs WHERE retry_of = ? ORDER BY created_at", by_run
            )
        ],
    )


# ---------------------------------------------------------------------------- upgrades
async def unfinished_runs(db: Database, workflows: Sequence[str] | None) -> list[UnfinishedRun]:
    chosen = list(workflows) if workflows is not None else None
    rows = await db.fetch(
        "SELECT run_id, workflow, graph_hash, node, status, "
        "(SELECT group_concat(json_extract(c.value, '$[1]'), ' ') "
        "FROM json_each(runs.state, '$.comp') AS c) AS comp "
        "FROM runs WHERE status IN ('running', 'waiting')"
        + (f" AND workflow IN ({','.join('?' * len(chosen))})" if chosen is not None else "")
        + " ORDER BY run_id",
        chosen or (),
    )
    return [
        UnfinishedRun(
            r["run_id"],
            r["workflow"],
            r["graph_hash"],
            r["node"],
            r["status"],
            tuple((r["comp"] or "").split()),
        )
        for r in rows
    ]


async def repin_run(db: Database, repin: Repin) -> bool:
    def job(conn: sqlite3.Connection) -> bool:
        conn.execute(
            "INSERT INTO graphs(hash, name, body, created_at, module) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(hash) DO NOTHING",
            (repin.new_hash, repin.graph_name, repin.graph_body, repin.now, repin.module),
        )
        if repin.mac is not None:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                repin.mac,
            )
        changed = conn.execute(
            "UPDATE runs SET graph_hash = ?, node = ?, state = ?, updated_at = ? "
            "WHERE run_id = ? AND graph_hash = ? AND status = 'waiting' "
            "AND (lease_owner IS NULL OR lease_until < ?)",
            (
                repin.new_hash,
                repin.node,
                repin.state,
                repin.now,
                repin.run_id,
                repin.old_hash,
                repin.lease_now,
            ),
        ).rowcount
        if changed:
            _add_history(conn, repin.run_id, "upgraded", repin.note, repin.now)
        return bool(changed)

    return await db.write_on_thread(job)


async def graphs_with_prefix(db: Database, prefix: str) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT hash, body FROM graphs WHERE hash >= ? AND hash < ? ORDER BY hash",
        (prefix, prefix + "g"),
    )
    return [(r["hash"], r["body"]) for r in rows]


async def graph_hashes(db: Database, name: str, limit: int) -> list[str]:
    rows = await db.fetch(
        "SELECT hash FROM graphs WHERE name = ? ORDER BY created_at DESC LIMIT ?", (name, limit)
    )
    return [r["hash"] for r in rows]


# --------------------------------------------------------------------------- telemetry
async def set_trace(db: Database, run_id: str, traceparent: str) -> None:
    def job(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE runs SET trace = ? WHERE run_id = ? AND trace IS NULL", (traceparent, run_id)
        )

    await db.write_on_thread(job)


async def waiting_by_kind(db: Database) -> dict[str, int]:
    counts = dict.fromkeys(("approval", "event", "timer"), 0)
    for kind, count in await db.fetch(
        "SELECT CASE "
        "WHEN EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = runs.run_id "
        "AND a.status = 'pending') THEN 'approval' "
        "WHEN EXISTS (SELECT 1 FROM waits w WHERE w.run_id = runs.run_id "
        "AND w.event_id IS NULL) THEN 'event' ELSE 'timer' END AS kind, COUNT(*) "
        "FROM runs WHERE status = 'waiting' GROUP BY kind"
    ):
        counts[kind] = count
    return counts
