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
from typing import Any

import aiosqlite

from dotdo.compiler.ir import ApprovalNode, CascadeNode, WaitEventNode
from dotdo.engine import serde
from dotdo.engine.approval_rows import (
    approval_event,
    as_seen,
    is_expired,
    listing_filter,
    new_approval,
    parse_approval,
)
from dotdo.engine.cascade import HUMAN
from dotdo.engine.driver import RunDriver, _Run
from dotdo.engine.interpreter import Event, Resolved, Suspend, Transition, step_key
from dotdo.engine.leases import lease_is_free
from dotdo.engine.models import Approval, Decision, EventRecord
from dotdo.engine.records import readable
from dotdo.engine.store import people
from dotdo.engine.store.sqlite import JournalRow
from dotdo.engine.triggers import check_event_name, matches
from dotdo.engine.workflow import Workflow
from dotdo.errors import ApprovalError, DotdoError

__all__ = ["ApprovalError", "Hibernation"]

log = logging.getLogger("dotdo.engine")


Resolution = tuple[Event, JournalRow]


def _approval_id(run_id: str, key: str) -> str:
    return f"{run_id}/{key}"


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


class Hibernation(RunDriver):
    """Approvals, event waits, event handlers and schedules, on top of the run driver."""

    owner: str
    lease_seconds: float
    _workflows: dict[str, Workflow]
    _dispatched_upto: int = 0
    """Newest outbox id this engine has dispatched; a read tells whether there is more."""

    async def _resume(self, run_id: str) -> None:
        raise NotImplementedError

    async def start(
        self,
        workflow: Workflow | str,
        *args: Any,
        run_id: str | None = None,
        entity_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------- suspending
    def _wait_key(self, run: _Run) -> tuple[str, str] | None:
        """(kind, key) of the wait the run stands at, if its node can hibernate."""
        node = run.program.graph.nodes[run.state.node]
        if isinstance(node, ApprovalNode):
            return "approval", step_key(node, run.state.frame)
        if isinstance(node, WaitEventNode):
            return "event", step_key(node, run.state.frame)
        if isinstance(node, CascadeNode):
            return "approval", f"{step_key(node, run.state.frame)}:{HUMAN}"
        return None

    async def _suspend(
        self, run: _Run, t: Transition, journal: list[JournalRow], sends: list[tuple[str, Any]]
    ) -> Resolution | None:
        """Hibernate the run, unless what it waits for is already there."""
        command = t.command
        assert isinstance(command, Suspend)
        now = self.clock.now()
        extra: list[tuple[str, tuple[Any, ...]]] = []
        if command.kind == "approval":
            approval = new_approval(_approval_id(run.run_id, command.key), run.run_id, command, now)
            extra.append(
                (
                    "INSERT INTO approvals(id, run_id, status, approver, deadline, body, "
                    "created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?) "
                    "ON CONFLICT(id) DO NOTHING",
                    (
                        approval.id,
                        run.run_id,
                        approval.approvers[0],
                        command.until,
                        serde.dumps(approval),
                        now,
                        now,
                    ),
                )
            )
            extra.append(approval_event("Approval.requested", approval, now))
        else:
            name = check_event_name(command.request["event"])
            match = command.request.get("match")
            if match is not None and not isinstance(match, dict):
                raise DotdoError("wait_for_event(match=...) takes a dict of fields to equal")
            if sends:
                # Events the run sent before this wait belong in its inbox: write them first,
                # or the wait would see them only if the dispatcher beat its timeout.
                if await self._commit(run, t, journal, sends, status="running"):
                    return None
                journal, sends = [], []
            found = await self.store.write(
                lambda conn: self._subscribe(conn, run, command.key, name, match)
            )
            if found is not None:
                if journal or sends:
                    if await self._commit(run, t, journal, sends, status="running"):
                        return None
                return self._resolved(run, command.key, found)
        await self._commit(run, t, journal, sends, extra=extra)
        if extra:
            self._kick.set()  # deliver Approval.requested to `@on` handlers
        if command.kind == "event":  # hibernated: a retry from the checkpoint would not poke
            await self._persist(lambda: self._poke(run.run_id, command.key))
        return None

    async def _subscribe(
        self,
        conn: aiosqlite.Connection,
        run: _Run,
        key: str,
        name: str,
        match: dict[str, Any] | None,
    ) -> EventRecord | None:
        """Register the wait and look for an event that came first (the run's inbox)."""
        rows = list(
            await conn.execute_fetchall(
                "SELECT created_at FROM runs WHERE run_id = ?", (run.run_id,)
            )
        )
        since = rows[0][0] if rows else 0.0
        # This wait may have taken an event already and its process died before the run's
        # next checkpoint (the run was stored at an earlier node, so it replays up to here).
        # That event is the wait's; the search below would skip it as consumed.
        taken = list(
            await conn.execute_fetchall(
                "SELECT id, event, data, run_id, created_at FROM outbox WHERE id = "
                "(SELECT event_id FROM waits WHERE run_id = ? AND step_key = ? AND event_id > 0)",
                (run.run_id, key),
            )
        )
        if taken:
            return _event(taken[0])
        await conn.execute(
            "INSERT INTO waits(run_id, step_key, event, match, since) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(run_id, step_key) DO NOTHING",
            (run.run_id, key, name, json.dumps(match) if match else None, since),
        )
        candidates = await conn.execute_fetchall(
            "SELECT id, event, data, run_id, created_at FROM outbox WHERE event = ? "
            "AND created_at >= ? AND id NOT IN (SELECT event_id FROM waits WHERE run_id = ? "
            "AND event_id IS NOT NULL) ORDER BY id",
            (name, since, run.run_id),
        )
        for row in candidates:
            record = _event(row)
            if _fits(record.data, match):
                await conn.execute(
                    "UPDATE waits SET event_id = ? WHERE run_id = ? AND step_key = ?",
                    (record.id, run.run_id, key),
                )
                return record
        return None

    def _resolved(self, run: _Run, key: str, value: Any) -> Resolution:
        row = JournalRow(
            key,
            "completed",
            1,
            value=serde.dumps(value),
            seq=run.steps_done + 1,
            finished_at=self.clock.now(),
        )
        run.steps_done += 1
        return Resolved(value), row

    # ---------------------------------------------------------------- resuming
    async def _resolution(self, run: _Run, wake_at: float | None) -> Resolution | str | None:
        """How a run standing at a wait resumes: an outcome, "park" (still waiting), or None
        (it never suspended there: run it normally)."""
        wait = self._wait_key(run)
        if wait is None:
            return None
        kind, key = wait
        now = self.clock.now()
        if kind == "approval":
            approval = await self._stored_approval(_approval_id(run.run_id, key))
            if approval is None:
                return None
            if approval.status == "pending":
                if approval.deadline is None or now < approval.deadline.timestamp():
                    return "park"
                approval = await self._expire(approval)
            return self._resolved(run, key, approval)
        row = await self.store.fetch_one(
            "SELECT event_id FROM waits WHERE run_id = ? AND step_key = ?", (run.run_id, key)
        )
        if row is None:
            return None
        if row["event_id"] is not None and row["event_id"] > 0:
            event = await self.store.fetch_one(
                "SELECT id, event, data, run_id, created_at FROM outbox WHERE id = ?",
                (row["event_id"],),
            )
            assert event is not None
            return self._resolved(run, key, _event(event))
        if wake_at is not None and now >= wake_at:
            await self.store.write(
                lambda conn: conn.execute(
                    "UPDATE waits SET event_id = -1 WHERE run_id = ? AND step_key = ? "
                    "AND event_id IS NULL",
                    (run.run_id, key),
                )
            )
            return self._resolved(run, key, None)
        if wake_at is None:
            # Subscribed, but the checkpoint that hibernates the run (and sets the deadline of
            # a timeout) never happened: the process died in between. Suspend it again.
            return None
        return "park"

    async def _expire(self, approval: Approval) -> Approval:
        expired = approval.model_copy(update={"status": "expired"})

        async def job(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "UPDATE approvals SET status = 'expired', approver = NULL, body = ?, "
                "updated_at = ? WHERE id = ? AND status = 'pending'",
                (serde.dumps(expired), self.clock.now(), approval.id),
            )

        await self.store.write(job)
        return expired

    async def _poke(self, run_id: str, key: str) -> None:
        """After hibernating on an event: if one matched meanwhile, wake the run now."""
        row = await self.store.fetch_one(
            "SELECT 1 FROM waits WHERE run_id = ? AND step_key = ? AND event_id > 0", (run_id, key)
        )
        if row is not None and await self.store.write(lambda c: self._wake(c, run_id)):
            await self._resume(run_id)

    async def _wake(self, conn: aiosqlite.Connection, run_id: str) -> bool:
        """Make a waiting run runnable: claim it if this engine can drive it, else make it
        due at once so an engine that can (a worker) picks it up."""
        rows = list(
            await conn.execute_fetchall(
                "SELECT workflow, lease_owner, lease_until FROM runs WHERE run_id = ? "
                "AND status = 'waiting'",
                (run_id,),
            )
        )
        if not rows:
            return False
        workflow, owner, until = rows[0]
        if workflow in self._workflows and lease_is_free(owner, until) and not self._closing:
            await conn.execute(
                "UPDATE runs SET status = 'running', lease_owner = ?, lease_until = ? "
                "WHERE run_id = ?",
                (self.owner, time.time() + self.lease_seconds, run_id),
            )
            return True
        await conn.execute(
            "UPDATE runs SET wake_at = ? WHERE run_id = ?", (self.clock.now(), run_id)
        )
        self._kick.set()
        return False

    # --------------------------------------------------------------- approvals
    async def _stored_approval(self, approval_id: str) -> Approval | None:
        """The approval as its row says (pending even past its deadline), or None."""
        row = await self.store.fetch_one("SELECT body FROM approvals WHERE id = ?", (approval_id,))
        if row is None:
            return None
        approval = parse_approval(row["body"])
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
        return as_seen(approval, self.clock.now())

    async def approvals(
        self, *, approver: str | None = None, status: str | None = "pending", limit: int = 100
    ) -> list[Approval]:
        """Approvals, oldest first. With `approver` and pending status: those waiting on them.
        Status is as of now: a pending approval past its deadline is listed as expired."""
        now = self.clock.now()
        clauses, params = listing_filter(status, approver, now)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        by_membership = bool(approver) and status != "pending"
        rows = await self.store.fetch(
            f"SELECT body FROM approvals {where} ORDER BY created_at, id LIMIT ?",
            (*params, -1 if by_membership else limit),
        )
        found = [parse_approval(r["body"]) for r in rows]
        out = [as_seen(a, now) for a in found if a is not None]
        if by_membership:
            out = [a for a in out if approver in a.approvers][:limit]
        return out

    async def _withdraw_approvals(self, run_id: str) -> None:
        """A cancelled run's pending approvals are withdrawn: nobody can decide them now."""

        async def job(conn: aiosqlite.Connection) -> None:
            rows = await conn.execute_fetchall(
                "SELECT id, body FROM approvals WHERE run_id = ? AND status = 'pending'",
                (run_id,),
            )
            for approval_id, body in rows:
                approval = parse_approval(body)  # None: not an approval; withdrawn regardless
                if approval is not None:
                    approval.status = "withdrawn"
                    body = serde.dumps(approval)
                await conn.execute(
                    "UPDATE approvals SET status = 'withdrawn', approver = NULL, body = ?, "
                    "updated_at = ? WHERE id = ?",
                    (body, self.clock.now(), approval_id),
                )

        await self._persist(lambda: self.store.write(job))  # the cancel is already stored

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
        now = self.clock.now()

        async def job(conn: aiosqlite.Connection) -> tuple[Approval, bool]:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT body FROM approvals WHERE id = ?", (approval_id,)
                )
            )
            if not rows:
                raise ApprovalError(f"no approval with id {approval_id!r}")
            approval = parse_approval(rows[0][0])
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
                if not await people.is_member(conn, by, turn):
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
            waiting_on = approval.waiting_on
            await conn.execute(
                "UPDATE approvals SET status = ?, approver = ?, body = ?, updated_at = ? "
                "WHERE id = ?",
                (approval.status, waiting_on, serde.dumps(approval), now, approval_id),
            )
            await conn.execute(*approval_event("Approval.decided", approval, now))
            woke = approval.status != "pending" and await self._wake(conn, approval.run_id)
            return approval, woke

        approval, woke = await self.store.write(job)
        self._kick.set()  # deliver Approval.decided
        if woke:
            await self._resume(approval.run_id)
        return approval

    # ------------------------------------------------------------------ events
    async def send(self, name: str, data: Any = None) -> int:
        """Publish an event from outside any run; returns its id."""
        check_event_name(name)
        payload = serde.dumps(data)
        now = self.clock.now()

        async def job(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(
                "INSERT INTO outbox(run_id, event, data, created_at) VALUES (NULL, ?, ?, ?)",
                (name, payload, now),
            )
            return int(cursor.lastrowid or 0)

        event_id = await self.store.write(job)
        self._kick.set()
        return event_id

    async def settle(self, *, timeout: float | None = None) -> None:
        """Deliver the events sent so far to the runs and handlers registered here, then
        wait until this engine advances no run (each has finished or waits): how a short
        process (`dotdo send --app`) drives on what its event woke or started."""
        await self._dispatch()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._active:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"runs still in flight after {timeout}s: {sorted(self._active)}")
            await asyncio.sleep(0.005)

    async def _dispatch(self) -> None:
        """Deliver new events to waiting runs and start `@on` handlers, exactly once each."""
        row = await self.store.fetch_one("SELECT MAX(id) AS top FROM outbox")
        newest = (row["top"] if row else None) or 0
        if newest <= self._dispatched_upto:
            return  # nothing new: an idle engine polls with one read
        woken = await self.store.write(self._deliver_waits)
        for run_id in woken:
            await self._resume(run_id)
        handlers = {name: wf for name, wf in self._workflows.items() if wf.trigger}
        for name, wf in handlers.items():
            cursor = f"on:{name}"
            row = await self.store.fetch_one(
                "SELECT last_id FROM cursors WHERE name = ?", (cursor,)
            )
            last = row["last_id"] if row else 0
            events = await self.store.fetch(
                "SELECT id, event, data, run_id, created_at FROM outbox WHERE id > ? "
                "ORDER BY id LIMIT 500",
                (last,),
            )
            if not events:
                continue
            assert wf.trigger is not None
            for event_row in events:
                record = _event(event_row)
                if matches(wf.trigger, record.name):
                    try:
                        await self.start(wf, record, run_id=f"{name}:{record.id}")
                    except Exception as exc:
                        log.error("handler %s cannot start for event %s: %s", name, record.id, exc)
            top = events[-1]["id"]
            await self.store.execute(
                "INSERT INTO cursors(name, last_id) VALUES (?, ?) ON CONFLICT(name) "
                "DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
                (cursor, top),
            )
        self._dispatched_upto = newest

    async def _deliver_waits(self, conn: aiosqlite.Connection) -> list[str]:
        rows = list(await conn.execute_fetchall("SELECT last_id FROM cursors WHERE name = 'waits'"))
        last = rows[0][0] if rows else 0
        events = [
            _event(r)
            for r in await conn.execute_fetchall(
                "SELECT id, event, data, run_id, created_at FROM outbox WHERE id > ? ORDER BY id "
                "LIMIT 1000",
                (last,),
            )
        ]
        woken: list[str] = []
        for event in events:
            waits = await conn.execute_fetchall(
                "SELECT run_id, step_key, match, since FROM waits WHERE event = ? "
                "AND event_id IS NULL",
                (event.name,),
            )
            # A run takes an event once, as its inbox does: one of its waits may have taken
            # this one already (from the inbox, before the dispatcher got to it).
            taken = {
                r[0]
                for r in await conn.execute_fetchall(
                    "SELECT run_id FROM waits WHERE event_id = ?", (event.id,)
                )
            }
            for run_id, key, match, since in waits:
                created = event.created_at.timestamp() if event.created_at else 0.0
                if run_id in taken or created < since:
                    continue
                if not _fits(event.data, json.loads(match) if match else None):
                    continue
                taken.add(run_id)
                await conn.execute(
                    "UPDATE waits SET event_id = ? WHERE run_id = ? AND step_key = ? "
                    "AND event_id IS NULL",
                    (event.id, run_id, key),
                )
                if await self._wake(conn, run_id):
                    woken.append(run_id)
        if events:
            await conn.execute(
                "INSERT INTO cursors(name, last_id) VALUES ('waits', ?) ON CONFLICT(name) "
                "DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
                (events[-1].id,),
            )
        return woken

    # --------------------------------------------------------------- schedules
    async def _fire_schedules(self) -> float | None:
        """Start the run of every schedule that fell due; returns the next fire time.

        A fire's run id derives from the schedule and the fire time, so two workers (or a
        restart) starting the same fire find the same run. Fires missed while nothing ran
        collapse into one catch-up run for the latest of them.
        """
        now = self.clock.now()
        upcoming: float | None = None
        for name, wf in self._workflows.items():
            schedule = wf.schedule
            if schedule is None:
                continue
            row = await self.store.fetch_one(
                "SELECT spec, next_fire FROM schedules WHERE name = ?", (name,)
            )
            if row is None or row["spec"] != schedule.spec:
                next_fire = schedule.next_after(now)
                await self.store.execute(
                    "INSERT INTO schedules(name, spec, next_fire) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, "
                    "next_fire = excluded.next_fire",
                    (name, schedule.spec, next_fire),
                )
            else:
                next_fire = row["next_fire"]
                if next_fire <= now:
                    fire = schedule.latest_at_or_before(now, next_fire - 1e-6) or next_fire
                    stamp = datetime.fromtimestamp(fire, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    await self.start(wf, run_id=f"{name}@{stamp}")
                    next_fire = schedule.next_after(now)
                    await self.store.execute(
                        "UPDATE schedules SET next_fire = ?, last_fire = ? WHERE name = ?",
                        (next_fire, fire, name),
                    )
            upcoming = next_fire if upcoming is None else min(upcoming, next_fire)
        return upcoming


def _event(row: Any) -> EventRecord:
    # Data as stored JSON where its classes are unknown here: one unreadable row must not
    # stop the delivery of every event behind it.
    return EventRecord(
        id=row[0],
        name=row[1],
        data=readable(row[2]),
        run_id=row[3],
        created_at=_time(row[4]),
    )


def _fits(data: Any, match: dict[str, Any] | None) -> bool:
    """An event fits a wait when every field of `match` equals the event's field."""
    if not match:
        return True
    if not isinstance(data, dict):
        return False
    return all(data.get(k) == v for k, v in match.items())
