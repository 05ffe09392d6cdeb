"""Store contract: the operations of a database (retries, history, retention, exports,
upgrades, telemetry reads), through the `Store` protocol only, once per backend."""

from __future__ import annotations

import json
import time
from typing import Any

from _contract_rows import WF, checkpoint, done, new_run

from dotdo.engine.store.interface import (
    REUSED,
    NewApproval,
    PruneFilter,
    Repin,
    RetryToCreate,
    Store,
    StoredStep,
)


async def _failed(store: Store, run_id: str = "r") -> None:
    lease = (await store.create_run(new_run(run_id))).lease
    assert lease is not None
    await store.checkpoint(
        checkpoint(lease, status="failed", journal=(done("a", 1), done("b", 2)), release=True)
    )


def _retry(new_id: str, of: str, reused: list[StoredStep]) -> RetryToCreate:
    note = json.dumps({"retry_of": of, "retry": new_id})
    return RetryToCreate(new_run(new_id), of, tuple(reused), note)


async def test_a_retry_is_linked_reuses_rows_and_is_recorded_on_both_runs(
    open_store: Any,
) -> None:
    store: Store = await open_store()
    await _failed(store)
    journal = await store.journal("r")
    outcome = await store.create_retry(_retry("r2", "r", journal[:1]))
    assert outcome.lease is not None and outcome.lease.epoch == 1
    row = await store.load_run("r2")
    assert row is not None and row.retry_of == "r" and row.lease_owner == "owner-a"
    assert await store.reused_results("r2") == {"a": '"v"'}
    assert [(s.key, s.status) for s in await store.journal("r2")] == [("a", REUSED)]
    assert [h.kind for h in await store.history("r")] == ["retried"]
    assert [h.kind for h in await store.history("r2")] == ["retry"]
    assert json.loads((await store.history("r2"))[0].body)["retry_of"] == "r"
    # A checkpoint's journal row replaces a reused row: it is used once.
    await store.checkpoint(checkpoint(outcome.lease, journal=(done("a", 1),)))
    assert await store.reused_results("r2") == {}


async def test_a_retry_under_a_taken_id_writes_nothing(open_store: Any) -> None:
    store: Store = await open_store()
    await _failed(store)
    await store.create_run(new_run("taken"))
    outcome = await store.create_retry(_retry("taken", "r", await store.journal("r")))
    assert outcome.lease is None and outcome.existing is not None
    assert await store.history("r") == [] and await store.reused_results("taken") == {}
    row = await store.load_run("taken")
    assert row is not None and row.retry_of is None


async def test_prune_removes_what_the_filter_still_selects_keeping_pending_work(
    open_store: Any,
) -> None:
    store: Store = await open_store()
    await _failed(store, "old")
    lease = (await store.create_run(new_run("live"))).lease
    assert lease is not None
    approval = NewApproval("live/ok", "live", "boss", None, '{"approval": 1}')
    await store.checkpoint(checkpoint(lease, status="waiting", approval=approval, release=True))
    where = PruneFilter(before=time.time() + 60)
    assert await store.prunable_runs(where, 10) == ["old"]
    assert await store.prunable_runs(PruneFilter(statuses=("completed",)), 10) == []
    # "live" is not finished: listed or not, deleting it is refused by the filter itself.
    assert await store.delete_runs(["old", "live"], where) == ["old"]
    assert await store.load_run("old") is None and await store.journal("old") == []
    assert await store.load_run("live") is not None
    assert [a.id for a in await store.pending_approvals("live")] == ["live/ok"]
    assert await store.delete_runs([], where) == []
    await store.prune_unowned(time.time() + 60)  # no run-less records: nothing to fail


async def test_export_holds_the_run_its_journal_history_and_retries(open_store: Any) -> None:
    store: Store = await open_store()
    await _failed(store)
    await store.create_retry(_retry("r2", "r", []))
    export = await store.export_run("r")
    assert export is not None
    assert export.run["run_id"] == "r" and export.run["input"] == {"x": 1}
    assert export.graph is not None and export.graph["hash"] == "hash-1"
    assert [s["step_key"] for s in export.steps] == ["a", "b"]
    assert export.steps[0]["value"] == "v"
    assert [h.kind for h in export.history] == ["retried"] and export.retries == ["r2"]
    assert await store.export_run("missing") is None


async def test_unfinished_runs_carry_their_compensation_methods(open_store: Any) -> None:
    store: Store = await open_store()
    state = json.dumps({"frame": {}, "comp": [["k1", "refund", 1], ["k2", "release", None]]})
    await store.create_run(new_run("u", state=state))
    await _failed(store, "f")
    runs = await store.unfinished_runs(None)
    assert [(r.run_id, r.status, r.compensations) for r in runs] == [
        ("u", "running", ("refund", "release"))
    ]
    assert await store.unfinished_runs(["Other.flow"]) == []
    assert [r.run_id for r in await store.unfinished_runs([WF])] == ["u"]


async def test_repin_moves_only_a_parked_run_still_on_the_old_graph(open_store: Any) -> None:
    store: Store = await open_store()
    lease = (await store.create_run(new_run("p"))).lease
    assert lease is not None

    def repin(old: str = "hash-1") -> Repin:
        return Repin(
            run_id="p",
            old_hash=old,
            new_hash="hash-2",
            graph_name="run",
            graph_body='{"graph": 2}',
            module="app.flows",
            node="n9",
            state='{"frame": {"n": 1}}',
            now=time.time(),
            lease_now=time.time(),
            note=json.dumps({"from": old, "to": "hash-2"}),
            mac=("mac:hash-2", "sig2"),
        )

    assert not await store.repin_run(repin())  # held by its owner: running
    await store.checkpoint(checkpoint(lease, status="waiting", release=True, wake_at=1e12))
    assert not await store.repin_run(repin("hash-other"))  # pinned elsewhere
    assert await store.history("p") == []
    assert await store.repin_run(repin())
    row = await store.load_run("p")
    assert row is not None and (row.graph_hash, row.node) == ("hash-2", "n9")
    assert await store.graph_body("hash-2") == '{"graph": 2}'
    assert await store.get_meta("mac:hash-2") == "sig2"
    assert [h.kind for h in await store.history("p")] == ["upgraded"]
    assert not await store.repin_run(repin())  # already moved


async def test_a_trace_is_stored_once_and_waiting_runs_are_counted_by_kind(
    open_store: Any,
) -> None:
    store: Store = await open_store()
    await store.create_run(new_run("t"))
    await store.set_trace("t", "00-aaaa-bbbb-01")
    await store.set_trace("t", "00-cccc-dddd-01")
    row = await store.load_run("t")
    assert row is not None and row.trace == "00-aaaa-bbbb-01"
    assert await store.waiting_by_kind() == {"approval": 0, "event": 0, "timer": 0}
    for run_id in ("w1", "w2"):
        lease = (await store.create_run(new_run(run_id))).lease
        assert lease is not None
        approval = NewApproval(f"{run_id}/ok", run_id, "boss", None, '{"approval": 1}')
        asked = approval if run_id == "w1" else None
        await store.checkpoint(
            checkpoint(lease, status="waiting", approval=asked, release=True, wake_at=1e12)
        )
    assert await store.waiting_by_kind() == {"approval": 1, "event": 0, "timer": 1}


async def test_graphs_are_found_by_hash_prefix_and_by_name(open_store: Any) -> None:
    store: Store = await open_store()
    await store.create_run(new_run("g1", graph_hash="abc123"))
    await store.create_run(new_run("g2", graph_hash="abd456", graph_body='{"graph": 2}'))
    assert await store.graphs_with_prefix("abc") == [("abc123", '{"graph": 1}')]
    assert [h for h, _ in await store.graphs_with_prefix("ab")] == ["abc123", "abd456"]
    assert await store.graphs_with_prefix("ff") == []
    assert set(await store.graph_hashes("run", 5)) == {"abc123", "abd456"}
    assert await store.graph_hashes("other", 5) == []
