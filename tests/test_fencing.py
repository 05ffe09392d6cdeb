"""Lease-epoch fencing: a worker paused past its lease cannot write over the run's new owner.

Engine A runs a step that stalls (a paused process, a long GC, a laptop lid). Its lease
expires; engine B claims the run (its epoch goes up) and finishes it. Then A wakes up with
its step's result: its checkpoint (or completion) must be refused, writing nothing (no state,
journal, outbox row), A must drop the run quietly, and the run completes exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import pytest
from backend_rows import expire_lease

from dotdo import DO, Engine, current_step, workflow

GATE: dict[str, asyncio.Event] = {}
EXECUTED: Counter[tuple[str, str]] = Counter()


def _who() -> str:
    """Which engine runs the current step: "A" stalls the first time, any other does not."""
    return "A" if EXECUTED[("paused", current_step().run_id)] == 0 else "B"


class Paused(DO):
    async def stall(self, label: str) -> str:
        who = _who()
        EXECUTED[("paused", current_step().run_id)] += 1
        EXECUTED[(label, who)] += 1
        if who == "A":
            await GATE["gate"].wait()
        return f"{label} by {who}"

    async def plain(self, label: str) -> str:
        EXECUTED[(label, "any")] += 1
        return label

    @workflow
    async def stall_first(self) -> list[str]:
        """A stalls in its first step: its late write is a mid-run checkpoint."""
        first = await self.do(self.stall, "one", step_id="one")
        self.send("Paused.sent", {"first": first})
        second = await self.do(self.plain, "two", step_id="two")
        return [first, second]

    @workflow
    async def stall_last(self) -> str:
        """A stalls in its last step: its late write is the run's completion."""
        await self.do(self.plain, "zero", step_id="zero")
        last = await self.do(self.stall, "last", step_id="last")
        self.send("Paused.sent", {"last": last})
        return last


async def _eventually(check: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("flow", "late_write"), [("stall_first", "checkpoint"), ("stall_last", "completion")]
)
async def test_a_paused_worker_cannot_commit_after_its_lease_was_taken_over(
    store_location: str, flow: str, late_write: str, caplog: pytest.LogCaptureFixture
) -> None:
    EXECUTED.clear()
    GATE["gate"] = asyncio.Event()
    caplog.set_level(logging.INFO, logger="dotdo.engine")
    a, b = Engine(store_location).register(Paused), Engine(store_location).register(Paused)
    await a.open()
    await b.open()
    try:
        wf = getattr(Paused, flow)
        handle_a = await a.start(wf, run_id="r")

        async def a_stalled() -> bool:
            return EXECUTED[("paused", "r")] == 1

        await _eventually(a_stalled, "A's step in flight")
        epoch_a = a._runs["r"].lease.epoch
        await expire_lease(store_location, "r")  # its renewals stopped
        assert await b.recover() == ["r"]  # B takes the run over: a new epoch
        info = await b.wait("r", timeout=10)
        assert info.status == "completed"
        row_b = await b.store.load_run("r")
        assert row_b is not None and row_b.lease_epoch > epoch_a
        journal_before = [(s.key, s.status, s.value) for s in await b.journal("r")]
        outbox_before = await b.outbox("r")

        GATE["gate"].set()  # A wakes up with its step's result and tries to commit it

        async def a_dropped() -> bool:
            return "r" not in a._active

        await _eventually(a_dropped, "A to drop the run")
        # A's own handle reads the stored outcome: B's, and no error of A's leaks to it.
        result = await handle_a.result(timeout=5)
        after = await a.get_run("r")
        journal_after = [(s.key, s.status, s.value) for s in await a.journal("r")]
        outbox_after = await a.outbox("r")
    finally:
        await a.close()
        await b.close()
    assert after.status == "completed" and after.updated_at == info.updated_at
    assert journal_after == journal_before, f"A's refused {late_write} wrote journal rows"
    assert outbox_after == outbox_before and len(outbox_after) == 1  # the send: once
    stored = {k: v for k, _, v in journal_after}
    if flow == "stall_first":
        assert result == ["one by B", "two"] and stored["one"] == "one by B"
    else:
        assert result == "last by B" and stored["last"] == "last by B"
    assert EXECUTED[("paused", "r")] == 2  # at least once: both ran the stalled step
    assert any("owned by another process" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info], "the refusal leaked as an error"


async def test_a_lease_taken_back_is_a_new_lease(open_store: Any) -> None:
    """The same owner losing a run and claiming it again gets a new epoch: what it wrote
    under the old one (a stale task of its own) is refused."""
    from dotdo.engine.store.interface import Checkpoint, ClaimRequest, RunToCreate
    from dotdo.errors import LeaseLost

    x = await open_store("x")
    y = await open_store("y")
    new = RunToCreate(
        run_id="r",
        workflow="W.f",
        entity_id="r",
        graph_hash="h",
        graph_name="f",
        graph_body="{}",
        module="m",
        node="start",
        state="{}",
        input="[]",
        lease_until=time.time() - 1,  # already expired
        now=time.time(),
    )
    first = (await x.create_run(new)).lease
    assert first is not None
    claim = ClaimRequest(ttl=30.0, workflows=("W.f",), status="running")
    (by_y,) = await y.claim_runs(claim)
    await y.release_leases()
    (again,) = await x.claim_runs(claim)
    assert first.epoch < by_y.epoch < again.epoch

    def checkpoint(lease: Any, node: str) -> Checkpoint:
        return Checkpoint(lease=lease, status="running", node=node, state="{}", steps_done=0, now=0)

    with pytest.raises(LeaseLost):
        await x.checkpoint(checkpoint(first, "stale"))
    await x.checkpoint(checkpoint(again, "fresh"))
    row = await x.load_run("r")
    assert row is not None and row.node == "fresh"
