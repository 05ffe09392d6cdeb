"""Entities on PostgreSQL: each hosted instance's state and version, applied calls by call
id, and the outbox of fire-and-forget calls.

One writer per instance across every worker and machine comes from the version check: an
applied call updates the instance's row only `WHERE version = <the version it read>`. Two
workers applying calls to one instance at once both reach that UPDATE; PostgreSQL makes the
second wait on the first's row lock, then re-checks the version and updates nothing, so the
second answers "conflict" and its call runs again on the new state. No call is lost or
applied twice; no `dotdo serve` is needed between workers sharing the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from dotdo.engine.store.interface import (
    AppliedCall,
    CallRecord,
    CommitOutcome,
    EntitySend,
    PendingSend,
    SendRecord,
    StoredEntity,
)
from dotdo.engine.store.postgres.database import Database
from dotdo.engine.store.postgres.events import held

__all__ = [
    "commit_call",
    "due_sends",
    "enqueue_send",
    "entity_sends",
    "entity_state",
    "load_call",
    "prune_calls",
    "recorded_calls",
    "retry_send",
    "settle_send",
]

_LOAD = (
    "SELECT c.result::text, c.cls, c.id, c.chain, c.digest, e.state::text, e.version "
    "FROM (SELECT $1::text AS call_id, $2::text AS cls, $3::text AS id) AS k "
    "LEFT JOIN entity_calls AS c ON c.call_id = k.call_id "
    "LEFT JOIN entities AS e ON e.cls = k.cls AND e.id = k.id"
)
_SEND = (
    "INSERT INTO entity_outbox(call_id, cls, request, run_id, step_key, created_at, next_try) "
    "VALUES ($1, $2, $3::json, $4, $5, $6, $6) ON CONFLICT (call_id) DO NOTHING"
)


def _record(call_id: str, row: Sequence[Any]) -> CallRecord:
    result, cls, key, chain, digest = row
    return CallRecord(call_id=call_id, cls=cls, id=key, chain=chain, digest=digest, result=result)


def _send_args(send: EntitySend) -> tuple[Any, ...]:
    return (send.call_id, send.cls, send.request, send.run_id, send.step_key, send.now)


async def entity_state(db: Database, cls: str, entity_id: str) -> str | None:
    value = await db.fetch_value(
        "SELECT state::text FROM entities WHERE cls = $1 AND id = $2", cls, entity_id
    )
    return None if value is None else str(value)


async def recorded_calls(db: Database, call_ids: Sequence[str]) -> list[CallRecord]:
    rows = await db.fetch(
        "SELECT call_id, result::text, cls, id, chain, digest FROM entity_calls "
        "WHERE call_id = ANY($1::text[])",
        list(call_ids),
    )
    return [_record(r[0], tuple(r)[1:]) for r in rows]


async def load_call(
    db: Database, call_id: str, cls: str, entity_id: str
) -> tuple[CallRecord | None, StoredEntity | None]:
    row = await db.fetch_one(_LOAD, call_id, cls, entity_id)
    assert row is not None
    record = None if row[0] is None else _record(call_id, tuple(row)[:5])
    entity = None if row[6] is None else StoredEntity(state=row[5], version=int(row[6]))
    return record, entity


async def commit_call(db: Database, call: AppliedCall) -> CommitOutcome:
    async def job(conn: asyncpg.Connection) -> CommitOutcome:
        found = await conn.fetchrow(
            "SELECT result::text, cls, id, chain, digest FROM entity_calls WHERE call_id = $1",
            call.call_id,
        )
        if found is not None:
            return _record(call.call_id, tuple(found))
        if call.version is None:
            done = await conn.fetchval(
                "INSERT INTO entities(cls, id, state, version, updated_at) "
                "VALUES ($1, $2, $3::json, 1, $4) ON CONFLICT (cls, id) DO NOTHING RETURNING 1",
                call.cls,
                call.id,
                call.state,
                call.now,
            )
        else:
            done = await conn.fetchval(
                "UPDATE entities SET state = $1::json, version = version + 1, updated_at = $2 "
                "WHERE cls = $3 AND id = $4 AND version = $5 RETURNING 1",
                call.state,
                call.now,
                call.cls,
                call.id,
                call.version,
            )
        if done is None:
            return "conflict"
        inserted = await conn.fetchval(
            "INSERT INTO entity_calls(call_id, cls, id, result, created_at, chain, digest) "
            "VALUES ($1, $2, $3, $4::json, $5, $6, $7) ON CONFLICT (call_id) DO NOTHING "
            "RETURNING 1",
            call.call_id,
            call.cls,
            call.id,
            call.result,
            call.now,
            call.chain,
            call.digest,
        )
        if inserted is None:  # recorded by another worker meanwhile (another instance)
            raise asyncpg.SerializationError("call id recorded concurrently; try again")
        if call.sends:
            await conn.executemany(_SEND, [_send_args(s) for s in call.sends])
            await db.notify(conn)
        return "applied"

    return await db.write(job)


async def enqueue_send(db: Database, send: EntitySend) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        if send.lease is not None:  # queued by a running step: fenced by its run's lease
            await held(conn, db.owner, send.lease)
        await conn.execute(_SEND, *_send_args(send))
        await db.notify(conn)

    await db.write(job)


async def due_sends(db: Database, now: float, limit: int) -> list[PendingSend]:
    rows = await db.fetch(
        "SELECT call_id, cls, request::text, run_id, step_key, attempts FROM entity_outbox "
        "WHERE delivered_at IS NULL AND next_try <= $1 ORDER BY created_at, call_id LIMIT $2",
        now,
        limit,
    )
    return [PendingSend(*r) for r in rows]


async def retry_send(
    db: Database, call_id: str, attempts: int, next_try: float, error: str
) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE entity_outbox SET attempts = $1, next_try = $2, error = $3 WHERE call_id = $4",
            attempts,
            next_try,
            error,
            call_id,
        )

    await db.write(job)


async def settle_send(
    db: Database, call_id: str, outcome: str, error: str | None, now: float
) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE entity_outbox SET delivered_at = $1, outcome = $2, error = $3 "
            "WHERE call_id = $4",
            now,
            outcome,
            error,
            call_id,
        )

    await db.write(job)


async def entity_sends(db: Database) -> list[SendRecord]:
    rows = await db.fetch(
        "SELECT call_id, cls, run_id, step_key, attempts, delivered_at, outcome, error "
        "FROM entity_outbox ORDER BY created_at, call_id"
    )
    return [SendRecord(*r) for r in rows]


async def prune_calls(db: Database, before: float) -> int:
    async def job(conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(
            "DELETE FROM entity_calls WHERE created_at < $1 RETURNING 1", before
        )
        return len(rows)

    return await db.write(job)
