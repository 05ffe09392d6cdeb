"""What the engine's parts need from the shell that composes them.

`Engine` (engine.py) is the shell: it owns the store, the clock, the lease owner id and the
state of the runs this process advances, and composes four parts that each hold one job:

- `RunDriver` (driver.py): advances one run, persisting each transition (`store.checkpoint`).
- `Waits` (waits.py): hibernation: approvals, event waits, `@on` handlers, `@every` schedules.
- `Retries` (faults.py): drives a run again after a store fault, retries idempotent writes.
- `Timers` (timers.py): the timer loop (due runs, orphans, events, schedules), lease renewal.

A part reaches the shell, and through it the other parts, only through this protocol: no
part inherits from another, and none stubs a method for another to fill in.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from dotdo.engine.clock import Clock
from dotdo.engine.store.interface import Store
from dotdo.engine.workflow import Workflow

if TYPE_CHECKING:
    from dotdo.engine.driver import ActiveRun, FaultHook, RunDriver
    from dotdo.engine.faults import Retries
    from dotdo.engine.handle import RunHandle
    from dotdo.engine.timers import Timers
    from dotdo.engine.waits import Waits

__all__ = ["Shell"]


class Shell(Protocol):
    """The engine as its parts see it."""

    # configuration
    clock: Clock
    faults: FaultHook | None
    loop_budget: int
    lease_seconds: float
    poll_seconds: float
    shutdown_grace: float
    owner: str
    _workflows: dict[str, Workflow]

    # the parts
    driver: RunDriver
    waits: Waits
    retries: Retries
    timers: Timers

    # the runs this process advances, and whether it is stopping
    _store: Store | None
    _active: dict[str, asyncio.Task[None]]
    """Runs with a task here (driving, or waiting to retry)."""
    _runs: dict[str, ActiveRun]
    _waiters: dict[str, list[asyncio.Future[None]]]
    _resume_after: set[str]
    """Runs woken (an event, a decision) while their task was still ending after it parked:
    that task resumes them as it ends, or nothing would drive them until a restart."""
    _loading: set[str]
    """Runs being loaded by `_resume` (claimed, no task yet)."""
    _faulted: dict[str, int]
    """Failures of each run since its last successful commit: its backoff grows with them."""
    _retrying: set[asyncio.Task[None]]
    _kick: asyncio.Event
    """Set to make the timer loop look for work now."""
    _closing: bool
    _crashed: BaseException | None
    _dying: BaseException | None
    """Set the moment a fault hook kills this engine, before `_crash` has run: from then on
    no step starts, as none would in a process that died at that boundary."""

    @property
    def store(self) -> Store: ...

    def idle_poll(self) -> float:
        """How long an idle background loop waits before looking again."""
        ...

    async def _resume(self, run_id: str) -> None:
        """Load a run this engine holds and drive it."""
        ...

    async def _crash(self, error: BaseException) -> None:
        """A simulated process death: stop everything, commit nothing more."""
        ...

    async def start(
        self,
        workflow: Workflow | str,
        *args: Any,
        run_id: str | None = None,
        entity_id: str | None = None,
        **kwargs: Any,
    ) -> RunHandle: ...
