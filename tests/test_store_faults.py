"""Store faults: a write that fails (a full disk, an I/O error, a lock held too long) strands
no run. The engine that saw the failure drives every affected run again from its last
committed checkpoint once the store works again, without a restart, losing nothing,
completing nothing twice, and logging the outage in a few lines, not a traceback per tick.

Faults are injected at COMMIT (as SQLite answers a full disk: the whole transaction rolled
back, an error raised), by the engine's fault hook, as a database locked by another
connection, and, where the machine allows it, as a real tmpfs that fills up.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dotdo import (
    DO,
    ApprovalError,
    DotdoError,
    Engine,
    RunFailed,
    StepInterrupted,
    StoreWriteError,
    approval,
    compensate,
    current_step,
    step,
    workflow,
)
from dotdo.engine.faults import is_store_fault, retry_delay
from dotdo.engine.store.sqlite import Checkpoint
from dotdo.engine.store.sqlite import connection as store_module
from dotdo.engine.store.sqlite import events as sqlite_events
from dotdo.testing import SimulatedCrash


# ================================================================ fault injection
def disk_full() -> Exception:
    return sqlite3.OperationalError("database or disk is full")


def no_space() -> Exception:
    return OSError(errno.ENOSPC, "No space left on device")


def io_error() -> Exception:
    return sqlite3.OperationalError("disk I/O error")


def locked() -> Exception:
    return sqlite3.OperationalError("database is locked")


class _FailAtCommit:
    """The writer's sqlite3 connection, except that COMMIT rolls back and raises."""

    def __init__(self, raw: sqlite3.Connection, error: Exception) -> None:
        self.raw = raw
        self.error = error

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self.raw.execute("ROLLBACK")
            raise self.error
        return self.raw.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        return self.raw.executemany(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction


def _name(fn: Any) -> str:
    """A job's qualified name (of the function a partial wraps)."""
    return str(getattr(getattr(fn, "func", fn), "__qualname__", ""))


Match = Callable[[list[str], list[Checkpoint]], bool]


class Faults:
    """Fails the store's transactions at COMMIT: the next `count`, or every one (a share
    `rate` of them) until `until`; with `only`, just those whose jobs and checkpoints match."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.error: Callable[[], Exception] = disk_full
        self.count = 0
        self.until = 0.0
        self.rate = 1.0
        self.only: Match | None = None
        self.failed = 0
        self.times: list[float] = []
        self._rng = random.Random(7)
        self._jobs: list[str] = []
        run_job = store_module._run_job
        commit = store_module._commit_checkpoints

        async def recording_run_job(conn: Any, job: Any) -> Any:
            self._jobs.append(_name(job.fn))
            return await run_job(conn, job)

        def failing_commit(raw: sqlite3.Connection, owner: str, cps: Any, *rest: Any) -> Any:
            names = self._jobs + [_name(fn) for fn in rest[-1]]
            self._jobs = []
            if self._hit(names, cps):
                self.failed += 1
                self.times.append(time.monotonic())
                raw = _FailAtCommit(raw, self.error())  # type: ignore[assignment]
            return commit(raw, owner, cps, *rest)

        monkeypatch.setattr(store_module, "_run_job", recording_run_job)
        monkeypatch.setattr(store_module, "_commit_checkpoints", failing_commit)

    def _hit(self, names: list[str], checkpoints: list[Checkpoint]) -> bool:
        if self.only is not None and not self.only(names, checkpoints):
            return False
        if self.count > 0:
            self.count -= 1
            return True
        return time.monotonic() < self.until and self._rng.random() < self.rate

    def fail_for(self, seconds: float, *, rate: float = 1.0) -> None:
        self.until, self.rate = time.monotonic() + seconds, rate

    def stop(self) -> None:
        self.until, self.count = 0.0, 0


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    return Faults(monkeypatch)


def with_journal(key: str, status: str) -> Match:
    """Transactions carrying a journal row `key` with `status`."""
    return lambda _, cps: any(j.key == key and j.status == status for c in cps for j in c.journal)


def with_job(name: str) -> Match:
    """Transactions running a job whose function's qualified name contains `name`."""
    return lambda names, _: any(name in n for n in names)


# ================================================================ the workflows
DB: list[Path] = []
EXECUTED: Counter[tuple[str, str]] = Counter()
RERUN: list[tuple[str, str]] = []
"""Steps that ran although the store already held them completed: must stay empty."""


@pytest.fixture(autouse=True)
def _reset() -> None:
    DB.clear()
    EXECUTED.clear()
    RERUN.clear()


def ran() -> None:
    """Count this execution, and note it if the step was already recorded completed."""
    ctx = current_step()
    EXECUTED[(ctx.run_id, ctx.step_id)] += 1
    conn = sqlite3.connect(DB[0])
    try:
        row = conn.execute(
            "SELECT status FROM steps WHERE run_id = ? AND step_key = ?",
            (ctx.run_id, ctx.step_id),
        ).fetchone()
    finally:
        conn.close()
    if row is not None and row[0] == "completed":
        RERUN.append((ctx.run_id, ctx.step_id))


class Mixed(DO):
    @step
    async def add(self, x: int) -> int:
        ran()
        return x + 1

    @step
    async def charge(self, x: int) -> int:
        ran()
        return x * 10

    @compensate(charge)
    async def refund(self, amount: int) -> None:
        ran()

    async def ping(self, x: int) -> int:
        ran()
        return x

    @approval(approvers=["boss"])
    def sign(self, n: int) -> dict:
        return {"title": f"run {n}"}

    @workflow
    async def flow(self, n: int) -> dict:
        a = await self.add(n)
        b = await self.charge(a)
        try:
            c = await self.try_(self.ping, b, step_id="ping")
        except StepInterrupted:
            c = -1
        await self.sleep(0.05)
        decision = await self.sign(n)
        paid = await self.wait_for_event("Paid", match={"n": n})
        d = await self.do(self.add, n, step_id="last")
        if n % 7 == 0:
            raise ValueError(f"boom {n}")
        return {"a": a, "b": b, "c": c, "status": decision.status, "paid": paid.data, "d": d}

    @workflow
    async def steps(self, n: int) -> int:
        total = n
        for _ in range(5):
            total = await self.add(total)
        return total

    @workflow
    async def tried(self) -> int:
        try:
            return await self.try_(self.ping, 7, step_id="ping")
        except StepInterrupted:
            return -1


STEP_KEYS = {"add", "charge", "ping", "sign", "wait", "last"}


async def humans(engine: Engine, runs: int) -> None:
    """Approve every request and pay every approved run, retrying what the store refuses."""
    approved: set[str] = set()
    paid: set[str] = set()
    while len(paid) < runs:
        try:
            for request in await engine.approvals(approver="boss"):
                try:
                    await engine.approve(request.id, by="boss")
                except ApprovalError:
                    pass  # decided already
                approved.add(request.run_id)
            for run_id in sorted(approved - paid):
                await engine.send("Paid", {"n": int(run_id[1:])})
                paid.add(run_id)
        except StoreWriteError:
            pass
        await asyncio.sleep(0.02)


async def outcome(engine: Engine, run_id: str, timeout: float) -> tuple[str, Any]:
    try:
        return "completed", await engine.handle(run_id).result(timeout=timeout)
    except RunFailed as failed:
        return failed.status, failed.error


def expected(n: int, c: int) -> dict[str, Any]:
    a = n + 1
    return {"a": a, "b": a * 10, "c": c, "status": "approved", "paid": {"n": n}, "d": n + 1}


async def check_journals(engine: Engine, run_ids: list[str]) -> None:
    """Each step recorded once, completed steps numbered 1..k without a gap or a repeat."""
    for run_id in run_ids:
        journal = await engine.journal(run_id)
        keys = [r.key for r in journal]
        assert len(keys) == len(set(keys)), (run_id, keys)
        seqs = sorted(r.seq for r in journal if r.status == "completed" and r.seq is not None)
        assert seqs == list(range(1, len(seqs) + 1)), (run_id, seqs)


# ================================================================ many runs, many faults
@pytest.mark.parametrize("error", [disk_full, no_space, io_error], ids=["full", "enospc", "ioerr"])
async def test_fifty_runs_survive_failing_commits_without_a_restart(
    tmp_path: Path, faults: Faults, error: Callable[[], Exception], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dotdo")
    DB.append(tmp_path / "db.sqlite")
    faults.error = error
    runs = 50
    async with Engine(DB[0], poll_seconds=0.02) as engine:
        engine.register(Mixed)
        store = engine.store
        ids = [f"r{n}" for n in range(runs)]
        for n, run_id in enumerate(ids):
            await engine.start(Mixed.flow, n, run_id=run_id)
        people = asyncio.create_task(humans(engine, runs))
        faults.fail_for(1.5, rate=0.4)  # flaky: runs go on between failures...
        await asyncio.sleep(1.5)
        faults.fail_for(1.0)  # ...then an outage: no write at all
        await asyncio.sleep(1.0)
        cleared = time.monotonic()
        results = await asyncio.gather(*(outcome(engine, r, timeout=15) for r in ids))
        took = time.monotonic() - cleared
        await asyncio.wait_for(people, timeout=5)
        await check_journals(engine, ids)
        rows = {r: {x.key: x for x in await engine.journal(r)} for r in ids}
        assert engine.store is store and engine._crashed is None  # no restart
        assert store.health.failures == faults.failed > 30
    assert took < 6, f"the runs took {took:.1f}s to finish after the store recovered"
    assert RERUN == []
    logged = [r for r in caplog.records if r.name.startswith("dotdo")]
    assert [r for r in logged if r.exc_info] == []  # no traceback
    messages = [r.getMessage() for r in logged]
    assert len(messages) == 2, messages  # one outage, however many faults and flaps
    assert messages[0].endswith("writes will be retried until the store works again")
    assert "succeed again" in messages[1]
    for n, (run_id, (status, value)) in enumerate(zip(ids, results, strict=True)):
        assert EXECUTED[(run_id, "ping")] == 1  # try_: at most once, and it did run
        if n % 7 == 0:
            assert (status, type(value).__name__, str(value)) == (
                "compensated",
                "ValueError",
                f"boom {n}",
            )
            assert rows[run_id]["compensate:charge"].status == "completed"
            continue
        assert status == "completed", (run_id, value)
        c = value["c"]
        assert value == expected(n, c) and c in (-1, (n + 1) * 10)
        assert set(rows[run_id]) == STEP_KEYS
        if c == -1:  # its result did not commit: interrupted, as after a crash
            assert rows[run_id]["ping"].status == "failed"
            assert isinstance(rows[run_id]["ping"].error, StepInterrupted)


async def test_a_step_whose_result_failed_to_commit_runs_again_and_is_recorded_once(
    tmp_path: Path, faults: Faults
) -> None:
    DB.append(tmp_path / "db.sqlite")
    faults.only, faults.count = with_journal("add[3]", "completed"), 3
    async with Engine(DB[0]) as engine:
        handle = await engine.start(Mixed.steps, 0, run_id="s")
        assert await handle.result(timeout=10) == 5
        journal = await engine.journal("s")
    assert faults.failed == 3
    assert EXECUTED[("s", "add[3]")] == 4  # at least once: three lost results, then one kept
    assert sum(EXECUTED.values()) == 8  # and no other step ran again
    assert RERUN == []
    assert [(r.key, r.seq) for r in journal] == [(f"add[{i}]", i) for i in range(1, 6)]


async def test_a_try_whose_result_failed_to_commit_ends_interrupted_not_rerun(
    tmp_path: Path, faults: Faults
) -> None:
    DB.append(tmp_path / "db.sqlite")
    faults.only, faults.count = with_journal("ping", "completed"), 1
    async with Engine(DB[0]) as engine:
        assert await (await engine.start(Mixed.tried, run_id="t")).result(timeout=10) == -1
        (row,) = await engine.journal("t")
    assert EXECUTED[("t", "ping")] == 1
    assert row.status == "failed" and isinstance(row.error, StepInterrupted)


async def test_a_try_whose_started_row_failed_to_commit_runs_once(
    tmp_path: Path, faults: Faults
) -> None:
    DB.append(tmp_path / "db.sqlite")
    faults.only, faults.count = with_journal("ping", "started"), 2
    async with Engine(DB[0]) as engine:
        assert await (await engine.start(Mixed.tried, run_id="t")).result(timeout=10) == 7
    assert faults.failed == 2 and EXECUTED[("t", "ping")] == 1


# ================================================================ run creation
async def test_start_waits_out_a_failing_store(tmp_path: Path, faults: Faults) -> None:
    DB.append(tmp_path / "db.sqlite")
    async with Engine(DB[0]) as engine:
        engine.register(Mixed)
        faults.fail_for(0.6)
        began = time.monotonic()
        handles = await asyncio.gather(
            *(engine.start(Mixed.steps, n, run_id=f"s{n}") for n in range(20))
        )
        assert time.monotonic() - began >= 0.5  # start waited for the store...
        results = [await h.result(timeout=10) for h in handles]
        assert len(await engine.runs(limit=100)) == 20  # ...and created each run once
    assert results == [n + 5 for n in range(20)]
    assert faults.failed > 0 and RERUN == []


async def test_a_call_made_while_the_store_fails_raises_store_write_error(
    tmp_path: Path, faults: Faults
) -> None:
    async with Engine(tmp_path / "db.sqlite") as engine:
        faults.count = 1
        with pytest.raises(StoreWriteError, match="disk is full") as raised:
            await engine.send("Paid", {"n": 1})
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        assert await engine.outbox() == []  # nothing of it was stored
        await engine.send("Paid", {"n": 1})  # a retry works
        assert await engine.outbox() == [("Paid", {"n": 1})]


# ================================================================ waits
async def test_a_run_woken_while_hibernating_is_resumed_though_the_wake_up_failed(
    tmp_path: Path, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event matched between a run's subscription and its hibernating checkpoint: the
    dispatcher could not wake a run still running, so the run wakes itself right after it
    hibernated (`_poke`). If that write fails, the run must not stay asleep."""
    DB.append(tmp_path / "db.sqlite")
    engine = Engine(DB[0])
    subscribe = sqlite_events.subscribe

    async def subscribe_then_match(db: Any, lease: Any, key: str, *rest: Any) -> Any:
        found = await subscribe(db, lease, key, *rest)

        async def match(conn: Any) -> None:
            cursor = await conn.execute(
                "INSERT INTO outbox(event, data, created_at) VALUES ('Paid', '{\"n\": 1}', ?)",
                (time.time() + 1,),
            )
            await conn.execute(
                "UPDATE waits SET event_id = ? WHERE run_id = ?", (cursor.lastrowid, lease.run_id)
            )

        await db.write(match)  # before the checkpoint that hibernates the run
        return found

    monkeypatch.setattr(sqlite_events, "subscribe", subscribe_then_match)

    class Payee(DO):
        @workflow
        async def wait(self) -> Any:
            return (await self.wait_for_event("Paid")).data

    faults.only, faults.count = with_job("SqliteStore.wake"), 2  # _poke's wake-up
    async with engine:
        handle = await engine.start(Payee.wait, run_id="p")
        assert await handle.result(timeout=10) == {"n": 1}
    assert faults.failed == 2


async def test_cancelling_a_run_survives_a_failed_commit(tmp_path: Path, faults: Faults) -> None:
    gate = asyncio.Event()

    class Slow(DO):
        async def hold(self) -> int:
            await gate.wait()
            return 1

        @workflow
        async def go(self) -> int:
            await self.do(self.hold, step_id="hold")
            await self.do(self.hold, step_id="again")
            return 2

    async with Engine(tmp_path / "db.sqlite") as engine:
        handle = await engine.start(Slow.go, run_id="c")
        await asyncio.sleep(0.05)
        await engine.cancel("c")  # the run is in its step: it stops at its next boundary
        faults.only, faults.count = with_journal("hold", "completed"), 1
        gate.set()  # ...whose commit fails: the run goes on from its checkpoint, still cancelled
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=10)
    assert failed.value.status == "cancelled" and faults.failed == 1


async def test_approvals_of_a_cancelled_run_are_withdrawn_though_a_write_failed(
    tmp_path: Path, faults: Faults
) -> None:
    DB.append(tmp_path / "db.sqlite")
    async with Engine(DB[0]) as engine:
        engine.register(Mixed)
        await engine.start(Mixed.flow, 1, run_id="r1")
        for _ in range(500):
            if await engine.approvals(approver="boss"):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the run never asked for its approval")
        faults.only, faults.count = with_job("withdraw_approvals"), 2
        info = await engine.cancel("r1")
        assert info.status == "cancelled"
        (request,) = await engine.approvals(status=None)
    assert request.status == "withdrawn" and faults.failed == 2


# ================================================================ leases
async def test_lease_renewal_failures_are_retried_and_logged_once(
    tmp_path: Path, faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dotdo")
    gate = asyncio.Event()

    class Held(DO):
        async def hold(self) -> int:
            await gate.wait()
            return 1

        @workflow
        async def go(self) -> int:
            return await self.do(self.hold, step_id="hold")

    async with Engine(tmp_path / "db.sqlite", lease_seconds=0.9) as engine:
        handle = await engine.start(Held.go, run_id="h")
        faults.only = with_job("renew")
        faults.fail_for(2.0)
        await asyncio.sleep(2.0)
        failed = faults.failed
        await asyncio.sleep(0.8)  # renewals succeed again
        row = await engine.store.fetch_one("SELECT lease_owner, lease_until FROM runs")
        assert row is not None and row["lease_owner"] == engine.owner
        assert row["lease_until"] > time.time()  # renewed after the outage
        gate.set()
        assert await handle.result(timeout=5) == 1
    assert failed >= 3  # retried, not given up
    lines = [r.getMessage() for r in caplog.records if "lease renewal" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "failed" in lines[0] and "works again" in lines[1]
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_run_held_here_that_nothing_advances_is_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever path loses a run (here: its task never spawned), this engine must not keep
    renewing its lease for nobody: its orphan scan resumes it."""
    DB.append(tmp_path / "db.sqlite")
    engine = Engine(DB[0], lease_seconds=0.6)
    spawn = engine._spawn
    dropped: list[str] = []

    def drop_first(run: Any, *args: Any, **kwargs: Any) -> None:
        if not dropped:
            dropped.append(run.run_id)
            return
        spawn(run, *args, **kwargs)

    monkeypatch.setattr(engine, "_spawn", drop_first)
    async with engine:
        handle = await engine.start(Mixed.steps, 1, run_id="lost")
        assert dropped == ["lost"]
        assert await handle.result(timeout=5) == 6
    assert any("nothing advanced it" in r.getMessage() for r in caplog.records)


async def test_close_releases_the_leases_after_a_brief_fault(
    tmp_path: Path, faults: Faults
) -> None:
    gate = asyncio.Event()

    class Stuck(DO):
        async def hold(self) -> int:
            await gate.wait()
            return 1

        @workflow
        async def go(self) -> int:
            return await self.do(self.hold, step_id="hold")

    db = tmp_path / "db.sqlite"
    async with Engine(db, shutdown_grace=0.2) as engine:
        await engine.start(Stuck.go, run_id="k")
        await asyncio.sleep(0.05)
        faults.only, faults.count = with_job("release_leases"), 3
    gate.set()
    assert faults.failed == 3
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT lease_owner FROM runs").fetchall() == [(None,)]
    finally:
        conn.close()


# ================================================================ logging
async def test_an_outage_is_logged_in_a_few_lines_not_per_tick(
    tmp_path: Path, faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    DB.append(tmp_path / "db.sqlite")
    caplog.set_level(logging.INFO, logger="dotdo")
    async with Engine(DB[0], poll_seconds=0.01, lease_seconds=1.5) as engine:
        engine.register(Mixed)
        handles = [await engine.start(Mixed.steps, n, run_id=f"s{n}") for n in range(10)]
        faults.fail_for(3.0)
        await engine.start(Mixed.flow, 3, run_id="r3")  # waits out the outage
        results = [await h.result(timeout=10) for h in handles]
    assert results == [n + 5 for n in range(10)]
    assert faults.failed >= 10
    records = [r for r in caplog.records if r.name.startswith("dotdo")]
    messages = [r.getMessage() for r in records]
    assert [r for r in records if r.exc_info] == [], messages  # no traceback at all
    assert len(records) <= 4, messages  # the store: failing, working; the leases: same
    assert "writes will be retried" in messages[0]
    assert any("succeed again" in m for m in messages)


# ================================================================ hook and lock
async def test_an_exception_from_the_fault_hook_fails_a_commit_and_is_not_a_crash(
    tmp_path: Path,
) -> None:
    DB.append(tmp_path / "db.sqlite")
    raised: Counter[str] = Counter()

    def hook(point: str, run_id: str) -> None:
        if point in ("before_commit", "before_step", "after_step") and not raised[point]:
            raised[point] += 1
            raise OSError(errno.EIO, f"injected at {point}")

    async with Engine(DB[0], faults=hook) as engine:
        handle = await engine.start(Mixed.steps, 0, run_id="h")
        assert await handle.result(timeout=10) == 5
        assert engine._crashed is None and engine.store.health.failures == 1
    assert raised == {"before_commit": 1, "before_step": 1, "after_step": 1}
    assert RERUN == []


async def test_a_simulated_crash_from_the_hook_still_stops_the_engine(tmp_path: Path) -> None:
    def hook(point: str, run_id: str) -> None:
        if point == "before_commit":
            raise SimulatedCrash("dead")

    async with Engine(tmp_path / "db.sqlite", faults=hook) as engine:
        handle = await engine.start(Mixed.steps, 0, run_id="x")
        with pytest.raises(SimulatedCrash):
            await handle.result(timeout=5)
        assert isinstance(engine._crashed, SimulatedCrash)


async def test_a_database_locked_past_busy_timeout_delays_runs_only(tmp_path: Path) -> None:
    DB.append(tmp_path / "db.sqlite")
    gate = asyncio.Event()

    class Gated(DO):
        async def hold(self, n: int) -> int:
            ran()
            await gate.wait()
            return n

        @workflow
        async def go(self, n: int) -> int:
            first = await self.do(self.hold, n, step_id="hold")
            return first + await self.do(self.hold, n + 1, step_id="again")

    async with Engine(DB[0], busy_timeout=0.1) as engine:
        handles = [await engine.start(Gated.go, n, run_id=f"l{n}") for n in range(5)]
        holder = sqlite3.connect(DB[0], isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock...
            gate.set()  # ...when the steps end and their results are to be committed
            for _ in range(300):
                if engine.store.health.failures >= 3:
                    break
                await asyncio.sleep(0.01)
            assert engine.store.health.failures >= 3
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        results = [await h.result(timeout=10) for h in handles]
    assert results == [2 * n + 1 for n in range(5)]
    assert RERUN == []


# ================================================================ resuming
async def test_a_fault_while_resuming_a_run_is_retried_not_a_failure(
    tmp_path: Path, faults: Faults
) -> None:
    """An event wait timed out: resuming the run first records the timeout. That write
    failing must neither fail the run ("cannot be resumed") nor leave it claimed and idle."""

    class Waiter(DO):
        @workflow
        async def wait(self) -> Any:
            return await self.wait_for_event("Never", timeout=0.2)

    async with Engine(tmp_path / "db.sqlite", poll_seconds=0.02) as engine:
        faults.only, faults.count = with_job("time_out_wait"), 2
        handle = await engine.start(Waiter.wait, run_id="w")
        assert await handle.result(timeout=5) is None
    assert faults.failed == 2


async def test_a_run_that_cannot_be_loaded_is_failed_though_the_first_try_to_say_so_failed(
    tmp_path: Path, faults: Faults
) -> None:
    DB.append(tmp_path / "db.sqlite")
    async with Engine(DB[0]) as engine:
        engine.register(Mixed)
        await engine.start(Mixed.flow, 1, run_id="u")
        for _ in range(500):
            if await engine.approvals(approver="boss"):
                break
            await asyncio.sleep(0.01)
        await engine.store.execute("UPDATE runs SET state = '{\"broken\": ' WHERE run_id = 'u'")
        faults.only, faults.count = with_job("fail_run"), 2
        await engine.approve("u/sign", by="boss")
        with pytest.raises(RunFailed) as failed:
            await engine.handle("u").result(timeout=5)
    assert "cannot be resumed" in str(failed.value) and faults.failed == 2


async def test_two_resumes_of_one_run_load_and_drive_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry, a wake-up and the sweep may each resume a run: one loads it, one drives it."""
    DB.append(tmp_path / "db.sqlite")
    engine = Engine(DB[0])
    spawn, load = engine._spawn, engine._load_and_drive
    idle: list[tuple[Any, Any]] = []
    loads: list[str] = []

    def counted(row: Any) -> Any:
        loads.append(row.run_id)
        return load(row)

    monkeypatch.setattr(engine, "_load_and_drive", counted)
    monkeypatch.setattr(engine, "_spawn", lambda run, event, **_: idle.append((run, event)))
    async with engine:
        handle = await engine.start(Mixed.steps, 1, run_id="twice")  # left idle
        monkeypatch.setattr(engine, "_spawn", spawn)
        await asyncio.gather(engine._resume("twice"), engine._resume("twice"))
        assert loads == ["twice"]
        ((run, event),) = idle
        spawn(run, event)  # a second driver for a run already driven: refused
        assert await handle.result(timeout=5) == 6
    assert set(EXECUTED.values()) == {1} and RERUN == []


async def test_a_run_leased_by_another_engine_is_not_driven_here(tmp_path: Path) -> None:
    gate = asyncio.Event()
    started: list[str] = []

    class Owned(DO):
        async def hold(self) -> int:
            started.append("hold")
            await gate.wait()
            return 1

        @workflow
        async def go(self) -> int:
            return await self.do(self.hold, step_id="hold")

    db = tmp_path / "db.sqlite"
    async with Engine(db) as first, Engine(db) as second:
        second.register(Owned)
        handle = await first.start(Owned.go, run_id="o")
        await asyncio.sleep(0.05)
        await second._resume("o")  # as a stale retry or wake-up would
        await asyncio.sleep(0.05)
        gate.set()
        assert await handle.result(timeout=5) == 1
    assert started == ["hold"]


async def test_losing_the_lease_while_resuming_does_not_mark_the_run_unloadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Sleeper(DO):
        @workflow
        async def nap(self) -> int:
            await self.sleep(3600)
            return 1

    async with Engine(tmp_path / "db.sqlite") as engine:
        await engine.start(Sleeper.nap, run_id="n")
        await engine.idle("n", timeout=5)

        async def stolen(run: Any, wake_at: Any) -> str:  # another process took it meanwhile
            await engine.store.execute("UPDATE runs SET lease_owner = 'elsewhere:1:x'")
            return "park"

        monkeypatch.setattr(engine.waits, "resolution", stolen)
        await engine.store.execute(
            "UPDATE runs SET status = 'running', lease_owner = ? WHERE run_id = 'n'",
            (engine.owner,),
        )
        await engine._resume("n")
        assert "n" not in engine._unloadable
    assert not [r for r in caplog.records if "cannot resume" in r.getMessage()]


async def test_retries_wake_the_moment_the_store_works_again(
    tmp_path: Path, faults: Faults
) -> None:
    gate = asyncio.Event()

    class Gated(DO):
        async def hold(self, n: int) -> int:
            await gate.wait()
            return n

        @workflow
        async def go(self, n: int) -> int:
            return await self.do(self.hold, n, step_id="hold") + 1

    async with Engine(tmp_path / "db.sqlite") as engine:
        handles = [await engine.start(Gated.go, n, run_id=f"w{n}") for n in range(10)]
        faults.fail_for(3.4)  # long enough for the runs' backoff to reach its 2 s cap
        gate.set()
        await asyncio.sleep(3.5)
        await engine.send("Ping")  # the first write that works again...
        cleared = time.monotonic()
        results = [await h.result(timeout=10) for h in handles]
        took = time.monotonic() - cleared
    assert results == [n + 1 for n in range(10)]
    assert took < 1.2, f"the runs slept {took:.1f}s past the store's recovery"  # ...wakes them


async def test_a_caller_awaiting_a_result_rides_out_failing_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()

    class Gated(DO):
        async def hold(self) -> int:
            await gate.wait()
            return 1

        @workflow
        async def go(self) -> int:
            return await self.do(self.hold, step_id="hold")

    async with Engine(tmp_path / "db.sqlite") as engine:
        handle = await engine.start(Gated.go, run_id="g")
        fetch = engine.store.fetch
        until = time.monotonic() + 0.8

        async def flaky(sql: str, params: Any = ()) -> Any:
            if time.monotonic() < until:
                raise sqlite3.OperationalError("disk I/O error")
            return await fetch(sql, params)

        monkeypatch.setattr(engine.store, "fetch", flaky)
        waiter = asyncio.ensure_future(handle.result(timeout=10))
        await asyncio.sleep(0.3)
        gate.set()
        assert await waiter == 1


async def test_a_runs_backoff_starts_small_again_after_a_commit_works(
    tmp_path: Path, faults: Faults
) -> None:
    DB.append(tmp_path / "db.sqlite")
    first, later = with_journal("add[1]", "completed"), with_journal("add[3]", "completed")
    budget = {"first": 5, "later": 1}

    def match(names: list[str], cps: list[Checkpoint]) -> bool:
        for name, hit in (("first", first), ("later", later)):
            if hit(names, cps) and budget[name] > 0:
                budget[name] -= 1
                return True
        return False

    faults.only, faults.count = match, 6
    async with Engine(DB[0]) as engine:
        assert await (await engine.start(Mixed.steps, 0, run_id="b")).result(timeout=10) == 5
        done = time.monotonic()
    assert faults.failed == 6
    assert done - faults.times[-1] < 0.8  # 0.05 s, not the 1.6 s a sixth fault in a row waits


async def test_an_engine_error_is_logged_and_retried_more_slowly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    DB.append(tmp_path / "db.sqlite")
    raised: list[str] = []

    def hook(point: str, run_id: str) -> None:
        if point == "before_step" and not raised:
            raised.append(point)
            raise RuntimeError("a bug, not the disk")

    async with Engine(DB[0], faults=hook) as engine:
        began = time.monotonic()
        assert await (await engine.start(Mixed.steps, 0, run_id="e")).result(timeout=10) == 5
        took = time.monotonic() - began
    assert 0.9 < took < 5
    (record,) = [r for r in caplog.records if r.exc_info]
    assert "engine error while advancing run e" in record.getMessage()


async def test_the_timer_loop_backs_off_while_the_store_fails(
    tmp_path: Path, faults: Faults
) -> None:
    class Napper(DO):
        @workflow
        async def nap(self) -> int:
            await self.sleep(0.1)
            return 1

    async with Engine(tmp_path / "db.sqlite", poll_seconds=0.01) as engine:
        handle = await engine.start(Napper.nap, run_id="n")
        await engine.idle("n", timeout=5)
        faults.only = with_job("claim_runs")  # the timer falls due while claims fail
        faults.fail_for(2.0)
        await asyncio.sleep(2.0)
        assert await handle.result(timeout=5) == 1
    assert 3 <= faults.failed <= 15  # backing off to 2 s, not 200 tries at every tick


async def test_closing_during_an_outage_is_bounded_and_loses_nothing(
    tmp_path: Path, faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    DB.append(tmp_path / "db.sqlite")
    async with Engine(DB[0]) as engine:
        engine.register(Mixed)
        handles = [await engine.start(Mixed.steps, n, run_id=f"c{n}") for n in range(5)]
        faults.fail_for(60)  # outlives this engine
        await asyncio.sleep(2.5)  # the runs back off to 2 s between tries
        began = time.monotonic()
        engine.shutdown_grace = 1.0
    took = time.monotonic() - began
    assert took < 1.8, f"close took {took:.1f}s"  # the leases: 1 s of retries; runs: no wait
    assert any("could not release" in r.getMessage() for r in caplog.records)
    faults.stop()
    async with Engine(DB[0]) as again:  # this process's next engine sees the leases dead
        again.register(Mixed)
        results = [await again.handle(h.run_id).result(timeout=10) for h in handles]
    assert results == [n + 5 for n in range(5)] and RERUN == []


# ================================================================ inside the store
async def test_a_job_whose_transaction_sqlite_rolled_back_fails_its_batch(
    tmp_path: Path,
) -> None:
    """SQLite answers a full disk by rolling the whole transaction back: the job's savepoint
    is gone with it, and the batch must fail with the disk's error, not "no such savepoint"."""

    async def fills_the_disk(conn: Any) -> None:
        await conn.execute("ROLLBACK")
        raise disk_full()

    def fills_the_disk_on_thread(raw: sqlite3.Connection) -> None:
        raw.execute("ROLLBACK")
        raise disk_full()

    async with Engine(tmp_path / "db.sqlite") as engine:
        for write in (
            engine.store.write(fills_the_disk),
            engine.store.write_on_thread(fills_the_disk_on_thread),
        ):
            with pytest.raises(StoreWriteError, match="disk is full") as raised:
                await write
            assert is_store_fault(raised.value)
        await engine.send("Ping")  # the store goes on
        assert await engine.outbox() == [("Ping", None)]


async def test_an_exception_from_the_hook_after_a_commit_does_not_undo_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    DB.append(tmp_path / "db.sqlite")
    raised: list[str] = []

    def hook(point: str, run_id: str) -> None:
        if point == "after_commit" and len(raised) < 2:
            raised.append(run_id)
            raise RuntimeError("hook bug")

    async with Engine(DB[0], faults=hook) as engine:
        began = time.monotonic()
        assert await (await engine.start(Mixed.steps, 0, run_id="a")).result(timeout=10) == 5
        took = time.monotonic() - began
    assert raised == ["a", "a"] and took < 0.8  # no retry of a run whose commit stood
    assert not [r for r in caplog.records if "engine error" in r.getMessage()]
    assert sum("the commit stands" in r.getMessage() for r in caplog.records) == 2


# ================================================================ entities
async def test_an_entity_call_the_store_cannot_save_is_unavailable_and_safe_to_retry(
    tmp_path: Path, faults: Faults
) -> None:
    from test_entities_support import ALL, APPLIED

    from dotdo.entities import EntityUnavailable, entities_of

    APPLIED.clear()
    async with Engine(tmp_path / "db.sqlite").register(*ALL) as engine:
        entities = entities_of(engine)
        faults.only, faults.count = with_job("commit_call"), 1
        with pytest.raises(EntityUnavailable, match="disk is full"):
            await entities.call(entities.Counter("e").increment(by=5), call_id="c1")
        assert await entities.call(entities.Counter("e").increment(by=5), call_id="c1") == 5
        assert (await entities.state("Counter", "e")).n == 5
    assert faults.failed == 1


async def test_a_send_whose_callee_cannot_save_it_is_delivered_later_once(
    tmp_path: Path, faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    from test_entities_support import ALL, APPLIED, Flows

    from dotdo.entities import entities_of

    APPLIED.clear()
    async with Engine(tmp_path / "db.sqlite").register(*ALL) as engine:
        entities = entities_of(engine)
        entities.max_backoff = 0.05
        faults.only, faults.count = with_job("commit_call"), 3
        handle = await engine.start(Flows.announce, "u", "hello", run_id="s")
        assert await handle.result(timeout=5) == "sent"
        # The callee's state commits before the dispatcher records the delivery
        # in the outbox (two transactions), so wait for both.
        for _ in range(500):
            rows = await entities.outbox()
            if (await entities.state("User", "u")).inbox and rows[0]["outcome"]:
                break
            await asyncio.sleep(0.01)
        assert (await entities.state("User", "u")).inbox == ["hello"]
        (row,) = await entities.outbox()
        assert row["outcome"] == "ok" and row["attempts"] == 3
    assert faults.failed == 3  # the method ran each time; one run of it was saved
    assert APPLIED["notify:u"] == 4
    assert not [r for r in caplog.records if r.exc_info]


# ================================================================ classification
def test_what_counts_as_a_store_fault() -> None:
    assert is_store_fault(disk_full()) and is_store_fault(no_space())
    assert is_store_fault(io_error()) and is_store_fault(locked())
    wrapped = StoreWriteError("x")
    wrapped.__cause__ = disk_full()
    assert is_store_fault(wrapped)
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("SELECT * FROM nowhere")
    except sqlite3.OperationalError as exc:
        assert not is_store_fault(exc)  # a SQL mistake: no retry makes it work
    finally:
        conn.close()
    assert not is_store_fault(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not is_store_fault(DotdoError("x")) and not is_store_fault(ValueError("x"))
    assert [retry_delay(i, fault=True) for i in range(8)] == [
        0.05,
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        2.0,
        2.0,
    ]


# ================================================================ a real full disk
def _mount(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=10)


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)


class Bulky(DO):
    @step
    async def blob(self, n: int, i: int) -> str:
        ran()
        return f"{n}:{i}:" + "x" * 20_000

    @workflow
    async def go(self, n: int) -> int:
        total = 0
        for i in range(4):
            total += len(await self.blob(n, i))
        return total


@pytest.mark.parametrize("relief", ["grow", "delete"])
async def test_a_real_full_disk_then_space_again(tmp_path: Path, relief: str) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        reason = "needs root to mount a tmpfs"
        print(f"skipped: {reason}")
        pytest.skip(reason)
    mounted = _mount(["-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)])
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.strip()}"
        print(f"skipped: {reason}")
        pytest.skip(reason)
    try:
        DB.append(mnt / "db.sqlite")
        async with Engine(DB[0], poll_seconds=0.02) as engine:
            engine.register(Bulky)
            store = engine.store
            _fill(mnt / "filler")
            handles = [
                asyncio.ensure_future(engine.start(Bulky.go, n, run_id=f"b{n}")) for n in range(8)
            ]
            for _ in range(500):
                if store.health.failures >= 5:
                    break
                await asyncio.sleep(0.01)
            assert store.health.failures >= 5, "the full disk never failed a commit"
            await asyncio.sleep(0.5)
            if relief == "grow":
                grown = _mount(["-o", "remount,size=64m", str(mnt)])
                assert grown.returncode == 0, grown.stderr
            else:
                (mnt / "filler").unlink()
            cleared = time.monotonic()
            results = [await (await h).result(timeout=20) for h in handles]
            took = time.monotonic() - cleared
            await check_journals(engine, [f"b{n}" for n in range(8)])
            assert engine.store is store and engine._crashed is None
        assert results == [4 * (len(f"{n}:0:") + 20_000) for n in range(8)]
        assert took < 8, f"runs took {took:.1f}s after the disk had space again"
        assert RERUN == []
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
