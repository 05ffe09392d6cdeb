"""The engine shell: the I/O around the pure interpreter.

It performs the interpreter's commands (call a step, record a value, wait, finish), persists
each transition in one transaction together with its cause, and owns the background work:
the group-commit writer, the timer loop that wakes hibernated runs, lease renewal, and the
recovery of unfinished runs when it opens. A waiting run holds no task and no memory here:
it is a row with a wake time, and the timer loop claims it when it is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from dotdo.compiler.codegen import Frame, Program
from dotdo.compiler.loop_budget import DEFAULT_LOOP_BUDGET
from dotdo.engine import serde
from dotdo.engine.allowlist import check_allow_list
from dotdo.engine.clock import Clock, SystemClock
from dotdo.engine.driver import ActiveRun, FaultHook, RunDriver
from dotdo.engine.faults import Retries, is_store_fault
from dotdo.engine.handle import RunHandle
from dotdo.engine.ids import check_id
from dotdo.engine.interpreter import Event, Resume, RunState, TimerFired
from dotdo.engine.leases import new_owner, release_owner
from dotdo.engine.links import link_url, sign_link
from dotdo.engine.models import Approval
from dotdo.engine.operating import Operations
from dotdo.engine.people import console_key
from dotdo.engine.records import RunInfo, StepRecord
from dotdo.engine.starts import NewRun, check_same, rows_of
from dotdo.engine.state import bind_inputs, decode_state, encode_state
from dotdo.engine.store.errors import is_read_only_refusal
from dotdo.engine.store.factory import make_store
from dotdo.engine.store.interface import (
    ChangeFeed,
    JournalRow,
    Store,
    StoredRun,
    StoreOptions,
)
from dotdo.engine.store.location import locate
from dotdo.engine.telemetry import Observer, Telemetry
from dotdo.engine.timers import Timers
from dotdo.engine.trust import (
    check_mac,
    check_state,
    mac_key,
    secret_bytes,
    source_of,
    stored_graph,
    trust_types_of,
)
from dotdo.engine.upgrade_apply import UpgradeOutcome
from dotdo.engine.upgrade_check import UpgradeReport
from dotdo.engine.waits import Waits
from dotdo.engine.workflow import Workflow, workflows_of
from dotdo.errors import (
    ApprovalError,
    DotdoError,
    GraphIntegrityError,
    LeaseLost,
    RunNotFound,
    SerializationError,
    StoreError,
    UnknownWorkflow,
)

__all__ = ["Engine", "FaultHook", "RunHandle"]

log = logging.getLogger("dotdo.engine")

FEED_POLL_SECONDS = 5.0
"""The fallback poll of an idle loop while the store's change feed is up."""


class Engine:
    """An embedded durable-workflow engine over one SQLite file or a PostgreSQL database.

    `Engine()` uses ./dotdo.db; `Engine("postgresql://user@host/db")` a PostgreSQL database
    that many worker processes on many machines can share (docs/scaling.md). Register DO
    classes, then `async with engine:` opens the store, recovers unfinished runs and runs
    timers until the block ends.

    `secret` (default: $DOTDO_SECRET) signs the graphs this engine stores and makes it refuse
    stored graphs without a valid signature (docs/security.md). `read_only=True` opens the
    database only to read it (`mode=ro`): no recovery, no timers, and every write raises.
    `flow_modules` lists the modules .flow files may use besides their own project's;
    `loop_budget` bounds the pure code a run executes between two durable operations.
    """

    def __init__(
        self,
        path: str | Path = "dotdo.db",
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        lease_seconds: float = 30.0,
        clock: Clock | None = None,
        faults: FaultHook | None = None,
        poll_seconds: float = 0.1,
        shutdown_grace: float = 10.0,
        busy_timeout: float = 5.0,
        secret: str | bytes | None = None,
        read_only: bool = False,
        flow_modules: Iterable[str] | None = None,
        loop_budget: int = DEFAULT_LOOP_BUDGET,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise StoreError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if type(loop_budget) is not int or loop_budget < 1:
            raise DotdoError(f"loop_budget must be a positive whole number, not {loop_budget!r}")
        self.flow_modules = check_allow_list(flow_modules or (), "Engine(flow_modules=...)")
        self.loop_budget = loop_budget
        self.busy_timeout = busy_timeout
        self.location = locate(path)  # an unknown URL scheme is refused here, at once
        self.path: Path | str = (
            Path(self.location.target)
            if self.location.backend == "sqlite"
            else self.location.display
        )
        self.synchronous = synchronous
        self.lease_seconds = lease_seconds
        self.clock = clock or SystemClock()
        self.faults = faults
        self.poll_seconds = poll_seconds
        self.shutdown_grace = shutdown_grace
        self.owner = new_owner()
        self.read_only = read_only
        self._secret = secret_bytes(secret)
        self._signed: set[str] = set()
        self._workflows: dict[str, Workflow] = {}
        self._classes: dict[str, type[Any]] = {}
        self._store: Store | None = None
        self._active: dict[str, asyncio.Task[None]] = {}
        self._runs: dict[str, ActiveRun] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._kick = asyncio.Event()
        self._crashed: BaseException | None = None
        self._closing = False
        self._unloadable: set[str] = set()
        self._resume_after: set[str] = set()
        self._loading: set[str] = set()
        self._faulted: dict[str, int] = {}
        self._retrying: set[asyncio.Task[None]] = set()
        self._dying: BaseException | None = None
        self.telemetry = Telemetry()
        # The parts: each holds one job and reaches the others through this shell.
        self.driver = RunDriver(self)
        self.waits = Waits(self)
        self.retries = Retries(self)
        self.operations = Operations(self)
        self.timers = Timers(self)

    # ------------------------------------------------------------ registration
    def register(self, *targets: Any) -> Engine:
        """Make DO classes (all their workflows), loaded `.flow` files or single workflows
        startable here. A class is also hosted as an entity type (see dotdo.entities)."""
        for target in targets:
            owner, found = workflows_of(target)
            if owner is None and not found:
                raise TypeError(f"cannot register {target!r}: expected a DO class or workflow")
            if found and found == [target]:
                self._add(found[0])
                trust_types_of(owner or type(None), getattr(target, "fn", None))
                continue
            assert owner is not None
            self._classes[owner.__name__] = owner
            for wf in found:
                self._add(wf)
            trust_types_of(owner)
        return self

    def _recheck_flow(self, owner: object) -> None:
        """A DO class made by `load_flow` carries where its flow came from: re-check the
        modules it reaches against this engine's allow-list (docs/security.md)."""
        origin = vars(owner).get("__dotdo_flow__") if isinstance(owner, type) else None
        if origin is not None:
            origin.check(self.flow_modules)

    def _add(self, wf: Workflow) -> None:
        self._recheck_flow(wf.owner)
        existing = self._workflows.get(wf.qualname)
        if existing is not None and getattr(existing, "fn", existing) is not getattr(wf, "fn", wf):
            raise DotdoError(f"two different workflows are named {wf.qualname!r}")
        self._workflows[wf.qualname] = wf

    @property
    def workflows(self) -> dict[str, Workflow]:
        return dict(self._workflows)

    def workflow(self, name: str) -> Workflow:
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(sorted(self._workflows)) or "none"
            raise UnknownWorkflow(
                f"no workflow named {name!r} is registered (known: {known})"
            ) from None

    # --------------------------------------------------------- approvals, events
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
        `by` is the approver whose turn it is, or a console user in the group it waits on;
        `user` names the person deciding for `by` (the console's signed-in user)."""
        return await self.waits.approve(approval_id, by=by, comment=comment, value=value, user=user)

    async def reject(
        self, approval_id: str, *, by: str, reason: str, user: str | None = None
    ) -> Approval:
        """Reject with a reason; a rejection at any level ends the chain."""
        return await self.waits.reject(approval_id, by=by, reason=reason, user=user)

    async def get_approval(self, approval_id: str, *, missing_ok: bool = False) -> Any:
        """An approval as of now: pending past its deadline reads as expired."""
        return await self.waits.get_approval(approval_id, missing_ok=missing_ok)

    async def approvals(
        self, *, approver: str | None = None, status: str | None = "pending", limit: int = 100
    ) -> list[Approval]:
        """Approvals, oldest first. With `approver` and pending status: those waiting on them.
        Status is as of now: a pending approval past its deadline is listed as expired."""
        return await self.waits.approvals(approver=approver, status=status, limit=limit)

    async def send(self, name: str, data: Any = None) -> int:
        """Publish an event from outside any run; returns its id."""
        return await self.waits.send(name, data)

    async def settle(self, *, timeout: float | None = None) -> None:
        """Deliver the events sent so far to the runs and handlers registered here, then
        wait until this engine advances no run (each has finished or waits): how a short
        process (`dotdo send --app`) drives on what its event woke or started."""
        await self.waits.settle(timeout=timeout)

    def _spawn(
        self,
        run: ActiveRun,
        event: Event,
        *,
        recovered: bool = False,
        journal: list[JournalRow] | None = None,
    ) -> None:
        self.driver.spawn(run, event, recovered=recovered, journal=journal)

    # ------------------------------------------------------------- operations
    # docs/operations.md and docs/upgrades.md; the work is the Operations part's.
    def observe(self, *observers: Observer) -> Engine:
        """Add telemetry observers (Prometheus metrics, OpenTelemetry traces, your own)."""
        self.operations.observe(*observers)
        return self

    async def retry(
        self, run_id: str, *, from_step: str | None = None, new_run_id: str | None = None
    ) -> RunHandle:
        """Start a new run, linked to a failed, compensated or cancelled one, reusing its
        results before `from_step` (all by default) and running the rest on today's code."""
        new_id, wf = await self.operations.retry(run_id, from_step=from_step, new_run_id=new_run_id)
        return RunHandle(self, new_id, wf)

    async def prune(
        self,
        *,
        older_than: timedelta | float | None = None,
        statuses: Iterable[str] | None = None,
        workflow: str | None = None,
        export_to: str | Path | None = None,
    ) -> list[str]:
        """Remove finished runs matching every filter given (at least one), with all that
        was recorded for them; `export_to` writes each one's JSON export there first."""
        return await self.operations.prune(
            older_than=older_than, statuses=statuses, workflow=workflow, export_to=export_to
        )

    async def export(self, run_id: str) -> dict[str, Any]:
        """A run's whole stored history as JSON-ready data."""
        return await self.operations.export(run_id)

    async def upgrade_check(self, *, workflows: Iterable[str] | None = None) -> UpgradeReport:
        """Whether every unfinished run can finish on the code registered here."""
        return await self.operations.upgrade_check(workflows=workflows)

    async def upgrade_apply(
        self, run_ids: Iterable[str] | None = None, *, dry_run: bool = False
    ) -> list[UpgradeOutcome]:
        """Move parked runs (default: all on an older graph) onto today's graph where safe."""
        return await self.operations.upgrade_apply(run_ids, dry_run=dry_run)

    # --------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Engine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self._store = make_store(
            self.location.target,
            StoreOptions(
                owner=self.owner,
                synchronous=self.synchronous,
                commit_hook=self.driver.commit_hook,
                busy_timeout=self.busy_timeout,
                read_only=self.read_only,
            ),
        )
        try:
            await self._store.open()
        except BaseException:
            self._store = None  # nothing to close: the store cleaned up after itself
            release_owner(self.owner)
            raise
        if self.read_only:
            return  # a reader: nothing to recover, no timers to run
        self.clock.subscribe(self._kick.set)
        try:
            await self.recover()
        except BaseException as exc:
            # Opening failed half-way (a locked database, say): stop what was started,
            # without more writes that would wait on the same lock.
            self.clock.unsubscribe(self._kick.set)
            store, self._store = self._store, None
            await store.abandon(exc)
            release_owner(self.owner)
            if is_read_only_refusal(exc):
                raise StoreError(f"{self.path} is read-only: {exc}") from None
            raise
        if isinstance(self._store, ChangeFeed):
            self._store.watch(self._kick.set)
        self._background = [
            asyncio.create_task(self.timers.timer_loop(), name="dotdo-timers"),
            asyncio.create_task(self.timers.lease_loop(), name="dotdo-leases"),
        ]

    async def close(self) -> None:
        """Stop taking work, let in-flight steps finish (up to the grace), release leases."""
        if self._store is None:
            return
        self._closing = True
        self.clock.unsubscribe(self._kick.set)
        for task in [*self._background, *self._retrying]:
            task.cancel()  # a run waiting to retry keeps its last checkpoint: released below
        await asyncio.gather(*self._background, return_exceptions=True)
        active = list(self._active.values())
        if active:
            # After a simulated crash the tasks are already cancelled: just let them end.
            grace = self.shutdown_grace if self._crashed is None else 1.0
            _, pending = await asyncio.wait(active, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        store, self._store = self._store, None
        if self._crashed is None:
            if not self.read_only:  # a reader holds no lease
                await self.retries.release_leases(store)
            await store.close()
        else:
            # The task that ran _crash (the timer loop, say) may have been cancelled above
            # before its abandon() closed the connections; abandoning again finishes that.
            await store.abandon(self._crashed)
        release_owner(self.owner)
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(self._crashed or DotdoError("the engine was closed"))
        self._waiters.clear()

    @property
    def store(self) -> Store:
        if self._crashed is not None:
            raise self._crashed
        if self._store is None:
            raise StoreError("the engine is not open: use `async with engine:`")
        return self._store

    async def _crash(self, error: BaseException) -> None:
        """A simulated process death: stop everything, commit nothing more."""
        if self._crashed is not None:
            return
        self._crashed = error
        release_owner(self.owner)
        current = asyncio.current_task()
        for task in [*self._background, *self._active.values()]:
            if task is not current:
                task.cancel()
        if self._store is not None:
            await self._store.abandon(error)
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)

    # ------------------------------------------------------------------ starts
    async def start(
        self,
        workflow: Workflow | str,
        *args: Any,
        run_id: str | None = None,
        entity_id: str | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """Start a run, or return the existing one with this `run_id` (idempotent: the same
        workflow, input and entity; anything else raises RunConflict)."""
        wf = self.workflow(workflow) if isinstance(workflow, str) else workflow
        run_id = uuid.uuid4().hex if run_id is None else check_id(run_id, "run id")
        if entity_id is not None:
            check_id(entity_id, "entity id")
        if wf.qualname not in self._workflows:
            self.register(wf)
        inputs = bind_inputs(wf, args, kwargs)
        graph = wf.graph
        frame = Frame(inputs)
        state = RunState(node=graph.start, frame=frame)
        new = NewRun(
            run_id=run_id,
            workflow=wf.qualname,
            entity_id=entity_id or run_id,
            entity_given=entity_id is not None,
            graph=graph,
            graph_body=graph.to_json(),
            source=source_of(wf),
            node=graph.start,
            state=encode_state(state, graph),
            input=serde.dumps(inputs),
            lease_until=time.time() + self.lease_seconds,
            now=self.clock.now(),
            secret=self._secret,
            sign=self._secret is not None and graph.hash not in self._signed,
        )
        # Concurrent starts share one group transaction. A failing store is waited out.
        rows = rows_of(new)
        outcome = await self.retries.persist(lambda: self.store.create_run(rows))
        if new.sign:
            self._signed.add(graph.hash)
        check_same(new, outcome)
        entity_id = new.entity_id
        if outcome.lease is not None:
            self.telemetry.run_started(run_id, wf.qualname)
            instance = self._instance(wf, entity_id, run_id)
            run = ActiveRun(run_id, wf, wf.program(), state, instance, 0, outcome.lease)
            self._spawn(run, Resume())
        return RunHandle(self, run_id, wf)

    def handle(self, run_id: str) -> RunHandle:
        """A handle on an existing run (its result, its status)."""
        return RunHandle(self, run_id, None)

    def _instance(self, wf: Workflow, entity_id: str, run_id: str) -> Any:
        """The object a run's steps execute on: its workflow's class, for this entity."""
        if wf.owner is None:
            raise UnknownWorkflow(f"workflow {wf.qualname!r} belongs to no class")
        return wf.owner(entity_id, run_id=run_id)

    # --------------------------------------------------------------- recovery
    async def recover(self) -> list[str]:
        """Claim and resume every unfinished, runnable run whose owner is gone."""
        claimed = [lease.run_id for lease in await self.timers.claim_orphans()]
        for run_id in claimed:
            await self._resume(run_id)
        return claimed

    async def _resume(self, run_id: str) -> None:
        """Load a claimed run and drive it; a run this code cannot load is failed."""
        if run_id in self._active:
            # Its task is still ending (it has just parked): resume when that task is done.
            self._resume_after.add(run_id)
            return
        if run_id in self._unloadable or run_id in self._loading:
            return
        self._loading.add(run_id)
        row: StoredRun | None = None
        try:
            try:
                row = await self.store.load_run(run_id)
                if row is None or row.status != "running" or row.lease_owner != self.owner:
                    return
                await self._load_and_drive(row)
            except (DotdoError, ValueError, TypeError, KeyError, SyntaxError) as exc:
                if is_store_fault(exc) or isinstance(exc, LeaseLost):
                    raise
                # Its stored state or graph does not fit this code (a renamed class, say), or
                # was tampered with: fail it with a clear error rather than let it stall the
                # runs behind it (and never run a graph that did not verify).
                log.error("cannot resume run %s: %s", run_id, exc)
                error: DotdoError = (
                    exc
                    if isinstance(exc, GraphIntegrityError)
                    else SerializationError(f"run {run_id!r} cannot be resumed by this code: {exc}")
                )
                assert row is not None  # the load succeeded: loading its code failed
                await self.store.fail_run(row.lease, serde.dumps(error), self.clock.now())
                self._unloadable.add(run_id)
                self.driver.notify(run_id)
        except LeaseLost:
            log.info("run %s is now owned by another process", run_id)
        except Exception as exc:
            if not is_store_fault(exc):
                raise
            self.retries.retry_later(run_id, exc)  # it keeps its lease: this engine retries it
        finally:
            self._loading.discard(run_id)

    async def _load_and_drive(self, row: StoredRun) -> None:
        """Drive a run this engine holds, under the lease (epoch) it holds it at now."""
        run_id = row.run_id
        wf = self.workflow(row.workflow)
        program = await self._program_for(wf, row.graph_hash, run_id)
        state = decode_state(row.state, row.node)
        check_state(state, program.graph, run_id)
        instance = self._instance(wf, row.entity_id, run_id)
        run = ActiveRun(run_id, wf, program, state, instance, row.steps_done, row.lease)
        run.cancel = row.cancel_requested
        run.reuse = await self.store.reused_results(run_id) if row.retry_of else {}
        run.trace = row.trace
        wake_at = row.wake_at
        resolution = await self.waits.resolution(run, wake_at)
        if resolution == "park":
            await self._park(run, wake_at)
            return
        if isinstance(resolution, tuple):
            self._spawn(run, resolution[0], recovered=True, journal=[resolution[1]])
            return
        event: Event = Resume()
        if wake_at is not None:
            if wake_at > self.clock.now():
                await self._park(run, wake_at)
                return
            event = TimerFired()
        self._spawn(run, event, recovered=True)

    async def _program_for(self, wf: Workflow, graph_hash: str, run_id: str) -> Program:
        """The program a run pinned: today's graph if unchanged, else the stored one, only
        once verified against its hash, its workflow and (with a secret) its signature."""
        if wf.graph.hash == graph_hash:
            return wf.program()
        body = await self.store.graph_body(graph_hash)
        graph = stored_graph(body, graph_hash, name=wf.graph.name, run_id=run_id)
        if self._secret is not None:
            mac = await self.store.get_meta(mac_key(graph_hash))
            check_mac(self._secret, graph, mac, run_id)
        return wf.program(graph)

    async def _park(self, run: ActiveRun, wake_at: float | None) -> None:
        """Put a claimed run back to sleep (claimed early, or a crash after claiming)."""
        await self.store.checkpoint(
            self.driver.checkpoint(run, "waiting", wake_at=wake_at, release=True)
        )
        self._kick.set()

    def idle_poll(self) -> float:
        """How long an idle loop waits before looking again: `poll_seconds`, or, while the
        store's change feed is up (it wakes the loop on every change), FEED_POLL_SECONDS:
        then an idle worker asks its database less than once a second."""
        store = self._store
        if isinstance(store, ChangeFeed) and store.listening:
            return max(self.poll_seconds, FEED_POLL_SECONDS)
        return self.poll_seconds

    # ---------------------------------------------------------------- queries
    async def get_run(self, run_id: str) -> RunInfo:
        row = await self.store.load_run(run_id)
        if row is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        return RunInfo.from_stored(row)

    async def runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """Runs, newest first, optionally filtered by status and workflow name."""
        rows = await self.store.list_runs(status=status, workflow=workflow, limit=limit)
        return [RunInfo.from_stored(r) for r in rows]

    async def journal(self, run_id: str) -> list[StepRecord]:
        """A run's steps in the order they completed (failed and started ones last)."""
        return [StepRecord.from_stored(r) for r in await self.store.journal(run_id)]

    async def outbox(self, run_id: str | None = None) -> list[tuple[str, Any]]:
        """Events sent by runs (all, or one run's), in the order they were written."""
        return [(e.name, serde.loads(e.data)) for e in await self.store.sent_events(run_id)]

    async def approval_link(
        self,
        approval_id: str,
        approver: str,
        *,
        base_url: str | None = None,
        ttl: timedelta = timedelta(days=3),
    ) -> str:
        """A URL that opens this approval's decision page in the console (`dotdo ui`) for
        `approver`, without a password, once, until `ttl` passes. The decision is still a
        POST there, so a mail client's link preview cannot decide. `base_url` defaults to
        $DOTDO_CONSOLE_URL, else http://127.0.0.1:8080."""
        approval = await self.get_approval(approval_id)
        if approver not in approval.approvers:
            raise ApprovalError(
                f"{approver!r} is not an approver of {approval_id!r} "
                f"(approvers: {', '.join(approval.approvers)})"
            )
        key = await console_key(self.store)
        token = sign_link(key, approval_id, approver, self.clock.now() + ttl.total_seconds())
        base = base_url or os.environ.get("DOTDO_CONSOLE_URL") or "http://127.0.0.1:8080"
        return link_url(base, token)

    async def cancel(self, run_id: str) -> RunInfo:
        """Cancel a run: at once if no one is advancing it, else at its next boundary."""
        info = await self.get_run(run_id)
        if info.finished:
            raise DotdoError(f"run {run_id!r} already ended {info.status}")
        if run_id in self._runs:
            self._runs[run_id].cancel = True
        # Stored too: a run driven again from its checkpoint (after a store fault) reads it.
        error = serde.dumps(DotdoError("cancelled"))
        await self.store.request_cancel(run_id, error, self.clock.now())
        self.driver.notify(run_id)
        info = await self.get_run(run_id)
        if info.status == "cancelled":
            await self.waits.withdraw_approvals(run_id)
        return info

    async def wait(self, run_id: str, *, timeout: float | None = None) -> RunInfo:
        """Wait until the run has finished; polls the store when another process runs it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                info = await self.get_run(run_id)
            except Exception as exc:  # a read failing for a moment: poll again
                if not is_store_fault(exc):
                    raise
            else:
                if info.finished:
                    return info
            if self._crashed is not None:
                raise self._crashed
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"run {run_id!r} did not finish in {timeout}s")
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiters = self._waiters.setdefault(run_id, [])
            waiters.append(future)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), timeout=wait)
            finally:
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    self._waiters.pop(run_id, None)
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    async def idle(self, run_id: str, *, timeout: float | None = None) -> RunInfo:
        """Wait until the run has finished or is waiting (on a timer)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.get_run(run_id)
            if info.finished or (info.status == "waiting" and run_id not in self._active):
                return info
            if self._crashed is not None:
                raise self._crashed
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id!r} is still running after {timeout}s")
            await asyncio.sleep(0.005)
