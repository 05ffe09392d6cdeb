"""Store contract: entity state, applied calls (exactly once by call id), entity sends."""

from __future__ import annotations

from typing import Any

from dotdo.engine.store.interface import AppliedCall, CallRecord, EntitySend, Store


def call(call_id: str, version: int | None, state: str, **extra: Any) -> AppliedCall:
    fields: dict[str, Any] = {
        "call_id": call_id,
        "cls": "Counter",
        "id": "c1",
        "chain": "add",
        "digest": "d1",
        "result": "1",
        "state": state,
        "version": version,
        "now": 10.0,
    }
    fields.update(extra)
    return AppliedCall(**fields)


async def test_a_call_is_applied_once_per_call_id(open_store: Any) -> None:
    store: Store = await open_store()
    assert await store.entity_state("Counter", "c1") is None
    assert await store.load_call("k1", "Counter", "c1") == (None, None)
    sends = [EntitySend("k1/s", "Mailer", '{"req": 1}', 10.0)]
    assert await store.commit_call(call("k1", None, '{"n": 1}', sends=sends)) == "applied"
    record, entity = await store.load_call("k1", "Counter", "c1")
    assert record == CallRecord("k1", "Counter", "c1", "add", "d1", "1")
    assert entity is not None and (entity.state, entity.version) == ('{"n": 1}', 1)
    # The same call id again: its record comes back, nothing is written.
    again = await store.commit_call(call("k1", 1, '{"n": 99}', result="99"))
    assert again == record
    assert await store.entity_state("Counter", "c1") == '{"n": 1}'
    assert [r.call_id for r in await store.recorded_calls(["k1", "k2"])] == ["k1"]
    assert [(s.call_id, s.cls) for s in await store.due_sends(10.0, 10)] == [("k1/s", "Mailer")]


async def test_a_moved_version_is_a_conflict_and_writes_nothing(open_store: Any) -> None:
    store: Store = await open_store()
    assert await store.commit_call(call("k1", None, '{"n": 1}')) == "applied"
    assert await store.commit_call(call("k2", None, '{"n": 5}')) == "conflict"  # exists now
    assert await store.commit_call(call("k2", 7, '{"n": 5}')) == "conflict"  # stale version
    assert await store.recorded_calls(["k2"]) == []
    assert await store.commit_call(call("k2", 1, '{"n": 2}')) == "applied"
    _, entity = await store.load_call("k3", "Counter", "c1")
    assert entity is not None and (entity.state, entity.version) == ('{"n": 2}', 2)


async def test_sends_are_queued_once_retried_and_settled(open_store: Any) -> None:
    store: Store = await open_store()
    send = EntitySend("s1", "Mailer", '{"req": 1}', 5.0, run_id="r", step_key="k")
    await store.enqueue_send(send)
    await store.enqueue_send(EntitySend("s1", "Mailer", '{"req": 2}', 6.0))  # same id: kept
    (due,) = await store.due_sends(5.0, 10)
    assert (due.request, due.run_id, due.step_key, due.attempts) == ('{"req": 1}', "r", "k", 0)
    assert await store.due_sends(4.0, 10) == []
    await store.retry_send("s1", 1, 50.0, "down")
    assert await store.due_sends(10.0, 10) == []
    assert [s.call_id for s in await store.due_sends(50.0, 10)] == ["s1"]
    await store.settle_send("s1", "ok", None, 60.0)
    assert await store.due_sends(100.0, 10) == []
    (record,) = await store.entity_sends()
    assert (record.outcome, record.attempts, record.delivered_at, record.error) == (
        "ok",
        1,
        60.0,
        None,
    )


async def test_old_call_records_are_pruned(open_store: Any) -> None:
    store: Store = await open_store()
    await store.commit_call(call("old", None, "{}", now=1.0))
    await store.commit_call(call("new", 1, "{}", now=100.0))
    assert await store.prune_calls(50.0) == 1
    assert [r.call_id for r in await store.recorded_calls(["old", "new"])] == ["new"]


async def test_a_send_queued_by_a_step_is_fenced_by_its_runs_lease(open_store: Any) -> None:
    import pytest
    from _contract_rows import new_run

    from dotdo.engine.store.interface import Lease
    from dotdo.errors import LeaseLost

    store: Store = await open_store("a")
    lease = (await store.create_run(new_run("r"))).lease
    assert lease is not None
    stale = Lease("r", lease.epoch + 1)
    with pytest.raises(LeaseLost):
        await store.enqueue_send(EntitySend("s1", "Mailer", "{}", 1.0, "r", "k", lease=stale))
    assert await store.entity_sends() == []
    await store.enqueue_send(EntitySend("s1", "Mailer", "{}", 1.0, "r", "k", lease=lease))
    assert [s.call_id for s in await store.entity_sends()] == ["s1"]
