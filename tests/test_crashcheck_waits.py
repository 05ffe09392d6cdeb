"""assert_crash_safe on workflows that wait for people and events (`respond=`).

The checker must answer each wait the same way in the reference run and in every crashed run,
and must never answer a wait twice: a decision or an event the dead engine committed stays
given. The double-event workflow below would end with a different sum if the checker re-sent
an event that was in transit at the crash, so these tests fail without that care.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dotdo import DO, step, workflow
from dotdo.testing import (
    BOUNDARIES,
    Approve,
    CrashSafetyError,
    Expire,
    Reject,
    Send,
    VirtualClock,
    Waiting,
)
from dotdo.testing.crashcheck import CrashSafe

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.purchase import CHAIN, ORDERS, Purchasing  # noqa: E402

pytest_plugins = ["dotdo.testing.crashcheck"]

START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


# -------------------------------------------------------------------------- approvals
async def test_approval_chain_answered_in_order(crash_safe: CrashSafe) -> None:
    report = await crash_safe(
        Purchasing.request_purchase,
        ORDERS[0],
        clock=VirtualClock(START),
        respond=[Approve(comment="ok"), Approve(), Approve(by="vp")],
    )
    assert report.reference.result["status"] == "ordered"
    assert report.reference.result["trail"] == [f"approved by {who}" for who in CHAIN]
    assert report.points_checked == report.total_points
    assert report.boundaries_seen == set(BOUNDARIES)


async def test_rejection_chosen_by_level(crash_safe: CrashSafe) -> None:
    asked: list[tuple[str, int, str | None]] = []

    def respond(waiting: Waiting) -> Approve | Reject:
        assert waiting.approval is not None
        asked.append((waiting.key, waiting.level, waiting.approval.waiting_on))
        return Reject("too dear") if waiting.approval.waiting_on == "director" else Approve()

    report = await crash_safe(
        Purchasing.request_purchase, ORDERS[1], clock=VirtualClock(START), respond=respond
    )
    assert report.reference.result == {
        "status": "rejected",
        "reason": "too dear",
        "trail": ["approved by manager", "rejected by director"],
    }
    # One question per approver level for the whole check: answers are chosen per wait,
    # then given again (not asked again) wherever a crash lost them.
    assert sorted({level for _, level, _ in asked}) == [0, 1]


async def test_deadline_left_to_expire(crash_safe: CrashSafe) -> None:
    report = await crash_safe(
        Purchasing.request_purchase,
        ORDERS[2],
        clock=VirtualClock(START),
        respond=[Approve(), Expire()],
    )
    result = report.reference.result
    assert result["status"] == "expired" and result["trail"] == ["approved by manager"]
    assert "stuck at director" in result["note"]
    assert report.points_checked == report.total_points


# ----------------------------------------------------------------------------- events
class Payments(DO):
    @step
    async def total(self, a: int, b: int) -> int:
        return a + b

    @workflow
    async def collect(self, order: str) -> Any:
        first = await self.wait_for_event("paid", match={"order": order})
        second = await self.wait_for_event("paid", match={"order": order})
        if first is None or second is None:
            return None
        return await self.total(first.data["amount"], second.data["amount"])

    @workflow
    async def with_timeout(self, order: str) -> str:
        got = await self.wait_for_event("paid", match={"order": order}, timeout=timedelta(days=1))
        return "paid" if got is not None else "timed out"


async def test_two_events_each_given_once(crash_safe: CrashSafe) -> None:
    report = await crash_safe(
        Payments.collect,
        "o1",
        clock=VirtualClock(START),
        respond=[Send({"order": "o1", "amount": 1}), Send({"order": "o1", "amount": 2})],
    )
    assert report.reference.result == 3
    assert report.points_checked == report.total_points >= 8


async def test_event_timeout_left_to_expire(crash_safe: CrashSafe) -> None:
    report = await crash_safe(
        Payments.with_timeout, "o2", clock=VirtualClock(START), respond=[Expire()]
    )
    assert report.reference.result == "timed out"
    report = await crash_safe(
        Payments.with_timeout,
        "o3",
        clock=VirtualClock(START),
        respond=lambda w: Send({"order": "o3"}),
    )
    assert report.reference.result == "paid"


# ---------------------------------------------------------------------- bad answers
@pytest.mark.parametrize(
    ("workflow", "args", "respond", "message"),
    [
        (Purchasing.request_purchase, (ORDERS[0],), None, "pass respond="),
        (Purchasing.request_purchase, (ORDERS[0],), [Approve()], "no answer left"),
        (Purchasing.request_purchase, (ORDERS[0],), [Send({})], "Send given to approval"),
        (Purchasing.request_purchase, (ORDERS[0],), [Approve(by="vp")], "may not decide"),
        (Purchasing.request_purchase, (ORDERS[0],), ["yes"], "expected Approve"),
        (Payments.collect, ("o4",), [Send({"order": "other"})], "does not fit"),
        (Payments.collect, ("o4",), [Approve()], "Approve given to event wait"),
        (Payments.collect, ("o4",), [Expire()], "needs a deadline or timeout"),
    ],
)
async def test_bad_answers_are_named(
    crash_safe: CrashSafe, workflow: Any, args: tuple[Any, ...], respond: Any, message: str
) -> None:
    with pytest.raises(CrashSafetyError, match=message):
        await crash_safe(workflow, *args, clock=VirtualClock(START), respond=respond)


# ------------------------------------------------------------- an answer in transit
async def test_an_event_sent_but_not_delivered_is_not_sent_again(tmp_path: Path) -> None:
    """Between engine.send and the dispatcher's delivery the wait still looks open; the
    checker must see the event in transit, or it would answer the same wait twice."""
    from dotdo import Engine
    from dotdo.engine.store.sqlite import Store
    from dotdo.testing.answers import current_wait

    db = tmp_path / "transit.db"
    async with Engine(db, clock=VirtualClock(START)) as engine:
        await engine.start(Payments.collect, "o5", run_id="r")
        info = await engine.idle("r", timeout=10)
    store = Store(db, owner="checker")  # no engine: nothing dispatches
    await store.open()
    try:
        waiting, in_transit = await current_wait(store, info)
        assert waiting is not None and waiting.event == "paid" and not in_transit
        await store.write(
            lambda conn: conn.execute(
                "INSERT INTO outbox(run_id, event, data, created_at) VALUES (NULL, ?, ?, ?)",
                ("paid", '{"order": "other"}', START.timestamp()),
            )
        )
        assert (await current_wait(store, info))[1] is False  # does not fit the match
        await store.write(
            lambda conn: conn.execute(
                "INSERT INTO outbox(run_id, event, data, created_at) VALUES (NULL, ?, ?, ?)",
                ("paid", '{"order": "o5", "amount": 1}', START.timestamp()),
            )
        )
        waiting, in_transit = await current_wait(store, info)
        assert waiting is not None and in_transit is True
    finally:
        await store.close()


# ------------------------------------------------------------------ read race regression
class _ScriptedStore:
    """Answers current_wait's reads as a store would while the dispatcher hands the wait its
    event between them: the wait reads open, then no event is pending (it was just taken),
    then the wait reads taken."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    async def pending_approvals(self, run_id: str) -> list[Any]:
        self.reads.append("pending_approvals")
        return []

    async def open_wait(self, run_id: str) -> Any:
        from dotdo.engine.store.interface import StoredWait

        self.reads.append("open_wait")
        return StoredWait(run_id, "wait", "paid", '{"order": "o1"}', 0.0, None)

    async def fitting_events(self, run_id: str, event: str, since: float) -> list[Any]:
        self.reads.append("fitting_events")
        return []

    async def wait(self, run_id: str, key: str) -> Any:
        from dotdo.engine.store.interface import StoredWait

        self.reads.append("wait")  # the re-read: the wait has its event now
        return StoredWait(run_id, key, "paid", '{"order": "o1"}', 0.0, 7)


async def test_an_event_delivered_between_the_checkers_reads_is_not_answered_again() -> None:
    from dotdo.engine.records import RunInfo
    from dotdo.testing.answers import current_wait

    info = RunInfo.model_construct(run_id="r", status="waiting", wake_at=None)
    store = _ScriptedStore()
    waiting, in_transit = await current_wait(store, info)  # type: ignore[arg-type]
    assert waiting is not None and waiting.key == "wait"
    assert in_transit, "an event taken between the reads must count as given"
    assert len(store.reads) == 4
