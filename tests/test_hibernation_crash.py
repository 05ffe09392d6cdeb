"""Crashes around waits, on a virtual clock with dotdo.testing.CrashAt: while hibernating,
between a decision (or a timer, or an event) and the resumed run's next checkpoint. Each run
must finish exactly as without the crash: every step recorded once, every decision once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dotdo import DO, Engine, EventRecord, approval, on, step, workflow
from dotdo.testing import BOUNDARIES, CrashAt, SimulatedCrash, VirtualClock

executed: Counter[str] = Counter()
handled: list[int] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    executed.clear()
    handled.clear()


class Flow(DO):
    @approval(approvers=["manager", "director"], deadline=timedelta(days=7))
    def sign_off(self, amount: float) -> dict:
        return {"title": f"PO {amount}", "amount": amount}

    @step
    async def reserve(self, amount: float) -> str:
        executed["reserve"] += 1
        return f"res-{amount}"

    @step
    async def pay(self, amount: float) -> str:
        executed["pay"] += 1
        return f"paid-{amount}"

    @step
    async def notify(self, text: str) -> str:
        executed["notify"] += 1
        return text

    @workflow
    async def purchase(self, amount: float) -> dict:
        reservation = await self.reserve(amount)
        decision = await self.sign_off(amount)
        if decision.status != "approved":
            note = await self.notify(f"{decision.status}")
            return {"status": decision.status, "note": note}
        payment = await self.pay(amount)
        return {
            "status": "paid",
            "reservation": reservation,
            "payment": payment,
            "by": [d.by for d in decision.decisions],
        }

    @workflow
    async def nap(self, hours: int) -> str:
        await self.reserve(1.0)
        await self.sleep(timedelta(hours=hours))
        return await self.pay(2.0)

    @workflow
    async def order(self, order_id: str) -> dict:
        await self.reserve(3.0)
        evt = await self.wait_for_event("Payment.confirmed", match={"order_id": order_id})
        self.send("Order.paid", {"order_id": order_id})
        paid = await self.pay(3.0)
        return {"event": evt.id, "paid": paid}

    @on.Order.paid
    async def on_paid(self, event: EventRecord) -> None:
        handled.append(event.id)

    @workflow
    async def categorize(self, text: str) -> Any:
        return await self.cascade(
            task=f"categorize {text}",
            tiers={
                "code": lambda: self.guess("code", 0.3),
                "generative": lambda: self.guess("generative", 0.6),
                "human": lambda: None,
            },
            confidence_threshold=0.9,
        )

    async def guess(self, tier: str, confidence: float) -> tuple[str, float]:
        executed[tier] += 1
        return f"{tier}-guess", confidence

    @workflow
    async def bomb(self) -> None:
        await self.notify("boom")


def _engine(db: Path, clock: VirtualClock, faults: Any = None) -> Engine:
    return Engine(db, clock=clock, faults=faults, poll_seconds=0.02).register(Flow)


async def _crash_now(engine: Engine) -> None:
    """Kill the engine as a process death would: a step of another run hits a CrashAt."""
    assert engine.faults is not None
    await engine.start(Flow.bomb, run_id="bomb")
    for _ in range(500):
        if engine._crashed is not None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the engine did not crash")


def _bomb_fault() -> CrashAt:
    return CrashAt(0, points=("before_step",), run_id="bomb")


async def _until_waiting(engine: Engine, run_id: str) -> None:
    info = await engine.idle(run_id, timeout=5)
    assert info.status == "waiting", info


async def _check_once(engine: Engine, run_id: str, keys: list[str]) -> None:
    rows = await engine.journal(run_id)
    assert [r.key for r in rows] == keys
    assert all(r.status == "completed" for r in rows)


async def test_crash_while_waiting_then_decide(store_location: str) -> None:
    db, clock = store_location, VirtualClock()
    engine = _engine(db, clock, _bomb_fault())
    async with engine:
        await engine.start(Flow.purchase, 500.0, run_id="po")
        await _until_waiting(engine, "po")
        await engine.approve("po/sign_off", by="manager", comment="ok")
        await _crash_now(engine)
    async with _engine(db, clock) as engine:
        a = await engine.get_approval("po/sign_off")
        assert (a.status, a.waiting_on, len(a.decisions)) == ("pending", "director", 1)
        assert (await engine.get_run("po")).status == "waiting"
        await engine.approve("po/sign_off", by="director")
        result = await engine.handle("po").result(timeout=5)
        assert result["by"] == ["manager", "director"]
        await _check_once(engine, "po", ["reserve", "sign_off", "pay"])
    assert executed == Counter(reserve=1, pay=1, notify=1)  # notify: the bomb


@pytest.mark.parametrize(
    ("point", "nth", "pay_runs"),
    [
        *((p, 0, 2 if p == "after_step" else 1) for p in BOUNDARIES),
        ("before_commit", 1, 2),  # pay executed, its checkpoint not committed
        ("after_commit", 1, 1),
    ],
)
async def test_crash_after_decision_before_resume(
    store_location: str, point: str, nth: int, pay_runs: int
) -> None:
    """The decision commits (and claims the run) inside approve(). The resumed run commits the
    outcome first (commit #0), then runs `pay` and commits it (commit #1); crash at each."""
    db, clock = store_location, VirtualClock()
    async with _engine(db, clock) as engine:
        await engine.start(Flow.purchase, 500.0, run_id="po")
        await _until_waiting(engine, "po")
        await engine.approve("po/sign_off", by="manager")
    fault = CrashAt(nth, points=(point,), run_id="po")
    engine = _engine(db, clock, fault)
    async with engine:
        decided = await engine.approve("po/sign_off", by="director", comment="final")
        assert decided.status == "approved"
        with pytest.raises(SimulatedCrash):
            await engine.handle("po").result(timeout=5)
        assert fault.fired
    async with _engine(db, clock) as engine:
        result = await engine.handle("po").result(timeout=5)
        assert result == {
            "status": "paid",
            "reservation": "res-500.0",
            "payment": "paid-500.0",
            "by": ["manager", "director"],
        }
        await _check_once(engine, "po", ["reserve", "sign_off", "pay"])
        a = await engine.get_approval("po/sign_off")
        assert [(d.by, d.comment) for d in a.decisions] == [
            ("manager", None),
            ("director", "final"),
        ]
    # pay ran twice only when the crash came after it executed and before its commit
    assert executed == Counter(reserve=1, pay=pay_runs)


async def test_crash_right_after_approve_returns(store_location: str) -> None:
    """approve() returns once the decision is durable; killing the process at that moment
    (before the resumed run reaches any boundary) loses nothing."""
    db, clock = store_location, VirtualClock()
    engine = _engine(db, clock, _bomb_fault())
    async with engine:
        await engine.start(Flow.purchase, 900.0, run_id="po")
        await _until_waiting(engine, "po")
        await engine.approve("po/sign_off", by="manager")
        # the final decision and the crash in the same event-loop turn: the resumed run's
        # task has not started yet
        await engine.approve("po/sign_off", by="director")
        await engine._crash(SimulatedCrash("killed right after approve()"))
        assert executed["pay"] == 0
    async with _engine(db, clock) as engine:
        result = await engine.handle("po").result(timeout=5)
        assert result["status"] == "paid"
        await _check_once(engine, "po", ["reserve", "sign_off", "pay"])
        assert len((await engine.get_approval("po/sign_off")).decisions) == 2
    assert executed == Counter(reserve=1, pay=1)


async def test_crash_after_rejection(store_location: str) -> None:
    db, clock = store_location, VirtualClock()
    async with _engine(db, clock) as engine:
        await engine.start(Flow.purchase, 500.0, run_id="po")
        await _until_waiting(engine, "po")
    # commit #0 records the rejection's outcome, commit #1 the notify step
    engine = _engine(db, clock, CrashAt(1, points=("before_commit",), run_id="po"))
    async with engine:
        await engine.reject("po/sign_off", by="manager", reason="no budget")
        with pytest.raises(SimulatedCrash):
            await engine.handle("po").result(timeout=5)
    async with _engine(db, clock) as engine:
        result = await engine.handle("po").result(timeout=5)
        assert result == {"status": "rejected", "note": "rejected"}
        await _check_once(engine, "po", ["reserve", "sign_off", "notify"])
        a = await engine.get_approval("po/sign_off")
        assert [(d.by, d.decision, d.comment) for d in a.decisions] == [
            ("manager", "rejected", "no budget")
        ]
    assert executed == Counter(reserve=1, notify=2)  # executed, crash before its commit


@pytest.mark.parametrize("point", ["before_step", "after_step", "before_commit"])
async def test_crash_after_expiry_before_checkpoint(store_location: str, point: str) -> None:
    db, clock = store_location, VirtualClock()
    fault = CrashAt(0, points=(point,), run_id="po")
    async with _engine(db, clock) as engine:
        await engine.start(Flow.purchase, 500.0, run_id="po")
        await _until_waiting(engine, "po")
    engine = _engine(db, clock, fault)
    async with engine:
        clock.advance(timedelta(days=8))
        with pytest.raises(SimulatedCrash):
            await engine.handle("po").result(timeout=5)
    async with _engine(db, clock) as engine:
        result = await engine.handle("po").result(timeout=5)
        assert result == {"status": "expired", "note": "expired"}
        await _check_once(engine, "po", ["reserve", "sign_off", "notify"])
        assert (await engine.get_approval("po/sign_off")).status == "expired"


@pytest.mark.parametrize("point", ["before_step", "after_step", "before_commit", "after_commit"])
async def test_crash_between_timer_firing_and_checkpoint(store_location: str, point: str) -> None:
    db, clock = store_location, VirtualClock()
    async with _engine(db, clock) as engine:
        await engine.start(Flow.nap, 2, run_id="nap")
        await _until_waiting(engine, "nap")
    fault = CrashAt(0, points=(point,), run_id="nap")
    engine = _engine(db, clock, fault)
    async with engine:
        await asyncio.sleep(0.05)
        assert (await engine.get_run("nap")).status == "waiting"
        clock.advance(timedelta(hours=2))
        with pytest.raises(SimulatedCrash):
            await engine.handle("nap").result(timeout=5)
        assert fault.fired
    async with _engine(db, clock) as engine:
        assert await engine.handle("nap").result(timeout=5) == "paid-2.0"
        await _check_once(engine, "nap", ["reserve", "pay"])
    assert executed["reserve"] == 1
    assert executed["pay"] == (2 if point in ("after_step", "before_commit") else 1)


@pytest.mark.parametrize("point", ["before_step", "after_step", "before_commit"])
async def test_crash_after_event_delivery(store_location: str, point: str) -> None:
    """The event is recorded for the run before it resumes: after the crash it resumes with
    that same event (not a later one), and its own send is written once."""
    db, clock = store_location, VirtualClock()
    async with _engine(db, clock) as engine:
        await engine.start(Flow.order, "A", run_id="o")
        await _until_waiting(engine, "o")
    fault = CrashAt(0, points=(point,), run_id="o")
    engine = _engine(db, clock, fault)
    async with engine:
        first = await engine.send("Payment.confirmed", {"order_id": "A"})
        with pytest.raises(SimulatedCrash):
            await engine.handle("o").result(timeout=5)
    async with _engine(db, clock) as engine:
        await engine.send("Payment.confirmed", {"order_id": "A", "again": True})
        result = await engine.handle("o").result(timeout=5)
        assert result == {"event": first, "paid": "paid-3.0"}
        await _check_once(engine, "o", ["reserve", "wait", "pay"])
        assert await engine.outbox("o") == [("Order.paid", {"order_id": "A"})]
        for _ in range(200):
            if handled:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert len(handled) == 1


async def test_every_crash_point_of_an_approval_run(tmp_path: Path) -> None:
    """Enumerate every boundary of the run (CrashAt(n) for n = 0, 1, ...), crash there, resume
    in a fresh engine: same result, each step recorded once, each decision once."""
    n = 0
    while True:
        db = tmp_path / f"n{n}.db"
        clock = VirtualClock()
        executed.clear()
        fault = CrashAt(n, run_id="po")
        engine = _engine(db, clock, fault)
        await engine.open()
        try:
            await engine.start(Flow.purchase, 700.0, run_id="po")
            for approver in ("manager", "director"):
                try:
                    await _until_waiting(engine, "po")
                except SimulatedCrash:
                    await engine.close()
                    engine = _engine(db, clock)
                    await engine.open()
                    await _until_waiting(engine, "po")
                a = await engine.get_approval("po/sign_off")
                if a.waiting_on == approver:
                    await engine.approve("po/sign_off", by=approver)
            try:
                result = await engine.handle("po").result(timeout=5)
            except SimulatedCrash:
                await engine.close()
                engine = _engine(db, clock)
                await engine.open()
                result = await engine.handle("po").result(timeout=5)
            assert result["by"] == ["manager", "director"], n
            await _check_once(engine, "po", ["reserve", "sign_off", "pay"])
            a = await engine.get_approval("po/sign_off")
            assert [d.by for d in a.decisions] == ["manager", "director"]
            assert executed["reserve"] in (1, 2) and executed["pay"] in (1, 2)
        finally:
            await engine.close()
        if not fault.fired:
            break
        n += 1
    assert n >= 8  # every boundary of reserve, suspend, resume, pay and finish was tried


@pytest.mark.parametrize("point", [None, "before_commit", "after_commit"])
async def test_crash_around_a_cascade_human_tier(store_location: str, point: str | None) -> None:
    db, clock = store_location, VirtualClock()
    engine = _engine(db, clock, _bomb_fault())
    async with engine:
        await engine.start(Flow.categorize, "invoice", run_id="c")
        await _until_waiting(engine, "c")
        if point is None:  # crash while the human tier waits
            await _crash_now(engine)
    if point is not None:  # crash right after the human's answer is recorded
        fault = CrashAt(0, points=(point,), run_id="c")
        async with _engine(db, clock, fault) as engine:
            await engine.approve("c/cascade:human", by="human", value="legal")
            with pytest.raises(SimulatedCrash):
                await engine.handle("c").result(timeout=5)
    async with _engine(db, clock) as engine:
        if point is None:
            await engine.approve("c/cascade:human", by="human", value="legal")
        result = await engine.handle("c").result(timeout=5)
        assert (result.tier, result.value, result.accepted) == ("human", "legal", True)
        assert result.confidences == {"code": 0.3, "generative": 0.6, "human": 1.0}
        await _check_once(engine, "c", ["cascade:code", "cascade:generative", "cascade:human"])
        assert len((await engine.get_approval("c/cascade:human")).decisions) == 1
    assert executed["code"] == 1 and executed["generative"] == 1
