"""Human approvals: single approver, chains, rejection, deadlines, the audit trail, and
hibernation (a waiting run holds no task; any engine on the file can decide it)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from dotdo import (
    DO,
    Approval,
    ApprovalError,
    DotdoError,
    Engine,
    RunFailed,
    approval,
    step,
    workflow,
)
from dotdo.testing import VirtualClock

calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


class Purchases(DO):
    @approval(approvers=["manager"])
    def single(self, amount: float) -> dict:
        return {"title": f"Expense {amount}", "amount": amount, "requested_by": "sam"}

    @approval(approvers=["manager", "director", "vp"], deadline=timedelta(days=7))
    def chain(self, amount: float) -> dict:
        return {"type": "purchase", "title": f"PO {amount}", "amount": amount}

    @step
    async def pay(self, amount: float) -> float:
        calls["pay"] += 1
        return amount

    @step
    async def escalate(self, amount: float) -> str:
        calls["escalate"] += 1
        return f"escalated {amount}"

    @workflow
    async def expense(self, amount: float) -> dict:
        decision = await self.single(amount)
        if decision.status != "approved":
            return {"status": decision.status, "reason": decision.rejection_reason}
        await self.pay(amount)
        return {"status": "paid", "approval": decision}

    @workflow
    async def purchase(self, amount: float) -> dict:
        decision = await self.chain(amount)
        if decision.status == "expired":
            note = await self.escalate(amount)
            return {"status": "expired", "note": note}
        if decision.status != "approved":
            return {"status": decision.status, "reason": decision.rejection_reason}
        await self.pay(amount)
        return {"status": "paid", "approval": decision}

    @workflow
    async def inline(self, amount: float) -> Approval:
        return await self.approval_flow.request_approval(
            type="expense",
            title=f"Taxi {amount}",
            amount=amount,
            requested_by="alice",
            approvers=["boss", "cfo"],
            deadline=self.now() + timedelta(days=3),
            priority="high" if amount > 1000 else "normal",
            cost_center="R&D",
            receipt_url="https://example.com/r/1",
        )

    @workflow
    async def past_deadline(self) -> str:
        a = await self.approval_flow.request_approval(
            title="late", approvers=["boss"], deadline=self.now() - timedelta(hours=1)
        )
        return a.status

    @workflow
    async def zero_deadline(self) -> str:
        a = await self.approval_flow.request_approval(
            title="now", approvers=["boss"], deadline=timedelta(0)
        )
        return a.status

    @workflow
    async def nobody(self) -> str:
        a = await self.approval_flow.request_approval(title="who?", approvers=[])
        return a.status

    @workflow
    async def rounds(self) -> list:
        out = []
        for i in range(2):
            a = await self.approval_flow.request_approval(title=f"round {i}", approvers=["a"])
            out.append(a.id)
        b = await self.approval_flow.request_approval(title="final", approvers=["a"])
        out.append(b.id)
        return out

    @workflow
    async def ask(self, who: str) -> str:
        a = await self.approval_flow.request_approval(title=f"for {who}", approvers=[who])
        return a.status


def _engine(tmp_path: Path, clock: VirtualClock, **kw: object) -> Engine:
    return Engine(tmp_path / "app.db", clock=clock, **kw).register(Purchases)  # type: ignore[arg-type]


async def _waiting(engine: Engine, run_id: str) -> None:
    info = await engine.idle(run_id, timeout=5)
    assert info.status == "waiting", info


async def test_single_approver(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Purchases.expense, 250.0, run_id="e1")
        await _waiting(engine, "e1")
        pending = await engine.approvals(approver="manager")
        assert [a.id for a in pending] == ["e1/single"]
        a = pending[0]
        assert (a.status, a.waiting_on, a.amount, a.requested_by) == (
            "pending",
            "manager",
            250.0,
            "sam",
        )
        assert calls["pay"] == 0
        decided = await engine.approve("e1/single", by="manager", comment="fine")
        assert decided.status == "approved" and decided.waiting_on is None
        result = await handle.result(timeout=5)
        assert result["status"] == "paid"
        assert calls["pay"] == 1
        assert await engine.approvals(approver="manager") == []


async def test_chain_decides_in_order(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Purchases.purchase, 50_000.0, run_id="po")
        await _waiting(engine, "po")
        before = await engine.get_approval("po/chain")
        for wrong in ("director", "vp", "intruder"):
            with pytest.raises(ApprovalError, match="manager"):
                await engine.approve("po/chain", by=wrong)
            with pytest.raises(ApprovalError):
                await engine.reject("po/chain", by=wrong, reason="no")
        assert await engine.get_approval("po/chain") == before  # nothing changed

        a = await engine.approve("po/chain", by="manager", comment="ok by me")
        assert (a.status, a.level, a.waiting_on) == ("pending", 1, "director")
        assert await engine.approvals(approver="manager") == []
        assert [x.id for x in await engine.approvals(approver="director")] == ["po/chain"]
        with pytest.raises(ApprovalError):  # manager cannot decide twice
            await engine.approve("po/chain", by="manager")
        assert (await engine.get_run("po")).status == "waiting"

        clock.advance(timedelta(hours=1))
        a = await engine.approve("po/chain", by="director")
        assert a.waiting_on == "vp"
        clock.advance(timedelta(hours=1))
        with pytest.raises(ApprovalError):
            await engine.approve("po/chain", by="manager")
        a = await engine.approve("po/chain", by="vp", comment="go")
        assert a.status == "approved"
        result = await handle.result(timeout=5)
        assert result["status"] == "paid"
        trail = result["approval"].decisions
        assert [(d.by, d.decision, d.comment) for d in trail] == [
            ("manager", "approved", "ok by me"),
            ("director", "approved", None),
            ("vp", "approved", "go"),
        ]
        start = clock.now() - 7200
        assert [d.at.timestamp() for d in trail] == [start, start + 3600, start + 7200]
        assert calls["pay"] == 1


async def test_any_rejection_ends_the_chain(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Purchases.purchase, 20_000.0, run_id="po")
        await _waiting(engine, "po")
        await engine.approve("po/chain", by="manager")
        with pytest.raises(ApprovalError, match="reason"):
            await engine.reject("po/chain", by="director", reason="")
        a = await engine.reject("po/chain", by="director", reason="over budget")
        assert (a.status, a.rejection_reason, a.waiting_on) == ("rejected", "over budget", None)
        result = await handle.result(timeout=5)
        assert result == {"status": "rejected", "reason": "over budget"}
        assert calls["pay"] == 0
        stored = await engine.get_approval("po/chain")
        assert [(d.by, d.decision) for d in stored.decisions] == [
            ("manager", "approved"),
            ("director", "rejected"),
        ]
        assert stored.decisions[1].comment == "over budget"
        # the vp never gets a turn
        assert await engine.approvals(approver="vp") == []
        with pytest.raises(ApprovalError, match="already rejected"):
            await engine.approve("po/chain", by="vp")


async def test_second_decision_on_settled_approval_changes_nothing(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Purchases.expense, 300.0, run_id="e")
        await _waiting(engine, "e")
        await engine.approve("e/single", by="manager")
        await handle.result(timeout=5)
        settled = await engine.get_approval("e/single")
        run = await engine.get_run("e")
        with pytest.raises(ApprovalError, match="already approved"):
            await engine.approve("e/single", by="manager")
        with pytest.raises(ApprovalError, match="already approved"):
            await engine.reject("e/single", by="manager", reason="changed my mind")
        assert await engine.get_approval("e/single") == settled
        after = await engine.get_run("e")
        assert (after.status, after.result, after.steps_done) == (
            run.status,
            run.result,
            run.steps_done,
        )
        assert calls["pay"] == 1


async def test_deadline_expires_and_the_workflow_decides(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Purchases.purchase, 900.0, run_id="po")
        await _waiting(engine, "po")
        info = await engine.get_run("po")
        a = await engine.get_approval("po/chain")
        assert a.deadline is not None
        assert a.deadline.timestamp() == clock.now() + 7 * 86400
        assert info.wake_at == a.deadline  # the deadline is the run's wake time
        await engine.approve("po/chain", by="manager")
        clock.advance(timedelta(days=6, hours=23))
        await asyncio.sleep(0.05)
        assert (await engine.get_run("po")).status == "waiting"
        clock.advance(timedelta(hours=2))
        result = await handle.result(timeout=5)
        assert result == {"status": "expired", "note": "escalated 900.0"}
        expired = await engine.get_approval("po/chain")
        assert expired.status == "expired" and expired.waiting_on is None
        assert [d.by for d in expired.decisions] == ["manager"]  # trail kept
        assert [a.id for a in await engine.approvals(status="expired")] == ["po/chain"]
        assert await engine.approvals(approver="director") == []
        with pytest.raises(ApprovalError):
            await engine.approve("po/chain", by="director")
        assert calls == Counter({"escalate": 1})


async def test_decision_after_deadline_but_before_expiry_is_refused(tmp_path: Path) -> None:
    clock = VirtualClock()
    # poll far in the future: the timer loop only runs when kicked, so we can decide
    # between the deadline passing and the engine noticing it.
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Purchases.purchase, 900.0, run_id="po")
        await _waiting(engine, "po")
        clock._now += 8 * 86400  # jump without notifying the engine
        with pytest.raises(ApprovalError, match="deadline"):
            await engine.approve("po/chain", by="manager")
        clock.advance(0)
        result = await handle.result(timeout=5)
        assert result["status"] == "expired"
        assert (await engine.get_approval("po/chain")).decisions == []


@pytest.mark.parametrize("workflow_name", ["past_deadline", "zero_deadline"])
async def test_deadline_in_the_past_fails_the_run(tmp_path: Path, workflow_name: str) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(getattr(Purchases, workflow_name), run_id="late")
        with pytest.raises(RunFailed) as err:
            await handle.result(timeout=5)
        assert "deadline in the past" in str(err.value.error)
        assert (await engine.get_run("late")).status == "failed"
        assert await engine.approvals(status=None) == []


async def test_no_approvers_fails_the_run(tmp_path: Path) -> None:
    async with _engine(tmp_path, VirtualClock()) as engine:
        handle = await engine.start(Purchases.nobody, run_id="n")
        with pytest.raises(RunFailed) as err:
            await handle.result(timeout=5)
        assert "approvers" in str(err.value.error)


async def test_unknown_approval_id(tmp_path: Path) -> None:
    async with _engine(tmp_path, VirtualClock()) as engine:
        for call in (
            engine.approve("nope/single", by="manager"),
            engine.reject("nope/single", by="manager", reason="x"),
            engine.get_approval("nope/single"),
        ):
            with pytest.raises(ApprovalError, match="no approval"):
                await call
        assert isinstance(ApprovalError("x"), DotdoError)


async def test_approvals_filters(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        await engine.start(Purchases.purchase, 1.0, run_id="a")  # manager's turn
        await _waiting(engine, "a")
        clock.advance(1)
        await engine.start(Purchases.purchase, 2.0, run_id="b")
        await _waiting(engine, "b")
        await engine.approve("b/chain", by="manager")  # director's turn
        clock.advance(1)
        await engine.start(Purchases.expense, 3.0, run_id="c")  # manager's turn
        await _waiting(engine, "c")
        clock.advance(1)
        await engine.start(Purchases.expense, 4.0, run_id="d")
        await _waiting(engine, "d")
        await engine.reject("d/single", by="manager", reason="no")

        def ids(found: list[Approval]) -> list[str]:
            return [a.id for a in found]

        assert ids(await engine.approvals()) == ["a/chain", "b/chain", "c/single"]
        assert ids(await engine.approvals(approver="manager")) == ["a/chain", "c/single"]
        assert ids(await engine.approvals(approver="director")) == ["b/chain"]
        assert ids(await engine.approvals(approver="vp")) == []  # member, not their turn
        assert ids(await engine.approvals(status="rejected")) == ["d/single"]
        assert ids(await engine.approvals(approver="manager", status="rejected")) == ["d/single"]
        assert ids(await engine.approvals(approver="director", status="rejected")) == []
        assert ids(await engine.approvals(approver="vp", status=None)) == ["a/chain", "b/chain"]
        assert ids(await engine.approvals(status=None)) == [
            "a/chain",
            "b/chain",
            "c/single",
            "d/single",
        ]
        assert ids(await engine.approvals(limit=1)) == ["a/chain"]


async def test_approvals_membership_filter_respects_limit(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        for i, who in enumerate(["ann", "ann", "ann", "xavier"]):
            await engine.start(Purchases.ask, who, run_id=f"r{i}")
            await _waiting(engine, f"r{i}")
            clock.advance(1)
            await engine.approve(f"r{i}/approval", by=who)
        found = await engine.approvals(approver="xavier", status="approved", limit=2)
        assert [a.id for a in found] == ["r3/approval"]


async def test_audit_trail_visible_via_get_approval_and_result(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Purchases.expense, 120.0, run_id="e")
        await _waiting(engine, "e")
        clock.advance(timedelta(minutes=5))
        await engine.approve("e/single", by="manager", comment="receipt checked")
        result = await handle.result(timeout=5)
        stored = await engine.get_approval("e/single")
        in_result = result["approval"]
        assert isinstance(in_result, Approval)
        assert stored == in_result
        (d,) = stored.decisions
        assert (d.by, d.decision, d.comment) == ("manager", "approved", "receipt checked")
        assert d.at.timestamp() == clock.now()
        assert stored.created_at is not None
        assert stored.created_at.timestamp() == clock.now() - 300


async def test_inline_request_approval_keeps_extra_fields(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        handle = await engine.start(Purchases.inline, 2500.0, run_id="t")
        await _waiting(engine, "t")
        (a,) = await engine.approvals(approver="boss")
        assert a.id == "t/approval"
        assert (a.type, a.title, a.amount, a.requested_by, a.priority) == (
            "expense",
            "Taxi 2500.0",
            2500.0,
            "alice",
            "high",
        )
        assert a.approvers == ["boss", "cfo"]
        assert a.deadline is not None and a.deadline.timestamp() == clock.now() + 3 * 86400
        assert a.extra == {"cost_center": "R&D", "receipt_url": "https://example.com/r/1"}
        await engine.approve(a.id, by="boss")
        await engine.approve(a.id, by="cfo", comment="ok")
        result = await handle.result(timeout=5)
        assert isinstance(result, Approval)
        assert result.status == "approved" and result.extra["cost_center"] == "R&D"
        assert [d.by for d in result.decisions] == ["boss", "cfo"]


async def test_waiting_run_holds_no_task_and_resumes_in_a_new_engine(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        await engine.start(Purchases.purchase, 5000.0, run_id="po")
        await _waiting(engine, "po")
        assert "po" not in engine._active
        assert "po" not in engine._runs
        info = await engine.get_run("po")
        assert info.lease_owner is None
        await engine.approve("po/chain", by="manager")
        assert "po" not in engine._active
    # a new engine (a new process, in effect) decides the rest
    async with _engine(tmp_path, clock) as engine:
        assert (await engine.get_run("po")).status == "waiting"
        assert "po" not in engine._active
        await engine.approve("po/chain", by="director")
        await engine.approve("po/chain", by="vp")
        result = await engine.handle("po").result(timeout=5)
        assert result["status"] == "paid"
        assert [d.by for d in result["approval"].decisions] == ["manager", "director", "vp"]
        assert calls["pay"] == 1


async def test_decision_on_an_engine_without_the_workflow(tmp_path: Path) -> None:
    clock = VirtualClock()
    db = tmp_path / "app.db"
    worker = Engine(db, clock=clock, poll_seconds=0.05).register(Purchases)
    async with worker:
        await worker.start(Purchases.expense, 400.0, run_id="e")
        await _waiting(worker, "e")
    # the worker is down; a CLI-like engine that knows no workflows decides
    async with Engine(db, clock=clock) as cli:
        assert cli.workflows == {}
        a = await cli.approve("e/single", by="manager", comment="via cli")
        assert a.status == "approved"
        await asyncio.sleep(0.05)
        info = await cli.get_run("e")
        assert info.status == "waiting"  # recorded, not driven
        assert info.wake_at is not None and info.wake_at.timestamp() <= clock.now()
        assert calls["pay"] == 0
    async with Engine(db, clock=clock, poll_seconds=0.05).register(Purchases) as worker:
        result = await worker.handle("e").result(timeout=5)
        assert result["status"] == "paid"
        assert result["approval"].decisions[0].comment == "via cli"
        assert calls["pay"] == 1
        journal = [s.key for s in await worker.journal("e")]
        assert journal.count("single") == 1 and journal.count("pay") == 1


async def test_decision_on_second_engine_while_worker_runs(tmp_path: Path) -> None:
    clock = VirtualClock()
    db = tmp_path / "app.db"
    async with Engine(db, clock=clock, poll_seconds=0.02).register(Purchases) as worker:
        handle = await worker.start(Purchases.expense, 400.0, run_id="e")
        await _waiting(worker, "e")
        async with Engine(db, clock=clock) as cli:
            await cli.reject("e/single", by="manager", reason="duplicate")
        result = await handle.result(timeout=5)
        assert result == {"status": "rejected", "reason": "duplicate"}


async def test_plain_python_auto_approves() -> None:
    result = await Purchases("x").purchase(10.0)
    assert result["status"] == "paid"
    assert [d.by for d in result["approval"].decisions] == ["manager", "director", "vp"]


async def test_cancelled_run_withdraws_its_approval(tmp_path: Path) -> None:
    async with _engine(tmp_path, VirtualClock()) as engine:
        await engine.start(Purchases.expense, 500.0, run_id="e")
        await _waiting(engine, "e")
        await engine.cancel("e")
        assert (await engine.get_run("e")).status == "cancelled"
        assert await engine.approvals(approver="manager") == []
        with pytest.raises(ApprovalError):
            await engine.approve("e/single", by="manager")


async def test_waiting_for_a_hibernating_result_does_not_accumulate(tmp_path: Path) -> None:
    async with _engine(tmp_path, VirtualClock()) as engine:
        handle = await engine.start(Purchases.expense, 500.0, run_id="e")
        await _waiting(engine, "e")
        with pytest.raises(TimeoutError):
            await handle.result(timeout=1.6)
        assert len(engine._waiters.get("e", [])) <= 1
        await engine.approve("e/single", by="manager")
        await handle.result(timeout=5)


async def test_approvals_in_a_loop_get_distinct_ids(tmp_path: Path) -> None:
    async with _engine(tmp_path, VirtualClock()) as engine:
        handle = await engine.start(Purchases.rounds, run_id="r")
        seen = []
        for _ in range(3):
            for _ in range(200):
                await _waiting(engine, "r")
                pending = await engine.approvals(approver="a")
                if pending and pending[0].id not in seen:
                    break
                await asyncio.sleep(0.01)
            seen.append(pending[0].id)
            await engine.approve(pending[0].id, by="a")
        assert seen == ["r/approval[1]", "r/approval[2]", "r/approval_2"]
        assert await handle.result(timeout=5) == seen


async def test_deadline_passes_while_no_engine_runs(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with _engine(tmp_path, clock) as engine:
        await engine.start(Purchases.purchase, 900.0, run_id="po")
        await _waiting(engine, "po")
    clock.advance(timedelta(days=30))
    async with _engine(tmp_path, clock) as engine:
        result = await engine.handle("po").result(timeout=5)
        assert result["status"] == "expired"
        assert (await engine.get_approval("po/chain")).status == "expired"
        assert calls == Counter({"escalate": 1})


async def test_result_readable_from_an_engine_without_the_workflow(tmp_path: Path) -> None:
    clock = VirtualClock()
    db = tmp_path / "app.db"
    async with Engine(db, clock=clock).register(Purchases) as worker:
        handle = await worker.start(Purchases.expense, 10.0, run_id="e")
        await _waiting(worker, "e")
        await worker.approve("e/single", by="manager")
        await handle.result(timeout=5)
    async with Engine(db, clock=clock) as cli:
        assert (await cli.get_run("e")).status == "completed"
        result = await cli.handle("e").result(timeout=5)
        assert result["status"] == "paid"


async def test_unstorable_request_field_fails_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Odd(DO):
        @workflow
        async def ask(self) -> str:
            a = await self.approval_flow.request_approval(
                title="x", approvers=["a"], attachment=object()
            )
            return a.status

    caplog.set_level(logging.CRITICAL)
    async with Engine(tmp_path / "app.db", clock=VirtualClock()).register(Odd) as engine:
        handle = await engine.start(Odd.ask, run_id="odd")
        with pytest.raises(RunFailed) as err:
            await handle.result(timeout=1)
        assert "attachment" in str(err.value.error) or "store" in str(err.value.error)
