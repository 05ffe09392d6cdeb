"""The engine on PostgreSQL: selected by URL (Engine, --db, DOTDO_DB), one line for a bad
URL or an unreachable server, and LISTEN/NOTIFY wake-ups: a decision made in one process
reaches an idle worker in another before its fallback poll, and an idle worker asks its
database less than once a second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from dotdo import DO, Engine, StoreError, UnknownStoreURL, step, workflow
from dotdo.cli import cli
from dotdo.engine.engine import FEED_POLL_SECONDS


class Waiter(DO):
    @step
    async def stamp(self) -> float:
        return time.time()

    @workflow
    async def answer(self, key: str) -> float:
        await self.wait_for_event("go", match={"key": key})
        return await self.stamp()

    @workflow
    async def quick(self, n: int) -> int:
        return n + 1


def test_an_unknown_scheme_is_refused_at_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownStoreURL, match="unknown database URL scheme 'mysql'"):
        Engine("mysql://u@h/db")
    out = CliRunner().invoke(cli, ["runs", "--db", "mysql://u:pw@h/db"])
    assert out.exit_code == 2 and "unknown database URL scheme" in out.output
    assert "pw" not in out.output and "Traceback" not in out.output
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_is_one_line_from_the_cli() -> None:
    out = CliRunner().invoke(cli, ["runs", "--db", "postgresql://postgres@127.0.0.1:1/x"])
    assert out.exit_code == 1
    assert out.output.strip().count("\n") == 0 and "connection refused" in out.output


def test_dotdo_db_selects_postgresql_for_every_command(pg_url: str) -> None:
    async def make() -> str:
        async with Engine(pg_url).register(Waiter) as engine:
            handle = await engine.start(Waiter.quick, 41, run_id="made-on-pg")
            assert await handle.result() == 42
            return handle.run_id

    run_id = asyncio.run(make())
    runner = CliRunner(env={"DOTDO_DB": pg_url})
    listed = runner.invoke(cli, ["runs"])
    assert listed.exit_code == 0 and run_id in listed.output, listed.output
    shown = runner.invoke(cli, ["status", run_id])
    assert shown.exit_code == 0 and "completed" in shown.output


async def test_an_event_from_another_process_wakes_an_idle_worker_at_once(pg_url: str) -> None:
    async with Engine(pg_url).register(Waiter) as worker:
        await worker.start(Waiter.answer, "k1", run_id="a1")
        store = worker.store
        deadline = time.monotonic() + 5
        while not getattr(store, "listening", False) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert worker.idle_poll() == FEED_POLL_SECONDS
        await asyncio.sleep(0.3)  # idle: its loop now sleeps for the fallback poll
        async with Engine(pg_url) as sender:  # another engine: nothing registered
            started = time.monotonic()
            await sender.send("go", {"key": "k1"})
        info = await worker.wait("a1", timeout=FEED_POLL_SECONDS * 2)
        woke = time.monotonic() - started
    assert info.status == "completed"
    assert woke < FEED_POLL_SECONDS / 2  # woken by NOTIFY, not by the fallback poll


async def test_an_idle_worker_asks_its_database_less_than_once_a_second(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink: list[list[str]] = [[]]
    real = asyncpg.connection.Connection._execute
    real_plain = asyncpg.connection.Connection.execute

    async def counting(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        sink[0].append(query)  # every extended-protocol statement (fetch*, execute with args)
        return await real(self, query, *args, **kwargs)

    async def counting_plain(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not args:
            sink[0].append(query)  # the simple protocol: BEGIN, COMMIT, scripts
        return await real_plain(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "_execute", counting)
    monkeypatch.setattr(asyncpg.connection.Connection, "execute", counting_plain)
    async with Engine(pg_url).register(Waiter) as worker:
        await worker.start(Waiter.answer, "k", run_id="idle-1")  # one run hibernating
        await asyncio.sleep(1.0)
        idle: list[str] = []
        sink[0] = idle
        window = 6.0
        await asyncio.sleep(window)
        # The counter sees queries: the same engine polling every 0.1 s asks many times.
        polling: list[str] = []
        sink[0] = polling
        monkeypatch.setattr(Engine, "idle_poll", lambda self: 0.1)
        worker._kick.set()
        await asyncio.sleep(1.0)
        sink[0] = []
    assert len(idle) / window < 1.0, idle
    assert len(polling) > 10


async def test_listen_can_be_turned_off_for_a_transaction_pooler(pg_url: str) -> None:
    async with Engine(f"{pg_url}&dotdo_listen=off").register(Waiter) as worker:
        await asyncio.sleep(0.2)
        assert worker.idle_poll() == worker.poll_seconds  # no feed: it polls as on SQLite
        await worker.start(Waiter.answer, "k", run_id="p1")
        async with Engine(pg_url) as sender:
            await sender.send("go", {"key": "k"})
        assert (await worker.wait("p1", timeout=10)).status == "completed"
    with pytest.raises(StoreError, match="dotdo_listen='maybe'"):
        await Engine(f"{pg_url}&dotdo_listen=maybe").open()
