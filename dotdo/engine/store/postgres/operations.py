"""Operating a database on PostgreSQL: retries, run history, retention, exports, upgrades
and the reads telemetry makes (the "operations" section of the `Store` protocol).

Each write is one job of the group transaction (`Database.write`), so it is all-or-nothing;
reads use the readers' pool. Nothing here decodes a stored value: JSON columns come back as
their text (`::text`), parsed only for an export, as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

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
from dotdo.engine.store.postgres.database import Database
from dotdo.engine.store.postgres.runs import create_job

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

_ADD_HISTORY = "INSERT INTO history(run_id, kind, body, created_at) VALUES ($1, $2, $3::json, $4)"


# ---------------------------------------------------------------------------- retries
async def create_retry(db: Database, retry: RetryToCreate, graphs: set[str]) -> StartOutcome:
    new = retry.run
    create = create_job(db, new, graphs)

    async def job(conn: asyncpg.Connection) -> StartOutcome:
        outcome = await create(conn)
        if not outcome.created:
            return outcome
        await conn.execute(
            "UPDATE runs SET retry_of = $1 WHERE run_id = $2", retry.retry_of, new.run_id
        )
        await conn.executemany(
            "INSERT INTO steps(run_id, step_key, status, attempts, value, error, seq, "
            "started_at, finished_at) VALUES ($1, $2, $3, $4, $5::json, NULL, NULL, $6, $7) "
            "ON CONFLICT (run_id, step_key) DO NOTHING",
            [
                (new.run_id, s.key, REUSED, s.attempts, s.value, s.started_at, s.finished_at)
                for s in retry.reused
            ],
        )
        await conn.execute(_ADD_HISTORY, retry.retry_of, "retried", retry.note, new.now)
        await conn.execute(_ADD_HISTORY, new.run_id, "retry", retry.note, new.now)
        return outcome

    outcome = await db.write(job, notify=True)
    if outcome.created:
        graphs.add(new.graph_hash)
    return outcome


async def reused_results(db: Database, run_id: str) -> dict[str, str | None]:
    rows = await db.fetch(
        "SELECT step_key, value::text FROM steps WHERE run_id = $1 AND status = $2",
        run_id,
        REUSED,
    )
    return {r[0]: r[1] for r in rows}


async def history(db: Database, run_id: str) -> list[HistoryEntry]:
    rows = await db.fetch(
        "SELECT kind, body::text, created_at FROM history WHERE run_id = $1 ORDER BY id", run_id
    )
    return [HistoryEntry(r[0], r[1], r[2]) for r in rows]


# -------------------------------------------------------------------------- retention
def _where(where: PruneFilter, first: int) -> tuple[str, list[Any]]:
    """The filter as SQL, its parameters numbered from $first."""
    clauses, params = [f"status = ANY(${first}::text[])"], list[Any]([list(where.statuses)])
    if where.before is not None:
        clauses.append(f"updated_at < ${first + len(params)}")
        params.append(where.before)
    if where.workflow is not None:
        clauses.append(f"workflow = ${first + len(params)}")
        params.append(where.workflow)
    return " AND ".join(clauses), params


async def prunable_runs(db: Database, where: PruneFilter, limit: int) -> list[str]:
    sql, params = _where(where, 2)
    rows = await db.fetch(
        f"SELECT run_id FROM runs WHERE {sql} ORDER BY updated_at LIMIT $1", limit, *params
    )
    return [r[0] for r in rows]


_BY_RUN = (
    "DELETE FROM steps WHERE run_id = ANY($1::text[])",
    "DELETE FROM waits WHERE run_id = ANY($1::text[])",
    "DELETE FROM approvals WHERE run_id = ANY($1::text[]) AND status != 'pending'",
    "DELETE FROM entity_outbox WHERE run_id = ANY($1::text[]) AND delivered_at IS NOT NULL",
    "DELETE FROM outbox WHERE run_id = ANY($1::text[]) AND dispatched_at IS NOT NULL",
    "DELETE FROM history WHERE run_id = ANY($1::text[])",
    "DELETE FROM runs WHERE run_id = ANY($1::text[])",
)


async def delete_runs(db: Database, run_ids: Sequence[str], where: PruneFilter) -> list[str]:
    if not run_ids:
        return []
    sql, params = _where(where, 2)

    async def job(conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch(
            f"SELECT run_id FROM runs WHERE run_id = ANY($1::text[]) AND {sql} FOR UPDATE",
            list(run_ids),
            *params,
        )
        ids = [r[0] for r in rows]
        if ids:
            for statement in _BY_RUN:
                await conn.execute(statement, ids)
        return ids

    return await db.write(job, events=True)


async def prune_unowned(db: Database, before: float) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute("DELETE FROM entity_calls WHERE created_at < $1", before)
        await conn.execute(
            "DELETE FROM outbox WHERE run_id IS NULL AND dispatched_at IS NOT NULL "
            "AND created_at < $1 "
            "AND id NOT IN (SELECT event_id FROM waits WHERE event_id > 0)",
            before,
        )

    await db.write(job, events=True)


# ----------------------------------------------------------------------------- export
def _parsed(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return value


def _rows(rows: Sequence[Any], json_columns: set[str]) -> list[dict[str, Any]]:
    return [{k: _parsed(v) if k in json_columns else v for k, v in r.items()} for r in rows]


_RUN = (
    "SELECT run_id, workflow, graph_hash, entity_id, status, node, state::text AS state, "
    "input::text AS input, result::text AS result, error::text AS error, wake_at, "
    "lease_owner, lease_until, cancel_requested, steps_done, created_at, updated_at, "
    "lease_epoch, retry_of, trace FROM runs WHERE run_id = $1"
)


async def export_run(db: Database, run_id: str) -> RunExport | None:
    row = await db.fetch_one(_RUN, run_id)
    if row is None:
        return None
    graph = await db.fetch_one(
        "SELECT hash, name, module, created_at FROM graphs WHERE hash = $1", row["graph_hash"]
    )
    return RunExport(
        run=_rows([row], {"state", "input", "result", "error"})[0],
        graph=dict(graph.items()) if graph is not None else None,
        steps=_rows(
            await db.fetch(
                "SELECT run_id, step_key, status, attempts, value::text AS value, "
                "error::text AS error, seq, started_at, finished_at FROM steps "
                "WHERE run_id = $1 ORDER BY seq IS NULL, seq, started_at",
                run_id,
            ),
            {"value", "error"},
        ),
        events=_rows(
            await db.fetch(
                "SELECT id, event, data::text AS data, created_at, dispatched_at FROM outbox "
                "WHERE run_id = $1 ORDER BY id",
                run_id,
            ),
            {"data"},
        ),
        approvals=_rows(
            await db.fetch(
                "SELECT id, run_id, status, approver, deadline, body::text AS body, "
                "created_at, updated_at FROM approvals WHERE run_id = $1 ORDER BY created_at",
                run_id,
            ),
            {"body"},
        ),
        waits=_rows(
            await db.fetch(
                "SELECT run_id, step_key, event, match::text AS match, since, event_id "
                "FROM waits WHERE run_id = $1",
                run_id,
            ),
            set(),
        ),
        entity_calls=_rows(
            await db.fetch(
                "SELECT call_id, cls, request::text AS request, run_id, step_key, created_at, "
                "next_try, attempts, delivered_at, outcome, error FROM entity_outbox "
                "WHERE run_id = $1 ORDER BY created_at",
                run_id,
            ),
            {"request", "outcome", "error"},
        ),
        history=await history(db, run_id),
        retries=[
            r[0]
            for r in await db.fetch(
                "SELECT run_id FROM runs WHERE retry_of = $1 ORDER BY created_at", run_id
            )
        ],
    )


# ---------------------------------------------------------------------------- upgrades
async def unfinished_runs(db: Database, workflows: Sequence[str] | None) -> list[UnfinishedRun]:
    sql = (
        "SELECT run_id, workflow, graph_hash, node, status, "
        "(SELECT string_agg(c.value->>1, ' ' ORDER BY c.n) "
        "FROM json_array_elements(runs.state->'comp') WITH ORDINALITY AS c(value, n)) "
        "FROM runs WHERE status IN ('running', 'waiting')"
    )
    args: list[Any] = []
    if workflows is not None:
        sql += " AND workflow = ANY($1::text[])"
        args.append(list(workflows))
    rows = await db.fetch(sql + " ORDER BY run_id", *args)
    return [UnfinishedRun(r[0], r[1], r[2], r[3], r[4], tuple((r[5] or "").split())) for r in rows]


async def repin_run(db: Database, repin: Repin) -> bool:
    async def job(conn: asyncpg.Connection) -> bool:
        await conn.execute(
            "INSERT INTO graphs(hash, name, body, created_at, module) "
            "VALUES ($1, $2, $3::json, $4, $5) ON CONFLICT (hash) DO NOTHING",
            repin.new_hash,
            repin.graph_name,
            repin.graph_body,
            repin.now,
            repin.module,
        )
        if repin.mac is not None:
            await conn.execute(
                "INSERT INTO meta(key, value) VALUES ($1, $2) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                *repin.mac,
            )
        moved = await conn.fetchval(
            "UPDATE runs SET graph_hash = $1, node = $2, state = $3::json, updated_at = $4 "
            "WHERE run_id = $5 AND graph_hash = $6 AND status = 'waiting' "
            "AND (lease_owner IS NULL OR lease_until < $7) RETURNING 1",
            repin.new_hash,
            repin.node,
            repin.state,
            repin.now,
            repin.run_id,
            repin.old_hash,
            repin.lease_now,
        )
        if moved:
            await conn.execute(_ADD_HISTORY, repin.run_id, "upgraded", repin.note, repin.now)
        return bool(moved)

    return await db.write(job)


async def graphs_with_prefix(db: Database, prefix: str) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT hash, body::text FROM graphs WHERE hash >= $1 AND hash < $2 ORDER BY hash",
        prefix,
        prefix + "g",
    )
    return [(r[0], r[1]) for r in rows]


async def graph_hashes(db: Database, name: str, limit: int) -> list[str]:
    rows = await db.fetch(
        "SELECT hash FROM graphs WHERE name = $1 ORDER BY created_at DESC LIMIT $2", name, limit
    )
    return [r[0] for r in rows]


# --------------------------------------------------------------------------- telemetry
async def set_trace(db: Database, run_id: str, traceparent: str) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE runs SET trace = $1 WHERE run_id = $2 AND trace IS NULL", traceparent, run_id
        )

    await db.write(job)


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
