"""Entities on SQLite: each hosted instance's state and version, applied calls by call id,
and the outbox of fire-and-forget calls.

An applied call is one transaction: a versioned state save (optimistic concurrency), the
call's result under its id (so a repeat is answered, not applied again) and its sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite

from dotdo.engine.store.interface import (
    AppliedCall,
    CallRecord,
    CommitOutcome,
    EntitySend,
    PendingSend,
    SendRecord,
    StoredEntity,
)
from dotdo.engine.store.sqlite.connection import Database
from dotdo.engine.store.sqlite.events import check_lease

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
    "SELECT c.result, c.cls, c.id, c.chain, c.digest, e.state, e.version "
    "FROM (SELECT ? AS call_id, ? AS cls, ? AS id) AS k "
    "LEFT JOIN entity_calls AS c ON c.call_id = k.call_id "
    "LEFT JOIN entities AS e ON e.cls = k.cls AND e.id = k.id"
)
"""A call's recorded result (if it was applied) and the instance's state, in one read."""


def _record(call_id: str, row: Sequence[Any]) -> CallRecord:
    result, cls, key, chain, digest = row
    return CallRecord(call_id=call_id, cls=cls, id=key, chain=chain, digest=digest, result=result)


async def entity_state(db: Database, cls: str, entity_id: str) -> str | None:
    row = await db.fetch_one(
        "SELECT state FROM entities WHERE cls = ? AND id = ?", (cls, entity_id)
    )
    return None if row is None else str(row[0])


async def recorded_calls(db: Database, call_ids: Sequence[str]) -> list[CallRecord]:
    found: list[CallRecord] = []
    for start in range(0, len(call_ids), 500):
        chunk = list(call_ids[start : start + 500])
        rows = await db.fetch(
            "SELECT call_id, result, cls, id, chain, digest FROM entity_calls WHERE call_id IN "
            f"({', '.join('?' * len(chunk))})",
            chunk,
        )
        found.extend(_record(r[0], tuple(r)[1:]) for r in rows)
    return found


async def load_call(
    db: Database, call_id: str, cls: str, entity_id: str
) -> tuple[CallRecord | None, StoredEntity | None]:
    row = await db.fetch_one(_LOAD, (call_id, cls, entity_id))
    assert row is not None
    record = None if row[0] is None else _record(call_id, tuple(row)[:5])
    entity = None if row[6] is None else StoredEntity(state=row[5], version=int(row[6]))
    return record, entity


async def commit_call(db: Database, call: AppliedCall) -> CommitOutcome:
    async def job(conn: aiosqlite.Connection) -> CommitOutcome:
        rows = list(
            await conn.execute_fetchall(
                "SELECT result, cls, id, chain, digest FROM entity_calls WHERE call_id = ?",
                (call.call_id,),
            )
        )
        if rows:
            return _record(call.call_id, rows[0])
        if call.version is None:
            cursor = await conn.execute(
                "INSERT INTO entities(cls, id, state, version, updated_at) VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT(cls, id) DO NOTHING",
                (call.cls, call.id, call.state, call.now),
            )
        else:
            cursor = await conn.execute(
                "UPDATE entities SET state = ?, version = version + 1, updated_at = ? "
                "WHERE cls = ? AND id = ? AND version = ?",
                (call.state, call.now, call.cls, call.id, call.version),
            )
        if cursor.rowcount != 1:
            return "conflict"
        await conn.execute(
            "INSERT INTO entity_calls(call_id, cls, id, result, created_at, chain, digest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (call.call_id, call.cls, call.id, call.result, call.now, call.chain, call.digest),
        )
        if call.sends:
            await conn.executemany(
                "INSERT INTO entity_outbox(call_id, cls, request, run_id, step_key, created_at, "
                "next_try) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(call_id) DO NOTHING",
                [_send_row(s) for s in call.sends],
            )
        return "applied"

    return await db.write(job)


def _send_row(send: EntitySend) -> tuple[Any, ...]:
    return (send.call_id, send.cls, send.request, send.run_id, send.step_key, send.now, send.now)


async def enqueue_send(db: Database, send: EntitySend) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        if send.lease is not None:
            await check_lease(conn, db.owner, send.lease)
        await conn.execute(
            "INSERT INTO entity_outbox(call_id, cls, request, run_id, step_key, created_at, "
            "next_try) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(call_id) DO NOTHING",
            _send_row(send),
        )

    await db.write(job)


async def due_sends(db: Database, now: float, limit: int) -> list[PendingSend]:
    rows = await db.fetch(
        "SELECT call_id, cls, request, run_id, step_key, attempts FROM entity_outbox "
        "WHERE delivered_at IS NULL AND next_try <= ? ORDER BY created_at, call_id LIMIT ?",
        (now, limit),
    )
    return [PendingSend(*r) for r in rows]


async def retry_send(
    db: Database, call_id: str, attempts: int, next_try: float, error: str
) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "UPDATE entity_outbox SET attempts = ?, next_try = ?, error = ? WHERE call_id = ?",
            (attempts, next_try, error, call_id),
        )

    await db.write(job)


async def settle_send(
    db: Database, call_id: str, outcome: str, error: str | None, now: float
) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "UPDATE entity_outbox SET delivered_at = ?, outcome = ?, error = ? WHERE call_id = ?",
            (now, outcome, error, call_id),
        )

    await db.write(job)


async def entity_sends(db: Database) -> list[SendRecord]:
    rows = await db.fetch(
        "SELECT call_id, cls, run_id, step_key, attempts, delivered_at, outcome, error "
        "FROM entity_outbox ORDER BY created_at, call_id"
    )
    return [SendRecord(*r) for r in rows]


async def prune_calls(db: Database, before: float) -> int:
    async def job(conn: aiosqlite.Connection) -> int:
        cursor = await conn.execute("DELETE FROM entity_calls WHERE created_at < ?", (before,))
        return int(cursor.rowcount)

    return await db.write(job)
