"""Events and waits on PostgreSQL: the outbox, subscriptions, delivery, handler cursors.

Every write here that appends an event, registers a wait or hands events to waits holds
`EVENTS_LOCK` for its transaction (see database.py): with many workers, that is what keeps
event ids committing in order and a new wait from missing an event delivered elsewhere.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from dotdo.engine.store.interface import EventFilter, Lease, StoredEvent, StoredWait, Waker
from dotdo.engine.store.postgres.database import Database
from dotdo.engine.store.postgres.runs import wake
from dotdo.errors import LeaseLost

__all__ = [
    "advance_cursor",
    "cursor",
    "deliver_to_waits",
    "event",
    "events_after",
    "fitting_events",
    "held",
    "newest_event_id",
    "open_wait",
    "publish",
    "sent_events",
    "subscribe",
    "time_out_wait",
    "wait",
]

_EVENT = "id, event, data::text, created_at, run_id"
_WAIT = "run_id, step_key, event, match::text, since, event_id"


def _event(row: Any) -> StoredEvent:
    return StoredEvent(int(row[0]), row[1], row[2], row[3], row[4])


def _wait(row: Any) -> StoredWait:
    return StoredWait(row[0], row[1], row[2], row[3], row[4], row[5])


async def held(conn: asyncpg.Connection, owner: str, lease: Lease) -> float:
    """The run's creation time if `owner` still holds `lease` (locked), else LeaseLost."""
    created = await conn.fetchval(
        "SELECT created_at FROM runs WHERE run_id = $1 AND lease_owner = $2 "
        "AND lease_epoch = $3 FOR UPDATE",
        lease.run_id,
        owner,
        lease.epoch,
    )
    if created is None:
        raise LeaseLost(f"run {lease.run_id!r} is owned elsewhere")
    return float(created)


async def subscribe(
    db: Database, lease: Lease, key: str, name: str, match: str | None, fits: EventFilter
) -> StoredEvent | None:
    run_id = lease.run_id

    async def job(conn: asyncpg.Connection) -> StoredEvent | None:
        since = await held(conn, db.owner, lease)
        taken = await conn.fetchrow(
            f"SELECT {_EVENT} FROM outbox WHERE id = (SELECT event_id FROM waits "
            "WHERE run_id = $1 AND step_key = $2 AND event_id > 0)",
            run_id,
            key,
        )
        if taken is not None:
            return _event(taken)
        await conn.execute(
            "INSERT INTO waits(run_id, step_key, event, match, since) "
            "VALUES ($1, $2, $3, $4::json, $5) ON CONFLICT (run_id, step_key) DO NOTHING",
            run_id,
            key,
            name,
            match,
            since,
        )
        candidates = await conn.fetch(
            f"SELECT {_EVENT} FROM outbox WHERE event = $1 AND created_at >= $2 "
            "AND id NOT IN (SELECT event_id FROM waits WHERE run_id = $3 "
            "AND event_id IS NOT NULL) ORDER BY id",
            name,
            since,
            run_id,
        )
        for row in candidates:
            record = _event(row)
            if fits(record, match):
                await conn.execute(
                    "UPDATE waits SET event_id = $1 WHERE run_id = $2 AND step_key = $3",
                    record.id,
                    run_id,
                    key,
                )
                return record
        return None

    return await db.write(job, events=True)


async def wait(db: Database, run_id: str, key: str) -> StoredWait | None:
    row = await db.fetch_one(
        f"SELECT {_WAIT} FROM waits WHERE run_id = $1 AND step_key = $2", run_id, key
    )
    return None if row is None else _wait(row)


async def open_wait(db: Database, run_id: str) -> StoredWait | None:
    row = await db.fetch_one(
        f"SELECT {_WAIT} FROM waits WHERE run_id = $1 AND event_id IS NULL "
        "ORDER BY since, step_key LIMIT 1",
        run_id,
    )
    return None if row is None else _wait(row)


async def time_out_wait(db: Database, lease: Lease, key: str) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await held(conn, db.owner, lease)
        await conn.execute(
            "UPDATE waits SET event_id = -1 WHERE run_id = $1 AND step_key = $2 "
            "AND event_id IS NULL",
            lease.run_id,
            key,
        )

    await db.write(job, events=True)


async def fitting_events(db: Database, run_id: str, name: str, since: float) -> list[StoredEvent]:
    rows = await db.fetch(
        f"SELECT {_EVENT} FROM outbox WHERE event = $1 AND created_at >= $2 "
        "AND id NOT IN (SELECT event_id FROM waits WHERE run_id = $3 "
        "AND event_id IS NOT NULL) ORDER BY id",
        name,
        since,
        run_id,
    )
    return [_event(r) for r in rows]


async def publish(db: Database, name: str, data: str, now: float) -> int:
    async def job(conn: asyncpg.Connection) -> int:
        value = await conn.fetchval(
            "INSERT INTO outbox(run_id, event, data, created_at) VALUES (NULL, $1, $2::json, $3) "
            "RETURNING id",
            name,
            data,
            now,
        )
        return int(value)

    return await db.write(job, notify=True, events=True)


async def event(db: Database, event_id: int) -> StoredEvent | None:
    row = await db.fetch_one(f"SELECT {_EVENT} FROM outbox WHERE id = $1", event_id)
    return None if row is None else _event(row)


async def newest_event_id(db: Database) -> int:
    value = await db.fetch_value("SELECT max(id) FROM outbox")
    return int(value or 0)


async def events_after(db: Database, last_id: int, limit: int) -> list[StoredEvent]:
    rows = await db.fetch(
        f"SELECT {_EVENT} FROM outbox WHERE id > $1 ORDER BY id LIMIT $2", last_id, limit
    )
    return [_event(r) for r in rows]


async def sent_events(db: Database, run_id: str | None) -> list[StoredEvent]:
    rows = await db.fetch(
        f"SELECT {_EVENT} FROM outbox WHERE $1::text IS NULL OR run_id = $1 ORDER BY id", run_id
    )
    return [_event(r) for r in rows]


async def deliver_to_waits(db: Database, fits: EventFilter, waker: Waker) -> list[Lease]:
    async def job(conn: asyncpg.Connection) -> list[Lease]:
        last = await conn.fetchval("SELECT last_id FROM cursors WHERE name = 'waits'") or 0
        events = [
            _event(r)
            for r in await conn.fetch(
                f"SELECT {_EVENT} FROM outbox WHERE id > $1 ORDER BY id LIMIT 1000", last
            )
        ]
        leases: list[Lease] = []
        for item in events:
            waits = await conn.fetch(
                "SELECT run_id, step_key, match::text, since FROM waits WHERE event = $1 "
                "AND event_id IS NULL ORDER BY since, run_id, step_key",
                item.name,
            )
            # A run takes an event once: one of its waits may have taken it already.
            taken = {
                r[0]
                for r in await conn.fetch("SELECT run_id FROM waits WHERE event_id = $1", item.id)
            }
            for run_id, key, match, since in waits:
                if run_id in taken or item.created_at < since or not fits(item, match):
                    continue
                taken.add(run_id)
                await conn.execute(
                    "UPDATE waits SET event_id = $1 WHERE run_id = $2 AND step_key = $3 "
                    "AND event_id IS NULL",
                    item.id,
                    run_id,
                    key,
                )
                lease = await wake(conn, db, run_id, waker)
                if lease is not None:
                    leases.append(lease)
        if events:
            await _advance(conn, "waits", events[-1].id)
        return leases

    return await db.write(job, events=True)


async def cursor(db: Database, name: str) -> int:
    value = await db.fetch_value("SELECT last_id FROM cursors WHERE name = $1", name)
    return int(value or 0)


async def advance_cursor(db: Database, name: str, last_id: int) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await _advance(conn, name, last_id)

    await db.write(job)


async def _advance(conn: asyncpg.Connection, name: str, last_id: int) -> None:
    await conn.execute(
        "INSERT INTO cursors(name, last_id) VALUES ($1, $2) ON CONFLICT (name) "
        "DO UPDATE SET last_id = GREATEST(cursors.last_id, excluded.last_id)",
        name,
        last_id,
    )
