"""Durable timers: sleep and sleep_until hibernate the run (a row with a wake time), fire on
the virtual clock and survive an engine restart."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dotdo import DO, Engine, step, workflow
from dotdo.testing import VirtualClock

calls: Counter[str] = Counter()
START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


class Timers(DO):
    @step
    async def tick(self, label: str) -> str:
        calls[label] += 1
        return label

    @workflow
    async def nap(self) -> str:
        await self.tick("before")
        await self.sleep(timedelta(hours=1))
        await self.tick("after")
        return "rested"

    @workflow
    async def until(self, when: datetime) -> datetime:
        await self.sleep_until(when)
        woke = self.now()
        await self.tick("after")
        return woke

    @workflow
    async def seconds(self, n: float) -> str:
        await self.sleep(n)
        return "done"

    @workflow
    async def loop(self) -> list:
        seen = []
        for i in range(3):
            await self.sleep(60)
            seen.append(await self.tick(f"loop{i}"))
        return seen


def _engine(tmp_path: Path, clock: VirtualClock) -> Engine:
    return Engine(tmp_path / "app.db", clock=clock).register(Timers)


async def test_sleep_hibernates_and_fires(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Timers.nap, run_id="n")
        info = await engine.idle("n", timeout=5)
        assert info.status == "waiting"
        assert info.wake_at == START + timedelta(hours=1)
        assert info.lease_owner is None
        assert "n" not in engine._active and "n" not in engine._runs
        clock.advance(timedelta(minutes=59, seconds=59))
        await asyncio.sleep(0.05)
        assert (await engine.get_run("n")).status == "waiting"
        assert calls == Counter(before=1)
        clock.advance(timedelta(seconds=1))
        assert await handle.result(timeout=5) == "rested"
        assert calls == Counter(before=1, after=1)
        assert [s.key for s in await engine.journal("n")] == ["tick", "tick_2"]


async def test_sleep_until(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    wake = START + timedelta(days=2, hours=3)
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Timers.until, wake, run_id="u")
        info = await engine.idle("u", timeout=5)
        assert (info.status, info.wake_at) == ("waiting", wake)
        await clock.run_for(timedelta(days=3), step=6 * 3600)
        woke = await handle.result(timeout=5)
        assert woke == START + timedelta(days=2, hours=6)  # the hop that passed the wake time
        assert woke >= wake


async def test_sleep_until_the_past_and_zero_do_not_wait(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    async with _engine(tmp_path, clock) as engine:
        past = await engine.start(Timers.until, START - timedelta(days=1))
        assert await past.result(timeout=5) == START
        for n in (0, -5):
            assert await (await engine.start(Timers.seconds, n)).result(timeout=5) == "done"


async def test_sleeps_in_a_loop(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Timers.loop, run_id="l")
        for i in range(3):
            expected = START + timedelta(seconds=60 * (i + 1))
            for _ in range(500):  # the previous hop's wake-up may still be in flight
                info = await engine.idle("l", timeout=5)
                if info.wake_at == expected:
                    break
                await asyncio.sleep(0.01)
            assert info.wake_at == expected
            clock.advance(60)
        assert await handle.result(timeout=5) == ["loop0", "loop1", "loop2"]
        assert calls == Counter(loop0=1, loop1=1, loop2=1)
        keys = [s.key for s in await engine.journal("l")]
        assert keys == ["tick[1]", "tick[2]", "tick[3]"]


@pytest.mark.parametrize("reopen_after", [timedelta(minutes=10), timedelta(hours=5)])
async def test_sleep_survives_a_restart(tmp_path: Path, reopen_after: timedelta) -> None:
    clock = VirtualClock(START)
    async with _engine(tmp_path, clock) as engine:
        await engine.start(Timers.nap, run_id="n")
        await engine.idle("n", timeout=5)
    clock.advance(reopen_after)
    async with _engine(tmp_path, clock) as engine:
        if reopen_after < timedelta(hours=1):
            await asyncio.sleep(0.05)
            info = await engine.get_run("n")
            assert (info.status, info.wake_at) == ("waiting", START + timedelta(hours=1))
            clock.advance(timedelta(hours=1))
        assert await engine.handle("n").result(timeout=5) == "rested"
        assert calls == Counter(before=1, after=1)


async def test_many_sleepers_wake_in_order(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    async with _engine(tmp_path, clock) as engine:
        handles = [
            await engine.start(Timers.seconds, 10.0 * i, run_id=f"s{i}") for i in range(1, 6)
        ]
        for h in handles:
            await engine.idle(h.run_id, timeout=5)
        clock.advance(25)
        for h in handles[:2]:
            assert await h.result(timeout=5) == "done"
        await asyncio.sleep(0.05)
        assert [await h.status() for h in handles[2:]] == ["waiting"] * 3
        clock.advance(100)
        for h in handles[2:]:
            assert await h.result(timeout=5) == "done"
