"""Hypothesis properties of the durability contract on generated workflows.

Each example generates the source of a DO subclass (steps that succeed, fail transiently or
fail for good; branches on step results; loops; try/except; compensable steps; events), writes
it to a real .py file (the compiler reads source with inspect) and imports it. A clean run is
the reference; then one crash point, drawn by Hypothesis, kills the engine there and a fresh
engine resumes. `assert_crash_safe` covers every point of hand-written workflows; drawing one
point per generated program covers many more shapes of program in the same time.

Deterministic by default (derandomize); `HYPOTHESIS_PROFILE=soak pytest tests/test_properties.py`
runs far more examples.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from _property_support import (
    SETTINGS,
    SOAK_MARKS,
    Observed,
    check_properties,
    crash_then_resume,
    import_source,
)
from hypothesis import given
from hypothesis import strategies as st

from dotdo import Engine, RunFailed
from dotdo.compiler.codegen import Frame
from dotdo.engine.interpreter import (
    Call,
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
from dotdo.engine.state import encode_state
from dotdo.errors import PermanentError
from dotdo.testing import CrashAt

pytestmark = SOAK_MARKS

# ------------------------------------------------------------------- shared side effects
EXEC: list[str] = []
"""Every execution of a step body, by call id (site plus loop iterations)."""
BOOKED: list[tuple[str, int]] = []
"""Compensable steps whose body succeeded, in order, with the value their undo receives."""
UNDONE: list[int] = []
"""Undo executions, in order, by the value they received."""
PLAN: dict[str, tuple[str, int]] = {}
"""Outcome of each call site: ("ok", 0), ("flaky", k) or ("fail", 0)."""

sys.modules.setdefault("tests_properties_support", sys.modules[__name__])

RUN_ID = "prop-run"
_counter = itertools.count()

# ---------------------------------------------------------------------- generation
Outcome = st.sampled_from([("ok", 0), ("ok", 0), ("flaky", 1), ("flaky", 2), ("fail", 0)])


def _ops(depth: int, once: bool = False) -> st.SearchStrategy[list[Any]]:
    """Programs as nested op lists; `once` adds `try_` calls (at most once, never retried)."""
    leaves = [
        st.tuples(st.just("step"), Outcome),
        st.tuples(st.just("book"), Outcome),
        st.tuples(st.just("send")),
    ]
    if once:
        leaves += [st.tuples(st.just("once"), Outcome)] * 2
    leaf = st.one_of(*leaves)
    if depth >= 2:
        return st.lists(leaf, min_size=1, max_size=3)
    sub = st.deferred(lambda: _ops(depth + 1, once))
    node = st.one_of(
        leaf,
        leaf,
        st.tuples(st.just("if"), sub, sub),
        st.tuples(st.just("for"), st.integers(1, 2), sub),
        st.tuples(st.just("try"), sub, sub),
    )
    return st.lists(node, min_size=1, max_size=4)


def _render(
    ops: list[Any], indent: int, loops: list[str], plan: dict[str, tuple[str, int]]
) -> list[str]:
    pad = "    " * indent
    lines: list[str] = []
    for op in ops:
        kind = op[0]
        if kind in ("step", "book", "once"):
            site = f"{kind}{len(plan)}"
            plan[site] = op[1]
            sid = " + ".join([repr(site), *(f'"-" + str({v})' for v in loops)])
            if kind == "once":
                lines.append(f"{pad}acc = await self.try_(self.once, {sid}, acc)")
            else:
                method = "work" if kind == "step" else "book"
                lines.append(f"{pad}acc = await self.{method}({sid}, acc)")
        elif kind == "send":
            lines.append(f'{pad}self.send("Gen.acc", {{"acc": acc}})')
        elif kind == "if":
            lines.append(f"{pad}if acc % 2 == 0:")
            lines.extend(_render(op[1], indent + 1, loops, plan))
            lines.append(f"{pad}else:")
            lines.extend(_render(op[2], indent + 1, loops, plan))
        elif kind == "for":
            var = f"i{len(loops)}_{len(plan)}_{len(lines)}"  # nested loops never shadow
            lines.append(f"{pad}for {var} in range({op[1]}):")
            lines.extend(_render(op[2], indent + 1, [*loops, var], plan))
        elif kind == "try":
            lines.append(f"{pad}try:")
            lines.extend(_render(op[1], indent + 1, loops, plan))
            lines.append(f"{pad}except PermanentError:")
            lines.append(f"{pad}    acc = acc + 1000")
            lines.extend(_render(op[2], indent + 1, loops, plan))
    return lines or [f"{pad}pass"]


_HEADER = """
from dotdo import DO, PermanentError, compensate, current_step, step, workflow
from tests_properties_support import BOOKED, EXEC, PLAN, UNDONE


def _act(sid):
    EXEC.append(sid)
    kind, k = PLAN[sid.split("-")[0]]
    if kind == "fail":
        raise PermanentError("failed " + sid)
    if kind == "flaky" and current_step().attempt <= k:
        raise ConnectionError("transient " + sid)
    return len(sid)


class Generated(DO):
    @step(retries=3, initial_delay=0.001)
    async def work(self, sid, acc):
        return acc + _act(sid)

    @step(retries=3, initial_delay=0.001)
    async def book(self, sid, acc):
        value = acc + _act(sid)
        BOOKED.append((sid, value))
        return value

    async def once(self, sid, acc):
        return acc + _act(sid)

    @compensate(book)
    async def unbook(self, value):
        UNDONE.append(value)

    @workflow
    async def wf(self, acc):
"""


def load_program(directory: Path, ops: list[Any]) -> tuple[str, Any, dict[str, tuple[str, int]]]:
    plan: dict[str, tuple[str, int]] = {}
    body = _render(ops, 2, [], plan)
    source = textwrap.dedent(_HEADER) + "\n".join([*body, "        return acc", ""])
    return source, import_source(directory, source, "_dotdo_props"), plan


# --------------------------------------------------------------------------- running
def _reset() -> None:
    EXEC.clear()
    BOOKED.clear()
    UNDONE.clear()


async def _finish(engine: Engine) -> Observed:
    result: Any = None
    error = None
    try:
        result = await engine.handle(RUN_ID).result(timeout=20)
    except RunFailed as failed:
        error = (type(failed.error).__name__, str(failed.error))
    info = await engine.get_run(RUN_ID)
    rows = [(r.key, r.status, r.seq) for r in await engine.journal(RUN_ID)]
    outbox = await engine.outbox(RUN_ID)
    return Observed(
        info.status, result, error, rows, outbox, list(EXEC), list(BOOKED), list(UNDONE)
    )


async def reference_run(db: Path, cls: Any, start: int) -> tuple[Observed, int]:
    _reset()
    probe = CrashAt(10**9)
    async with Engine(db, faults=probe) as engine:
        engine.register(cls)
        await engine.start(cls.wf, start, run_id=RUN_ID)
        return await _finish(engine), len(probe.trace)


async def crashed_run(
    db: Path, cls: Any, start: int, n: int
) -> tuple[Observed, str | None, list[str]]:
    """Crash at boundary `n`, resume on a fresh engine; also the `try_` keys left `started`."""
    _reset()
    return await crash_then_resume(db, cls.wf, start, n, _finish, RUN_ID)


@SETTINGS
@given(ops=_ops(0), start=st.integers(0, 5), pick=st.integers(0, 10**6))
def test_crash_anywhere_matches_the_clean_run(
    tmp_path: Path, ops: list[Any], start: int, pick: int
) -> None:
    source, module, plan = load_program(tmp_path, ops)
    PLAN.clear()
    PLAN.update(plan)
    tag = next(_counter)

    async def scenario() -> None:
        ref, total = await reference_run(tmp_path / f"ref{tag}.db", module.Generated, start)
        n = pick % (total + 1)  # n == total: a crash point past the end, so no crash
        out, point, _ = await crashed_run(tmp_path / f"crash{tag}.db", module.Generated, start, n)
        check_properties(ref, out, point, f"crash #{n} of {total} at {point}")

    try:
        asyncio.run(scenario())
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- generated program ---\n{source}") from None
    finally:
        sys.modules.pop(module.__name__, None)


@SETTINGS
@given(ops=_ops(0, once=True), start=st.integers(0, 5), pick=st.integers(0, 10**6))
def test_try_never_runs_twice(tmp_path: Path, ops: list[Any], start: int, pick: int) -> None:
    """`try_` is at most once: across any crash no `try_` body runs twice. A crash while one
    was in flight leaves its `started` row; the resumed run must fail that step
    (StepInterrupted) and may then legitimately take another path. Any other crash must be
    invisible, as for `do` steps."""
    source, module, plan = load_program(tmp_path, ops)
    PLAN.clear()
    PLAN.update(plan)
    tag = next(_counter)

    async def scenario() -> None:
        ref, total = await reference_run(tmp_path / f"ref{tag}.db", module.Generated, start)
        n = pick % (total + 1)
        db = tmp_path / f"crash{tag}.db"
        out, point, started = await crashed_run(db, module.Generated, start, n)
        where = f"crash #{n} of {total} at {point}"
        once = Counter(sid for sid in out.execs if sid.startswith("once"))
        assert all(count == 1 for count in once.values()), f"{where}: try_ ran twice: {once}"
        assert all(count == 1 for sid, count in Counter(ref.execs).items() if "once" in sid)
        if not started:
            check_properties(ref, out, point, where)
            return
        statuses = {key: status for key, status, _ in out.rows}
        assert all(statuses[key] == "failed" for key in started), f"{where}: {out.rows}"
        keys = [key for key, _, _ in out.rows]
        assert len(keys) == len(set(keys)), f"{where}: a key journaled twice: {keys}"
        seqs = [seq for _, status, seq in out.rows if status == "completed"]
        assert seqs == list(range(1, len(seqs) + 1)), f"{where}: seqs {seqs}"
        assert out.status != "running", where

    try:
        asyncio.run(scenario())
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- generated program ---\n{source}") from None
    finally:
        sys.modules.pop(module.__name__, None)


# ------------------------------------------------------------- the core is deterministic
def _command_view(command: Any) -> Any:
    """A command as comparable data: bound methods and exceptions compare by identity."""
    view = {}
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        if f.name == "fn":
            value = getattr(value, "__qualname__", repr(value))
        elif isinstance(value, BaseException):
            value = (type(value).__name__, str(value))
        view[f.name] = value
    return type(command).__name__, view


def _transition_view(t: Transition, graph: Any) -> Any:
    return encode_state(t.state, graph), _command_view(t.command), t.sends


@SETTINGS
@given(ops=_ops(0), start=st.integers(0, 5), answers=st.lists(st.integers(0, 9), max_size=40))
def test_interpreter_is_deterministic(
    tmp_path: Path, ops: list[Any], start: int, answers: list[int]
) -> None:
    """The same graph, state and event give the same transition, every time.

    Walks one path through the program (step outcomes drawn), and at every transition applies
    `advance` to two deep copies of the state and compares the persisted form of the results.
    """
    source, module, _ = load_program(tmp_path, ops)
    try:
        wf = module.Generated.wf
        program, graph = wf.program(), wf.graph
        instance = module.Generated("e", run_id=RUN_ID)
        state = RunState(node=graph.start, frame=Frame({"acc": start}))
        event: Any = Resume()
        feed = iter(answers)
        for _ in range(200):
            a = advance(program, instance, copy.deepcopy(state), event, 1000.0)
            b = advance(program, instance, copy.deepcopy(state), event, 1000.0)
            assert _transition_view(a, graph) == _transition_view(b, graph), source
            state, command = a.state, a.command
            if isinstance(command, Finish):
                break
            if isinstance(command, Call):
                answer = next(feed, 0)
                if answer == 9:
                    event = StepErr(PermanentError("drawn failure"))
                elif answer == 8:
                    event = StepErr(ConnectionError("drawn transient failure"))
                else:
                    event = StepOk(command.args[-1] + answer if command.args else answer)
            elif isinstance(command, Wait):
                event = TimerFired()
            elif isinstance(command, Record):
                event = Recorded(1000.0)
            else:
                raise AssertionError(f"unexpected command {command!r}")
    finally:
        sys.modules.pop(module.__name__, None)
