"""Store contract: events, event waits, delivery cursors, approvals and schedules."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from _contract_rows import WF, checkpoint, new_run

from dotdo.engine.store.interface import (
    ApprovalChange,
    Lease,
    NewApproval,
    Store,
    StoredEvent,
    Waker,
)
from dotdo.errors import LeaseLost


def fits(event: StoredEvent, match: str | None) -> bool:
    """The engine's rule, in small: every field of the match equals the event's."""
    wanted = json.loads(match) if match else {}
    data = json.loads(event.data)
    return all(data.get(k) == v for k, v in wanted.items())


def waker(*, may_claim: bool = True, workflows: frozenset[str] = frozenset({WF})) -> Waker:
    return Waker(ttl=30.0, workflows=workflows, now=time.time(), may_claim=may_claim)


async def hibernate(store: Store, lease: Lease, wake_at: float | None = None) -> None:
    await store.checkpoint(checkpoint(lease, status="waiting", wake_at=wake_at, release=True))


async def test_events_get_growing_ids_and_read_back(open_store: Any) -> None:
    store: Store = await open_store()
    assert await store.newest_event_id() == 0
    ids = [await store.publish("E", json.dumps({"n": n}), float(n)) for n in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert await store.newest_event_id() == ids[-1]
    first = await store.event(ids[0])
    assert first is not None and (first.name, first.data, first.run_id) == ("E", '{"n": 0}', None)
    assert [e.id for e in await store.events_after(ids[0], 1)] == [ids[1]]
    assert [e.id for e in await store.sent_events()] == ids
    assert await store.event(999) is None


async def test_a_wait_takes_a_fitting_event_that_came_first(open_store: Any) -> None:
    store: Store = await open_store()
    lease = (await store.create_run(new_run("r", now=10.0))).lease
    assert lease is not None
    await store.publish("Paid", '{"order": "o1"}', 5.0)  # before the run: not its
    await store.publish("Paid", '{"order": "o2"}', 11.0)  # does not fit
    fitting = await store.publish("Paid", '{"order": "o1"}', 12.0)
    found = await store.subscribe(lease, "w", "Paid", '{"order": "o1"}', fits)
    assert found is not None and found.id == fitting
    wait = await store.wait("r", "w")
    assert wait is not None and (wait.event, wait.event_id, wait.since) == ("Paid", fitting, 10.0)
    assert await store.open_wait("r") is None
    # A replay up to the same wait gets the same event, not the next one.
    await store.publish("Paid", '{"order": "o1"}', 13.0)
    again = await store.subscribe(lease, "w", "Paid", '{"order": "o1"}', fits)
    assert again is not None and again.id == fitting


async def test_a_wait_with_nothing_yet_stays_open(open_store: Any) -> None:
    store: Store = await open_store()
    lease = (await store.create_run(new_run("r", now=10.0))).lease
    assert lease is not None
    assert await store.subscribe(lease, "w", "Paid", None, fits) is None
    wait = await store.open_wait("r")
    assert wait is not None and (wait.key, wait.event_id, wait.match) == ("w", None, None)
    taken = await store.publish("Paid", "{}", 20.0)
    assert [e.id for e in await store.fitting_events("r", "Paid", 10.0)] == [taken]


async def test_subscribing_under_a_lost_lease_is_refused(open_store: Any) -> None:
    store: Store = await open_store()
    lease = (await store.create_run(new_run("r"))).lease
    assert lease is not None
    with pytest.raises(LeaseLost):
        await store.subscribe(Lease("r", lease.epoch + 1), "w", "Paid", None, fits)
    assert await store.wait("r", "w") is None
    with pytest.raises(LeaseLost):
        await store.time_out_wait(Lease("r", lease.epoch + 1), "w")


async def test_a_timeout_closes_an_open_wait_only(open_store: Any) -> None:
    store: Store = await open_store()
    lease = (await store.create_run(new_run("r", now=0.0))).lease
    assert lease is not None
    await store.subscribe(lease, "open", "A", None, fits)
    event_id = await store.publish("B", "{}", 1.0)
    assert (await store.subscribe(lease, "taken", "B", None, fits)) is not None
    await store.time_out_wait(lease, "open")
    await store.time_out_wait(lease, "taken")
    opened, taken = await store.wait("r", "open"), await store.wait("r", "taken")
    assert opened is not None and opened.event_id == -1
    assert taken is not None and taken.event_id == event_id


async def test_delivery_hands_each_event_to_fitting_waits_once_and_wakes_them(
    open_store: Any,
) -> None:
    store: Store = await open_store("a")
    leases = {}
    for run_id in ("mine", "foreign", "picky"):
        workflow = "Elsewhere.flow" if run_id == "foreign" else WF
        lease = (await store.create_run(new_run(run_id, now=10.0, workflow=workflow))).lease
        assert lease is not None
        match = '{"order": "x"}' if run_id == "picky" else None
        await store.subscribe(lease, "w", "Paid", match, fits)
        await hibernate(store, lease)
        leases[run_id] = lease
    await store.publish("Paid", '{"order": "o1"}', 5.0)  # before the runs: nobody's
    event_id = await store.publish("Paid", '{"order": "o1"}', 20.0)
    woken = await store.deliver_to_waits(fits, waker())
    assert [(lease.run_id, lease.epoch) for lease in woken] == [("mine", 2)]
    mine, foreign, picky = [await store.wait(r, "w") for r in ("mine", "foreign", "picky")]
    assert mine is not None and mine.event_id == event_id
    assert foreign is not None and foreign.event_id == event_id
    assert picky is not None and picky.event_id is None
    row = await store.load_run("foreign")  # not drivable here: made due for a worker
    assert row is not None and row.status == "waiting" and row.wake_at is not None
    assert await store.cursor("waits") == event_id
    assert await store.deliver_to_waits(fits, waker()) == []  # the cursor moved on


async def test_a_closing_engine_only_makes_woken_runs_due(open_store: Any) -> None:
    store: Store = await open_store("a")
    lease = (await store.create_run(new_run("r", now=0.0))).lease
    assert lease is not None
    await store.subscribe(lease, "w", "Go", None, fits)
    await hibernate(store, lease)
    await store.publish("Go", "{}", 1.0)
    assert await store.deliver_to_waits(fits, waker(may_claim=False)) == []
    row = await store.load_run("r")
    assert row is not None and row.status == "waiting" and row.lease_owner is None
    assert await store.any_due(time.time())
    assert await store.wake("r", waker()) == Lease("r", 2)
    assert await store.wake("r", waker()) is None  # running now: nothing to wake


async def test_cursors_only_move_forward(open_store: Any) -> None:
    store: Store = await open_store()
    assert await store.cursor("on:H") == 0
    await store.advance_cursor("on:H", 5)
    await store.advance_cursor("on:H", 3)
    assert await store.cursor("on:H") == 5


async def _asking(store: Store, run_id: str, *, deadline: float | None = None) -> Lease:
    lease = (await store.create_run(new_run(run_id))).lease
    assert lease is not None
    approval = NewApproval(f"{run_id}/ok", run_id, "boss", deadline, f'{{"id": "{run_id}"}}')
    await store.checkpoint(
        checkpoint(lease, status="waiting", approval=approval, release=True, wake_at=deadline)
    )
    return lease


async def test_approvals_are_listed_by_status_as_seen_now(open_store: Any) -> None:
    store: Store = await open_store()
    now = time.time()
    await _asking(store, "a")
    await _asking(store, "b", deadline=now - 1)  # past its deadline: reads as expired
    await _asking(store, "c", deadline=now + 3600)

    async def ids(**query: Any) -> list[str]:
        found = await store.list_approvals(now=now, **{"approver": None, "limit": 10, **query})
        return [a.id for a in found]

    assert await ids(status="pending") == ["a/ok", "c/ok"]
    assert await ids(status="pending", approver="boss") == ["a/ok", "c/ok"]
    assert await ids(status="pending", approver="someone") == []
    assert await ids(status="expired") == ["b/ok"]
    assert await ids(status=None, limit=2) == ["a/ok", "b/ok"]
    assert await ids(status=None, limit=-1) == ["a/ok", "b/ok", "c/ok"]
    assert [a.id for a in await store.pending_approvals("a")] == ["a/ok"]


async def test_expiring_and_withdrawing_change_pending_approvals_only(open_store: Any) -> None:
    store: Store = await open_store()
    await _asking(store, "a")
    await _asking(store, "b")
    await store.expire_approval("a/ok", '"expired body"', 1.0)
    await store.expire_approval("a/ok", '"again"', 2.0)  # no longer pending: unchanged
    await store.withdraw_approvals("b", lambda body: body.replace("b", "B"), 3.0)
    await store.withdraw_approvals("a", lambda body: "never", 3.0)
    a, b = await store.approval("a/ok"), await store.approval("b/ok")
    assert a is not None and (a.status, a.body) == ("expired", '"expired body"')
    assert b is not None and (b.status, b.body) == ("withdrawn", '{"id": "B"}')


async def test_a_decision_is_written_with_the_wake_up_or_not_at_all(open_store: Any) -> None:
    store: Store = await open_store("a")
    await _asking(store, "r")

    def refuse(body: str | None) -> tuple[ApprovalChange, str]:
        raise ValueError("not your turn")

    with pytest.raises(ValueError, match="not your turn"):
        await store.decide_approval("r/ok", refuse, waker())
    unchanged = await store.approval("r/ok")
    assert unchanged is not None and unchanged.status == "pending"

    seen: list[str | None] = []

    def approve(body: str | None) -> tuple[ApprovalChange, str]:
        seen.append(body)
        return ApprovalChange("approved", None, '"approved"', wake=True), "decided"

    value, lease = await store.decide_approval("r/ok", approve, waker())
    assert (value, seen) == ("decided", ['{"id": "r"}'])
    assert lease == Lease("r", 2)
    decided = await store.approval("r/ok")
    assert decided is not None and (decided.status, decided.body) == ("approved", '"approved"')
    assert await store.pending_approvals("r") == []

    def missing(body: str | None) -> tuple[ApprovalChange, None]:
        assert body is None
        raise KeyError("no approval")

    with pytest.raises(KeyError):
        await store.decide_approval("nope", missing, waker())


async def test_schedules_keep_their_cursor(open_store: Any) -> None:
    store: Store = await open_store()
    assert await store.schedule("S.tick") is None
    await store.set_schedule("S.tick", "every 5m", 100.0)
    await store.schedule_fired("S.tick", 100.0, 400.0)
    row = await store.schedule("S.tick")
    assert row is not None and (row.spec, row.next_fire, row.last_fire) == (
        "every 5m",
        400.0,
        100.0,
    )
    await store.set_schedule("S.tick", "every 1h", 3600.0)  # a new spec starts over
    row = await store.schedule("S.tick")
    assert row is not None and (row.spec, row.next_fire) == ("every 1h", 3600.0)
