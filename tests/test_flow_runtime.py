"""A loaded .flow workflow runs on the unchanged engine exactly like its Python twin.

The orders and trip flows give the same results, journals and outboxes as examples/orders.py
and examples/trip.py; a crash at any durable boundary is recovered by a fresh engine; and
the hibernating constructs (approvals, chains, event waits, handlers, cascades, schedules,
sleeps) run end to end.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dotdo import DO, Engine, PermanentError, RunFailed, StepInterrupted  # noqa: E402
from dotdo.dsl.flow.diagnostics import FlowError, FlowFailure  # noqa: E402
from dotdo.dsl.flow.loader import FlowModule, FlowWorkflow, load_flow, load_source  # noqa: E402
from dotdo.engine.triggers import Schedule  # noqa: E402
from dotdo.testing import CrashAt, VirtualClock  # noqa: E402
from examples import flow_steps  # noqa: E402
from examples.flow_steps import Expense, PurchaseOrder  # noqa: E402
from examples.orders import SAMPLE, Order, Orders, Receipt  # noqa: E402
from examples.trip import SAMPLE as TRIP  # noqa: E402
from examples.trip import Trips  # noqa: E402

EXAMPLES = ROOT / "examples"


def flow(name: str) -> FlowModule:
    return load_flow(EXAMPLES / f"{name}.flow")


@pytest.fixture(autouse=True)
def _clean() -> None:
    flow_steps.CANCELLED.clear()
    flow_steps.OUTBOX.clear()
    flow_steps.REPORTS.clear()
    Trips.cancelled.clear()


async def journal(engine: Engine, run_id: str) -> list[tuple[str, str]]:
    return [(r.key, r.status) for r in await engine.journal(run_id)]


# ------------------------------------------------------------------ surface
def test_load_flow_gives_workflows_schedules_handlers() -> None:
    module = flow("order")
    assert module.path == (EXAMPLES / "order.flow").resolve()
    assert list(module.workflows) == ["process_order"]
    assert flow("order") is module  # an unchanged file loads once
    events = flow("events")
    assert events.handlers == [
        ("Order.placed", "confirm_order"),
        ("Payment.failed", "retry_payment"),
        ("*.failed", "log_failure"),
    ]
    assert events["log_failure"].trigger == "*.failed"
    schedules = flow("schedules").schedules
    assert schedules == [
        (
            Schedule(unit="days", weekday=0, at=datetime(1, 1, 1, 9).time()),
            "generate_weekly_report",
        ),
        (
            Schedule(unit="days", at=datetime(1, 1, 1, 18).time(), tz="Europe/Paris"),
            "send_daily_summary",
        ),
        (Schedule(unit="minutes", interval=15), "check_health_status"),
    ]
    assert flow("schedules")["check_health_status"].schedule == schedules[2][0]


def test_a_flow_workflow_has_the_engines_surface() -> None:
    wf = flow("order")["process_order"]
    assert isinstance(wf, FlowWorkflow)
    assert wf.qualname == "order.process_order"
    signature = wf.signature()
    assert list(signature.parameters) == list(inspect.signature(Orders.process_order.fn).parameters)
    assert signature.parameters["order"].annotation is Order
    assert signature.return_annotation is Receipt
    assert wf.type_hints() == {"order": Order, "return": Receipt}
    assert wf.program().hash == wf.graph.hash
    assert wf.fn is not flow("trip")["book_trip"].fn
    assert inspect.iscoroutinefunction(wf.fn)
    owner = wf.owner
    assert owner is not None and issubclass(owner, DO)
    instance = owner("entity", run_id="r")
    assert instance.charge_payment is flow_steps.charge_payment
    assert owner.charge_payment.policy.retries == 3  # type: ignore[attr-defined]
    assert owner.__dotdo_workflows__ == {"process_order": wf}
    with pytest.raises(KeyError):
        _ = flow("order").workflows["nope"]


def test_unknown_workflow_and_unreadable_file(tmp_path: Path) -> None:
    from dotdo.errors import DotdoError

    with pytest.raises(DotdoError, match="has no workflow 'nope'"):
        flow("order")["nope"]
    with pytest.raises(FlowError, match="cannot read the file"):
        load_flow(tmp_path / "missing.flow")


# ------------------------------------------------------------- the twins run
async def test_order_flow_gives_the_python_twins_result(tmp_path: Path) -> None:
    wf = flow("order")["process_order"]
    async with Engine(tmp_path / "app.db") as engine:
        engine.register(wf, Orders)
        flow_result = await (await engine.start(wf, SAMPLE, run_id="po-42")).result(timeout=10)
        again = await engine.start(wf, SAMPLE, run_id="po-42")  # idempotent by run id
        assert await again.result(timeout=10) == flow_result
    async with Engine(tmp_path / "twin.db") as engine:
        engine.register(Orders)
        handle = await engine.start(Orders.process_order, SAMPLE, run_id="po-42")
        python_result = await handle.result(timeout=10)
        python_journal = await journal(engine, "po-42")
        python_outbox = await engine.outbox("po-42")
    assert isinstance(flow_result, Receipt)
    assert flow_result == python_result
    async with Engine(tmp_path / "app.db") as engine:
        engine.register(wf)
        assert await journal(engine, "po-42") == python_journal
        assert await engine.outbox("po-42") == python_outbox
        assert (await engine.get_run("po-42")).workflow == "order.process_order"
    assert flow_steps.OUTBOX == [("ada@example.com", "order po-42 shipped")]


async def test_trip_flow_compensates_like_the_python_twin(tmp_path: Path) -> None:
    wf = flow("trip")["book_trip"]
    outcomes = []
    for target, db in ((wf, "flow.db"), (Trips.book_trip, "python.db")):
        async with Engine(tmp_path / db) as engine:
            handle = await engine.start(target, TRIP, run_id="trip")
            with pytest.raises(RunFailed) as info:
                await handle.result(timeout=10)
            outcomes.append(
                (
                    info.value.status,
                    type(info.value.error),
                    str(info.value.error),
                    await journal(engine, "trip"),
                )
            )
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][:3] == ("compensated", PermanentError, "no cars available in lisbon")
    assert flow_steps.CANCELLED == ["HT-3N", "FL-LIS-1"] == Trips.cancelled


async def test_a_crash_at_any_boundary_is_resumed_by_a_fresh_engine(tmp_path: Path) -> None:
    wf = flow("order")["process_order"]
    async with Engine(tmp_path / "reference.db") as engine:
        reference = await (await engine.start(wf, SAMPLE, run_id="po")).result(timeout=10)
        reference_journal = await journal(engine, "po")
    n = 0
    while True:
        db = tmp_path / f"crash{n}.db"
        crash = CrashAt(n)
        engine = Engine(db, faults=crash)
        await engine.open()
        await engine.start(wf, SAMPLE, run_id="po")
        deadline = time.monotonic() + 10
        while not crash.fired and not (await engine.get_run("po")).finished:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        await engine.close()
        if not crash.fired:
            break
        async with Engine(db) as fresh:
            fresh.register(load_flow(EXAMPLES / "order.flow")["process_order"])
            try:
                result = await fresh.handle("po").result(timeout=10)
            except RunFailed as failed:
                # The email (a `try`) was recorded as started and not as finished: at most
                # once forbids running it again, and the charge is refunded.
                assert isinstance(failed.error, StepInterrupted)
                assert failed.status == "compensated"
            else:
                assert result == reference
                keys = [key for key, status in await journal(fresh, "po") if status == "completed"]
                assert keys == [key for key, _ in reference_journal]
        n += 1
    assert n >= 8


# ----------------------------------------------------------- hibernation
async def _idle(engine: Engine, run_id: str) -> None:
    info = await engine.idle(run_id, timeout=10)
    assert info.status in ("waiting", "completed"), info


async def test_expense_auto_approves_small_and_waits_for_the_manager(tmp_path: Path) -> None:
    wf = flow("expense")["submit_expense"]
    async with Engine(tmp_path / "app.db", poll_seconds=0.02) as engine:
        small = Expense(description="taxi", amount=40, submitter="ada", manager="bob")
        result = await (await engine.start(wf, small)).result(timeout=10)
        assert result == {"status": "paid", "amount": 40.0, "to": "ada"}
        assert await engine.approvals() == []

        big = small.model_copy(update={"amount": 1400, "description": "laptop"})
        handle = await engine.start(wf, big, run_id="big")
        await _idle(engine, "big")
        assert await handle.status() == "waiting"
        (pending,) = await engine.approvals()
        assert (pending.title, pending.amount, pending.approvers) == (
            "Expense: laptop",
            1400,
            ["bob"],
        )
        assert pending.type == "expense" and pending.requested_by == "ada"
        await engine.approve(pending.id, by="bob")
        assert await handle.result(timeout=10) == {"status": "paid", "amount": 1400.0, "to": "ada"}

        handle = await engine.start(wf, big, run_id="rejected")
        await _idle(engine, "rejected")
        (pending,) = [a for a in await engine.approvals() if a.status == "pending"]
        await engine.reject(pending.id, by="bob", reason="too expensive")
        assert await handle.result(timeout=10) == {"status": "rejected", "reason": "too expensive"}
        assert flow_steps.OUTBOX == [("ada", "expense rejected: too expensive")]


async def test_purchase_goes_through_the_approval_chain(tmp_path: Path) -> None:
    wf = flow("purchase")["purchase"]
    po = PurchaseOrder(item="servers", amount=25000, requester="ada")
    async with Engine(tmp_path / "app.db", poll_seconds=0.02) as engine:
        handle = await engine.start(wf, po, run_id="po")
        await _idle(engine, "po")
        seen = []
        for who in ("manager", "director", "vp"):
            (pending,) = [a for a in await engine.approvals() if a.status == "pending"]
            seen.append(pending.waiting_on)
            assert pending.priority == "high" and pending.deadline is not None
            await engine.approve(pending.id, by=who)
        assert seen == ["manager", "director", "vp"]
        assert await handle.result(timeout=10) == {
            "status": "ordered",
            "item": "servers",
            "amount": 25000.0,
        }
        assert await engine.outbox("po") == [
            ("Purchase.ordered", {"item": "servers", "amount": 25000.0, "by": "ada"})
        ]

        handle = await engine.start(wf, po.model_copy(update={"amount": 50}), run_id="no")
        await _idle(engine, "no")
        (pending,) = [a for a in await engine.approvals() if a.status == "pending"]
        assert pending.priority == "normal"
        await engine.reject(pending.id, by="manager", reason="not now")
        with pytest.raises(RunFailed) as info:
            await handle.result(timeout=10)
        assert isinstance(info.value.error, FlowFailure)
        assert str(info.value.error) == "purchase of servers was rejected: not now"


async def test_cascade_stops_at_the_first_confident_tier(tmp_path: Path) -> None:
    wf = flow("cascade")["categorize"]
    async with Engine(tmp_path / "app.db", poll_seconds=0.02) as engine:
        taxi = Expense(description="Taxi to the airport", amount=30, submitter="a", manager="b")
        assert await (await engine.start(wf, taxi)).result(timeout=10) == {
            "category": "travel",
            "tier": "code",
            "confidence": 0.95,
        }
        odd = taxi.model_copy(update={"description": "software licence"})
        handle = await engine.start(wf, odd, run_id="odd")
        await _idle(engine, "odd")
        (review,) = await engine.approvals()
        assert review.approvers == ["human"]
        await engine.approve(review.id, by="human", value="software")
        assert await handle.result(timeout=10) == {
            "category": "software",
            "tier": "human",
            "confidence": 1.0,
        }


async def test_events_wake_waits_and_start_handlers(tmp_path: Path) -> None:
    events = flow("events")
    async with Engine(tmp_path / "app.db", poll_seconds=0.02) as engine:
        engine.register(events.owner)
        handle = await engine.start(events["ship_when_paid"], "o-1", run_id="ship")
        await _idle(engine, "ship")
        await engine.send("Payment.confirmed", {"order_id": "o-2"})
        await engine.send("Payment.confirmed", {"order_id": "o-1"})
        assert await handle.result(timeout=10) == {"order_id": "o-1", "shipped": True}
        await engine.send("Order.placed", {"order_id": "o-9", "email": "ada@example.com"})
        await engine.send("Payment.failed", {"order_id": "o-9"})
        deadline = time.monotonic() + 10
        while len([r for r in await engine.runs() if r.status == "completed"]) < 4:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        names = sorted(r.workflow for r in await engine.runs())
        assert names == [
            "events.confirm_order",
            "events.log_failure",
            "events.retry_payment",
            "events.ship_when_paid",
        ]
    assert flow_steps.OUTBOX == [("ada@example.com", "order o-9 confirmed")]
    assert flow_steps.REPORTS == ["Payment.failed: {'order_id': 'o-9'}"]


async def test_schedules_fire_flow_workflows(tmp_path: Path) -> None:
    clock = VirtualClock(datetime(2030, 1, 1, tzinfo=UTC))  # a Tuesday
    module = flow("schedules")
    async with Engine(tmp_path / "app.db", clock=clock, poll_seconds=0.02) as engine:
        engine.register(module.owner)
        deadline = time.monotonic() + 10
        while (await engine.store.fetch("SELECT COUNT(*) AS n FROM schedules"))[0]["n"] < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        clock.set(datetime(2030, 1, 7, 9, 0, tzinfo=UTC))
        while not [r for r in await engine.runs(workflow="schedules.generate_weekly_report")]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        (run,) = await engine.runs(workflow="schedules.generate_weekly_report")
        assert run.run_id == "schedules.generate_weekly_report@2030-01-07T09:00:00Z"
        await engine.wait(run.run_id, timeout=10)
        assert [name for name, _ in await engine.outbox(run.run_id)] == ["Report.weekly"]


async def test_a_durable_sleep_and_recorded_values(tmp_path: Path) -> None:
    text = """
step echo = examples.flow_steps:echo

workflow nap(minutes: int = 90) -> dict:
    started = now()
    sleep 1h
    sleep until started + 2h
    done = do echo("awake")
    return {started: str(started), done: done, minutes: minutes}
"""
    wf = load_source(text, "nap.flow")["nap"]
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = VirtualClock(start)

    async def asleep_until(engine: Engine, when: datetime) -> None:
        """Wait for the run to hibernate on the timer that wakes it at `when`."""
        deadline = time.monotonic() + 10
        while True:
            info = await engine.get_run("nap")
            if info.status == "waiting" and info.wake_at == when and "nap" not in engine._active:
                return
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.01)

    async with Engine(tmp_path / "app.db", clock=clock, poll_seconds=0.02) as engine:
        handle = await engine.start(wf, run_id="nap")
        await asleep_until(engine, start + timedelta(hours=1))
        clock.advance(timedelta(hours=1, minutes=30))
        await asleep_until(engine, start + timedelta(hours=2))
        clock.advance(timedelta(hours=1))
        result: dict[str, Any] = await handle.result(timeout=10)
    assert result == {"started": "2030-01-01 00:00:00+00:00", "done": "awake", "minutes": 90}


async def test_try_except_finally_and_loops_run(tmp_path: Path) -> None:
    text = """
import dotdo: PermanentError
import examples.trip: Trip
step echo = examples.flow_steps:echo
step boom = examples.flow_steps:book_car retries 0

workflow loop(items: list[int]) -> dict:
    total = 0
    seen = []
    for item in items:
        if item < 0:
            continue
        if item > 100:
            break
        v = do echo(item)
        total = total + v
    n = 0
    while n < 3:
        n = n + 1
        seen = seen + [do_nothing for do_nothing in []] if false else seen + [n]
        do echo(n)
    try:
        do boom(Trip(traveller="ada", destination="mars", nights=1))
    except PermanentError as e:
        caught = str(e)
    finally:
        closing = do echo("closed")
    try:
        try:
            do boom(Trip(traveller="ada", destination="venus", nights=1))
        finally:
            do echo("inner finally")
    except Error:
        fail "wrapped"
    return {total: total, seen: seen, caught: caught, closing: closing}
"""
    with pytest.raises(FlowError):  # comprehensions are not part of the language
        load_source(text, "loop.flow")
    text = text.replace(
        "        seen = seen + [do_nothing for do_nothing in []] if false else seen + [n]\n",
        "        seen = seen + [n]\n",
    )
    wf = load_source(text, "loop.flow")["loop"]
    async with Engine(tmp_path / "app.db") as engine:
        handle = await engine.start(wf, [1, -5, 2, 3, 500, 7], run_id="loop")
        with pytest.raises(RunFailed) as info:
            await handle.result(timeout=10)
        assert isinstance(info.value.error, FlowFailure) and str(info.value.error) == "wrapped"
        keys = [key for key, status in await journal(engine, "loop") if status == "completed"]
        assert keys == [
            "echo[1]",
            "echo[3]",
            "echo[4]",
            "echo_2[1]",
            "echo_2[2]",
            "echo_2[3]",
            "echo_3",
            "echo_4",
        ]
