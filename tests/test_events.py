"""Events: wait_for_event (match, inbox, timeout), engine.send validation, and @on handlers
started exactly once per matching event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dotdo import DO, DotdoError, Engine, EventRecord, RunInfo, ScheduleError, on, step, workflow
from dotdo.testing import VirtualClock

calls: Counter[str] = Counter()
handled: list[tuple[str, str, Any]] = []
gate = asyncio.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    handled.clear()
    gate.clear()


class Payments(DO):
    @step
    async def prepare(self, order_id: str) -> str:
        calls["prepare"] += 1
        await gate.wait()
        return order_id

    @workflow
    async def await_payment(self, order_id: str) -> dict:
        evt = await self.wait_for_event(
            "Payment.confirmed", match={"order_id": order_id}, timeout=timedelta(hours=1)
        )
        return {"order": order_id, "event": evt}

    @workflow
    async def prepare_then_wait(self, order_id: str) -> Any:
        await self.prepare(order_id)
        evt = await self.wait_for_event("Payment.confirmed", match={"order_id": order_id})
        return evt.data

    @workflow
    async def two_ticks(self) -> list:
        first = await self.wait_for_event("Clock.tick")
        second = await self.wait_for_event("Clock.tick")
        return [first.data, second.data]

    @workflow
    async def any_payment(self) -> Any:
        evt = await self.wait_for_event("Payment.confirmed", timeout=60)
        return None if evt is None else evt.data


class Shop(DO):
    @step
    async def confirm_step(self, data: Any) -> str:
        calls["confirm_step"] += 1
        return f"confirmed {data['id']}"

    @workflow
    async def place(self, order_id: int) -> None:
        self.send("Order.placed", {"id": order_id})
        self.send("Payment.failed", {"id": order_id})
        self.send("Order.shipped", {"id": order_id})

    @on.Order.placed
    async def confirm(self, event: EventRecord) -> str:
        note = await self.confirm_step(event.data)
        handled.append(("confirm", event.name, event.data))
        return note

    @on["*"].failed
    async def log_failure(self, event: EventRecord) -> None:
        handled.append(("failed", event.name, event.data))

    @on.Order["*"]
    async def any_order(self, event: EventRecord) -> None:
        handled.append(("order", event.name, event.data))


def _engine(tmp_path: Path, clock: VirtualClock, *classes: type[DO]) -> Engine:
    return Engine(tmp_path / "app.db", clock=clock, poll_seconds=0.02).register(*classes)


async def _eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_wait_with_match(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock, Payments) as engine:
        handle = await engine.start(Payments.await_payment, "A1", run_id="w")
        info = await engine.idle("w", timeout=5)
        assert info.status == "waiting"
        assert info.wake_at is not None and info.wake_at.timestamp() == clock.now() + 3600
        assert "w" not in engine._active
        await engine.send("Payment.confirmed", {"order_id": "ZZ"})  # not matching
        await engine.send("Payment.failed", {"order_id": "A1"})  # other name
        await engine.send("Payment.confirmed", "A1")  # data not a dict
        await asyncio.sleep(0.1)
        assert (await engine.get_run("w")).status == "waiting"
        eid = await engine.send("Payment.confirmed", {"order_id": "A1", "amount": 5})
        result = await handle.result(timeout=5)
        evt = result["event"]
        assert isinstance(evt, EventRecord)
        assert (evt.id, evt.name, evt.data) == (
            eid,
            "Payment.confirmed",
            {"order_id": "A1", "amount": 5},
        )
        assert evt.run_id is None  # sent from outside any run
        assert [s.key for s in await engine.journal("w")] == ["wait"]


async def test_event_sent_before_the_wait_starts_is_not_lost(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock, Payments) as engine:
        handle = await engine.start(Payments.prepare_then_wait, "B2", run_id="w")
        await _eventually(lambda: _true(calls["prepare"] == 1))
        await engine.send("Payment.confirmed", {"order_id": "other"})
        await engine.send("Payment.confirmed", {"order_id": "B2", "n": 1})
        await asyncio.sleep(0.1)  # dispatch has seen (and passed) both events
        clock.advance(timedelta(minutes=5))
        gate.set()
        assert await handle.result(timeout=5) == {"order_id": "B2", "n": 1}


async def test_each_wait_consumes_its_own_event(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock, Payments) as engine:
        handle = await engine.start(Payments.two_ticks, run_id="t")
        await engine.idle("t", timeout=5)
        await engine.send("Clock.tick", 1)
        await engine.send("Clock.tick", 2)
        assert await handle.result(timeout=5) == [1, 2]


async def test_timeout_gives_none(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock, Payments) as engine:
        handle = await engine.start(Payments.await_payment, "C3", run_id="w")
        await engine.idle("w", timeout=5)
        clock.advance(timedelta(minutes=59))
        await asyncio.sleep(0.05)
        assert (await engine.get_run("w")).status == "waiting"
        clock.advance(timedelta(minutes=2))
        result = await handle.result(timeout=5)
        assert result == {"order": "C3", "event": None}
        # an event after the timeout does not change the recorded outcome
        await engine.send("Payment.confirmed", {"order_id": "C3"})
        await asyncio.sleep(0.05)
        assert (await engine.get_run("w")).result == result


async def test_two_runs_same_event_different_matches(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock, Payments) as engine:
        ha = await engine.start(Payments.await_payment, "A", run_id="wa")
        hb = await engine.start(Payments.await_payment, "B", run_id="wb")
        hany = await engine.start(Payments.any_payment, run_id="wany")
        for rid in ("wa", "wb", "wany"):
            await engine.idle(rid, timeout=5)
        eb = await engine.send("Payment.confirmed", {"order_id": "B"})
        rb = await hb.result(timeout=5)
        assert rb["event"].id == eb
        assert await hany.result(timeout=5) == {"order_id": "B"}  # broadcast, not a queue
        await asyncio.sleep(0.05)
        assert (await engine.get_run("wa")).status == "waiting"
        ea = await engine.send("Payment.confirmed", {"order_id": "A"})
        assert (await ha.result(timeout=5))["event"].id == ea


@pytest.mark.parametrize("name", ["bad name!", "", "a..b", ".a", "a.", "1a.b", "Order.*", None, 5])
async def test_send_with_illegal_name_writes_nothing(tmp_path: Path, name: Any) -> None:
    async with _engine(tmp_path, VirtualClock(), Payments) as engine:
        await engine.send("Fine.name", 1)
        before = await engine.outbox()
        with pytest.raises(DotdoError, match="bad event name"):
            await engine.send(name, {"x": 1})
        assert await engine.outbox() == before
        rows = await engine.store.fetch("SELECT COUNT(*) AS n FROM outbox")
        assert rows[0]["n"] == 1


async def test_send_unstorable_data_writes_nothing(tmp_path: Path) -> None:
    async with _engine(tmp_path, VirtualClock(), Payments) as engine:
        with pytest.raises(DotdoError):
            await engine.send("Fine.name", object())
        assert await engine.outbox() == []


async def test_send_inside_workflow_validates_name(tmp_path: Path) -> None:
    class BadSender(DO):
        @workflow
        async def go(self) -> None:
            self.send("bad name!", 1)

    async with _engine(tmp_path, VirtualClock(), BadSender) as engine:
        handle = await engine.start(BadSender.go, run_id="b")
        with pytest.raises(DotdoError):
            await handle.result(timeout=5)
        assert await engine.outbox() == []


async def _handler_runs(engine: Engine) -> list[RunInfo]:
    runs = await engine.runs(limit=1000)
    return sorted(
        (r for r in runs if r.workflow.startswith("Shop.") and r.workflow != "Shop.place"),
        key=lambda r: r.run_id,
    )


async def _true(value: bool) -> bool:
    return value


async def test_on_handlers_start_once_per_matching_event(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock, Shop) as engine:
        await (await engine.start(Shop.place, 7, run_id="p")).result(timeout=5)
        ext = await engine.send("Order.placed", {"id": 8})
        await engine.send("Shipment.failed", {"id": 9})
        await engine.send("Order.placed.late", {"id": 10})  # three segments: matches nothing
        await engine.send("Customer.created", {"id": 11})

        sent = await engine.store.fetch("SELECT id, event, run_id FROM outbox ORDER BY id")
        ids = {row["event"] + ("" if row["run_id"] else "!ext"): row["id"] for row in sent}
        expected = {
            f"Shop.confirm:{ids['Order.placed']}",
            f"Shop.confirm:{ext}",
            f"Shop.log_failure:{ids['Payment.failed']}",
            f"Shop.log_failure:{ids['Shipment.failed!ext']}",
            f"Shop.any_order:{ids['Order.placed']}",
            f"Shop.any_order:{ids['Order.shipped']}",
            f"Shop.any_order:{ext}",
        }

        async def seven() -> bool:
            runs = await _handler_runs(engine)
            return len(runs) == 7 and all(r.status == "completed" for r in runs)

        await _eventually(seven)
        runs = await _handler_runs(engine)
        assert {r.run_id for r in runs} == expected
        assert calls["confirm_step"] == 2
        assert Counter(k for k, _, _ in handled) == Counter(confirm=2, failed=2, order=3)
        confirm = await engine.get_run(f"Shop.confirm:{ext}")
        assert confirm.result == "confirmed 8"
        assert [s.key for s in await engine.journal(f"Shop.confirm:{ext}")] == ["confirm_step"]
        # the handler's event says which run sent it
        failures = [d for k, n, d in handled if k == "failed" and n == "Payment.failed"]
        assert failures == [{"id": 7}]

    # a restart does not start them again
    before = len(handled)
    async with _engine(tmp_path, clock, Shop) as engine:
        await asyncio.sleep(0.2)
        assert len(await _handler_runs(engine)) == 7
        assert len(handled) == before
        assert calls["confirm_step"] == 2


async def test_two_engines_start_each_handler_once(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock, Shop) as one, _engine(tmp_path, clock, Shop) as two:
        for i in range(10):
            await (one if i % 2 else two).send("Order.placed", {"id": i})

        async def done() -> bool:
            runs = await _handler_runs(one)
            return len(runs) == 20 and all(r.status == "completed" for r in runs)

        await _eventually(done)
        assert calls["confirm_step"] == 10
        assert Counter(k for k, _, _ in handled) == Counter(confirm=10, order=10)


async def test_handler_event_carries_sender_run(tmp_path: Path) -> None:
    seen: list[EventRecord] = []

    class Spy(DO):
        @workflow
        async def emit(self) -> None:
            self.send("Spy.seen", {"k": 1})

        @on.Spy.seen
        async def watch(self, event: EventRecord) -> None:
            seen.append(event)

    async with _engine(tmp_path, VirtualClock(), Spy) as engine:
        await (await engine.start(Spy.emit, run_id="sender")).result(timeout=5)
        await _eventually(lambda: _true(len(seen) == 1))
        assert seen[0].run_id == "sender" and seen[0].data == {"k": 1}


def test_handler_without_an_event_parameter_is_rejected() -> None:
    with pytest.raises(ScheduleError, match="one argument, the event"):

        class Broken(DO):
            @on.Order.placed
            async def no_event_param(self) -> None:
                pass


async def test_a_handler_that_cannot_start_does_not_stop_timers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(DO):
        @on.Order.placed
        async def wants_an_int(self, event: int) -> None:  # an event is not an int
            pass

        @workflow
        async def nap(self) -> str:
            await self.sleep(timedelta(hours=1))
            return "woke"

    clock = VirtualClock()
    caplog.set_level(logging.CRITICAL)
    async with _engine(tmp_path, clock, Broken) as engine:
        handle = await engine.start(Broken.nap, run_id="nap")
        await engine.idle("nap", timeout=5)
        await engine.send("Order.placed", {"id": 1})
        await asyncio.sleep(0.2)
        clock.advance(timedelta(hours=2))
        assert await handle.result(timeout=1) == "woke"


@pytest.mark.parametrize(
    ("kind", "arg"),
    [("name", "bad name!"), ("match", "not-a-dict")],
)
async def test_bad_wait_fails_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, arg: str
) -> None:
    class BadWait(DO):
        @workflow
        async def by_name(self, name: str) -> None:
            await self.wait_for_event(name)

        @workflow
        async def by_match(self, match: Any) -> None:
            await self.wait_for_event("Ok.name", match=match)

    caplog.set_level(logging.CRITICAL)
    async with _engine(tmp_path, VirtualClock(), BadWait) as engine:
        wf = BadWait.by_name if kind == "name" else BadWait.by_match
        handle = await engine.start(wf, arg, run_id="bad")
        with pytest.raises(DotdoError):
            await handle.result(timeout=1)
        assert (await engine.get_run("bad")).status == "failed"
