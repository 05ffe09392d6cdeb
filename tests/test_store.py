"""The SQLite store facing bad input: locked, corrupt, foreign or newer databases, and what a
good one holds (plain JSON, WAL, the requested synchronous level).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from pydantic import BaseModel

from dotdo import DO, Engine, StoreError, workflow
from dotdo.engine.store.sqlite import SCHEMA_VERSION


def _live_connections() -> list[aiosqlite.Connection]:
    gc.collect()
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, aiosqlite.Connection) and obj._thread.is_alive()
    ]


@pytest.fixture(autouse=True)
async def _stop_leaked_sqlite_threads() -> AsyncIterator[None]:
    """A failed open can leave an aiosqlite worker thread still stopping;
    a live non-daemon thread would keep pytest from exiting, so stop any left over."""
    yield
    for conn in _live_connections():
        # A thread that is already stopping (aiosqlite stops it when connect fails) exits
        # on its own sentinel and never answers this second stop: join, don't await it.
        future = conn.stop()
        conn._thread.join(5)
        if future is not None and not future.done():
            future.cancel()


def _worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


class Parcel(BaseModel):
    sku: str
    weight: float


class Shipping(DO):
    async def weigh(self, parcel: Parcel) -> Parcel:
        return Parcel(sku=parcel.sku, weight=parcel.weight * 2)

    @workflow
    async def ship(self, parcel: Parcel) -> dict[str, Any]:
        heavier = await self.do(self.weigh, parcel, step_id="weigh")
        self.send("Parcel.shipped", {"sku": heavier.sku})
        return {"parcel": heavier, "tags": ("a", "b"), "ok": True}


async def _make_dotdo_db(path: Path) -> None:
    async with Engine(path) as engine:
        handle = await engine.start(Shipping.ship, Parcel(sku="x", weight=1.0), run_id="s1")
        await handle.result(timeout=5)


# ------------------------------------------------------------------ refused
async def test_locked_database_is_a_clear_store_error(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    await _make_dotdo_db(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    engine = Engine(db).register(Shipping)
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match="locked") as raised:
            await engine.open()
        assert time.monotonic() - started < 10  # the 5 s busy timeout, then a clear error
        assert str(db) in str(raised.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await engine.close()


async def test_failed_async_with_leaves_no_tasks_behind(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    await _make_dotdo_db(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    before = set(asyncio.all_tasks())
    leftover: list[asyncio.Task[Any]] = []
    try:
        with pytest.raises(StoreError):
            async with Engine(db).register(Shipping):
                pass
        await asyncio.sleep(0.05)
        leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert [t.get_name() for t in leftover] == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)


async def test_corrupt_file_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(random.Random(7).randbytes(64 * 1024))
    before = db.read_bytes()
    with pytest.raises(StoreError, match="not a usable database"):
        async with Engine(db):
            pass
    assert db.read_bytes() == before


async def test_failed_open_leaves_no_connection_thread(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(random.Random(8).randbytes(64 * 1024))
    before = _worker_threads()
    with pytest.raises(StoreError):
        async with Engine(db):
            pass
    deadline = time.monotonic() + 1.0
    while _worker_threads() - before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not _worker_threads() - before, "an sqlite worker thread outlived the failed open"


def _foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers(name) VALUES ('ada'), ('grace')")
    conn.close()


async def test_another_apps_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    _foreign_db(db)
    with pytest.raises(StoreError, match="not a dotdo"):
        async with Engine(db):
            pass
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        names = [r[0] for r in conn.execute("SELECT name FROM customers ORDER BY id")]
    conn.close()
    assert tables == {"customers"}  # no dotdo table was added
    assert names == ["ada", "grace"]


async def test_another_apps_database_is_left_byte_for_byte_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    _foreign_db(db)
    before = db.read_bytes()
    with pytest.raises(StoreError):
        async with Engine(db):
            pass
    after = db.read_bytes()
    assert after[18:20] == before[18:20], "the journal mode of someone else's file changed"
    assert after == before


async def test_newer_schema_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    await _make_dotdo_db(db)
    newer = SCHEMA_VERSION + 1
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreError) as raised:
        async with Engine(db):
            pass
    assert str(newer) in str(raised.value)
    assert db.read_bytes() == before
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert version == str(newer)


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        async with Engine(tmp_path / "no" / "such" / "dir" / "x.db"):
            pass
    assert not (tmp_path / "no").exists()


# ------------------------------------------------------------------ content
async def test_fresh_database_gets_the_current_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    async with Engine(db):
        pass
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
    conn.close()
    assert ("schema_version", str(SCHEMA_VERSION)) in rows
    # Opening again is a no-op migration.
    async with Engine(db):
        pass
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert version == str(SCHEMA_VERSION)


async def test_stored_values_are_plain_json(tmp_path: Path) -> None:
    db = tmp_path / "json.db"
    await _make_dotdo_db(db)
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        run = conn.execute("SELECT * FROM runs WHERE run_id = 's1'").fetchone()
        steps = conn.execute("SELECT * FROM steps WHERE run_id = 's1'").fetchall()
        outbox = conn.execute("SELECT * FROM outbox").fetchall()
        graphs = conn.execute("SELECT * FROM graphs").fetchall()
        blobs = [
            (table, column)
            for table in ("runs", "steps", "outbox", "graphs", "meta")
            for column in [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            if conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE typeof({column}) = 'blob'"
            ).fetchone()[0]
        ]
    conn.close()
    assert blobs == [], f"binary (pickled?) values in {blobs}"
    assert run["status"] == "completed"
    state = json.loads(run["state"])
    assert isinstance(state, dict)
    inputs = json.loads(run["input"])
    assert "x" in json.dumps(inputs) and "1.0" in json.dumps(inputs)
    result = json.loads(run["result"])
    assert "ok" in json.dumps(result)
    assert [s["step_key"] for s in steps] == ["weigh"]
    value = json.loads(steps[0]["value"])
    assert "2.0" in json.dumps(value)
    assert [(o["event"], json.loads(o["data"])) for o in outbox] == [
        ("Parcel.shipped", {"sku": "x"})
    ]
    assert all(isinstance(json.loads(g["body"]), dict) for g in graphs)
    for text in (run["state"], run["input"], run["result"], steps[0]["value"]):
        assert not text.startswith("\x80"), "a pickle"


@pytest.mark.parametrize(("requested", "level"), [(None, 2), ("FULL", 2), ("NORMAL", 1)])
async def test_wal_and_synchronous_level(tmp_path: Path, requested: Any, level: int) -> None:
    db = tmp_path / "pragmas.db"
    engine = Engine(db) if requested is None else Engine(db, synchronous=requested)
    async with engine:
        writer = engine.store._writer
        assert writer is not None
        (sync,) = (await writer.execute_fetchall("PRAGMA synchronous"))[0]
        (mode,) = (await writer.execute_fetchall("PRAGMA journal_mode"))[0]
        assert sync == level
        assert mode == "wal"
        with sqlite3.connect(db) as conn:
            (fresh_mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        conn.close()
        assert fresh_mode == "wal"  # persistent in the file
    assert os.path.exists(db)


async def test_unknown_synchronous_level_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    level: Any = "FULLL"  # a typo for FULL
    with pytest.raises((ValueError, StoreError)):
        async with Engine(db, synchronous=level) as engine:
            writer = engine.store._writer
            assert writer is not None
            (sync,) = (await writer.execute_fetchall("PRAGMA synchronous"))[0]
            pytest.fail(f"opened with synchronous={sync} for {level!r}")
