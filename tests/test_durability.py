"""The durability contract, clause by clause: idempotent starts, retries as durable timers,
at-most-once `try_`, recorded nondeterminism, pinned graphs, leases, unstorable values,
cancellation, failed compensation and group commit.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from backend_rows import expire_lease

from dotdo import (
    DO,
    CompensationFailed,
    DotdoError,
    Engine,
    PermanentError,
    RemoteError,
    RunConflict,
    RunFailed,
    SerializationError,
    StepInterrupted,
    StepTimeout,
    compensate,
    current_step,
    step,
    workflow,
)
from dotdo.engine import serde
from dotdo.testing import CrashAt, SimulatedCrash, VirtualClock


# ------------------------------------------------------------------ helpers
async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def settle(rounds: int = 30) -> None:
    """Give background tasks a chance to run (and to do something they should not)."""
    for _ in range(rounds):
        await asyncio.sleep(0.002)


def error_type(error: BaseException | None) -> str:
    """The type name of a run's error, seeing through RemoteError."""
    if isinstance(error, RemoteError):
        return error.type_name.rpartition(":")[2].rpartition(".")[2]
    return type(error).__name__


async def run_to_end(engine: Engine, run_id: str, timeout: float = 10) -> tuple[str, Any]:
    try:
        return "completed", await engine.handle(run_id).result(timeout=timeout)
    except RunFailed as failed:
        return failed.status, failed.error


# ======================================================= start is idempotent
WORK: list[tuple[str, int]] = []


class Idem(DO):
    async def work(self, x: int) -> int:
        WORK.append((current_step().run_id, x))
        await asyncio.sleep(0.01)
        return x + 1

    @workflow
    async def one(self, x: int) -> int:
        y = await self.do(self.work, x, step_id="work")
        return y * 10

    @workflow
    async def other(self, x: int) -> int:
        return x


async def test_start_is_idempotent_by_run_id(store_location: str) -> None:
    WORK.clear()
    async with Engine(store_location) as engine:
        first = await engine.start(Idem.one, 1, run_id="idem")
        again = await engine.start(Idem.one, 1, run_id="idem")  # while the first is running
        assert again.run_id == first.run_id == "idem"
        assert await first.result(timeout=5) == 20
        assert await again.result(timeout=5) == 20
        # Other inputs under the same run id are a conflict, not the old run's result.
        with pytest.raises(RunConflict, match="run 'idem' already exists with a different input"):
            await engine.start(Idem.one, 99, run_id="idem")
        assert WORK == [("idem", 1)]
        assert [r.key for r in await engine.journal("idem")] == ["work"]
        assert len(await engine.runs()) == 1
    async with Engine(store_location) as engine:
        engine.register(Idem)
        fourth = await engine.start(Idem.one, 1, run_id="idem")
        assert await fourth.result(timeout=5) == 20
    assert WORK == [("idem", 1)]


async def test_start_refuses_a_run_id_of_another_workflow(store_location: str) -> None:
    async with Engine(store_location) as engine:
        handle = await engine.start(Idem.one, 1, run_id="taken")
        await handle.result(timeout=5)
        with pytest.raises(DotdoError, match="taken"):
            await engine.start(Idem.other, 1, run_id="taken")
        assert (await engine.get_run("taken")).workflow == "Idem.one"


# ====================================================== retries and backoff
ATTEMPTS: list[tuple[str, str, int, str]] = []


class Backoff(DO):
    @step(retries=3, backoff=3.0, initial_delay=2.0)
    async def shaky(self) -> str:
        ctx = current_step()
        ATTEMPTS.append((ctx.run_id, ctx.step_id, ctx.attempt, ctx.idempotency_key))
        if ctx.attempt < 4:
            raise ConnectionError(f"down (attempt {ctx.attempt})")
        return "up"

    @step(retries=5, initial_delay=0.001)
    async def doomed(self) -> str:
        ATTEMPTS.append((current_step().run_id, "doomed", current_step().attempt, ""))
        raise PermanentError("card declined")

    @workflow
    async def go(self) -> str:
        value = await self.shaky()
        return value + "!"

    @workflow
    async def give_up(self) -> str:
        return await self.doomed()


async def _waiting_until(engine: Engine, run_id: str, attempts: int) -> float:
    """Wait for the run to park on its retry timer after `attempts` attempts; its wake time."""

    async def parked() -> bool:
        info = await engine.get_run(run_id)
        return (
            len(ATTEMPTS) == attempts
            and info.status == "waiting"
            and info.wake_at is not None
            and run_id not in engine._active
        )

    await eventually(parked, what=f"{run_id} to wait after attempt {attempts}")
    info = await engine.get_run(run_id)
    assert info.lease_owner is None, "a waiting run holds no lease"
    assert info.wake_at is not None
    return info.wake_at.timestamp()


async def test_retries_back_off_exponentially_on_durable_timers(store_location: str) -> None:
    ATTEMPTS.clear()
    clock = VirtualClock()
    t0 = clock.now()
    async with Engine(store_location, clock=clock) as engine:
        handle = await engine.start(Backoff.go, run_id="bo")
        assert await _waiting_until(engine, "bo", 1) == pytest.approx(t0 + 2.0)
        clock.advance(1.9)  # not due yet: nothing runs
        await settle()
        assert len(ATTEMPTS) == 1
        clock.advance(0.1)
        assert await _waiting_until(engine, "bo", 2) == pytest.approx(t0 + 2.0 + 6.0)
        clock.advance(6.0)
        assert await _waiting_until(engine, "bo", 3) == pytest.approx(t0 + 8.0 + 18.0)
        clock.advance(18.0)
        assert await handle.result(timeout=5) == "up!"
        journal = await engine.journal("bo")
    assert [(r.key, r.status, r.attempts) for r in journal] == [("shaky", "completed", 4)]
    assert [a for _, _, a, _ in ATTEMPTS] == [1, 2, 3, 4]
    assert {key for *_, key in ATTEMPTS} == {"bo:shaky"}
    assert {sid for _, sid, _, _ in ATTEMPTS} == {"shaky"}


async def test_crash_while_waiting_for_a_retry_then_a_fresh_engine_finishes(
    store_location: str,
) -> None:
    ATTEMPTS.clear()
    db = store_location
    clock = VirtualClock()
    t0 = clock.now()
    # Boundaries of attempt 1: before_step, after_step, before_commit, after_commit (the
    # waiting checkpoint). Die right after that commit: the run is a row with a wake time.
    crash = CrashAt(3)
    async with Engine(db, clock=clock, faults=crash) as engine:
        handle = await engine.start(Backoff.go, run_id="bo")
        with pytest.raises(SimulatedCrash):
            await handle.result(timeout=5)
    assert crash.fired and crash.trace[-1][0] == "after_commit"
    assert len(ATTEMPTS) == 1

    clock2 = VirtualClock(t0)
    async with Engine(db, clock=clock2) as engine:
        engine.register(Backoff)
        info = await engine.get_run("bo")
        assert info.status == "waiting"
        assert info.wake_at == datetime.fromtimestamp(t0 + 2.0, UTC)
        await settle()
        assert "bo" not in engine._active and len(ATTEMPTS) == 1  # not due: not resumed
        clock2.advance(2.0)
        await _waiting_until(engine, "bo", 2)
        clock2.advance(6.0)
        await _waiting_until(engine, "bo", 3)
        clock2.advance(18.0)
        assert await engine.handle("bo").result(timeout=5) == "up!"
    assert [a for _, _, a, _ in ATTEMPTS] == [1, 2, 3, 4]
    assert {key for *_, key in ATTEMPTS} == {"bo:shaky"}


async def test_permanent_error_skips_retries(store_location: str) -> None:
    ATTEMPTS.clear()
    async with Engine(store_location) as engine:
        handle = await engine.start(Backoff.give_up, run_id="perm")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        journal = await engine.journal("perm")
    assert failed.value.status == "failed"
    assert isinstance(failed.value.error, PermanentError)
    assert str(failed.value.error) == "card declined"
    assert len(ATTEMPTS) == 1
    assert [(r.key, r.status, r.attempts) for r in journal] == [("doomed", "failed", 1)]


class Slow(DO):
    async def crawl(self) -> str:
        await asyncio.sleep(10)
        return "late"

    async def gateway(self) -> str:
        raise TimeoutError("upstream gateway timed out")

    @workflow
    async def slow(self) -> str:
        return await self.do(self.crawl, timeout=0.05, retries=0, step_id="crawl")

    @workflow
    async def own_timeout(self) -> str:
        return await self.do(self.gateway, retries=0, step_id="gateway")


async def test_step_timeout(store_location: str) -> None:
    async with Engine(store_location) as engine:
        started = time.monotonic()
        handle = await engine.start(Slow.slow, run_id="slow")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        assert time.monotonic() - started < 3
        journal = await engine.journal("slow")
    assert failed.value.status == "failed"
    assert isinstance(failed.value.error, StepTimeout)
    assert [(r.key, r.status, r.attempts) for r in journal] == [("crawl", "failed", 1)]


async def test_a_steps_own_timeout_error_is_not_a_step_timeout(store_location: str) -> None:
    async with Engine(store_location) as engine:
        handle = await engine.start(Slow.own_timeout, run_id="gw")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
    error = failed.value.error
    # The step has no timeout, so no attempt "ran past its timeout": the step's own error
    # must be kept, not replaced by "timed out after Nones".
    assert not isinstance(error, StepTimeout), repr(error)
    assert "upstream gateway" in str(error)


# ======================================================== try_: at most once
SENT: list[str] = []


class Mailer(DO):
    async def prepare(self) -> str:
        return "hello"

    async def notify(self, message: str) -> str:
        SENT.append(message)
        return "sent"

    async def broken(self, message: str) -> str:
        SENT.append(message)
        raise ConnectionError("smtp down")

    @workflow
    async def mail(self) -> str:
        message = await self.do(self.prepare, step_id="prepare")
        status = await self.try_(self.notify, message)
        return status

    @workflow
    async def mail_tolerant(self) -> str:
        message = await self.do(self.prepare, step_id="prepare")
        try:
            status = await self.try_(self.notify, message)
        except StepInterrupted:
            status = "unknown"
        return status

    @workflow
    async def mail_broken(self) -> str:
        return await self.try_(self.broken, "x")


async def test_try_runs_once(store_location: str) -> None:
    SENT.clear()
    async with Engine(store_location) as engine:
        assert await (await engine.start(Mailer.mail, run_id="m")).result(timeout=5) == "sent"
        rows = [(r.key, r.status, r.attempts) for r in await engine.journal("m")]
        handle = await engine.start(Mailer.mail_broken, run_id="b")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
    assert rows == [("prepare", "completed", 1), ("notify", "completed", 1)]
    assert SENT == ["hello", "x"]  # the failing try_ was not retried
    assert isinstance(failed.value.error, ConnectionError)


@pytest.mark.parametrize(
    ("point", "ran_before_crash"),
    [
        ("before_step", False),  # started row committed, not yet run
        ("after_commit", False),  # right after the "started" commit
        ("after_step", True),  # ran, outcome not recorded
    ],
    ids=["before_step", "after_started_commit", "after_step"],
)
async def test_try_interrupted_by_a_crash_is_failed_not_rerun(
    store_location: str, point: str, ran_before_crash: bool
) -> None:
    crash = CrashAt(1, points=(point,))  # a fresh one per backend: a CrashAt fires once
    SENT.clear()
    db = store_location
    async with Engine(db, faults=crash) as engine:
        handle = await engine.start(Mailer.mail, run_id="m")
        with pytest.raises(SimulatedCrash):
            await handle.result(timeout=5)
    assert crash.fired
    assert SENT == (["hello"] if ran_before_crash else [])
    async with Engine(db) as engine:
        engine.register(Mailer)
        with pytest.raises(RunFailed) as failed:
            await engine.handle("m").result(timeout=5)
        rows = {r.key: r for r in await engine.journal("m")}
    assert failed.value.status == "failed"
    assert isinstance(failed.value.error, StepInterrupted)
    assert SENT == (["hello"] if ran_before_crash else [])  # never run again
    assert rows["notify"].status == "failed"
    assert isinstance(rows["notify"].error, StepInterrupted)


async def test_step_interrupted_can_be_caught_by_the_workflow(store_location: str) -> None:
    SENT.clear()
    db = store_location
    async with Engine(db, faults=CrashAt(1, points=("after_step",))) as engine:
        handle = await engine.start(Mailer.mail_tolerant, run_id="t")
        with pytest.raises(SimulatedCrash):
            await handle.result(timeout=5)
    async with Engine(db) as engine:
        engine.register(Mailer)
        assert await engine.handle("t").result(timeout=5) == "unknown"
    assert SENT == ["hello"]


# ===================================================== recorded nondeterminism
SEEN: list[tuple[str, datetime, UUID, float]] = []


class Dice(DO):
    async def observe(self, tag: str, t: datetime, u: UUID, r: float) -> str:
        SEEN.append((tag, t, u, r))
        return tag

    @workflow
    async def roll(self) -> dict[str, Any]:
        t = self.now()
        u = self.uuid()
        r = self.random()
        await self.do(self.observe, "one", t, u, r, step_id="one")
        later = self.now()
        await self.do(self.observe, "two", t, u, r, step_id="two")
        return {"t": t, "u": u, "r": r, "later": later}


async def test_now_uuid_random_are_recorded_once_across_crashes(tmp_path: Path) -> None:
    n = 0
    clocks: set[float] = set()
    while True:
        SEEN.clear()
        db = tmp_path / f"dice{n}.sqlite"
        crash = CrashAt(n)
        clock = VirtualClock()
        async with Engine(db, faults=crash, clock=clock) as engine:
            handle = await engine.start(Dice.roll, run_id="dice")
            try:
                await handle.result(timeout=5)
            except SimulatedCrash:
                pass
        # The resumed process lives an hour later: a re-evaluated now() would show it.
        async with Engine(db, clock=VirtualClock(clock.now() + 3600)) as engine:
            engine.register(Dice)
            result = await engine.handle("dice").result(timeout=5)
            recorded = {r.key: r.value for r in await engine.journal("dice")}
        where = f"crash #{n}"
        assert isinstance(result["t"], datetime) and isinstance(result["u"], UUID), where
        assert isinstance(result["r"], float), where
        assert {(t, u, r) for _, t, u, r in SEEN} == {(result["t"], result["u"], result["r"])}, (
            f"{where}: the steps saw other values than the result: {SEEN} vs {result}"
        )
        assert {tag for tag, *_ in SEEN} == {"one", "two"}, where
        values = sorted(map(repr, recorded.values()))
        for name in ("t", "u", "r", "later"):
            assert repr(result[name]) in values, f"{where}: {name} is not the journaled value"
        # Recorded by engine 1 if its record was committed before the crash, else by engine 2.
        t0 = VirtualClock().now()
        assert result["t"].timestamp() in (t0, t0 + 3600), where
        clocks.add(result["t"].timestamp() - t0)
        if not crash.fired:
            break
        n += 1
    assert n > 8
    assert clocks == {0, 3600}


# ================================================================ versioning
V1 = """
from dotdo import DO, workflow

LOG = []


class Vers(DO):
    async def a(self) -> str:
        LOG.append("a")
        return "a"

    async def b(self) -> str:
        LOG.append("b")
        return "b"

    async def c(self) -> str:
        LOG.append("c")
        return "c"

    @workflow
    async def flow(self) -> str:
        x = await self.do(self.a, step_id="first")
        y = await self.do(self.b, step_id="second")
        return "v1:" + x + y
"""

V2 = V1.replace(
    """        x = await self.do(self.a, step_id="first")
        y = await self.do(self.b, step_id="second")
        return "v1:" + x + y""",
    """        x = await self.do(self.c, step_id="first")
        y = await self.do(self.c, step_id="other")
        z = await self.do(self.a, step_id="third")
        return "v2:" + x + y + z""",
)


def load_module(path: Path, name: str, source: str) -> Any:
    """Write `source` to path and import it fresh under `name` (a new module object)."""
    path.write_text(source)
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_reimported_edited_module_compiles_its_new_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiler must not lower a stale copy of an edited file (linecache)."""
    name = "dotdo_reload_mod"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delitem(sys.modules, name, raising=False)
    v1 = load_module(tmp_path / f"{name}.py", name, V1)
    v2 = load_module(tmp_path / f"{name}.py", name, V2)
    names = {n.name for n in v2.Vers.flow.graph.nodes.values() if n.kind == "step"}
    assert names == {"first", "other", "third"}, names
    assert v2.Vers.flow.graph.hash != v1.Vers.flow.graph.hash


async def test_in_flight_run_keeps_its_graph_after_a_code_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert V1 != V2
    name = "dotdo_versioned_mod"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delitem(sys.modules, name, raising=False)
    db = tmp_path / "db.sqlite"
    v1 = load_module(tmp_path / f"{name}.py", name, V1)
    hash_a = v1.Vers.flow.graph.hash
    async with Engine(db, faults=CrashAt(1, points=("before_step",))) as engine:
        handle = await engine.start(v1.Vers.flow, run_id="old")
        with pytest.raises(SimulatedCrash):
            await handle.result(timeout=5)
    assert v1.LOG == ["a"]

    v2 = load_module(tmp_path / f"{name}.py", name, V2)
    assert v2 is not v1 and v2.Vers is not v1.Vers
    hash_b = v2.Vers.flow.graph.hash
    assert hash_b != hash_a
    async with Engine(db) as engine:
        engine.register(v2.Vers)
        assert await engine.handle("old").result(timeout=5) == "v1:ab"
        new = await engine.start(v2.Vers.flow, run_id="new")
        assert await new.result(timeout=5) == "v2:cca"
        old_info, new_info = await engine.get_run("old"), await engine.get_run("new")
        old_keys = [r.key for r in await engine.journal("old")]
        new_keys = [r.key for r in await engine.journal("new")]
    assert old_info.graph_hash == hash_a
    assert new_info.graph_hash == hash_b
    assert old_keys == ["first", "second"]
    assert new_keys == ["first", "other", "third"]
    assert v1.LOG == ["a"]  # nothing ran twice
    assert v2.LOG == ["b", "c", "c", "a"]


V_NOTE = """
from pydantic import BaseModel
from dotdo import DO, workflow


class Note(BaseModel):
    text: str


class Notes(DO):
    async def make(self) -> Note:
        return Note(text="hi")

    async def echo(self, text: str) -> str:
        return text

    @workflow
    async def keep(self) -> str:
        note = await self.do(self.make, step_id="make")
        done = await self.do(self.echo, note.text, step_id="echo")
        return done

    @workflow
    async def nap(self) -> str:
        await self.sleep(10)
        done = await self.do(self.echo, "rested", step_id="echo")
        return done
"""

V_NOTE_RENAMED = (
    V_NOTE.replace("class Note(", "class Memo(")
    .replace("-> Note:", "-> Memo:")
    .replace("return Note(", "return Memo(")
)


async def test_an_undecodable_run_does_not_stall_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a deploy removed a class stored in one run's locals, other runs still progress.

    The crashed run "bad" holds a `Note` in its frame; the new code renamed the class. The
    run "ok" only sleeps. A fresh engine must still wake "ok"; "bad" should end failed with a
    clear error (or at least stay recoverable), not take the engine's timer loop down.
    """
    name = "dotdo_note_mod"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delitem(sys.modules, name, raising=False)
    db = tmp_path / "db.sqlite"
    v1 = load_module(tmp_path / f"{name}.py", name, V_NOTE)
    clock = VirtualClock()
    async with Engine(db, clock=clock) as engine:
        await engine.start(v1.Notes.nap, run_id="ok")
        await engine.idle("ok", timeout=5)
    async with Engine(db, clock=clock, faults=CrashAt(1, points=("before_step",))) as engine:
        handle = await engine.start(v1.Notes.keep, run_id="bad")
        with pytest.raises(SimulatedCrash):
            await handle.result(timeout=5)

    v2 = load_module(tmp_path / f"{name}.py", name, V_NOTE_RENAMED)
    # A new process would not know the old class: forget the codec's class cache.
    monkeypatch.setattr(serde, "_CLASSES", {})
    engine = Engine(db, clock=clock).register(v2.Notes)
    try:
        await engine.open()  # recovery meets "bad" here or in the timer loop, whichever first
        clock.advance(60)
        assert await engine.handle("ok").result(timeout=2) == "rested"
        info = await engine.wait("bad", timeout=2)
        assert info.status == "failed"
        assert isinstance(info.error, SerializationError)
    finally:
        await engine.close()


# =================================================================== leases
STEP_RUNS: Counter[tuple[str, str]] = Counter()
GATE: dict[str, asyncio.Event] = {}


class Leased(DO):
    async def tick(self, label: str) -> str:
        STEP_RUNS[(current_step().run_id, label)] += 1
        gate = GATE.get("gate")
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0.002)
        return label

    @workflow
    async def chain(self) -> str:
        a = await self.do(self.tick, "a", step_id="a")
        b = await self.do(self.tick, "b", step_id="b")
        c = await self.do(self.tick, "c", step_id="c")
        return a + b + c


async def _orphans(db: Path, count: int) -> list[str]:
    """Runs left behind by an engine that died at its first step boundary."""
    run_ids = [f"L{i:02d}" for i in range(count)]
    engine = Engine(db, faults=CrashAt(0, points=("before_step",)))
    async with engine:
        handles = await asyncio.gather(
            *(engine.start(Leased.chain, run_id=r) for r in run_ids), return_exceptions=True
        )
        assert all(not isinstance(h, BaseException) for h in handles), handles
        with pytest.raises(SimulatedCrash):
            await engine.handle(run_ids[0]).result(timeout=5)
    return run_ids


async def test_two_engines_never_advance_the_same_run(store_location: str) -> None:
    STEP_RUNS.clear()
    GATE.clear()
    db = store_location
    run_ids = await _orphans(db, 20)
    assert sum(STEP_RUNS.values()) == 0
    a, b = Engine(db).register(Leased), Engine(db).register(Leased)
    await asyncio.gather(a.open(), b.open())  # each recovers on open, concurrently
    try:
        for _ in range(5):  # and again, while the runs are in flight
            claimed = await asyncio.gather(a.recover(), b.recover())
            assert not set(claimed[0]) & set(claimed[1])
            await asyncio.sleep(0.003)
        results = await asyncio.gather(*(a.handle(r).result(timeout=10) for r in run_ids))
        assert results == ["abc"] * len(run_ids)
        for r in run_ids:
            keys = [j.key for j in await b.journal(r)]
            assert keys == ["a", "b", "c"]
    finally:
        await asyncio.gather(a.close(), b.close())
    assert STEP_RUNS == Counter({(r, s): 1 for r in run_ids for s in "abc"})


async def test_a_live_lease_is_respected_then_a_crashed_owner_is_taken_over(
    store_location: str,
) -> None:
    STEP_RUNS.clear()
    GATE.clear()
    GATE["gate"] = asyncio.Event()  # every step blocks until the gate opens
    db = store_location
    run_ids = [f"R{i}" for i in range(5)]
    crash = CrashAt(0, points=("after_step",))
    a = Engine(db, faults=crash).register(Leased)
    b = Engine(db).register(Leased)
    await a.open()
    await b.open()
    try:
        handles = [await a.start(Leased.chain, run_id=r) for r in run_ids]
        await eventually(
            lambda: _ready(lambda: len(STEP_RUNS) == len(run_ids)), what="all steps in flight"
        )
        # A is alive and owns them: B claims nothing, now or at any later recover().
        assert await b.recover() == []
        for r in run_ids:
            assert (await b.get_run(r)).lease_owner == a.owner
        # A dies at its first after_step: the gate opens, a step finishes, A crashes.
        GATE["gate"].set()
        with pytest.raises(SimulatedCrash):
            await handles[0].result(timeout=5)
        GATE.clear()
        # B sees A's death at once (same process, A closed): no 30 s lease wait.
        started = time.monotonic()
        claimed = await b.recover()
        assert sorted(claimed) == run_ids
        assert time.monotonic() - started < 2
        results = await asyncio.gather(*(b.handle(r).result(timeout=10) for r in run_ids))
        assert results == ["abc"] * len(run_ids)
    finally:
        await a.close()
        await b.close()
    # Each step ran once, except the "a" steps that were in flight when A died (they had
    # executed, not committed): at most once more each.
    for r in run_ids:
        assert STEP_RUNS[(r, "b")] == STEP_RUNS[(r, "c")] == 1
        assert 1 <= STEP_RUNS[(r, "a")] <= 2


async def _ready(check: Callable[[], bool]) -> bool:
    return check()


class Stall(DO):
    async def slow(self) -> str:
        STEP_RUNS[(current_step().run_id, "slow")] += 1
        if STEP_RUNS[(current_step().run_id, "slow")] == 1:
            await GATE["gate"].wait()  # only the first execution stalls
        return "done"

    @workflow
    async def go(self) -> str:
        result = await self.do(self.slow, step_id="slow")
        self.send("Stall.done", {"result": result})
        return result


async def test_a_stalled_owner_cannot_commit_after_its_lease_was_taken_over(
    store_location: str,
) -> None:
    """A stalls past its lease; B takes the run over and finishes it; then A's step returns.
    A's late commit must be refused (LeaseLost): the outbox holds the event once."""
    STEP_RUNS.clear()
    GATE.clear()
    GATE["gate"] = asyncio.Event()
    db = store_location
    a, b = Engine(db).register(Stall), Engine(db).register(Stall)
    await a.open()
    await b.open()
    try:
        await a.start(Stall.go, run_id="s")
        await eventually(lambda: _ready(lambda: bool(STEP_RUNS)), what="A's step in flight")
        # A stalls longer than its lease TTL: simulate it by letting the lease run out.
        await expire_lease(db, "s")
        assert await b.recover() == ["s"]
        assert await b.handle("s").result(timeout=5) == "done"
        GATE["gate"].set()  # A wakes up and tries to commit the same run
        await settle(50)
        outbox = await b.outbox("s")
        info = await b.get_run("s")
    finally:
        await a.close()
        await b.close()
    assert STEP_RUNS[("s", "slow")] == 2  # at least once: both executed the step
    assert info.status == "completed"
    assert outbox == [("Stall.done", {"result": "done"})], outbox


# ====================================================== unstorable values
STORED: list[str] = []
BAD_LINE = 0


class Unstorable(DO):
    async def note(self, label: str) -> str:
        STORED.append(label)
        return label

    async def odd_error(self) -> str:
        raise ValueError(threading.Lock(), "with a lock inside")

    async def odd_value(self) -> Any:
        STORED.append("odd_value")
        return threading.Lock()

    @workflow
    async def holds_lock(self) -> str:
        lock = threading.Lock()  # BAD_LOCAL
        first = await self.do(self.note, "first", step_id="first")
        second = await self.do(self.note, "second", step_id="second")
        third = await self.do(self.note, "third", step_id="third")
        return first + second + third + str(lock)

    @workflow
    async def raises_odd(self) -> str:
        return await self.do(self.odd_error, retries=0, step_id="odd")

    @workflow
    async def returns_odd(self) -> str:
        value = await self.do(self.odd_value, retries=0, step_id="odd")
        return str(value)

    @workflow
    async def workflow_returns_odd(self) -> Any:
        await self.do(self.note, "x", step_id="x")
        return threading.Lock()


def _line_of(marker: str) -> int:
    for number, text in enumerate(Path(__file__).read_text().splitlines(), start=1):
        if marker in text and "def " not in text and "_line_of" not in text:
            return number
    raise AssertionError(marker)


async def test_unstorable_local_fails_the_run_naming_it(store_location: str) -> None:
    STORED.clear()
    async with Engine(store_location) as engine:
        handle = await engine.start(Unstorable.holds_lock, run_id="lock")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        info = await engine.get_run("lock")
    assert failed.value.status == "failed" == info.status
    error = failed.value.error
    assert isinstance(error, SerializationError), repr(error)
    text = str(error)
    assert "'lock'" in text
    assert f"{Path(__file__).name}:{_line_of('# BAD_LOCAL')}" in text, text


async def test_no_step_runs_after_the_run_failed_on_an_unstorable_local(
    store_location: str,
) -> None:
    STORED.clear()
    async with Engine(store_location) as engine:
        handle = await engine.start(Unstorable.holds_lock, run_id="lock")
        with pytest.raises(RunFailed):
            await handle.result(timeout=5)
        await settle()
        journal = [(r.key, r.status) for r in await engine.journal("lock")]
    # The first step ran before the first checkpoint found the lock; once the run is failed,
    # nothing more may execute or be journaled for it.
    assert STORED == ["first"], STORED
    assert journal in ([], [("first", "completed")]), journal


async def test_step_raising_unstorable_exception_fails_cleanly(store_location: str) -> None:
    async with Engine(store_location) as engine:
        handle = await engine.start(Unstorable.raises_odd, run_id="odd")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        rows = [(r.key, r.status) for r in await engine.journal("odd")]
    assert failed.value.status == "failed"
    error = failed.value.error
    assert isinstance(error, ValueError | RemoteError), repr(error)
    assert error_type(error) == "ValueError"
    assert "with a lock inside" in str(error)
    assert rows == [("odd", "failed")]


async def test_step_returning_unstorable_value_fails_cleanly(store_location: str) -> None:
    STORED.clear()
    async with Engine(store_location) as engine:
        handle = await engine.start(Unstorable.returns_odd, run_id="odd")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        rows = [(r.key, r.status) for r in await engine.journal("odd")]
        handle = await engine.start(Unstorable.workflow_returns_odd, run_id="wf")
        with pytest.raises(RunFailed) as wf_failed:
            await handle.result(timeout=5)
    assert failed.value.status == "failed"
    assert isinstance(failed.value.error, SerializationError), repr(failed.value.error)
    assert "'odd'" in str(failed.value.error)
    assert rows == [("odd", "failed")]
    assert STORED == ["odd_value", "x"]
    assert wf_failed.value.status == "failed"
    assert isinstance(wf_failed.value.error, SerializationError)


# =================================================================== cancel
class Cancellable(DO):
    @step(retries=5, initial_delay=60.0)
    async def flaky(self) -> str:
        ATTEMPTS.append((current_step().run_id, "flaky", current_step().attempt, ""))
        raise ConnectionError("not yet")

    @workflow
    async def go(self) -> str:
        return await self.flaky()


async def test_cancel_a_run_waiting_on_a_retry_timer(store_location: str) -> None:
    ATTEMPTS.clear()
    clock = VirtualClock()
    async with Engine(store_location, clock=clock) as engine:
        handle = await engine.start(Cancellable.go, run_id="c")
        await _waiting_until(engine, "c", 1)
        info = await engine.cancel("c")
        assert info.status == "cancelled"
        clock.advance(3600)
        await settle()
        assert len(ATTEMPTS) == 1
        assert (await engine.get_run("c")).status == "cancelled"
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        assert failed.value.status == "cancelled"
    # Not even a fresh engine long after resumes it.
    async with Engine(store_location, clock=VirtualClock(clock.now() + 86400)) as engine:
        engine.register(Cancellable)
        await settle()
        assert (await engine.get_run("c")).status == "cancelled"
    assert len(ATTEMPTS) == 1


async def test_cancel_a_finished_run_is_refused(store_location: str) -> None:
    async with Engine(store_location) as engine:
        handle = await engine.start(Idem.other, 5, run_id="done")
        assert await handle.result(timeout=5) == 5
        with pytest.raises(DotdoError):
            await engine.cancel("done")
        assert (await engine.get_run("done")).status == "completed"


# ============================================================= compensation
UNDONE: list[str] = []


class Saga(DO):
    @step(retries=0)
    async def reserve(self) -> str:
        return "R1"

    @compensate(reserve, retries=1, initial_delay=0.001)
    async def release(self, reservation: str) -> None:
        UNDONE.append(reservation)
        raise PermanentError(f"cannot release {reservation}")

    @step(retries=0)
    async def explode(self) -> None:
        raise ValueError("boom")

    @workflow
    async def go(self) -> None:
        await self.reserve()
        await self.explode()


async def test_failed_compensation_fails_the_run(store_location: str) -> None:
    UNDONE.clear()
    async with Engine(store_location) as engine:
        handle = await engine.start(Saga.go, run_id="saga")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
    assert failed.value.status == "failed"
    error = failed.value.error
    assert isinstance(error, CompensationFailed | RemoteError), repr(error)
    assert error_type(error) == "CompensationFailed"
    assert "cannot release R1" in str(error) and "boom" in str(error)
    assert UNDONE == ["R1"]  # a permanent error is not retried, even in an undo


# ============================================================= group commit
class Batch(DO):
    async def hop(self, i: int) -> int:
        await asyncio.sleep(0)
        return i + 1

    @workflow
    async def five(self) -> int:
        x = 0
        x = await self.do(self.hop, x, step_id="s1")
        x = await self.do(self.hop, x, step_id="s2")
        x = await self.do(self.hop, x, step_id="s3")
        x = await self.do(self.hop, x, step_id="s4")
        x = await self.do(self.hop, x, step_id="s5")
        return x


async def test_group_commit_batches_concurrent_checkpoints(store_location: str) -> None:
    async with Engine(store_location) as engine:
        handles = await asyncio.gather(
            *(engine.start(Batch.five, run_id=f"g{i}") for i in range(50))
        )
        assert await asyncio.gather(*(h.result(timeout=10) for h in handles)) == [5] * 50
        store = engine.store
        assert store.committed >= 50 * 5
        assert store.committed / store.batches > 2, (store.committed, store.batches)


# ============================================================ more contracts
class Capped(DO):
    @step(retries=3, backoff=10.0, initial_delay=100.0, max_delay=150.0)
    async def flaky(self) -> str:
        ATTEMPTS.append((current_step().run_id, "flaky", current_step().attempt, ""))
        if current_step().attempt < 3:
            raise ConnectionError("later")
        return "ok"

    @workflow
    async def go(self) -> str:
        return await self.flaky()


async def test_retry_delay_is_capped_by_max_delay(store_location: str) -> None:
    ATTEMPTS.clear()
    clock = VirtualClock()
    t0 = clock.now()
    async with Engine(store_location, clock=clock) as engine:
        handle = await engine.start(Capped.go, run_id="cap")
        assert await _waiting_until(engine, "cap", 1) == pytest.approx(t0 + 100.0)
        clock.advance(100.0)
        # 100 * 10 = 1000 s, capped at 150 s.
        assert await _waiting_until(engine, "cap", 2) == pytest.approx(t0 + 250.0)
        clock.advance(150.0)
        assert await handle.result(timeout=5) == "ok"


TICKS: list[str] = []


class Graceful(DO):
    async def tick(self, label: str) -> str:
        TICKS.append(label)
        await asyncio.sleep(0.05)
        return label

    @workflow
    async def three(self) -> str:
        a = await self.do(self.tick, "a", step_id="a")
        b = await self.do(self.tick, "b", step_id="b")
        c = await self.do(self.tick, "c", step_id="c")
        return a + b + c


async def test_graceful_close_mid_run_then_resume_runs_each_step_once(store_location: str) -> None:
    TICKS.clear()
    db = store_location
    async with Engine(db) as engine:
        await engine.start(Graceful.three, run_id="g")
        await eventually(lambda: _ready(lambda: TICKS == ["a"]), what="step a in flight")
    # close() let step "a" finish and commit, then stopped: nothing else ran.
    assert TICKS == ["a"]
    async with Engine(db) as engine:
        info = await engine.get_run("g")
        assert info.status == "running" and info.lease_owner is None  # handed back on close
        engine.register(Graceful)
        await engine.recover()  # (or the timer loop's orphan scan claims it first)
        assert await engine.handle("g").result(timeout=5) == "abc"
        keys = [r.key for r in await engine.journal("g")]
    assert TICKS == ["a", "b", "c"]
    assert keys == ["a", "b", "c"]


async def test_cancel_a_run_in_flight_stops_it_at_the_next_boundary(store_location: str) -> None:
    TICKS.clear()
    async with Engine(store_location) as engine:
        handle = await engine.start(Graceful.three, run_id="c")
        await eventually(lambda: _ready(lambda: TICKS == ["a"]), what="step a in flight")
        await engine.cancel("c")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        await settle()
        keys = [(r.key, r.status) for r in await engine.journal("c")]
    assert failed.value.status == "cancelled"
    assert TICKS == ["a"]
    assert keys in ([], [("a", "completed")])


async def test_waiting_for_a_result_does_not_accumulate_futures(store_location: str) -> None:
    clock = VirtualClock()
    async with Engine(store_location, clock=clock) as engine:
        await engine.start(Cancellable.go, run_id="slow")  # parks on a 60 s retry timer
        with pytest.raises(TimeoutError):
            await engine.handle("slow").result(timeout=1.2)
        left = len(engine._waiters.get("slow", []))
        await engine.cancel("slow")
    assert left == 0, f"{left} futures still registered after the caller gave up"
