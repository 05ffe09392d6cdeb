"""Store contract: creating, checkpointing, leasing, cancelling and listing runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from _contract_rows import WF, checkpoint, done, new_run

from dotdo.engine.store.interface import ClaimRequest, JournalRow, NewApproval, Store
from dotdo.errors import LeaseLost, StoreError

CLAIM_RUNNING = ClaimRequest(ttl=30.0, workflows=(WF,), status="running")


async def test_a_store_opens_with_an_identity_and_closes_twice(open_store: Any) -> None:
    store: Store = await open_store()
    first = await store.db_id()
    assert first and first == await store.db_id()
    assert await store.get_meta("no such key") is None
    await store.close()
    await store.close()


async def test_a_new_run_is_leased_to_its_creator_at_epoch_one(open_store: Any) -> None:
    store: Store = await open_store("a")
    outcome = await store.create_run(new_run("r", mac=("mac:hash-1", "sig")))
    assert outcome.created and outcome.lease is not None and outcome.lease.epoch == 1
    row = await store.load_run("r")
    assert row is not None
    assert (row.workflow, row.status, row.lease_owner, row.lease_epoch) == (WF, "running", "a", 1)
    assert (row.node, row.input, row.steps_done, row.cancel_requested) == (
        "start",
        '{"x": 1}',
        0,
        False,
    )
    assert await store.run_status("r") == "running"
    assert await store.graph_body("hash-1") == '{"graph": 1}'
    assert await store.get_meta("mac:hash-1") == "sig"
    assert await store.load_run("missing") is None and await store.run_status("missing") is None


async def test_starting_an_existing_run_id_reports_it_and_writes_no_run(open_store: Any) -> None:
    store: Store = await open_store()
    await store.create_run(new_run("r"))
    again = await store.create_run(new_run("r", input='{"x": 2}', workflow="Other.flow"))
    assert not again.created and again.existing == (WF, "r", '{"x": 1}')
    row = await store.load_run("r")
    assert row is not None and row.input == '{"x": 1}' and row.lease_epoch == 1


async def test_a_checkpoint_writes_state_journal_sends_and_approval_together(
    open_store: Any,
) -> None:
    store: Store = await open_store()
    lease = (await store.create_run(new_run("r"))).lease
    assert lease is not None
    approval = NewApproval("r/ok", "r", "boss", None, '{"approval": 1}')
    await store.checkpoint(
        checkpoint(
            lease,
            status="waiting",
            node="ask",
            journal=(done("a", 1), done("b", 2)),
            sends=(("E.one", '{"n": 1}'), ("E.two", '{"n": 2}')),
            approval=approval,
            release=True,
            wake_at=123.0,
        )
    )
    row = await store.load_run("r")
    assert row is not None
    assert (row.status, row.node, row.wake_at, row.steps_done) == ("waiting", "ask", 123.0, 2)
    assert row.lease_owner is None and row.lease_until is None
    assert [(s.key, s.status, s.seq) for s in await store.journal("r")] == [
        ("a", "completed", 1),
        ("b", "completed", 2),
    ]
    assert [(e.name, e.data, e.run_id) for e in await store.sent_events("r")] == [
        ("E.one", '{"n": 1}', "r"),
        ("E.two", '{"n": 2}', "r"),
    ]
    stored = await store.approval("r/ok")
    assert stored is not None and (stored.status, stored.body) == ("pending", '{"approval": 1}')


async def test_a_checkpoint_under_a_lost_lease_writes_nothing(open_store: Any) -> None:
    a: Store = await open_store("a")
    b: Store = await open_store("b")
    lease = (await a.create_run(new_run("r", ttl=-1.0))).lease  # its lease has run out
    assert lease is not None
    (taken,) = await b.claim_runs(CLAIM_RUNNING)
    assert taken.epoch == lease.epoch + 1
    with pytest.raises(LeaseLost):
        await a.checkpoint(
            checkpoint(
                lease,
                status="completed",
                journal=(done("late", 1),),
                sends=(("E.late", "{}"),),
                approval=NewApproval("r/x", "r", "boss", None, "{}"),
                release=True,
                result='"late"',
            )
        )
    row = await a.load_run("r")
    assert row is not None and (row.status, row.lease_owner, row.result) == ("running", "b", None)
    assert await a.journal("r") == [] and await a.sent_events("r") == []
    assert await a.approval("r/x") is None
    await b.checkpoint(checkpoint(taken, journal=(done("s", 1),)))  # the new owner writes
    assert [s.key for s in await b.journal("r")] == ["s"]


async def test_concurrent_checkpoints_commit_together_and_a_lost_one_undoes_no_other(
    open_store: Any,
) -> None:
    store: Store = await open_store("a")
    leases = [(await store.create_run(new_run(f"r{i}"))).lease for i in range(20)]
    assert all(lease is not None for lease in leases)
    stale = leases[7]
    assert stale is not None
    other: Store = await open_store("b")
    await other.request_cancel("unknown", "{}", 0)  # a no-op on a missing run
    batches = store.batches
    results = await asyncio.gather(
        *(
            store.checkpoint(checkpoint(lease, journal=(done("k", 1),)))  # type: ignore[arg-type]
            for lease in leases[:7] + leases[8:]
        ),
        store.checkpoint(checkpoint(type(stale)(stale.run_id, stale.epoch + 5))),
        return_exceptions=True,
    )
    assert [type(r) for r in results].count(LeaseLost) == 1
    assert store.batches - batches < 20  # group commit: fewer transactions than writes
    for i in range(20):
        assert [s.key for s in await store.journal(f"r{i}")] == ([] if i == 7 else ["k"])


async def test_a_completed_journal_row_is_never_changed(open_store: Any) -> None:
    store: Store = await open_store()
    lease = (await store.create_run(new_run("r"))).lease
    assert lease is not None
    started = JournalRow("t", "started", 1, started_at=1.0)
    await store.checkpoint(checkpoint(lease, journal=(started,)))
    assert await store.step_status("r", "t") == "started"
    await store.checkpoint(checkpoint(lease, journal=(done("t", 1, '"first"'),)))
    await store.checkpoint(checkpoint(lease, journal=(done("t", 2, '"second"'),)))
    (row,) = await store.journal("r")
    assert (row.status, row.value, row.seq, row.started_at) == ("completed", '"first"', 1, 1.0)
    assert await store.step_status("r", "missing") is None


async def test_claims_take_free_runs_once_and_bump_the_epoch(open_store: Any) -> None:
    a: Store = await open_store("a")
    b: Store = await open_store("b")
    await a.create_run(new_run("held"))  # a live lease: not claimable
    await a.create_run(new_run("free", ttl=-1.0))
    await a.create_run(new_run("skipped", ttl=-1.0))
    await a.create_run(new_run("other", ttl=-1.0, workflow="Other.flow"))
    request = ClaimRequest(ttl=30.0, workflows=(WF,), status="running", skip=frozenset({"skipped"}))
    claims = await asyncio.gather(b.claim_runs(request), b.claim_runs(request))
    assert sorted(lease.run_id for got in claims for lease in got) == ["free"]
    (lease,) = [lease for got in claims for lease in got]
    assert lease.epoch == 2
    assert await b.held_runs() == ["free"]
    assert sorted(await a.held_runs()) == ["held", "other", "skipped"]
    assert await a.claim_runs(ClaimRequest(ttl=30.0, workflows=(), status="running")) == []


async def test_due_waiting_runs_are_claimed_and_become_running(open_store: Any) -> None:
    store: Store = await open_store("a")
    now = time.time()
    for run_id, wake in (("due", now - 5), ("later", now + 3600)):
        lease = (await store.create_run(new_run(run_id))).lease
        assert lease is not None
        await store.checkpoint(checkpoint(lease, status="waiting", wake_at=wake, release=True))
    assert await store.any_due(now) and not await store.any_due(now - 10)
    assert await store.next_wake() == pytest.approx(now - 5)
    due = ClaimRequest(ttl=30.0, workflows=(WF,), status="waiting", due_before=now)
    (lease,) = await store.claim_runs(due)
    assert lease.run_id == "due" and lease.epoch == 2
    row = await store.load_run("due")
    assert row is not None and row.status == "running" and row.wake_at == pytest.approx(now - 5)


async def test_renewal_extends_leases_and_reports_cancel_requests(open_store: Any) -> None:
    store: Store = await open_store("a")
    await store.create_run(new_run("r", ttl=1.0))
    await store.create_run(new_run("s", ttl=1.0))
    assert await store.request_cancel("s", '"cancelled"', time.time()) is False  # held: flagged
    assert await store.renew_leases(60.0) == ["s"]
    row = await store.load_run("r")
    assert row is not None and row.lease_until is not None and row.lease_until > time.time() + 50
    assert row.lease_epoch == 1  # renewing is not a new lease
    await store.release_leases()
    assert await store.held_runs() == []
    row = await store.load_run("r")
    assert row is not None and row.lease_owner is None


async def test_cancelling_an_unheld_run_ends_it_at_once(open_store: Any) -> None:
    store: Store = await open_store("a")
    lease = (await store.create_run(new_run("r"))).lease
    assert lease is not None
    await store.checkpoint(checkpoint(lease, status="waiting", wake_at=None, release=True))
    assert await store.request_cancel("r", '"cancelled"', 5.0) is True
    row = await store.load_run("r")
    assert row is not None and (row.status, row.error, row.cancel_requested) == (
        "cancelled",
        '"cancelled"',
        True,
    )


async def test_failing_a_run_is_fenced_by_its_lease(open_store: Any) -> None:
    store: Store = await open_store("a")
    lease = (await store.create_run(new_run("r"))).lease
    assert lease is not None
    stale = type(lease)("r", lease.epoch - 1)
    assert await store.fail_run(stale, '"bad"', 1.0) is False
    assert await store.fail_run(lease, '"bad"', 1.0) is True
    row = await store.load_run("r")
    assert row is not None and (row.status, row.error, row.lease_owner) == ("failed", '"bad"', None)


async def test_runs_are_listed_newest_first_with_filters(open_store: Any) -> None:
    store: Store = await open_store()
    for i in range(5):
        await store.create_run(new_run(f"r{i}", now=float(i), workflow=WF if i % 2 else "B.b"))
    assert [r.run_id for r in await store.list_runs(status=None, workflow=None, limit=10)] == [
        "r4",
        "r3",
        "r2",
        "r1",
        "r0",
    ]
    assert [r.run_id for r in await store.list_runs(status=None, workflow=WF, limit=10)] == [
        "r3",
        "r1",
    ]
    assert len(await store.list_runs(status="running", workflow=None, limit=2)) == 2
    assert await store.list_runs(status="completed", workflow=None, limit=10) == []


async def test_a_read_only_store_reads_and_refuses_writes(open_store: Any) -> None:
    writer: Store = await open_store("a")
    await writer.create_run(new_run("r"))
    reader: Store = await open_store("reader", read_only=True)
    assert (await reader.load_run("r")) is not None
    with pytest.raises(StoreError):
        await reader.create_run(new_run("s"))
    with pytest.raises(StoreError):
        await reader.publish("E", "{}", 0.0)
