"""Shared machinery of the Hypothesis property suites (tests/test_properties*.py).

One place for the settings profiles (so every property runs the same number of examples and
`HYPOTHESIS_PROFILE=soak` lengthens all of them), for importing generated source from a real
file (the compiler reads source with inspect), and for the checks that compare a crashed run
with its clean reference.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import sqlite3
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from dotdo import Engine, RunFailed
from dotdo.testing import CrashAt, SimulatedCrash
from dotdo.testing.crashcheck import IN_FLIGHT

EXAMPLES = 300
"""Examples per property in `make test` (the issue's floor)."""

settings.register_profile(
    "dotdo-ci",
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same programs every run: a failure here is never a fluke
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "soak",
    max_examples=3000,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Looked up here rather than loaded globally, so other test modules keep their own settings.
SOAK = os.environ.get("HYPOTHESIS_PROFILE") == "soak"
SETTINGS = settings.get_profile("soak" if SOAK else "dotdo-ci")
SOAK_MARKS = [pytest.mark.timeout(0)] if SOAK else []
"""A soak run outlasts the suite's per-test timeout: use as `pytestmark = SOAK_MARKS`."""

_counter = itertools.count()


def import_source(directory: Path, source: str, stem: str = "_dotdo_gen") -> ModuleType:
    """Write `source` to a fresh .py file under `directory` and import it as a new module.

    Callers pop `sys.modules[module.__name__]` when done with it.
    """
    name = f"{stem}_{next(_counter)}_{uuid.uuid4().hex[:8]}"
    path = directory / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Observed:
    """What one run left behind: its outcome, journal, outbox and the side effects it caused."""

    status: str
    result: Any
    error: tuple[str, str] | None
    rows: list[tuple[str, str, int | None]]
    outbox: list[tuple[str, Any]]
    execs: list[str]
    booked: list[tuple[str, int]]
    undone: list[int]

    @property
    def completed(self) -> list[str]:
        return [key for key, status, _ in self.rows if status == "completed"]


def dedupe_adjacent(items: list[Any]) -> tuple[list[Any], int]:
    """`items` with adjacent repeats collapsed, and how many repeats there were."""
    out: list[Any] = []
    repeats = 0
    for item in items:
        if out and out[-1] == item:
            repeats += 1
        else:
            out.append(item)
    return out, repeats


def check_properties(ref: Observed, out: Observed, point: str | None, where: str) -> None:
    """The durability contract for one crash at `point`, against the clean reference run."""
    # Exactly-once recording: one journal row per key, completions numbered 1..n.
    keys = [key for key, _, _ in out.rows]
    assert len(keys) == len(set(keys)), f"{where}: a key journaled twice: {keys}"
    seqs = [seq for _, status, seq in out.rows if status == "completed"]
    assert seqs == list(range(1, len(seqs) + 1)), f"{where}: seqs {seqs}"
    # Crash equivalence.
    assert (out.status, out.result, out.error) == (ref.status, ref.result, ref.error), where
    assert out.completed == ref.completed, where
    assert out.outbox == ref.outbox, where
    # At least once, and at most one extra execution, only when a step was in flight.
    ref_counts, out_counts = Counter(ref.execs), Counter(out.execs)
    assert all(out_counts[k] >= ref_counts[k] for k in ref_counts), f"{where}: {out.execs}"
    assert set(out_counts) == set(ref_counts), f"{where}: {out.execs}"
    extra = sum(out_counts.values()) - sum(ref_counts.values())
    undo_extra = len(out.undone) - len(ref.undone)
    allowed = 1 if point in IN_FLIGHT else 0
    assert extra + undo_extra <= allowed, f"{where}: {extra} + {undo_extra} extra executions"
    # Compensation: each completed compensable step undone once, in reverse order.
    if ref.status == "compensated":
        assert ref.undone == [value for _, value in reversed(ref.booked)], where
    else:
        assert ref.undone == [], where
    undone, repeats = dedupe_adjacent(out.undone)
    assert undone == ref.undone and repeats <= allowed, f"{where}: undos {out.undone}"
    undo_keys = [k for k in out.completed if k.startswith("compensate:")]
    assert len(undo_keys) == len(ref.undone), f"{where}: {undo_keys}"


async def crash_then_resume(
    db: Path,
    wf: Any,
    start: int,
    n: int,
    finish: Callable[[Engine], Awaitable[Observed]],
    run_id: str,
) -> tuple[Observed, str | None, list[str]]:
    """Run `wf(start)` crashing at boundary `n`, then resume it on a fresh engine.

    Returns what `finish` observed, the boundary that crashed (None past the end) and the
    `try_` keys the dead engine left `started` (read from the file before resuming).
    """
    crash = CrashAt(n)
    engine = Engine(db, faults=crash)
    engine.register(wf)
    async with engine:
        try:
            await engine.start(wf, start, run_id=run_id)
            await engine.handle(run_id).result(timeout=20)
        except (SimulatedCrash, RunFailed):
            pass
    point = crash.trace[n][0] if crash.fired else None
    with contextlib.closing(sqlite3.connect(db)) as conn:
        started = [
            key for (key,) in conn.execute("SELECT step_key FROM steps WHERE status = 'started'")
        ]
    engine = Engine(db)
    engine.register(wf)
    async with engine:
        return await finish(engine), point, started
