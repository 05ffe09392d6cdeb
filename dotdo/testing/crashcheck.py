"""Proof of durability: crash a workflow at every durable boundary and compare with a clean run.

A durable engine is only as good as the workflows it runs: code between durable operations is
re-executed after a crash, so a workflow that reads the wall clock or `random` directly, or
mutates outside state, may take another path on resume. `assert_crash_safe` turns the
durability contract (docs/durability.md) into a check a user can put in their own test suite.

Enable the `crash_safe` fixture in a test suite with
``pytest_plugins = ["dotdo.testing.crashcheck"]``.
(PYTEST_DONT_REWRITE: dotdo.testing imports this module before pytest loads it as a plugin.)
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dotdo.dsl.python.decorators import WorkflowDef
from dotdo.engine.clock import VirtualClock
from dotdo.engine.engine import Engine
from dotdo.engine.records import RunInfo
from dotdo.engine.store.sqlite import read_started_steps
from dotdo.errors import CrashSafetyError, DotdoError, RunFailed, StepInterrupted
from dotdo.testing.answers import (
    Expire,
    Respond,
    Responder,
    Waiting,
    current_wait,
    describe,
    give,
)

if TYPE_CHECKING:
    from dotdo.testing import CrashAt

# dotdo.testing re-exports this module's API, so it is imported where used, not here: either
# module can then be imported first.

__all__ = [
    "CrashCase",
    "CrashReport",
    "CrashSafe",
    "CrashSafetyError",
    "RunOutcome",
    "assert_crash_safe",
]

RUN_ID = "crashcheck"
IN_FLIGHT = ("after_step", "before_commit")
"""Boundaries at which a step has executed but its outcome is not committed yet."""

_TIMEOUT = 30.0
_MAX_HOPS = 10_000
_PAST_THE_END = 1_000


@dataclass
class RunOutcome:
    """How one run ended, in a form two runs on different files can be compared on."""

    status: str
    result: Any
    error: tuple[str, str] | None
    """(type name, message): exception objects do not compare equal across runs."""
    rows: list[tuple[str, str, int | None]]
    """(key, status, seq) in journal order."""
    outbox: list[tuple[str, Any]]
    raw_error: BaseException | None = None

    @property
    def completed(self) -> list[str]:
        return [key for key, status, _ in self.rows if status == "completed"]

    def describe(self) -> str:
        if self.error is None:
            return f"{self.status} -> {self.result!r}"
        return f"{self.status} with {self.error[0]}({self.error[1]!r})"


@dataclass(frozen=True)
class CrashCase:
    """One checked crash point."""

    n: int
    boundary: str
    run_id: str
    interrupted: tuple[str, ...] = ()
    """`try_` steps that were in flight at the crash: they end StepInterrupted, by contract."""

    def __str__(self) -> str:
        return f"crash point #{self.n} ({self.boundary} of run {self.run_id!r})"


@dataclass
class CrashReport:
    """What assert_crash_safe checked; returned so a test can assert on coverage."""

    workflow: str
    reference: RunOutcome
    total_points: int
    """Boundaries the reference run passed through."""
    cases: list[CrashCase] = field(default_factory=list)

    @property
    def points_checked(self) -> int:
        return len(self.cases)

    @property
    def boundaries_seen(self) -> set[str]:
        return {case.boundary for case in self.cases}

    @property
    def interrupted(self) -> list[CrashCase]:
        return [case for case in self.cases if case.interrupted]


class CrashSafe(Protocol):
    """The type of the `crash_safe` fixture: assert_crash_safe with its directory bound."""

    def __call__(
        self,
        workflow: WorkflowDef[Any],
        *args: Any,
        register: Sequence[Any] = (),
        clock: VirtualClock | None = None,
        respond: Respond | None = None,
        max_points: int | None = None,
        **kwargs: Any,
    ) -> Awaitable[CrashReport]: ...


# ------------------------------------------------------------------------- running
def _engine(db: Path, targets: Sequence[Any], clock: VirtualClock | None, faults: Any) -> Engine:
    engine = Engine(db, clock=clock, faults=faults)
    # Registered before opening, so that opening recovers the run with its code at hand.
    engine.register(*targets)
    return engine


async def _drive(
    engine: Engine, run_id: str, clock: VirtualClock | None, responder: Responder | None
) -> RunInfo:
    """Wait for the run to end: jump the virtual clock to each timer it waits on, and answer
    each approval or event wait from `responder`."""
    if clock is None and responder is None:
        return await engine.wait(run_id, timeout=_TIMEOUT)
    deadline = time.monotonic() + _TIMEOUT
    for _ in range(_MAX_HOPS):
        info = await engine.idle(run_id, timeout=_TIMEOUT)
        if info.finished:
            return info
        if time.monotonic() > deadline:
            raise CrashSafetyError(f"run {run_id!r} did not finish within {_TIMEOUT}s")
        waiting, in_transit = await current_wait(engine.store, info)
        if waiting is None or in_transit:
            _jump(clock, info, run_id)
        elif responder is None:
            raise CrashSafetyError(
                f"run {run_id!r} waits for {describe(waiting)}; pass respond= to "
                "assert_crash_safe to answer it"
            )
        else:
            await _answer(engine, clock, info, responder, waiting)
        # Let the engine take the run up (timer loop, dispatcher) before asking again.
        await asyncio.sleep(0.002)
    raise CrashSafetyError(f"run {run_id!r} did not finish within {_MAX_HOPS} hops")


def _jump(clock: VirtualClock | None, info: RunInfo, run_id: str) -> None:
    """Move a virtual clock to the run's timer; on the real clock time passes by itself."""
    if clock is None or info.wake_at is None:
        return  # a delivery in transit, or a real timer: wait for the engine
    gap = info.wake_at.timestamp() - clock.now()
    if gap > 0:
        clock.advance(gap)


async def _answer(
    engine: Engine,
    clock: VirtualClock | None,
    info: RunInfo,
    responder: Responder,
    waiting: Waiting,
) -> None:
    try:
        answer = responder.answer(waiting)
    except (LookupError, TypeError) as error:
        raise CrashSafetyError(f"run {info.run_id!r}: {error}") from None
    if isinstance(answer, Expire):
        if clock is None or waiting.deadline is None:
            what = "clock=VirtualClock()" if clock is None else "a deadline or timeout"
            raise CrashSafetyError(
                f"run {info.run_id!r}: Expire() given to {describe(waiting)}, which needs {what}"
            )
        _jump(clock, info, info.run_id)
        return
    try:
        await give(engine, waiting, answer)
    except (ValueError, DotdoError) as error:
        raise CrashSafetyError(
            f"run {info.run_id!r}: answer {answer!r} to {describe(waiting)} was refused: {error}"
        ) from None


async def _outcome(engine: Engine, run_id: str) -> RunOutcome:
    result: Any = None
    error: BaseException | None = None
    info = await engine.get_run(run_id)
    try:
        result = await engine.handle(run_id).result(timeout=_TIMEOUT)
    except RunFailed as failed:
        error = failed.error
    rows = [(r.key, r.status, r.seq) for r in await engine.journal(run_id)]
    described = None if error is None else (type(error).__name__, str(error))
    return RunOutcome(info.status, result, described, rows, await engine.outbox(run_id), error)


@dataclass(frozen=True)
class _Setup:
    """What every run of one check shares: the workflow, its inputs, its world."""

    wf: WorkflowDef[Any]
    targets: Sequence[Any]
    clock: VirtualClock | None
    respond: Respond | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def responder(self) -> Responder | None:
        """A fresh one per database: each case answers its own waits, across its crash."""
        return None if self.respond is None else Responder(self.respond)


async def _run_to_end(
    db: Path, setup: _Setup, faults: CrashAt | None, responder: Responder | None
) -> RunOutcome | None:
    """Start the run; None when the engine died at its simulated crash."""
    from dotdo.testing import SimulatedCrash

    async with _engine(db, setup.targets, setup.clock, faults) as engine:
        await engine.start(setup.wf, *setup.args, run_id=RUN_ID, **setup.kwargs)
        try:
            await _drive(engine, RUN_ID, setup.clock, responder)
            return await _outcome(engine, RUN_ID)
        except SimulatedCrash:
            # Also when the crash hit the run's last commit just after it was seen finished.
            return None


async def _resume(db: Path, setup: _Setup, responder: Responder | None) -> RunOutcome:
    async with _engine(db, setup.targets, setup.clock, None) as engine:
        await _drive(engine, RUN_ID, setup.clock, responder)
        return await _outcome(engine, RUN_ID)


def _started_rows(db: Path) -> tuple[str, ...]:
    """`try_` attempts the dead engine left recorded as started, read straight from its file."""
    return read_started_steps(str(db), RUN_ID)


# ------------------------------------------------------------------------ checking
def _check_recording(where: str, out: RunOutcome) -> None:
    """Exactly-once recording: one row per key, completions numbered 1..n without gaps."""
    keys = Counter(key for key, _, _ in out.rows)
    twice = sorted(key for key, count in keys.items() if count > 1)
    if twice:
        raise CrashSafetyError(f"{where}: exactly-once recording violated: {twice} journaled twice")
    seqs = [seq for _, status, seq in out.rows if status == "completed"]
    if seqs != list(range(1, len(seqs) + 1)):
        raise CrashSafetyError(
            f"{where}: exactly-once recording violated: completion seqs are {seqs}, not 1..n"
        )


def _check_case(where: str, case: CrashCase, ref: RunOutcome, out: RunOutcome) -> None:
    _check_recording(where, out)
    if case.interrupted:
        # The contract's one allowed divergence: the in-flight try_ is failed, never re-run.
        # What the workflow does with that failure is its own business, so only check it.
        statuses = dict((key, status) for key, status, _ in out.rows)
        for key in case.interrupted:
            if statuses.get(key) != "failed":
                raise CrashSafetyError(
                    f"{where}: try_ step {key!r} was in flight at the crash but ended "
                    f"{statuses.get(key)!r}, not 'failed' (StepInterrupted)"
                )
        if out.status != "completed" and not isinstance(out.raw_error, StepInterrupted):
            if out.error != ref.error or out.status != ref.status:
                raise CrashSafetyError(
                    f"{where}: crash equivalence violated: a try_ step was interrupted, so "
                    f"StepInterrupted or the reference outcome was expected, got {out.describe()}"
                )
        return
    if (out.status, out.result, out.error) != (ref.status, ref.result, ref.error):
        raise CrashSafetyError(
            f"{where}: crash equivalence violated: the resumed run ended {out.describe()}, "
            f"the uncrashed run {ref.describe()}"
        )
    if out.completed != ref.completed:
        raise CrashSafetyError(
            f"{where}: completed steps differ from the uncrashed run: {out.completed} "
            f"instead of {ref.completed}"
        )
    if out.outbox != ref.outbox:
        raise CrashSafetyError(
            f"{where}: outbox differs from the uncrashed run (each event must be sent "
            f"exactly once): {out.outbox} instead of {ref.outbox}"
        )


def _sample(total: int, max_points: int | None) -> list[int]:
    """Evenly spread crash points, always including the first and the last boundary."""
    if max_points is None or total <= max_points:
        return list(range(total))
    if max_points <= 1:
        return [0][:max_points]
    step = (total - 1) / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)})


async def _check_point(directory: Path, n: int, setup: _Setup, ref: RunOutcome) -> CrashCase | None:
    """Crash at boundary `n`, resume on a fresh engine, check; None when `n` is past the end."""
    from dotdo.testing import CrashAt

    db = directory / f"crash-{n}.db"
    crash = CrashAt(n)
    responder = setup.responder()
    await _run_to_end(db, setup, crash, responder)
    if not crash.fired:
        return None
    boundary, run_id = crash.trace[n]
    case = CrashCase(n, boundary, run_id, _started_rows(db))
    where = f"{setup.wf.qualname}: {case}"
    if crash.trace[-1] != (boundary, run_id) or len(crash.trace) != n + 1:
        raise CrashSafetyError(f"{where}: the engine went on after its crash: {crash.trace}")
    _check_case(where, case, ref, await _resume(db, setup, responder))
    return case


async def assert_crash_safe(
    workflow: WorkflowDef[Any],
    *args: Any,
    register: Sequence[Any] = (),
    clock: VirtualClock | None = None,
    respond: Respond | None = None,
    max_points: int | None = None,
    directory: Path | None = None,
    **kwargs: Any,
) -> CrashReport:
    """Crash `workflow(*args, **kwargs)` at each durable boundary; raise on any divergence.

    Each crash point gets its own database, so cases cannot leak into one another. Side
    effects outside the database (counters, lists) are the caller's to reset if they matter.
    `respond` answers the run's approvals and event waits, the same way in every run.
    """
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="dotdo-crashcheck-") as tmp:
            return await assert_crash_safe(
                workflow,
                *args,
                register=register,
                clock=clock,
                respond=respond,
                max_points=max_points,
                directory=Path(tmp),
                **kwargs,
            )
    from dotdo.testing import CrashAt

    targets = [workflow.owner, *register] if workflow.owner is not None else [*register]
    setup = _Setup(workflow, targets, clock, respond, args, kwargs)
    directory.mkdir(parents=True, exist_ok=True)
    # A fresh folder per call: a second check in the same directory must not find the first
    # one's run (start is idempotent by run id) and report its outcome.
    directory = Path(tempfile.mkdtemp(prefix=f"{workflow.qualname}-", dir=directory))
    probe = CrashAt(10**9)
    reference = await _run_to_end(directory / "reference.db", setup, probe, setup.responder())
    assert reference is not None  # a probe that never fires cannot crash the engine
    _check_recording(f"{workflow.qualname}: the uncrashed run", reference)
    report = CrashReport(workflow.qualname, reference, len(probe.trace))
    for n in _sample(len(probe.trace), max_points):
        case = await _check_point(directory, n, setup, reference)
        if case is not None:
            report.cases.append(case)
    if max_points is None:
        # Past the reference's last boundary: a run that took another path may have more.
        for n in range(len(probe.trace), len(probe.trace) + _PAST_THE_END):
            case = await _check_point(directory, n, setup, reference)
            if case is None:
                break
            report.cases.append(case)
    return report


# --------------------------------------------------------------------- pytest plugin
if importlib.util.find_spec("pytest") is not None:
    import pytest

    @pytest.fixture
    def crash_safe(tmp_path: Path) -> CrashSafe:
        """assert_crash_safe writing its databases under the test's tmp_path, kept on failure."""
        bound: Callable[..., Awaitable[CrashReport]] = functools.partial(
            assert_crash_safe, directory=tmp_path / "crashcheck"
        )
        return bound
