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
import inspect
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from dotdo.compiler.codegen import Frame, Program
from dotdo.compiler.ir import Graph
from dotdo.dsl.decorators import WorkflowDef
from dotdo.dsl.do import DO
from dotdo.engine import serde
from dotdo.engine.clock import Clock, SystemClock
from dotdo.engine.context import StepContext, enter_step, leave_step
from dotdo.engine.interpreter import (
    Call,
    CompEntry,
    Event,
    Finish,
    Record,
    Recorded,
    Resume,
    RunState,
    StepErr,
    StepOk,
    TimerFired,
    Transition,
    Wait,
    advance,
)
from dotdo.engine.leases import is_dead, new_owner, release_owner
from dotdo.engine.records import RunInfo, StepRecord
from dotdo.engine.store import Checkpoint, JournalRow, Store
from dotdo.errors import (
    DotdoError,
    LeaseLost,
    RunFailed,
    RunNotFound,
    SerializationError,
    StepInterrupted,
    StepTimeout,
    StoreError,
    UnknownWorkflow,
)

__all__ = ["Engine", "FaultHook", "RunHandle"]

log = logging.getLogger("dotdo.engine")

FaultHook = Callable[[str, str], None]
"""Called as hook(point, run_id) at every durable boundary; raising a BaseException there
(dotdo.testing.SimulatedCrash) stops the engine as if its process had died. Points:
"before_step", "after_step" (executed, not yet recorded), "before_commit", "after_commit"."""

_STATUS_OF: dict[str, str] = {
    "completed": "completed",
    "failed": "failed",
    "compensated": "compensated",
}


class _Run:
    """A run this engine is advancing right now (in memory only while it is runnable)."""

    def __init__(
        self,
        run_id: str,
        workflow: WorkflowDef[Any],
        program: Program,
        state: RunState,
        instance: DO,
        steps_done: int,
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.program = program
        self.state = state
        self.instance = instance
        self.steps_done = steps_done
        self.cancel = False


class Engine:
    """An embedded durable-workflow engine over one SQLite file.

    `Engine()` uses ./dotdo.db. Register DO classes, then `async with engine:` opens the store,
    recovers unfinished runs and runs timers until the block ends.
    """

    def __init__(
        self,
        path: str | Path = "dotdo.db",
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        lease_seconds: float = 30.0,
        clock: Clock | None = None,
        faults: FaultHook | None = None,
        poll_seconds: float = 1.0,
        shutdown_grace: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.lease_seconds = lease_seconds
        self.clock = clock or SystemClock()
        self.faults = faults
        self.poll_seconds = poll_seconds
        self.shutdown_grace = shutdown_grace
        self.owner = new_owner()
        self._workflows: dict[str, WorkflowDef[Any]] = {}
        self._classes: dict[str, type[DO]] = {}
        self._store: Store | None = None
        self._active: dict[str, asyncio.Task[None]] = {}
        self._runs: dict[str, _Run] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._kick = asyncio.Event()
        self._crashed: BaseException | None = None
        self._closing = False

    # ------------------------------------------------------------ registration
    def register(self, *targets: type[DO] | WorkflowDef[Any]) -> Engine:
        """Make DO classes (all their workflows) or single workflows startable here."""
        for target in targets:
            if isinstance(target, WorkflowDef):
                self._add(target)
            elif isinstance(target, type) and issubclass(target, DO):
                self._classes[target.__name__] = target
                for wf in target.__dotdo_workflows__.values():
                    self._add(wf)
            else:
                raise TypeError(f"cannot register {target!r}: expected a DO class or workflow")
        return self

    def _add(self, wf: WorkflowDef[Any]) -> None:
        existing = self._workflows.get(wf.qualname)
        if existing is not None and existing.fn is not wf.fn:
            raise DotdoError(f"two different workflows are named {wf.qualname!r}")
        self._workflows[wf.qualname] = wf

    @property
    def workflows(self) -> dict[str, WorkflowDef[Any]]:
        return dict(self._workflows)

    def workflow(self, name: str) -> WorkflowDef[Any]:
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(sorted(self._workflows)) or "none"
            raise UnknownWorkflow(
                f"no workflow named {name!r} is registered (known: {known})"
            ) from None

    # --------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Engine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self._store = Store(
            self.path,
            owner=self.owner,
            synchronous=self.synchronous,
            commit_hook=self._commit_hook if self.faults else None,
        )
        await self._store.open()
        self.clock.subscribe(self._kick.set)
        self._background = [
            asyncio.create_task(self._timer_loop(), name="dotdo-timers"),
            asyncio.create_task(self._lease_loop(), name="dotdo-leases"),
        ]
        await self.recover()

    async def close(self) -> None:
        """Stop taking work, let in-flight steps finish (up to the grace), release leases."""
        if self._store is None:
            return
        self._closing = True
        self.clock.unsubscribe(self._kick.set)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        active = list(self._active.values())
        if active and self._crashed is None:
            _, pending = await asyncio.wait(active, timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        store, self._store = self._store, None
        if self._crashed is None:
            with contextlib.suppress(Exception):
                await store.write(self._release_all)
            await store.close()
        release_owner(self.owner)
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(self._crashed or DotdoError("the engine was closed"))
        self._waiters.clear()

    async def _release_all(self, conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
            (self.owner,),
        )

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

    def _commit_hook(self, point: str, run_ids: Iterable[str]) -> None:
        if self.faults:
            for run_id in run_ids:
                self.faults(point, run_id)

    def _fault(self, point: str, run_id: str) -> None:
        if self.faults:
            self.faults(point, run_id)

    # ------------------------------------------------------------------ starts
    async def start(
        self,
        workflow: WorkflowDef[Any] | str,
        *args: Any,
        run_id: str | None = None,
        entity_id: str | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """Start a run, or return the existing one with this `run_id` (idempotent)."""
        wf = self.workflow(workflow) if isinstance(workflow, str) else workflow
        if wf.qualname not in self._workflows:
            self.register(wf)
        inputs = bind_inputs(wf, args, kwargs)
        run_id = run_id or uuid.uuid4().hex
        entity_id = entity_id or run_id
        graph = wf.graph
        frame = Frame(inputs)
        state = RunState(node=graph.start, frame=frame)
        state_json = encode_state(state, graph)
        input_json = serde.dumps(inputs)
        now = self.clock.now()

        async def create(conn: aiosqlite.Connection) -> bool:
            await conn.execute(
                "INSERT INTO graphs(hash, name, body, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(hash) DO NOTHING",
                (graph.hash, graph.name, graph.to_json(), now),
            )
            rows = list(
                await conn.execute_fetchall("SELECT workflow FROM runs WHERE run_id = ?", (run_id,))
            )
            if rows:
                if rows[0][0] != wf.qualname:
                    raise DotdoError(
                        f"run id {run_id!r} already belongs to workflow {rows[0][0]!r}"
                    )
                return False
            await conn.execute(
                "INSERT INTO runs(run_id, workflow, graph_hash, entity_id, status, node, state, "
                "input, lease_owner, lease_until, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    wf.qualname,
                    graph.hash,
                    entity_id,
                    graph.start,
                    state_json,
                    input_json,
                    self.owner,
                    time.time() + self.lease_seconds,
                    now,
                    now,
                ),
            )
            return True

        created = await self.store.write(create)
        if created:
            instance = self._instance(wf, entity_id, run_id)
            run = _Run(run_id, wf, wf.program(), state, instance, 0)
            self._spawn(run, Resume())
        return RunHandle(self, run_id, wf)

    def handle(self, run_id: str) -> RunHandle:
        """A handle on an existing run (its result, its status)."""
        return RunHandle(self, run_id, None)

    def _instance(self, wf: WorkflowDef[Any], entity_id: str, run_id: str) -> DO:
        cls = wf.owner
        assert cls is not None and issubclass(cls, DO)
        return cls(entity_id, run_id=run_id)

    # --------------------------------------------------------------- recovery
    async def recover(self) -> list[str]:
        """Claim and resume every unfinished, runnable run whose owner is gone."""
        claimed = await self.store.write(self._claim_orphans)
        for run_id in claimed:
            await self._resume(run_id)
        return claimed

    async def _claim_orphans(self, conn: aiosqlite.Connection) -> list[str]:
        names = list(self._workflows)
        if not names:
            return []
        marks = ",".join("?" * len(names))
        rows = await conn.execute_fetchall(
            f"SELECT run_id, lease_owner, lease_until FROM runs WHERE status = 'running' "
            f"AND workflow IN ({marks}) AND (lease_owner IS NULL OR lease_owner != ?)",
            (*names, self.owner),
        )
        now = time.time()
        free = [r[0] for r in rows if r[1] is None or r[2] is None or r[2] < now or is_dead(r[1])]
        free = [r for r in free if r not in self._active]
        if free:
            await conn.executemany(
                "UPDATE runs SET lease_owner = ?, lease_until = ? WHERE run_id = ?",
                [(self.owner, now + self.lease_seconds, r) for r in free],
            )
        return free

    async def _claim_due(self, conn: aiosqlite.Connection) -> list[str]:
        names = list(self._workflows)
        if not names:
            return []
        marks = ",".join("?" * len(names))
        rows = await conn.execute_fetchall(
            f"SELECT run_id, lease_owner, lease_until FROM runs WHERE status = 'waiting' "
            f"AND wake_at <= ? AND workflow IN ({marks})",
            (self.clock.now(), *names),
        )
        now = time.time()
        due = [r[0] for r in rows if r[1] is None or r[2] is None or r[2] < now or is_dead(r[1])]
        if due:
            await conn.executemany(
                "UPDATE runs SET status = 'running', lease_owner = ?, lease_until = ? "
                "WHERE run_id = ?",
                [(self.owner, now + self.lease_seconds, r) for r in due],
            )
        return due

    async def _resume(self, run_id: str) -> None:
        """Load a claimed run from the store and drive it from its persisted node."""
        if run_id in self._active:
            return
        row = await self.store.fetch_one("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if row is None or row["status"] != "running":
            return
        wf = self.workflow(row["workflow"])
        program = await self._program_for(wf, row["graph_hash"])
        state = decode_state(row["state"], row["node"])
        instance = self._instance(wf, row["entity_id"], run_id)
        run = _Run(run_id, wf, program, state, instance, row["steps_done"])
        wake_at = row["wake_at"]
        event: Event = Resume()
        if wake_at is not None:
            if wake_at > self.clock.now():
                await self._park(run, wake_at)
                return
            event = TimerFired()
        self._spawn(run, event, recovered=True)

    async def _program_for(self, wf: WorkflowDef[Any], graph_hash: str) -> Program:
        """The program a run pinned: today's graph if unchanged, else the stored one."""
        if wf.graph.hash == graph_hash:
            return wf.program()
        row = await self.store.fetch_one("SELECT body FROM graphs WHERE hash = ?", (graph_hash,))
        if row is None:
            raise StoreError(f"graph {graph_hash} of a run is missing from the store")
        return wf.program(Graph.from_json(row["body"]))

    async def _park(self, run: _Run, wake_at: float) -> None:
        """Put a claimed run back to sleep (claimed early, or a crash after claiming)."""
        await self.store.checkpoint(self._checkpoint(run, "waiting", wake_at=wake_at, release=True))
        self._kick.set()

    # ------------------------------------------------------------------ driving
    def _spawn(self, run: _Run, event: Event, *, recovered: bool = False) -> None:
        if self._closing or self._crashed is not None:
            return
        task = asyncio.create_task(
            self._guard(run, event, recovered), name=f"dotdo-run-{run.run_id}"
        )
        self._active[run.run_id] = task
        self._runs[run.run_id] = run

    async def _guard(self, run: _Run, event: Event, recovered: bool) -> None:
        try:
            await self._drive(run, event, recovered)
        except LeaseLost:
            log.info("run %s is now owned by another process", run.run_id)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("engine error while advancing run %s; it stays for recovery", run.run_id)
        except BaseException as crash:
            await self._crash(crash)
        finally:
            self._active.pop(run.run_id, None)
            self._runs.pop(run.run_id, None)

    async def _drive(self, run: _Run, event: Event, recovered: bool) -> None:
        now = self.clock.now()
        t = advance(run.program, run.instance, run.state, event, now)
        sends = list(t.sends)
        journal: list[JournalRow] = []
        first = recovered
        while True:
            command = t.command
            if run.cancel:
                await self._finish_cancelled(run, journal, sends)
                return
            if journal or isinstance(command, Wait | Finish):
                await self._commit(run, t, journal, sends)
                journal, sends = [], []
            if isinstance(command, Wait | Finish) or self._closing:
                return
            if isinstance(command, Record):
                value = self._record(command.what)
                journal = [
                    JournalRow(
                        command.key,
                        "completed",
                        1,
                        value=serde.dumps(value),
                        seq=run.steps_done + 1,
                        finished_at=self.clock.now(),
                    )
                ]
                run.steps_done += 1
                t = advance(run.program, run.instance, t.state, Recorded(value), self.clock.now())
            else:
                assert isinstance(command, Call)
                outcome, row = await self._call(run, t, command, check_started=first)
                journal = [row]
                if row.status == "completed":
                    run.steps_done += 1
                t = advance(run.program, run.instance, t.state, outcome, self.clock.now())
            first = False
            sends.extend(t.sends)

    async def _call(
        self, run: _Run, t: Transition, call: Call, *, check_started: bool
    ) -> tuple[Event, JournalRow]:
        started = self.clock.now()
        if call.mode == "try":
            if check_started and await self._was_started(run.run_id, call.key):
                error = StepInterrupted(
                    f"try_ step {call.key!r} was in flight when its process died; "
                    "at-most-once forbids running it again"
                )
                return StepErr(error), self._failed_row(call, error, started)
            row = JournalRow(call.key, "started", call.attempt, started_at=started)
            await self.store.checkpoint(self._checkpoint(run, "running", journal=[row]))
        self._fault("before_step", run.run_id)
        outcome = await self._execute(run.run_id, call)
        self._fault("after_step", run.run_id)
        finished = self.clock.now()
        if isinstance(outcome, StepOk):
            try:
                value = serde.dumps(outcome.value)
            except SerializationError as exc:
                bad = SerializationError(
                    f"step {call.key!r} returned a value that cannot be stored: {exc}"
                )
                return StepErr(bad), self._failed_row(call, bad, started)
            return outcome, JournalRow(
                call.key,
                "completed",
                call.attempt,
                value=value,
                seq=run.steps_done + 1,
                started_at=started,
                finished_at=finished,
            )
        assert isinstance(outcome, StepErr)
        return outcome, self._failed_row(call, outcome.error, started)

    def _failed_row(self, call: Call, error: BaseException, started: float) -> JournalRow:
        return JournalRow(
            call.key,
            "failed",
            call.attempt,
            error=serde.dumps(error),
            started_at=started,
            finished_at=self.clock.now(),
        )

    async def _was_started(self, run_id: str, key: str) -> bool:
        row = await self.store.fetch_one(
            "SELECT status FROM steps WHERE run_id = ? AND step_key = ?", (run_id, key)
        )
        return row is not None and row["status"] == "started"

    async def _execute(self, run_id: str, call: Call) -> StepOk | StepErr:
        token = enter_step(StepContext(run_id, call.key, call.attempt))
        timeout = call.policy.timeout
        try:
            if timeout is not None and not inspect.iscoroutinefunction(call.fn):
                result = await asyncio.wait_for(
                    asyncio.to_thread(call.fn, *call.args, **call.kwargs), timeout
                )
            else:
                result = call.fn(*call.args, **call.kwargs)
            if inspect.isawaitable(result):
                result = await (asyncio.wait_for(result, timeout) if timeout else result)
            return StepOk(result)
        except TimeoutError:
            return StepErr(StepTimeout(f"step {call.key!r} timed out after {timeout}s"))
        except Exception as error:
            return StepErr(error)
        finally:
            leave_step(token)

    def _record(self, what: str) -> Any:
        if what == "now":
            return datetime.fromtimestamp(self.clock.now(), UTC)
        if what == "uuid":
            return uuid.uuid4()
        return random.random()

    async def _commit(
        self, run: _Run, t: Transition, journal: list[JournalRow], sends: list[tuple[str, Any]]
    ) -> None:
        command = t.command
        kwargs: dict[str, Any] = {}
        status = "running"
        if isinstance(command, Wait):
            status, kwargs = "waiting", {"wake_at": command.until, "release": True}
        elif isinstance(command, Finish):
            status = _STATUS_OF[command.status]
            kwargs = {"release": True, "error": _dump_error(command.error)}
            if command.status == "completed":
                try:
                    kwargs["result"] = serde.dumps(command.value)
                except SerializationError as exc:
                    status = "failed"
                    kwargs["error"] = serde.dumps(
                        SerializationError(
                            f"the workflow returned a value that cannot be stored: {exc}"
                        )
                    )
        try:
            encoded_sends = [(name, serde.dumps(data)) for name, data in sends]
            checkpoint = self._checkpoint(
                run, status, journal=journal, sends=encoded_sends, **kwargs
            )
        except SerializationError as exc:
            # The workflow holds something unstorable: fail the run, keep its last good state.
            checkpoint = self._checkpoint(
                run,
                "failed",
                journal=journal,
                release=True,
                error=serde.dumps(exc),
                keep_state=True,
            )
            command = Finish("failed", error=exc)
        await self.store.checkpoint(checkpoint)
        if isinstance(command, Finish) or checkpoint.status == "failed":
            self._notify(run.run_id)
        elif isinstance(command, Wait):
            self._kick.set()

    def _checkpoint(
        self,
        run: _Run,
        status: str,
        *,
        journal: list[JournalRow] | None = None,
        sends: list[tuple[str, str]] | None = None,
        wake_at: float | None = None,
        result: str | None = None,
        error: str | None = None,
        release: bool = False,
        keep_state: bool = False,
    ) -> Checkpoint:
        state_json = (
            self._last_state(run) if keep_state else encode_state(run.state, run.program.graph)
        )
        return Checkpoint(
            run_id=run.run_id,
            status=status,
            node=run.state.node,
            state=state_json,
            steps_done=run.steps_done,
            now=self.clock.now(),
            wake_at=wake_at,
            result=result,
            error=error,
            journal=journal or [],
            sends=sends or [],
            release=release,
        )

    @staticmethod
    def _last_state(run: _Run) -> str:
        try:
            return encode_state(run.state, run.program.graph)
        except SerializationError:
            return serde.dumps({"frame": {}, "attempt": 0, "comp": [], "compensating": None})

    async def _finish_cancelled(
        self, run: _Run, journal: list[JournalRow], sends: list[tuple[str, Any]]
    ) -> None:
        encoded = [(name, serde.dumps(data)) for name, data in sends]
        await self.store.checkpoint(
            self._checkpoint(
                run,
                "cancelled",
                journal=journal,
                sends=encoded,
                release=True,
                error=serde.dumps(DotdoError("cancelled")),
            )
        )
        self._notify(run.run_id)

    def _notify(self, run_id: str) -> None:
        for future in self._waiters.pop(run_id, []):
            if not future.done():
                future.set_result(None)

    # -------------------------------------------------------- background loops
    async def _timer_loop(self) -> None:
        last_scan = 0.0
        while True:
            self._kick.clear()
            due = await self.store.write(self._claim_due)
            for run_id in due:
                await self._resume(run_id)
            if time.monotonic() - last_scan >= self.lease_seconds / 2:
                last_scan = time.monotonic()
                for run_id in await self.store.write(self._claim_orphans):
                    await self._resume(run_id)
            delay = self.poll_seconds
            if self.clock.wall():
                row = await self.store.fetch_one(
                    "SELECT MIN(wake_at) AS w FROM runs WHERE status = 'waiting'"
                )
                if row is not None and row["w"] is not None:
                    delay = min(delay, max(row["w"] - self.clock.now(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=max(delay, 0.001))

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            cancelled = await self.store.write(self._renew)
            for run_id in cancelled:
                if run_id in self._runs:
                    self._runs[run_id].cancel = True

    async def _renew(self, conn: aiosqlite.Connection) -> list[str]:
        await conn.execute(
            "UPDATE runs SET lease_until = ? WHERE lease_owner = ?",
            (time.time() + self.lease_seconds, self.owner),
        )
        rows = await conn.execute_fetchall(
            "SELECT run_id FROM runs WHERE lease_owner = ? AND cancel_requested = 1",
            (self.owner,),
        )
        return [r[0] for r in rows]

    # ---------------------------------------------------------------- queries
    async def get_run(self, run_id: str) -> RunInfo:
        row = await self.store.fetch_one("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if row is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        return RunInfo.from_row(row)

    async def runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """Runs, newest first, optionally filtered by status and workflow name."""
        clauses, params = [], []
        if status:
            clauses.append("status = ?")
            params.append(status)
        if workflow:
            clauses.append("workflow = ?")
            params.append(workflow)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self.store.fetch(
            f"SELECT * FROM runs {where} ORDER BY created_at DESC, run_id LIMIT ?",
            (*params, limit),
        )
        return [RunInfo.from_row(r) for r in rows]

    async def journal(self, run_id: str) -> list[StepRecord]:
        """A run's steps in the order they completed (failed and started ones last)."""
        rows = await self.store.fetch(
            "SELECT * FROM steps WHERE run_id = ? ORDER BY seq IS NULL, seq, started_at",
            (run_id,),
        )
        return [StepRecord.from_row(r) for r in rows]

    async def outbox(self, run_id: str | None = None) -> list[tuple[str, Any]]:
        """Events sent by runs (all, or one run's), in the order they were written."""
        sql, params = "SELECT event, data FROM outbox ORDER BY id", tuple[str, ...]()
        if run_id is not None:
            sql, params = "SELECT event, data FROM outbox WHERE run_id = ? ORDER BY id", (run_id,)
        return [(r["event"], serde.loads(r["data"])) for r in await self.store.fetch(sql, params)]

    async def cancel(self, run_id: str) -> RunInfo:
        """Cancel a run: at once if no one is advancing it, else at its next boundary."""
        info = await self.get_run(run_id)
        if info.finished:
            raise DotdoError(f"run {run_id!r} already ended {info.status}")
        if run_id in self._runs:
            self._runs[run_id].cancel = True
        else:
            now = time.time()
            error = serde.dumps(DotdoError("cancelled"))

            async def mark(conn: aiosqlite.Connection) -> None:
                await conn.execute(
                    "UPDATE runs SET cancel_requested = 1 WHERE run_id = ?", (run_id,)
                )
                rows = list(
                    await conn.execute_fetchall(
                        "SELECT lease_owner, lease_until FROM runs WHERE run_id = ?", (run_id,)
                    )
                )
                owner, until = rows[0]
                if owner is None or until is None or until < now or is_dead(owner):
                    await conn.execute(
                        "UPDATE runs SET status = 'cancelled', error = ?, lease_owner = NULL, "
                        "lease_until = NULL, wake_at = NULL, updated_at = ? WHERE run_id = ? "
                        "AND status IN ('running', 'waiting')",
                        (error, self.clock.now(), run_id),
                    )

            await self.store.write(mark)
            self._notify(run_id)
        return await self.get_run(run_id)

    async def wait(self, run_id: str, *, timeout: float | None = None) -> RunInfo:
        """Wait until the run has finished; polls the store when another process runs it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.get_run(run_id)
            if info.finished:
                return info
            if self._crashed is not None:
                raise self._crashed
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(run_id, []).append(future)
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"run {run_id!r} did not finish in {timeout}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), timeout=wait)
            if future.done() and future.exception() is not None:
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


class RunHandle:
    """A started run: ask its status, await its result."""

    def __init__(self, engine: Engine, run_id: str, workflow: WorkflowDef[Any] | None) -> None:
        self.engine = engine
        self.run_id = run_id
        self._workflow = workflow

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    async def status(self) -> str:
        return (await self.engine.get_run(self.run_id)).status

    async def info(self) -> RunInfo:
        return await self.engine.get_run(self.run_id)

    async def result(self, *, timeout: float | None = None) -> Any:
        """The workflow's return value, typed by its annotation; raises RunFailed otherwise."""
        info = await self.engine.wait(self.run_id, timeout=timeout)
        if info.status != "completed":
            error = info.error
            raise RunFailed(self.run_id, info.status, error) from error
        workflow = self._workflow or self.engine.workflow(info.workflow)
        annotation = workflow.type_hints().get("return", inspect.Parameter.empty)
        return serde.coerce(info.result, annotation)


# ------------------------------------------------------------- state codec
def bind_inputs(
    wf: WorkflowDef[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Map call arguments to parameter names, each converted to its annotated type."""
    signature = wf.signature()
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise DotdoError(f"bad arguments for {wf.qualname}: {exc}") from None
    bound.apply_defaults()
    hints = wf.type_hints()
    values = dict(list(bound.arguments.items())[1:])
    return {
        name: serde.coerce(value, hints.get(name, inspect.Parameter.empty))
        for name, value in values.items()
    }


def encode_state(state: RunState, graph: Graph) -> str:
    """The run state as JSON; a local that cannot be stored is named with its line."""
    frame: dict[str, Any] = {}
    for name, value in state.frame.items():
        try:
            frame[name] = serde.encode(value)
        except SerializationError as exc:
            line = graph.local_lines.get(name, 0)
            shown = name if not name.startswith("__") else "a temporary value"
            raise SerializationError(
                f"local {shown!r} (assigned at {graph.file}:{line}) holds a "
                f"{type(value).__qualname__}, which cannot be persisted: {exc}"
            ) from None
    body = {
        "frame": frame,
        "attempt": state.attempt,
        "comp": [[c.key, c.method, serde.encode(c.value)] for c in state.comp],
        "compensating": serde.encode(state.compensating) if state.compensating else None,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def decode_state(text: str, node: str) -> RunState:
    body = json.loads(text)
    assert isinstance(body, dict)
    frame = Frame({k: serde.decode(v) for k, v in body["frame"].items()})
    comp = [CompEntry(key=k, method=m, value=serde.decode(v)) for k, m, v in body["comp"]]
    compensating = body.get("compensating")
    error = serde.decode(compensating) if compensating is not None else None
    return RunState(
        node=node,
        frame=frame,
        attempt=body.get("attempt", 0),
        comp=comp,
        compensating=error if isinstance(error, BaseException) else None,
    )


def _dump_error(error: BaseException | None) -> str | None:
    return serde.dumps(error) if error is not None else None
