"""Crash at every durable boundary of the examples, then recover on a fresh Engine.

For each workflow an uncrashed reference run is recorded first (status, result, journal,
outbox). Then, for n = 0, 1, 2, ... until `CrashAt(n)` no longer fires, engine 1 starts the
run with `faults=CrashAt(n)` and dies at the n-th boundary (before_step, after_step,
before_commit, after_commit); engine 2, with no faults, opens the same file, recovers and
finishes the run. Every case must end like the reference, with the contract's exceptions:
a `try_` step that was recorded as started and never recorded as finished fails with
`StepInterrupted` (never runs again), and a `do` step (or an undo) that was executed but not
recorded runs once more.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dotdo import DO, Engine, RunFailed, StepInterrupted, current_step, step, workflow
from dotdo.testing import BOUNDARIES, CrashAt, SimulatedCrash

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import orders, trip  # noqa: E402

RUN_ID = "crash-run"
IN_FLIGHT = ("after_step", "before_commit")
"""Crash points at which a step has executed but its outcome is not committed yet."""


# ------------------------------------------------------------------ helpers
@dataclass
class Calls:
    """Side effects of step bodies, counted over both engines."""

    phase: int = 1
    log: list[tuple[str, int]] = field(default_factory=list)

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.log if n == name)

    def names(self) -> list[str]:
        return [n for n, _ in self.log]


def _counting(calls: Calls, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.log.append((name, calls.phase))
        return await fn(*args, **kwargs)

    return wrapper


def instrument(monkeypatch: pytest.MonkeyPatch, cls: type[DO], names: list[str]) -> Calls:
    """Count every execution of the named methods (plain methods and @step/@compensate)."""
    calls = Calls()
    for name in names:
        attr = cls.__dict__[name]
        if hasattr(attr, "fn") and hasattr(attr, "policy"):  # StepDef / CompensateDef
            monkeypatch.setattr(attr, "fn", _counting(calls, name, attr.fn))
        else:
            monkeypatch.setattr(cls, name, _counting(calls, name, attr))
    return calls


@dataclass
class Outcome:
    status: str
    result: Any
    error: BaseException | None
    rows: list[tuple[str, str, int | None, int]]
    """(key, status, seq, attempts) in journal order."""
    outbox: list[tuple[str, Any]]

    @property
    def completed(self) -> list[str]:
        return [key for key, status, _, _ in self.rows if status == "completed"]


async def collect(engine: Engine, run_id: str) -> Outcome:
    result: Any = None
    error: BaseException | None = None
    try:
        result = await engine.handle(run_id).result(timeout=15)
        status = "completed"
    except RunFailed as failed:
        status, error = failed.status, failed.error
    rows = [(r.key, r.status, r.seq, r.attempts) for r in await engine.journal(run_id)]
    return Outcome(status, result, error, rows, await engine.outbox(run_id))


def check_journal(outcome: Outcome) -> None:
    keys = [key for key, *_ in outcome.rows]
    assert len(keys) == len(set(keys)), f"a step key is journaled twice: {keys}"
    seqs = [seq for _, status, seq, _ in outcome.rows if status == "completed"]
    assert seqs == list(range(1, len(seqs) + 1)), f"completion seqs are not 1..n: {seqs}"
    assert all(seq is None for _, status, seq, _ in outcome.rows if status != "completed")


def step_row(path: Path, key: str) -> str | None:
    """The status of one journal row, read straight from the file engine 1 left behind."""
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT status FROM steps WHERE run_id = ? AND step_key = ?", (RUN_ID, key)
        ).fetchone()
    return row[0] if row else None


@dataclass
class Case:
    n: int
    fired: bool
    point: str | None
    outcome: Outcome
    calls: Calls
    try_row: str | None = None
    """Status of the send_email journal row engine 1 left behind (orders only)."""


async def run_reference(tmp_path: Path, wf: Any, arg: Any) -> tuple[Outcome, list[tuple[str, str]]]:
    """The uncrashed run, with a CrashAt that never fires to record every boundary."""
    probe = CrashAt(10**9)
    async with Engine(tmp_path / "reference.db", faults=probe) as engine:
        handle = await engine.start(wf, arg, run_id=RUN_ID)
        fails = wf is trip.Trips.book_trip
        with pytest.raises(RunFailed) if fails else contextlib.nullcontext():
            await handle.result(timeout=15)
        outcome = await collect(engine, RUN_ID)
    return outcome, probe.trace


async def crash_case(tmp_path: Path, n: int, wf: Any, arg: Any, calls: Calls) -> Case:
    db = tmp_path / f"case{n}.db"
    calls.phase = 1
    crash = CrashAt(n)
    async with Engine(db, faults=crash) as engine:
        handle = await engine.start(wf, arg, run_id=RUN_ID)
        try:
            await handle.result(timeout=15)
        except (SimulatedCrash, RunFailed):
            pass
    point = crash.trace[n][0] if crash.fired else None
    if crash.fired:
        assert crash.trace[-1][0] == point, "the engine went on after its simulated crash"
    try_row = step_row(db, "send_email") if wf is orders.Orders.process_order else None
    calls.phase = 2
    async with Engine(db) as engine:
        engine.register(wf.owner)
        outcome = await collect(engine, RUN_ID)
    return Case(n, crash.fired, point, outcome, calls, try_row)


async def enumerate_cases(
    tmp_path: Path, wf: Any, arg: Any, make_calls: Callable[[], Calls]
) -> list[Case]:
    cases: list[Case] = []
    n = 0
    while True:
        case = await crash_case(tmp_path, n, wf, arg, make_calls())
        cases.append(case)
        if not case.fired:
            return cases
        n += 1
        assert n < 200, "CrashAt keeps firing: the workflow never ends?"


# -------------------------------------------------------------- orders
ORDER_DO_STEPS = ["validate_order", "charge_payment", "fulfill_order"]
ORDER_METHODS = [*ORDER_DO_STEPS, "send_email", "refund_payment"]


async def test_orders_crash_at_every_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf, arg = orders.Orders.process_order, orders.SAMPLE

    ref_calls = instrument(monkeypatch, orders.Orders, ORDER_METHODS)
    reference, trace = await run_reference(tmp_path, wf, arg)
    assert reference.status == "completed"
    assert reference.result == orders.Receipt(
        order_id="po-42",
        status="fulfilled",
        payment_id="pay_po-42",
        amount=28.6,
        tracking="trk_po-42",
    )
    assert reference.completed == ["validate", "charge_payment", "fulfill", "send_email"]
    assert reference.outbox == [("Order.placed", {"order_id": "po-42", "amount": 28.6})]
    assert Counter(ref_calls.names()) == Counter(
        {"validate_order": 1, "charge_payment": 1, "fulfill_order": 1, "send_email": 1}
    )
    check_journal(reference)
    monkeypatch.undo()

    holder: list[Calls] = []

    def fresh_calls() -> Calls:
        monkeypatch.undo()
        holder.append(instrument(monkeypatch, orders.Orders, ORDER_METHODS))
        return holder[-1]

    cases = await enumerate_cases(tmp_path, wf, arg, fresh_calls)
    assert len(cases) == len(trace) + 1, "one case per boundary, plus one past the end"
    assert {c.point for c in cases if c.fired} == set(BOUNDARIES)

    interrupted = []
    for case in cases:
        where = f"crash #{case.n} at {case.point}"
        out, calls = case.outcome, case.calls
        check_journal(out)
        emails = calls.count("send_email")
        assert emails <= 1, f"{where}: try_ step executed {emails} times"
        # After engine 1 died, the journal says whether the try_ attempt was in flight.
        in_flight_try = case.try_row == "started"
        if in_flight_try:
            interrupted.append(case)
            assert out.status == "compensated", where
            assert isinstance(out.error, StepInterrupted), f"{where}: {out.error!r}"
            assert out.completed == [
                "validate",
                "charge_payment",
                "fulfill",
                "compensate:charge_payment",
            ], where
            assert ("send_email", "failed") in [(k, s) for k, s, *_ in out.rows], where
            assert out.outbox == [], f"{where}: a failed run sent {out.outbox}"
            assert calls.count("refund_payment") == 1, where
            # The email itself never ran on engine 2.
            assert ("send_email", 2) not in calls.log, where
        else:
            assert out.status == reference.status, f"{where}: {out.status} {out.error!r}"
            assert out.result == reference.result, where
            assert out.completed == reference.completed, where
            assert out.outbox == reference.outbox, where
            assert emails == 1, where
            assert calls.count("refund_payment") == 0, where
        extra = 0
        for name in ORDER_DO_STEPS:
            count = calls.count(name)
            assert count >= 1, f"{where}: {name} never ran"
            extra += count - 1
        allowed = 1 if case.point in IN_FLIGHT else 0
        assert extra <= allowed, f"{where}: do-steps re-ran {extra} times: {calls.log}"
    # The try_ attempt is in flight from the commit of its "started" row (after_commit) up to
    # the commit of its outcome (before_commit): exactly four boundaries.
    assert [c.point for c in interrupted] == [
        "after_commit",
        "before_step",
        "after_step",
        "before_commit",
    ]
    # The email ran on engine 1 in the two cases where it executed before the crash.
    assert sum(c.calls.count("send_email") for c in interrupted) == 2


# ---------------------------------------------------------------- trip
TRIP_STEPS = ["book_flight", "book_hotel", "book_car"]
TRIP_UNDOS = ["cancel_hotel", "cancel_flight"]


async def test_trip_crash_at_every_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf, arg = trip.Trips.book_trip, trip.SAMPLE
    monkeypatch.setattr(trip.Trips, "cancelled", [])
    ref_calls = instrument(monkeypatch, trip.Trips, TRIP_STEPS + TRIP_UNDOS)
    reference, trace = await run_reference(tmp_path, wf, arg)
    assert reference.status == "compensated"
    assert type(reference.error).__name__ == "PermanentError"
    assert str(reference.error) == "no cars available in lisbon"
    assert reference.completed == [
        "book_flight",
        "book_hotel",
        "compensate:book_hotel",
        "compensate:book_flight",
    ]
    assert ("book_car", "failed") in [(k, s) for k, s, *_ in reference.rows]
    assert trip.Trips.cancelled == ["HT-3N", "FL-LIS-1"]
    assert ref_calls.names() == [
        "book_flight",
        "book_hotel",
        "book_car",
        "cancel_hotel",
        "cancel_flight",
    ]
    check_journal(reference)

    holder: list[Calls] = []

    def fresh_calls() -> Calls:
        monkeypatch.undo()
        monkeypatch.setattr(trip.Trips, "cancelled", [])
        holder.append(instrument(monkeypatch, trip.Trips, TRIP_STEPS + TRIP_UNDOS))
        return holder[-1]

    cases = await enumerate_cases(tmp_path, wf, arg, fresh_calls)
    assert len(cases) == len(trace) + 1
    for case in cases:
        where = f"crash #{case.n} at {case.point}"
        out, calls = case.outcome, case.calls
        check_journal(out)
        assert out.status == "compensated", where
        assert type(out.error).__name__ == "PermanentError", f"{where}: {out.error!r}"
        assert str(out.error) == str(reference.error), where
        assert out.completed == reference.completed, where
        assert out.outbox == [], where
        undos = [n for n in calls.names() if n in TRIP_UNDOS]
        # Undos run in reverse order of the bookings; an undo is a durable step, so a crash
        # between its execution and its commit runs it once more, right away.
        assert undos in (
            ["cancel_hotel", "cancel_flight"],
            ["cancel_hotel", "cancel_hotel", "cancel_flight"],
            ["cancel_hotel", "cancel_flight", "cancel_flight"],
        ), f"{where}: {undos}"
        extra = sum(calls.count(n) - 1 for n in TRIP_STEPS + TRIP_UNDOS)
        assert all(calls.count(n) >= 1 for n in TRIP_STEPS + TRIP_UNDOS), where
        allowed = 1 if case.point in IN_FLIGHT else 0
        assert extra <= allowed, f"{where}: re-ran {extra} times: {calls.log}"


async def test_trip_undo_order_and_count_per_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trips.cancelled (the example's own side-effect list), reset between cases."""
    wf, arg = trip.Trips.book_trip, trip.SAMPLE
    n = 0
    while True:
        cancelled: list[str] = []
        monkeypatch.setattr(trip.Trips, "cancelled", cancelled)
        crash = CrashAt(n)
        db = tmp_path / f"undo{n}.db"
        async with Engine(db, faults=crash) as engine:
            handle = await engine.start(wf, arg, run_id=RUN_ID)
            with pytest.raises((SimulatedCrash, RunFailed)):
                await handle.result(timeout=15)
        point = crash.trace[n][0] if crash.fired else None
        async with Engine(db) as engine:
            engine.register(trip.Trips)
            with pytest.raises(RunFailed) as failed:
                await engine.handle(RUN_ID).result(timeout=15)
        assert failed.value.status == "compensated"
        if point in IN_FLIGHT:
            assert cancelled in (
                ["HT-3N", "FL-LIS-1"],
                ["HT-3N", "HT-3N", "FL-LIS-1"],
                ["HT-3N", "FL-LIS-1", "FL-LIS-1"],
            ), f"crash #{n} at {point}: {cancelled}"
        else:
            assert cancelled == ["HT-3N", "FL-LIS-1"], f"crash #{n} at {point}: {cancelled}"
        if not crash.fired:
            break
        n += 1


# ------------------------------------------------ a loop with transient failures
LOOP_LOG: list[tuple[str, int]] = []


class Looper(DO):
    @step(retries=4, backoff=1.0, initial_delay=0.001)
    async def flaky(self, i: int) -> int:
        ctx = current_step()
        LOOP_LOG.append((ctx.step_id, ctx.attempt))
        if i == 1 and ctx.attempt <= 2:
            raise ConnectionError(f"transient failure {ctx.attempt} of item {i}")
        return i * i

    @workflow
    async def squares(self, n: int) -> int:
        total = 0
        for i in range(n):
            value = await self.flaky(i)
            total = total + value
        self.send("Loop.done", {"total": total})
        return total


async def test_loop_with_retries_crash_at_every_boundary(tmp_path: Path) -> None:
    LOOP_LOG.clear()
    probe = CrashAt(10**9)
    async with Engine(tmp_path / "reference.db", faults=probe) as engine:
        handle = await engine.start(Looper.squares, 3, run_id=RUN_ID)
        assert await handle.result(timeout=15) == 0 + 1 + 4
        reference = await collect(engine, RUN_ID)
    ref_log = list(LOOP_LOG)
    keys = sorted({k for k, _ in ref_log})
    assert len(keys) == 3, ref_log
    retried = [k for k in keys if Counter(k2 for k2, _ in ref_log)[k] > 1]
    assert len(retried) == 1, ref_log
    assert [a for k, a in ref_log if k == retried[0]] == [1, 2, 3]
    assert reference.completed == keys
    assert dict((k, a) for k, _, _, a in reference.rows)[retried[0]] == 3
    assert reference.outbox == [("Loop.done", {"total": 5})]
    check_journal(reference)

    n = 0
    points = set()
    while True:
        LOOP_LOG.clear()
        db = tmp_path / f"loop{n}.db"
        crash = CrashAt(n)
        async with Engine(db, faults=crash) as engine:
            handle = await engine.start(Looper.squares, 3, run_id=RUN_ID)
            expect_crash = crash.nth < len(probe.trace)
            with pytest.raises(SimulatedCrash) if expect_crash else contextlib.nullcontext():
                await handle.result(timeout=15)
        point = crash.trace[n][0] if crash.fired else None
        points.add(point)
        async with Engine(db) as engine:
            engine.register(Looper)
            out = await collect(engine, RUN_ID)
        where = f"crash #{n} at {point}"
        check_journal(out)
        assert out.status == "completed", f"{where}: {out.error!r}"
        assert out.result == 5, where
        assert out.completed == reference.completed, where
        assert out.outbox == reference.outbox, where
        # The attempt counter is durable: the retried item took exactly 3 attempts.
        assert dict((k, a) for k, _, _, a in out.rows)[retried[0]] == 3, where
        executions = Counter(k for k, _ in LOOP_LOG)
        ref_exec = Counter(k for k, _ in ref_log)
        extra = sum(executions[k] - ref_exec[k] for k in keys)
        assert all(executions[k] >= ref_exec[k] for k in keys), f"{where}: {LOOP_LOG}"
        assert extra <= (1 if point in IN_FLIGHT else 0), f"{where}: {LOOP_LOG}"
        # Attempts are numbered 1, 2, 3 with at most one repeated (the one in flight).
        attempts = [a for k, a in LOOP_LOG if k == retried[0]]
        assert sorted(set(attempts)) == [1, 2, 3], f"{where}: {attempts}"
        if not crash.fired:
            break
        n += 1
    assert n == len(probe.trace)
    assert set(BOUNDARIES) <= points


# ------------------------------------------------------ two crashes in a row
async def _crash_run(db: Path, n: int | None, wf: Any, arg: Any, *, start: bool) -> CrashAt | None:
    crash = CrashAt(n) if n is not None else None
    async with Engine(db, faults=crash) as engine:
        engine.register(wf.owner)
        handle = await engine.start(wf, arg, run_id=RUN_ID) if start else engine.handle(RUN_ID)
        try:
            await handle.result(timeout=15)
        except (SimulatedCrash, RunFailed):
            pass
    return crash


async def test_orders_two_crashes_in_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine 1 dies at boundary n1, engine 2 (recovering) dies at its boundary n2, engine 3
    finishes. Every pair (n1, n2) keeps the invariants; each crash that hit a step between
    its execution and its commit allows one more execution of it."""
    wf, arg = orders.Orders.process_order, orders.SAMPLE
    probe = CrashAt(10**9)
    async with Engine(tmp_path / "reference.db", faults=probe) as engine:
        await (await engine.start(wf, arg, run_id=RUN_ID)).result(timeout=15)
    total = len(probe.trace)
    cases = 0
    for n1 in range(total):
        n2 = 0
        while True:
            monkeypatch.undo()
            calls = instrument(monkeypatch, orders.Orders, ORDER_METHODS)
            db = tmp_path / f"twice-{n1}-{n2}.db"
            first = await _crash_run(db, n1, wf, arg, start=True)
            assert first is not None and first.fired
            row1 = step_row(db, "send_email")
            calls.phase = 2
            second = await _crash_run(db, n2, wf, arg, start=False)
            assert second is not None
            row2 = step_row(db, "send_email")
            calls.phase = 3
            async with Engine(db) as engine:
                engine.register(orders.Orders)
                out = await collect(engine, RUN_ID)
            cases += 1
            where = f"crashes #{n1} ({first.trace[n1][0]}) then #{n2}"
            check_journal(out)
            assert calls.count("send_email") <= 1, where
            if "started" in (row1, row2):
                assert out.status == "compensated", f"{where}: {out.status}"
                assert isinstance(out.error, StepInterrupted), f"{where}: {out.error!r}"
                assert out.outbox == [], where
                assert 1 <= calls.count("refund_payment") <= 2, where
            else:
                assert out.status == "completed", f"{where}: {out.status} {out.error!r}"
                assert out.result.tracking == "trk_po-42", where
                assert out.completed == ["validate", "charge_payment", "fulfill", "send_email"]
                assert out.outbox == [("Order.placed", {"order_id": "po-42", "amount": 28.6})]
                assert calls.count("send_email") == 1, where
            hits = [first.trace[n1][0]]
            if second.fired:
                hits.append(second.trace[n2][0])
            allowed = sum(1 for p in hits if p in IN_FLIGHT)
            extra = sum(calls.count(n) - 1 for n in ORDER_DO_STEPS)
            extra += max(calls.count("refund_payment") - 1, 0)
            assert extra <= allowed, f"{where}: {calls.log}"
            if not second.fired:
                break
            n2 += 1
    assert cases > total * 2
