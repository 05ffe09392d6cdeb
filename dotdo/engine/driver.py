"""Driving one run: perform the interpreter's commands and persist each transition.

Every step's outcome is committed in one transaction with the run's next state, its journal
line and the events it sent (the outbox); the run proceeds only after that commit. `try_`
steps are journalled as started before they run, so a crash mid-attempt is detected on
recovery and the step fails with `StepInterrupted` instead of running twice. A write that
fails without a crash (a full disk) is handled the same way, in the same process: the run is
driven again from its last committed checkpoint after a backoff (`_faults.py`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dotdo.compiler.codegen import Program
from dotdo.engine import serde
from dotdo.engine.context import StepContext, enter_step, leave_step
from dotdo.engine.faults import is_store_fault
from dotdo.engine.interpreter import (
    Call,
    Event,
    Finish,
    Record,
    Recorded,
    RunState,
    StepErr,
    StepOk,
    Suspend,
    Transition,
    Wait,
    advance,
)
from dotdo.engine.logs import bind_run
from dotdo.engine.reuse import replay
from dotdo.engine.state import dump_error, encode_state
from dotdo.engine.store.interface import Checkpoint, JournalRow, Lease, NewApproval
from dotdo.engine.telemetry import wait_kind
from dotdo.engine.workflow import Workflow
from dotdo.errors import DotdoError, LeaseLost, SerializationError, StepInterrupted, StepTimeout

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = ["ActiveRun", "FaultHook", "RunDriver"]

log = logging.getLogger("dotdo.engine")

FaultHook = Callable[[str, str], None]
"""Called as hook(point, run_id) at every durable boundary; raising a BaseException there
(dotdo.testing.SimulatedCrash) stops the engine as if its process had died. Points:
"before_step", "after_step" (executed, not yet recorded), "before_commit", "after_commit"."""

_FINAL = {"completed": "completed", "failed": "failed", "compensated": "compensated"}


class ActiveRun:
    """A run this engine is advancing right now (in memory only while it is runnable)."""

    def __init__(
        self,
        run_id: str,
        workflow: Workflow,
        program: Program,
        state: RunState,
        instance: Any,
        steps_done: int,
        lease: Lease,
    ) -> None:
        self.run_id = run_id
        self.lease = lease
        """The lease this engine advances the run under: every write carries it."""
        self.workflow = workflow
        self.program = program
        self.state = state
        self.instance = instance
        self.steps_done = steps_done
        self.cancel = False
        self.reuse: dict[str, str | None] = {}
        """A retry's results still to hand back, by step key (dotdo.engine.retry)."""
        self.trace: str | None = None
        """What telemetry stored for the run's earlier stretches (its trace)."""
        self.status = "running"


class RunDriver:
    """The part of the engine that advances runs: it performs the interpreter's commands
    and commits each transition (see the module docstring)."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self._hook_lock = threading.RLock()

    def commit_hook(self, point: str, run_ids: Sequence[str]) -> None:
        """The store's commit hook: fault injection (tests) and commit size and latency."""
        if self.shell.faults:
            for run_id in run_ids:
                self._fault(point, run_id)
        self.shell.telemetry.commit_point(point, run_ids)

    def _fault(self, point: str, run_id: str) -> None:
        if self.shell._dying is not None:
            raise self.shell._dying
        if not self.shell.faults:
            return
        # The hook runs on the writer thread (commit points) and on the loop (step points).
        # One lock around the call and the death it may declare: a step point can never slip
        # in between a commit hook raising a simulated death and the engine knowing it died.
        with self._hook_lock:
            if self.shell._dying is not None:
                raise self.shell._dying
            try:
                self.shell.faults(point, run_id)
            except BaseException as death:
                if not isinstance(death, Exception):  # a simulated process death
                    self.shell._dying = death
                raise

    def spawn(
        self,
        run: ActiveRun,
        event: Event,
        *,
        recovered: bool = False,
        journal: list[JournalRow] | None = None,
    ) -> None:
        if (
            self.shell._closing
            or self.shell._crashed is not None
            or run.run_id in self.shell._active
        ):
            return
        task = asyncio.create_task(
            self._guard(run, event, recovered, journal), name=f"dotdo-run-{run.run_id}"
        )
        self.shell._active[run.run_id] = task
        self.shell._runs[run.run_id] = run

    async def _guard(
        self, run: ActiveRun, event: Event, recovered: bool, journal: list[JournalRow] | None
    ) -> None:
        failure: Exception | None = None
        bind_run(run.run_id)
        telemetry = self.shell.telemetry
        stretch = telemetry.stretch_start(run.run_id, run.workflow.qualname, run.trace)
        try:
            await self._drive(run, event, recovered, journal)
        except LeaseLost:
            log.info("run %s is now owned by another process", run.run_id)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            failure = exc
            if not is_store_fault(exc):  # a store fault is logged once, by the store
                log.exception("engine error while advancing run %s; retrying it", run.run_id)
        except BaseException as crash:
            await self.shell._crash(crash)
        finally:
            self.shell._active.pop(run.run_id, None)
            self.shell._runs.pop(run.run_id, None)
            telemetry.stretch_end(stretch, run.status)
        if failure is not None:
            # Nothing after the last commit was stored: drive the run again from there.
            self.shell.retries.retry_later(run.run_id, failure)
            return
        if self.shell._faulted:
            self.shell._faulted.pop(run.run_id, None)
        if run.run_id in self.shell._resume_after:
            self.shell._resume_after.discard(run.run_id)
            if not self.shell._closing and self.shell._crashed is None:
                try:
                    await self.shell._resume(run.run_id)
                except Exception as exc:  # _resume handles store faults itself: a bug
                    log.exception("could not resume woken run %s; retrying", run.run_id)
                    self.shell.retries.retry_later(run.run_id, exc)
                except BaseException as crash:
                    await self.shell._crash(crash)

    async def _drive(
        self, run: ActiveRun, event: Event, recovered: bool, journal: list[JournalRow] | None = None
    ) -> None:
        now = self.shell.clock.now()
        t = advance(run.program, run.instance, run.state, event, now, self.shell.loop_budget)
        sends = list(t.sends)
        journal = list(journal or [])
        first = recovered
        while True:
            command = t.command
            if run.cancel:
                await self._finish_cancelled(run, journal, sends)
                return
            if run.reuse and (
                hit := replay(run, t, self.shell.clock.now(), self.shell.loop_budget)
            ):
                t, reused = hit
                journal += reused
                sends.extend(t.sends)
                continue
            if isinstance(command, Suspend):
                resolved = await self.shell.waits.suspend(run, t, journal, sends)
                journal, sends = [], []
                if resolved is None:
                    return
                event, row = resolved
                journal = [row]
                t = advance(
                    run.program,
                    run.instance,
                    t.state,
                    event,
                    self.shell.clock.now(),
                    self.shell.loop_budget,
                )
                sends.extend(t.sends)
                continue
            if journal or isinstance(command, Wait | Finish):
                ended = await self.commit(run, t, journal, sends)
                journal, sends = [], []
                if ended:
                    return
            if self.shell._closing:
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
                        finished_at=self.shell.clock.now(),
                    )
                ]
                run.steps_done += 1
                t = advance(
                    run.program,
                    run.instance,
                    t.state,
                    Recorded(value),
                    self.shell.clock.now(),
                    self.shell.loop_budget,
                )
            else:
                assert isinstance(command, Call)
                outcome, row = await self._call(run, t, command, check_started=first)
                journal = [row]
                if row.status == "completed":
                    run.steps_done += 1
                t = advance(
                    run.program,
                    run.instance,
                    t.state,
                    outcome,
                    self.shell.clock.now(),
                    self.shell.loop_budget,
                )
            first = False
            sends.extend(t.sends)

    async def _call(
        self, run: ActiveRun, t: Transition, call: Call, *, check_started: bool
    ) -> tuple[Event, JournalRow]:
        started = self.shell.clock.now()
        if call.mode == "try":
            if check_started and await self._was_started(run.run_id, call.key):
                error = StepInterrupted(
                    f"try_ step {call.key!r} was in flight when its process died; "
                    "at-most-once forbids running it again"
                )
                return StepErr(error), self._failed_row(call, error, started)
            row = JournalRow(call.key, "started", call.attempt, started_at=started)
            await self.shell.store.checkpoint(self.checkpoint(run, "running", journal=[row]))
        self._fault("before_step", run.run_id)
        seen = self.shell.telemetry.step_start(
            run.run_id, run.workflow.qualname, call.key, call.attempt
        )
        began = time.perf_counter()
        outcome = await self._execute(run.run_id, call, run.lease.epoch)
        failed = outcome.error if isinstance(outcome, StepErr) else None
        self.shell.telemetry.step_end(seen, failed, time.perf_counter() - began)
        self._fault("after_step", run.run_id)
        finished = self.shell.clock.now()
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
            finished_at=self.shell.clock.now(),
        )

    async def _was_started(self, run_id: str, key: str) -> bool:
        return await self.shell.store.step_status(run_id, key) == "started"

    async def _execute(self, run_id: str, call: Call, epoch: int) -> StepOk | StepErr:
        token = enter_step(
            StepContext(run_id, call.key, call.attempt, engine=self.shell, epoch=epoch)
        )
        timeout = call.policy.timeout
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                if timeout is not None and not inspect.iscoroutinefunction(call.fn):
                    result = await asyncio.to_thread(call.fn, *call.args, **call.kwargs)
                else:
                    result = call.fn(*call.args, **call.kwargs)
                if inspect.isawaitable(result):
                    result = await result
            return StepOk(result)
        except Exception as error:
            if isinstance(error, TimeoutError) and deadline.expired():
                error = StepTimeout(f"step {call.key!r} timed out after {timeout}s")
            return StepErr(error)
        finally:
            leave_step(token)

    def _record(self, what: str) -> Any:
        if what == "now":
            return datetime.fromtimestamp(self.shell.clock.now(), UTC)
        if what == "uuid":
            return uuid.uuid4()
        return random.random()

    async def commit(
        self,
        run: ActiveRun,
        t: Transition,
        journal: list[JournalRow],
        sends: list[tuple[str, Any]],
        *,
        status: str | None = None,
        approval: NewApproval | None = None,
    ) -> bool:
        """Persist a transition; True when the run has stopped advancing (waits or ended)."""
        command = t.command
        kwargs: dict[str, Any] = {"approval": approval}
        if status is not None:
            pass
        elif isinstance(command, Wait | Suspend):
            status = "waiting"
            kwargs.update(wake_at=command.until, release=True)
        elif isinstance(command, Finish):
            status = _FINAL[command.status]
            kwargs.update(release=True, error=dump_error(command.error))
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
        else:
            status = "running"
        try:
            encoded_sends = [(name, serde.dumps(data)) for name, data in sends]
            checkpoint = self.checkpoint(
                run, status, journal=journal, sends=encoded_sends, **kwargs
            )
        except SerializationError as exc:
            # The workflow holds something unstorable: fail the run, keep its last good state.
            checkpoint = self.checkpoint(
                run,
                "failed",
                journal=journal,
                release=True,
                error=serde.dumps(exc),
                keep_state=True,
            )
            command = Finish("failed", error=exc)
        await self.shell.store.checkpoint(checkpoint)
        run.status = checkpoint.status
        if run.status == "waiting" and isinstance(command, Wait | Suspend):
            kind = wait_kind(t)
            self.shell.telemetry.waiting(run.run_id, run.workflow.qualname, kind, command.key)
        if self.shell._faulted:
            self.shell._faulted.pop(run.run_id, None)
        if isinstance(command, Finish) or checkpoint.status == "failed":
            self.notify(run.run_id)
        elif isinstance(command, Wait | Suspend):
            self.shell._kick.set()
        if sends:
            self.shell._kick.set()
        return checkpoint.status != "running"

    def checkpoint(
        self,
        run: ActiveRun,
        status: str,
        *,
        journal: list[JournalRow] | None = None,
        sends: list[tuple[str, str]] | None = None,
        wake_at: float | None = None,
        result: str | None = None,
        error: str | None = None,
        release: bool = False,
        keep_state: bool = False,
        approval: NewApproval | None = None,
    ) -> Checkpoint:
        state_json = (
            self._last_state(run)
            if keep_state
            else encode_state(run.state, run.program.graph, run.program.live.get(run.state.node))
        )
        return Checkpoint(
            lease=run.lease,
            status=status,
            node=run.state.node,
            state=state_json,
            steps_done=run.steps_done,
            now=self.shell.clock.now(),
            wake_at=wake_at,
            result=result,
            error=error,
            journal=journal or [],
            sends=sends or [],
            release=release,
            approval=approval,
        )

    @staticmethod
    def _last_state(run: ActiveRun) -> str:
        try:
            return _encode(run)
        except SerializationError:
            return serde.dumps({"frame": {}, "attempt": 0, "comp": [], "compensating": None})

    async def _finish_cancelled(
        self, run: ActiveRun, journal: list[JournalRow], sends: list[tuple[str, Any]]
    ) -> None:
        encoded = [(name, serde.dumps(data)) for name, data in sends]
        await self.shell.store.checkpoint(
            self.checkpoint(
                run,
                "cancelled",
                journal=journal,
                sends=encoded,
                release=True,
                error=serde.dumps(DotdoError("cancelled")),
            )
        )
        run.status = "cancelled"
        await self.shell.waits.withdraw_approvals(run.run_id)
        self.notify(run.run_id)

    def notify(self, run_id: str) -> None:
        for future in self.shell._waiters.pop(run_id, []):
            if not future.done():
                future.set_result(None)


def _encode(run: ActiveRun) -> str:
    """The run's state with only the locals still live where it stands."""
    return encode_state(run.state, run.program.graph, run.program.live.get(run.state.node))
