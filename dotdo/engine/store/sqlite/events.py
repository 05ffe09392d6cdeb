"""Events and the waits for them on SQLite: the outbox, subscriptions, delivery cursors.

The outbox is both the log of events (sent by runs or from outside) and each run's inbox: a
wait takes an event by recording its id (`waits.event_id`), once per run, in the same
transaction that wakes the run. Which event fits a wait is the engine's rule (`fits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite

from dotdo.engine.store.interface import EventFilter, Lease, StoredEvent, StoredWait, Waker
from dotdo.engine.store.sqlite.connection import Database
from dotdo.engine.store.sqlite.runs import wake
from dotdo.errors import LeaseLost

__all__ = [
    "advance_cursor",
    "check_lease",
    "cursor",
    "deliver_to_waits",
    "event",
    "events_after",
    "fitting_events",
    "newest_event_id",
    "open_wait",
    "publish",
    "sent_events",
    "subscribe",
    "time_out_wait",
    "wait",
]

_EVENT = "SELECT id, event, data, created_at, run_id FROM outbox"
_WAIT = "SELECT run_id, step_key, event, match, since, event_id FROM waits"


def _event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(id=int(row[0]), name=row[1], data=row[2], created_at=row[3], run_id=row[4])


def _wait(row: Sequence[Any]) -> StoredWait:
    return StoredWait(*row)


async def check_lease(conn: aiosqlite.Connection, owner: str, lease: Lease) -> None:
    rows = list(
        await conn.execute_fetchall(
            "SELECT 1 FROM runs WHERE run_id = ? AND lease_owner = ? AND lease_epoch = ?",
            (lease.run_id, owner, lease.epoch),
        )
    )
    if not rows:
        raise LeaseLost(f"run {lease.run_id!r} is owned elsewhere")


# --------------------------------------------------------------------------- waits
async def subscribe(
    db: Database, lease: Lease, key: str, name: str, match: str | None, fits: EventFilter
) -> StoredEvent | None:
    run_id = lease.run_id

    async def job(conn: aiosqlite.Connection) -> StoredEvent | None:
        await check_lease(conn, db.owner, lease)
        rows = list(
            await conn.execute_fetchall("SELECT created_at FROM runs WHERE run_id = ?", (run_id,))
        )
        since = rows[0][0] if rows else 0.0
        # This wait may have taken an event already and its process died before the run's
        # next checkpoint (the run was stored at an earlier node, so it replays up to here).
        # That event is the wait's; the search below would skip it as consumed.
        taken = list(
            await conn.execute_fetchall(
                f"{_EVENT} WHERE id = (SELECT event_id FROM waits WHERE run_id = ? "
                "AND step_key = ? AND event_id > 0)",
                (run_id, key),
            )
        )
        if taken:
            return _event(taken[0])
        await conn.execute(
            "INSERT INTO waits(run_id, step_key, event, match, since) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(run_id, step_key) DO NOTHING",
            (run_id, key, name, match, since),
        )
        candidates = await conn.execute_fetchall(
            f"{_EVENT} WHERE event = ? AND created_at >= ? AND id NOT IN "
            "(SELECT event_id FROM waits WHERE run_id = ? AND event_id IS NOT NULL) ORDER BY id",
            (name, since, run_id),
        )
        for row in candidates:
            record = _event(row)
            if fits(record, match):
                await conn.execute(
                    "UPDATE waits SET event_id = ? WHERE run_id = ? AND step_key = ?",
                    (record.id, run_id, key),
                )
                return record
        return None

    return await db.write(job)


async def wait(db: Database, run_id: str, key: str) -> StoredWait | None:
    row = await db.fetch_one(f"{_WAIT} WHERE run_id = ? AND step_key = ?", (run_id, key))
    return None if row is None else _wait(row)


async def open_wait(db: Database, run_id: str) -> StoredWait | None:
    row = await db.fetch_one(f"{_WAIT} WHERE run_id = ? AND event_id IS NULL", (run_id,))
    return None if row is None else _wait(row)


async def time_out_wait(db: Database, lease: Lease, key: str) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        await check_lease(conn, db.owner, lease)
        await conn.execute(
            "UPDATE waits SET event_id = -1 WHERE run_id = ? AND step_key = ? AND event_id IS NULL",
            (lease.run_id, key),
        )

    await db.write(job)


async def fitting_events(db: Database, run_id: str, name: str, since: float) -> list[StoredEvent]:
    rows = await db.fetch(
        f"{_EVENT} WHERE event = ? AND created_at >= ? AND id NOT IN "
        "(SELECT event_id FROM waits WHERE run_id = ? AND event_id IS NOT NULL) ORDER BY id",
        (name, since, run_id),
    )
    return [_event(r) for r in rows]


# -------------------------------------------------------------------------- events
async def publish(db: Database, name: str, data: str, now: float) -> int:
    async def job(conn: aiosqlite.Connection) -> int:
        cursor = await conn.execute(
            "INSERT INTO outbox(run_id, event, data, created_at) VALUES (NULL, ?, ?, ?)",
            (name, data, now),
        )
        return int(cursor.lastrowid or 0)

    return await db.write(job)


async def event(db: Database, event_id: int) -> StoredEvent | None:
    row = await db.fetch_one(f"{_EVENT} WHERE id = ?", (event_id,))
    return None if row is None else _event(row)


async def newest_event_id(db: Database) -> int:
    row = await db.fetch_one("SELECT MAX(id) FROM outbox")
    return int((row[0] if row else None) or 0)


async def events_after(db: Database, last_id: int, limit: int) -> list[StoredEvent]:
    rows = await db.fetch(f"{_EVENT} WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit))
    return [_event(r) for r in rows]


async def sent_events(db: Database, run_id: str | None) -> list[StoredEvent]:
    if run_id is None:
        rows = await db.fetch(f"{_EVENT} ORDER BY id")
    else:
        rows = await db.fetch(f"{_EVENT} WHERE run_id = ? ORDER BY id", (run_id,))
    return [_event(r) for r in rows]


async def deliver_to_waits(db: Database, fits: EventFilter, waker: Waker) -> list[Lease]:
    async def job(conn: aiosqlite.Connection) -> list[Lease]:
        rows = list(await conn.execute_fetchall("SELECT last_id FROM cursors WHERE name = 'waits'"))
        last = rows[0][0] if rows else 0
        events = [
            _event(r)
            for r in await conn.execute_fetchall(
                f"{_EVENT} WHERE id > ? ORDER BY id LIMIT 1000", (last,)
            )
        ]
        woken: list[Lease] = []
        for record in events:
            waits = await conn.execute_fetchall(
                "SELECT run_id, step_key, match, since FROM waits WHERE event = ? "
                "AND event_id IS NULL",
                (record.name,),
            )
            # A run takes an event once, as its inbox does: one of its waits may have taken
            # this one already (from the inbox, before the dispatcher got to it).
            taken = {
                r[0]
                for r in await conn.execute_fetchall(
                    "SELECT run_id FROM waits WHERE event_id = ?", (record.id,)
                )
            }
            for run_id, key, match, since in waits:
                if run_id in taken or record.created_at < since:
                    continue
                if not fits(record, match):
                    continue
                taken.add(run_id)
                await conn.execute(
                    "UPDATE waits SET event_id = ? WHERE run_id = ? AND step_key = ? "
                    "AND event_id IS NULL",
                    (record.id, run_id, key),
                )
                lease = await wake(conn, db.owner, run_id, waker)
                if lease is not None:
                    woken.append(lease)
        if events:
            await _advance(conn, "waits", events[-1].id)
        return woken

    return await db.write(job)


# ------------------------------------------------------------------------- cursors
async def cursor(db: Database, name: str) -> int:
    row = await db.fetch_one("SELECT last_id FROM cursors WHERE name = ?", (name,))
    return int(row[0]) if row is not None else 0


async def _advance(conn: aiosqlite.Connection, name: str, last_id: int) -> None:
    await conn.execute(
        "INSERT INTO cursors(name, last_id) VALUES (?, ?) ON CONFLICT(name) "
        "DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
        (name, last_id),
    )


async def advance_cursor(db: Database, name: str, last_id: int) -> None:
    await db.write(lambda conn: _advance(conn, name, last_id))
