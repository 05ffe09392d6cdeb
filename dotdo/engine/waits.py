"""Hibernation: runs that wait for a human, an event or a schedule, holding nothing.

A waiting run is rows: the run (status `waiting`, a wake time for a deadline or timeout),
plus an `approvals` row or a `waits` subscription. Those rows, not memory, decide how the run
resumes: a decision or a matching event is recorded first, then whichever engine can drive
the run claims it, reads the outcome back from the rows and advances it. So a crash at any
point between a decision and the resumed run's next checkpoint loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dotdo.compiler.ir import ApprovalNode, CascadeNode, WaitEventNode
from dotdo.engine import serde
from dotdo.engine.approval_rows import (
    approval_event,
    as_seen,
    is_expired,
    new_approval,
    parse_approval,
)
from dotdo.engine.cascade import HUMAN
from dotdo.engine.driver import ActiveRun
from dotdo.engine.interpreter import Event, Resolved, Suspend, Transition, step_key
from dotdo.engine.models import Approval, Decision, EventRecord
from dotdo.engine.records import readable
from dotdo.engine.store.interface import (
    ApprovalChange,
    JournalRow,
    NewApproval,
    StoredEvent,
    Waker,
)
from dotdo.engine.triggers import check_event_name, matches
from dotdo.errors import ApprovalError, DotdoError

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = ["ApprovalError", "Waits"]

log = logging.getLogger("dotdo.engine")


Resolution = tuple[Event, JournalRow]


def _approval_id(run_id: str, key: str) -> str:
    return f"{run_id}/{key}"


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


class Waits:
    """The part of the engine that hibernates runs and wakes them: approvals, event waits,
    event handlers and schedules."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self._dispatched_upto = 0
        """Newest outbox id this engine has dispatched; a read tells whether there is more."""

    # ------------------------------------------------------------- suspending
    def _wait_key(self, run: ActiveRun) -> tuple[str, str] | None:
        """(kind, key) of the wait the run stands at, if its node can hibernate."""
        node = run.program.graph.nodes[run.state.node]
        if isinstance(node, ApprovalNode):
            return "approval", step_key(node, run.state.frame)
        if isinstance(node, WaitEventNode):
            return "event", step_key(node, run.state.frame)
        if isinstance(node, CascadeNode):
            return "approval", f"{step_key(node, run.state.frame)}:{HUMAN}"
        return None

    async def suspend(
        self, run: ActiveRun, t: Transition, journal: list[JournalRow], sends: list[tuple[str, Any]]
    ) -> Resolution | None:
        """Hibernate the run, unless what it waits for is already there."""
        command = t.command
        assert isinstance(command, Suspend)
        now = self.shell.clock.now()
        row: NewApproval | None = None
        if command.kind == "approval":
            approval = new_approval(_approval_id(run.run_id, command.key), run.run_id, command, now)
            row = NewApproval(
                id=approval.id,
                run_id=run.run_id,
                approver=approval.approvers[0],
                deadline=command.until,
                body=serde.dumps(approval),
                event=approval_event("Approval.requested", approval),
            )
        else:
            name = check_event_name(command.request["event"])
            match = command.request.get("match")
            if match is not None and not isinstance(match, dict):
                raise DotdoError("wait_for_event(match=...) takes a dict of fields to equal")
            if sends:
                # Events the run sent before this wait belong in its inbox: write them first,
                # or the wait would see them only if the dispatcher beat its timeout.
                if await self.shell.driver.commit(run, t, journal, sends, status="running"):
                    return None
                journal, sends = [], []
            found = await self.shell.store.subscribe(
                run.lease, command.key, name, json.dumps(match) if match else None, _fits_wait
            )
            if found is not None:
                if journal or sends:
                    if await self.shell.driver.commit(run, t, journal, sends, status="running"):
                        return None
                return self._resolved(run, command.key, _event(found))
        await self.shell.driver.commit(run, t, journal, sends, approval=row)
        if row is not None:
            self.shell._kick.set()  # deliver Approval.requested to `@on` handlers
        if command.kind == "event":  # hibernated: a retry from the checkpoint would not poke
            await self.shell.retries.persist(lambda: self._poke(run.run_id, command.key))
        return None

    def _resolved(self, run: ActiveRun, key: str, value: Any) -> Resolution:
        row = JournalRow(
            key,
            "completed",
            1,
            value=serde.dumps(value),
            seq=run.steps_done + 1,
            finished_at=self.shell.clock.now(),
        )
        run.steps_done += 1
        self.shell.telemetry.decided(run.run_id, run.workflow.qualname, key)
        return Resolved(value), row

    # ---------------------------------------------------------------- resuming
    async def resolution(self, run: ActiveRun, wake_at: float | None) -> Resolution | str | None:
        """How a run standing at a wait resumes: an outcome, "park" (still waiting), or None
        (it never suspended there: run it normally)."""
        wait = self._wait_key(run)
        if wait is None:
            return None
        kind, key = wait
        now = self.shell.clock.now()
        if kind == "approval":
            approval = await self._stored_approval(_approval_id(run.run_id, key))
            if approval is None:
                return None
            if approval.status == "pending":
                if approval.deadline is None or now < approval.deadline.timestamp():
                    return "park"
                approval = await self._expire(approval)
            return self._resolved(run, key, approval)
        subscription = await self.shell.store.wait(run.run_id, key)
        if subscription is None:
            return None
        if subscription.event_id is not None and subscription.event_id > 0:
            event = await self.shell.store.event(subscription.event_id)
            assert event is not None
            return self._resolved(run, key, _event(event))
        if wake_at is not None and now >= wake_at:
            await self.shell.store.time_out_wait(run.lease, key)
            return self._resolved(run, key, None)
        if wake_at is None:
            # Subscribed, but the checkpoint that hibernates the run (and sets the deadline of
            # a timeout) never happened: the process died in between. Suspend it again.
            return None
        return "park"

    async def _expire(self, approval: Approval) -> Approval:
        expired = approval.model_copy(update={"status": "expired"})
        await self.shell.store.expire_approval(
            approval.id, serde.dumps(expired), self.shell.clock.now()
        )
        return expired

    async def _poke(self, run_id: str, key: str) -> None:
        """After hibernating on an event: if one matched meanwhile, wake the run now."""
        wait = await self.shell.store.wait(run_id, key)
        if wait is not None and wait.event_id is not None and wait.event_id > 0:
            lease = await self.shell.store.wake(run_id, self._waker())
            if lease is not None:
                await self.shell._resume(run_id)
            else:
                self.shell._kick.set()

    def _waker(self) -> Waker:
        """How this engine wakes a run that has its answer: it claims it if it can drive
        it, else makes it due at once so an engine that can (a worker) picks it up."""
        return Waker(
            ttl=self.shell.lease_seconds,
            workflows=frozenset(self.shell._workflows),
            now=self.shell.clock.now(),
            may_claim=not self.shell._closing,
        )

    # --------------------------------------------------------------- approvals
    async def _stored_approval(self, approval_id: str) -> Approval | None:
        """The approval as its row says (pending even past its deadline), or None."""
        row = await self.shell.store.approval(approval_id)
        if row is None:
            return None
        approval = parse_approval(row.body)
        if approval is None:
            raise ApprovalError(f"approval {approval_id!r} is stored in a form dotdo cannot read")
        return approval

    async def get_approval(self, approval_id: str, *, missing_ok: bool = False) -> Any:
        """An approval as of now: pending past its deadline reads as expired."""
        approval = await self._stored_approval(approval_id)
        if approval is None:
            if missing_ok:
                return None
            raise ApprovalError(f"no approval with id {approval_id!r}")
        return as_seen(approval, self.shell.clock.now())

    async def approvals(
        self, *, approver: str | None = None, status: str | None = "pending", limit: int = 100
    ) -> list[Approval]:
        """Approvals, oldest first. With `approver`: those waiting on them (pending) or naming
        them (other statuses), counting the groups a console user `approver` is a member of.
        Status is as of now: a pending approval past its deadline is listed as expired."""
        now = self.shell.clock.now()
        names = [approver] if approver else []
        if approver and (member := await self.shell.store.user(approver)) is not None:
            names += [n for n in member.names if n != approver]
        by_membership = bool(approver) and status != "pending"
        rows = []
        for name in names if status == "pending" and names else [None]:
            rows += await self.shell.store.list_approvals(
                status=status,
                approver=name,
                now=now,
                limit=-1 if by_membership else limit,
            )
        found = [parse_approval(r.body) for r in {r.id: r for r in rows}.values()]
        out = [as_seen(a, now) for a in found if a is not None]
        if by_membership:
            out = [a for a in out if any(n in a.approvers for n in names)]
        if len(names) > 1:
            out.sort(key=lambda a: (a.created_at or datetime.min.replace(tzinfo=UTC), a.id))
        return out if limit < 0 else out[:limit]

    async def withdraw_approvals(self, run_id: str) -> None:
        """A cancelled run's pending approvals are withdrawn: nobody can decide them now."""

        def withdrawn(body: str) -> str:
            approval = parse_approval(body)  # None: not an approval; withdrawn regardless
            if approval is None:
                return body
            approval.status = "withdrawn"
            return serde.dumps(approval)

        # The cancel is already stored: this must follow it.
        await self.shell.retries.persist(
            lambda: self.shell.store.withdraw_approvals(run_id, withdrawn, self.shell.clock.now())
        )

    async def approve(
        self,
        approval_id: str,
        *,
        by: str,
        comment: str | None = None,
        value: Any = None,
        user: str | None = None,
    ) -> Approval:
        """Record `by`'s approval; the last approver of a chain settles it and wakes the run.
        `by` is the approver whose turn it is, or a user who is a member of that group."""
        return await self._decide(approval_id, by, "approved", comment, value, user)

    async def reject(
        self, approval_id: str, *, by: str, reason: str, user: str | None = None
    ) -> Approval:
        """Reject with a reason; a rejection at any level ends the chain."""
        if not reason or not reason.strip():
            raise ApprovalError("a rejection needs a reason")
        return await self._decide(approval_id, by, "rejected", reason, None, user)

    async def _decide(
        self,
        approval_id: str,
        by: str,
        decision: str,
        comment: str | None,
        value: Any,
        user: str | None = None,
    ) -> Approval:
        now = self.shell.clock.now()
        member = await self.shell.store.user(by)  # `by` may be a user in the group it waits on
        groups = member.names if member is not None else ()

        def decide(body: str | None) -> tuple[ApprovalChange, Approval]:
            if body is None:
                raise ApprovalError(f"no approval with id {approval_id!r}")
            approval = parse_approval(body)
            if approval is None:
                raise ApprovalError(
                    f"approval {approval_id!r} is stored in a form dotdo cannot read"
                )
            if is_expired(approval, now):
                raise ApprovalError(
                    f"approval {approval_id!r} is already expired (its deadline passed)"
                )
            if approval.status != "pending":
                raise ApprovalError(f"approval {approval_id!r} is already {approval.status}")
            turn = approval.approvers[approval.level]
            who = user
            if by != turn:
                if turn not in groups:
                    raise ApprovalError(
                        f"{by!r} may not decide approval {approval_id!r}: it waits on {turn!r}"
                    )
                who = by  # a member of the group `turn` names: the decision records who
            approval.decisions.append(
                Decision(
                    by=turn,
                    at=datetime.fromtimestamp(now, UTC),
                    decision=decision,  # type: ignore[arg-type]
                    comment=comment,
                    value=value,
                    user=who,
                )
            )
            if decision == "rejected":
                approval.status, approval.rejection_reason = "rejected", comment
            else:
                approval.level += 1
                if approval.level == len(approval.approvers):
                    approval.status = "approved"
            change = ApprovalChange(
                status=approval.status,
                approver=approval.waiting_on,
                body=serde.dumps(approval),
                wake=approval.status != "pending",
                event=approval_event("Approval.decided", approval),
            )
            return change, approval

        waker = self._waker()
        approval, lease = await self.shell.store.decide_approval(approval_id, decide, waker)
        self.shell._kick.set()  # deliver Approval.decided (and wake a run held elsewhere)
        if lease is not None:
            await self.shell._resume(approval.run_id)
        return approval

    # ------------------------------------------------------------------ events
    async def send(self, name: str, data: Any = None) -> int:
        """Publish an event from outside any run; returns its id."""
        check_event_name(name)
        payload = serde.dumps(data)
        now = self.shell.clock.now()

        event_id = await self.shell.store.publish(name, payload, now)
        self.shell._kick.set()
        return event_id

    async def settle(self, *, timeout: float | None = None) -> None:
        """Deliver the events sent so far to the runs and handlers registered here, then
        wait until this engine advances no run (each has finished or waits): how a short
        process (`dotdo send --app`) drives on what its event woke or started."""
        await self.dispatch()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.shell._active:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"runs still in flight after {timeout}s: {sorted(self.shell._active)}"
                )
            await asyncio.sleep(0.005)

    async def dispatch(self) -> None:
        """Deliver new events to waiting runs and start `@on` handlers, exactly once each."""
        newest = await self.shell.store.newest_event_id()
        if newest <= self._dispatched_upto:
            return  # nothing new: an idle engine polls with one read
        woken = await self.shell.store.deliver_to_waits(_fits_wait, self._waker())
        self.shell._kick.set()  # runs made due for another engine, or woken here
        for lease in woken:
            await self.shell._resume(lease.run_id)
        handlers = {name: wf for name, wf in self.shell._workflows.items() if wf.trigger}
        for name, wf in handlers.items():
            cursor = f"on:{name}"
            last = await self.shell.store.cursor(cursor)
            events = await self.shell.store.events_after(last, 500)
            if not events:
                continue
            assert wf.trigger is not None
            for event_row in events:
                record = _event(event_row)
                if matches(wf.trigger, record.name):
                    try:
                        await self.shell.start(wf, record, run_id=f"{name}:{record.id}")
                    except Exception as exc:
                        log.error("handler %s cannot start for event %s: %s", name, record.id, exc)
            await self.shell.store.advance_cursor(cursor, events[-1].id)
        self._dispatched_upto = newest

    # --------------------------------------------------------------- schedules
    async def fire_schedules(self) -> float | None:
        """Start the run of every schedule that fell due; returns the next fire time.

        A fire's run id derives from the schedule and the fire time, so two workers (or a
        restart) starting the same fire find the same run. Fires missed while nothing ran
        collapse into one catch-up run for the latest of them.
        """
        now = self.shell.clock.now()
        upcoming: float | None = None
        for name, wf in self.shell._workflows.items():
            schedule = wf.schedule
            if schedule is None:
                continue
            row = await self.shell.store.schedule(name)
            if row is None or row.spec != schedule.spec:
                next_fire = schedule.next_after(now)
                await self.shell.store.set_schedule(name, schedule.spec, next_fire)
            else:
                next_fire = row.next_fire
                if next_fire <= now:
                    fire = schedule.latest_at_or_before(now, next_fire - 1e-6) or next_fire
                    stamp = datetime.fromtimestamp(fire, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    await self.shell.start(wf, run_id=f"{name}@{stamp}")
                    next_fire = schedule.next_after(now)
                    await self.shell.store.schedule_fired(name, fire, next_fire)
            upcoming = next_fire if upcoming is None else min(upcoming, next_fire)
        return upcoming


def _event(row: StoredEvent) -> EventRecord:
    # Data as stored JSON where its classes are unknown here: one unreadable row must not
    # stop the delivery of every event behind it.
    return EventRecord(
        id=row.id,
        name=row.name,
        data=readable(row.data),
        run_id=row.run_id,
        created_at=_time(row.created_at),
    )


def _fits_wait(event: StoredEvent, match: str | None) -> bool:
    """The store's `EventFilter`: the event fits a wait's match (JSON text)."""
    return _fits(readable(event.data), json.loads(match) if match else None)


def _fits(data: Any, match: dict[str, Any] | None) -> bool:
    """An event fits a wait when every field of `match` equals the event's field."""
    if not match:
        return True
    if not isinstance(data, dict):
        return False
    return all(data.get(k) == v for k, v in match.items())
