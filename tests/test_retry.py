"""Rerunning a failed run from a step (`engine.retry`, `dotdo retry`): the new run reuses the
recorded results before the step, runs the rest on the current code, and is linked to the
original; bad requests change nothing."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from backend_rows import make_due

from dotdo import DO, DotdoError, Engine, PermanentError, RunFailed, RunNotFound, step, workflow
from dotdo.testing import CrashAt, SimulatedCrash

CALLS: Counter[str] = Counter()
BROKEN: set[str] = set()


class Shipping(DO):
    @step(retries=0)
    async def reserve(self, order: str) -> str:
        CALLS["reserve"] += 1
        return f"r-{order}-{CALLS['reserve']}"

    @step(retries=0)
    async def charge(self, order: str) -> int:
        CALLS["charge"] += 1
        return 40 + CALLS["charge"]

    @step(retries=0)
    async def ship(self, order: str, amount: int) -> str:
        CALLS["ship"] += 1
        if "ship" in BROKEN:
            raise PermanentError("no truck")
        return f"shipped {amount}"

    @workflow
    async def deliver(self, order: str) -> dict[str, Any]:
        reservation = await self.reserve(order)
        token = self.uuid()
        await self.sleep(3600)
        amount = await self.charge(order)
        shipped = await self.ship(order, amount)
        return {"r": reservation, "a": amount, "s": shipped, "t": str(token)}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    BROKEN.clear()


async def _failed_run(engine: Engine) -> tuple[str, dict[str, Any]]:
    BROKEN.add("ship")
    await engine.start(Shipping.deliver, "o1", run_id="o1")
    info = await engine.idle("o1", timeout=10)
    assert info.status == "waiting"  # the hour's sleep
    await make_due(str(engine.path), "o1")
    engine._kick.set()
    with pytest.raises(RunFailed):
        await engine.handle("o1").result(timeout=10)
    journal = {r.key: r.value for r in await engine.journal("o1") if r.status == "completed"}
    BROKEN.clear()
    return "o1", journal


async def test_retry_continues_where_it_failed(store_location: str) -> None:
    async with Engine(store_location).register(Shipping) as engine:
        run_id, before = await _failed_run(engine)
        handle = await engine.retry(run_id)
        result = await handle.result(timeout=10)
        # Reused: the reservation, the recorded uuid and the charge; only ship ran again,
        # and the hour's sleep was not slept again (the result came without a timer).
        assert CALLS == Counter(reserve=1, charge=1, ship=2)
        assert result["r"] == before["reserve"]
        assert result["a"] == before["charge"] == 41
        assert result["t"] == str(before["uuid"])
        assert result["s"] == "shipped 41"
        rows = {r.key: r.status for r in await engine.journal(handle.run_id)}
        assert set(rows.values()) == {"completed"}  # every reused row was used
        row = await engine.store.load_run(handle.run_id)
        assert row is not None and row.retry_of == run_id
        notes = (await engine.export(run_id))["history"]
        assert [n["kind"] for n in notes] == ["retried"] and notes[0]["retry"] == handle.run_id


async def test_retry_from_a_step_runs_it_and_everything_after(store_location: str) -> None:
    async with Engine(store_location).register(Shipping) as engine:
        run_id, before = await _failed_run(engine)
        handle = await engine.retry(run_id, from_step="charge", new_run_id="o1-again")
        assert handle.run_id == "o1-again"
        info = await engine.idle("o1-again", timeout=10)
        assert info.status == "waiting"  # reuse stops before charge: the sleep is slept
        await make_due(str(engine.path), "o1-again")
        engine._kick.set()
        result = await handle.result(timeout=10)
        assert CALLS == Counter(reserve=1, charge=2, ship=2)
        assert result["r"] == before["reserve"] and result["a"] == 42


async def test_reused_rows_are_read_back_on_recovery(tmp_path: Path) -> None:
    """A retry whose process dies before its first commit resumes, in a new process, with
    its reused rows still unused: nothing it reuses runs, ever."""
    db = tmp_path / "r.db"
    async with Engine(db).register(Shipping) as engine:
        run_id, before = await _failed_run(engine)
    crash = CrashAt(0, points=("before_commit",), run_id="o1-r")
    with contextlib.suppress(SimulatedCrash):
        async with Engine(db, faults=crash).register(Shipping) as engine:
            await engine.retry(run_id, new_run_id="o1-r")
            with pytest.raises(SimulatedCrash):
                await engine.wait("o1-r", timeout=10)
    assert crash.fired
    conn = sqlite3.connect(db)
    statuses = {r[0] for r in conn.execute("SELECT status FROM steps WHERE run_id = 'o1-r'")}
    conn.close()
    assert statuses == {"reused"}
    async with Engine(db, lease_seconds=0.5).register(Shipping) as engine:
        await engine.recover()
        result = await engine.handle("o1-r").result(timeout=10)
    assert result["r"] == before["reserve"] and result["a"] == before["charge"]
    assert CALLS == Counter(reserve=1, charge=1, ship=2)


async def test_bad_retries_change_nothing(store_location: str) -> None:
    async with Engine(store_location).register(Shipping) as engine:
        run_id, _ = await _failed_run(engine)
        count = len(await engine.runs())
        with pytest.raises(RunNotFound, match="no run with id 'nope'"):
            await engine.retry("nope")
        with pytest.raises(DotdoError, match=r"has no step 'pack' \(its steps: .*charge"):
            await engine.retry(run_id, from_step="pack")
        with pytest.raises(DotdoError, match="already exists"):
            await engine.retry(run_id, new_run_id=run_id)
        await engine.start(Shipping.deliver, "o2", run_id="o2")
        await engine.idle("o2", timeout=10)
        with pytest.raises(DotdoError, match="is still waiting"):
            await engine.retry("o2")
        BROKEN.clear()
        assert len(await engine.runs()) == count + 1
        assert await engine.store.history(run_id) == []
