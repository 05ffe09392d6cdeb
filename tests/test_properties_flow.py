"""Hypothesis properties of `.flow` programs: the checker, the formatter, crash recovery, and
the agreement of the two front ends.

`_flow_programs.programs()` draws small programs: steps that succeed, fail transiently k
times or fail for good (outcomes keyed by call site, as in test_properties.py), compensable
steps, `try` calls (at most once), sends, sleeps, recorded values (`now()`, `uuid()`,
`random()`), event waits answered by the run's own sends or by their timeout, approvals
that expire at their deadline, guarded `return`/`fail`/`break`/`continue`, and if/elif/else,
`for`, `while` and try/except/finally around them. Each program is written to a real
`.flow` file and loaded with `dotdo.load_flow`.

What is proved, on every generated program:

1. The language's own tools accept what the language allows: `check_source` (what
   `dotdo check` runs) reports nothing at all, and the formatter is a fixed point that keeps
   the meaning: format(format(t)) == format(t); format(t) compiles to t's graph with the same
   hash whenever no statement changed line, and to the same graph up to source lines when
   one did (the formatter folds `else:` + a lone `if` into `elif`, one line up); formatting
   removes the scattered noise (quotes, spacing, parentheses, option order) and keeps
   comments.
2. Crash equivalence: a crash at one drawn durable boundary, then a fresh engine on the same
   SQLite file, ends like the clean run (status, result or error, completed journal,
   outbox), records each key once, executes each step at least once and at most once more
   when the crash hit one in flight, and undoes each completed compensable step once, newest
   first (`check_properties`). A crash while a `try` was in flight may change the path by
   design; then the `try` key must end `failed` and nothing may run twice. Recorded values
   are stable: every execution of a step that received one saw the same value.
3. One semantics, two front ends: the same ops rendered as a Python `@workflow` give the
   same status, result or error, journal (keys, statuses, sequence numbers), outbox, and the
   same step executions, bookings and undos in the same order. Journal keys agree by design
   (both front ends name calls `work`, `work_2`, ..., honour explicit ids, and suffix loop
   iterations), so they are compared exactly; only recorded values differ between runs, and
   no result depends on them.

Every program is deterministic given its plan, with no outside driver: waits only see
events the run sent itself (or time out after 20ms), approvals expire (5ms deadline), and
recorded values never reach the result. So any difference between two runs is a bug. The
plain tests at the end are counterexamples these properties found, fixed in
dotdo/engine/waits.py.

Deterministic by default (derandomize); `HYPOTHESIS_PROFILE=soak` runs far more examples.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import _flow_programs as F
from _property_support import (
    SETTINGS,
    SOAK_MARKS,
    Observed,
    check_properties,
    crash_then_resume,
    import_source,
)
from hypothesis import event, given
from hypothesis import strategies as st

from dotdo import Engine, RunFailed
from dotdo.dsl.flow.checker import check_source
from dotdo.dsl.flow.formatter import format_source
from dotdo.dsl.flow.loader import load_flow, load_source
from dotdo.dsl.python.decorators import WorkflowDef
from dotdo.testing import CrashAt

pytestmark = SOAK_MARKS

RUN_ID = "flow-prop"
_counter = itertools.count()


def allow_steps(directory: Path) -> None:
    """Flows written under `directory` are outside this project: its pyproject.toml allows
    the module their steps live in (for load_flow, and for the engines that register them)."""
    pyproject = directory / "pyproject.toml"
    if not pyproject.exists():
        pyproject.write_text('[tool.dotdo]\nflow-modules = ["flow_program_steps"]\n')


def load(directory: Path, ops: list[Any]) -> tuple[str, WorkflowDef[Any]]:
    """Write the program to a fresh .flow file, load it, and install its plan of outcomes."""
    rendered = F.render(ops, "flow")
    allow_steps(directory)
    path = directory / f"gen{next(_counter)}.flow"
    path.write_text(rendered.text)
    F.PLAN.clear()
    F.PLAN.update(rendered.plan)
    return rendered.text, load_flow(path)["wf"]


# --------------------------------------------------------------------------- running
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
        info.status, result, error, rows, outbox, list(F.EXEC), list(F.BOOKED), list(F.UNDONE)
    )


async def reference_run(db: Path, wf: WorkflowDef[Any], start: int) -> tuple[Observed, int]:
    """The clean run, and how many crash points it passed."""
    F.reset()
    probe = CrashAt(10**9)
    async with Engine(db, faults=probe) as engine:
        engine.register(wf)
        await engine.start(wf, start, run_id=RUN_ID)
        return await _finish(engine), len(probe.trace)


async def crashed_run(
    db: Path, wf: WorkflowDef[Any], start: int, n: int
) -> tuple[Observed, str | None, list[str]]:
    """Crash at boundary `n`, resume on a fresh engine; also the `try` keys left `started`."""
    F.reset()
    return await crash_then_resume(db, wf, start, n, _finish, RUN_ID)


def check_crash(
    ref: Observed, out: Observed, point: str | None, started: list[str], where: str
) -> None:
    """The durability contract, with the `try` rule (see test_try_never_runs_twice)."""
    once = Counter(sid for sid in out.execs if sid.startswith("once"))
    assert all(count == 1 for count in once.values()), f"{where}: a try ran twice: {once}"
    seen: defaultdict[str, set[str]] = defaultdict(set)
    for sid, value in F.NOTED:
        seen[sid].add(value)
    assert all(len(values) == 1 for values in seen.values()), f"{where}: {F.NOTED}"
    if not started:
        check_properties(ref, out, point, where)
        return
    statuses = {key: status for key, status, _ in out.rows}
    assert all(statuses[key] == "failed" for key in started), f"{where}: {out.rows}"
    keys = [key for key, _, _ in out.rows]
    assert len(keys) == len(set(keys)), f"{where}: a key journaled twice: {keys}"
    seqs = [seq for _, status, seq in out.rows if status == "completed"]
    assert seqs == list(range(1, len(seqs) + 1)), f"{where}: seqs {seqs}"
    assert out.status in ("completed", "failed", "compensated"), where


def _unplaced(graph: Any) -> Any:
    """A graph as data without source positions: what it does, not where it was written."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("line", "local_lines")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(graph.model_dump(mode="json"))


def _explain(exc: AssertionError, *programs: str) -> AssertionError:
    shown = "\n".join(f"--- generated program ---\n{p}" for p in programs)
    return AssertionError(f"{exc}\n{shown}")


# ------------------------------------------------------------------------ properties
@SETTINGS
@given(ops=F.programs(), seed=st.integers(0, 2**32 - 1))
def test_generated_flows_check_clean_and_format_to_the_same_graph(
    ops: list[Any], seed: int
) -> None:
    plain = F.render(ops, "flow").text
    noisy = F.render(ops, "flow", random.Random(seed)).text
    path = "generated.flow"
    try:
        assert [d.render() for d in check_source(noisy, path)] == []
        once = format_source(noisy, path)
        assert format_source(once, path) == once, "formatting is not idempotent"
        assert re.sub(r"  # noted$", "", once, flags=re.M) == format_source(plain, path)
        before = load_source(noisy, path)["wf"].graph
        after = load_source(once, path)["wf"].graph
        assert _unplaced(after) == _unplaced(before), "formatting changed the compiled graph"
        if once.count("\n") == noisy.count("\n"):  # no `else: if` became `elif`
            assert after.hash == before.hash, "formatting moved a statement to another line"
    except AssertionError as exc:
        raise _explain(exc, noisy) from None


@SETTINGS
@given(ops=F.programs(), start=st.integers(0, 5), pick=st.integers(0, 10**6))
def test_flow_crash_anywhere_matches_the_clean_run(
    tmp_path: Path, ops: list[Any], start: int, pick: int
) -> None:
    text, wf = load(tmp_path, ops)
    tag = next(_counter)

    async def scenario() -> None:
        ref, total = await reference_run(tmp_path / f"ref{tag}.db", wf, start)
        n = pick % (total + 1)  # n == total: a crash point past the end, so no crash
        out, point, started = await crashed_run(tmp_path / f"crash{tag}.db", wf, start, n)
        event(f"reference {ref.status}; crash at {point}{'; try interrupted' if started else ''}")
        check_crash(ref, out, point, started, f"crash #{n} of {total} at {point}")

    try:
        asyncio.run(scenario())
    except AssertionError as exc:
        raise _explain(exc, text) from None


@SETTINGS
@given(ops=F.programs(), start=st.integers(0, 5))
def test_flow_and_python_twins_agree(tmp_path: Path, ops: list[Any], start: int) -> None:
    text, flow_wf = load(tmp_path, ops)
    twin = F.render(ops, "py")
    assert twin.plan == F.PLAN
    module = import_source(tmp_path, twin.text, "_dotdo_flow_twin")
    tag = next(_counter)

    async def scenario() -> None:
        flow, _ = await reference_run(tmp_path / f"flow{tag}.db", flow_wf, start)
        python, _ = await reference_run(tmp_path / f"py{tag}.db", module.Generated.wf, start)
        event(f"{flow.status}, {len(flow.completed)} keys")
        assert (flow.status, flow.result, flow.error) == (
            python.status,
            python.result,
            python.error,
        )
        assert flow.rows == python.rows, "journals differ"
        assert flow.outbox == python.outbox, "outboxes differ"
        assert flow.execs == python.execs, "step executions differ"
        assert (flow.booked, flow.undone) == (python.booked, python.undone), "compensations"

    try:
        asyncio.run(scenario())
    except AssertionError as exc:
        raise _explain(exc, text, twin.text) from None
    finally:
        sys.modules.pop(module.__name__, None)


# ----------------------------------------------------------------- regression tests
def check_every_crash_point(tmp_path: Path, name: str, text: str, start: int) -> Observed:
    """Crash a fixed .flow program at each of its boundaries; returns the clean run."""
    path = tmp_path / name
    path.write_text(text)
    allow_steps(tmp_path)
    wf = load_flow(path)["wf"]

    async def scenario() -> Observed:
        ref, total = await reference_run(tmp_path / "ref.db", wf, start)
        for n in range(total):
            out, point, started = await crashed_run(tmp_path / f"crash{n}.db", wf, start, n)
            check_crash(ref, out, point, started, f"crash #{n} of {total} at {point}")
        return ref

    return asyncio.run(scenario())


WAIT_AFTER_SLEEP = """\
step book = flow_program_steps:book retries 3 delay 1ms compensate with unbook
step unbook = flow_program_steps:unbook

workflow wf(acc: int) -> int:
    acc = do book("book0", acc)
    send "Gen.acc" {acc: acc}
    for i1 in range(1):
        sleep 1ms
        ev2 = wait for "Gen.acc" timeout 20ms
        if ev2 == null:
            acc = acc + 1
        else:
            acc = acc + ev2.data["acc"] % 5
    return acc
"""


def test_a_wait_that_took_its_event_just_before_a_crash_gets_it_back(tmp_path: Path) -> None:
    """Found by the crash property. Woken from the sleep, the run reaches the wait without a
    checkpoint; the wait takes the run's own event from its inbox (committed at once), and
    the process dies at the next commit. Replaying from the sleep, the wait subscribed again
    and skipped that event as consumed, parked, and its poke claimed the run without driving
    it: the run hung `running` forever. Every crash point must now end like the clean run."""
    F.PLAN.clear()
    F.PLAN["book0"] = ("ok", 0)
    ref = check_every_crash_point(tmp_path, "wait_after_sleep.flow", WAIT_AFTER_SLEEP, 0)
    assert (ref.status, ref.result) == ("completed", 5)


SEND_THEN_WAIT = """\
workflow wf(acc: int) -> int:
    send "Gen.acc" {acc: acc}
    ev = wait for "Gen.acc" timeout 0s
    if ev == null:
        return -1
    return ev.data["acc"]
"""


def test_a_wait_sees_the_event_its_run_sent_just_before(tmp_path: Path) -> None:
    """Found by the differential property as a flaky mismatch (the generated waits had a 20ms
    timeout). The send was still pending when the wait searched the run's inbox, so only the
    dispatcher could deliver it, racing the timeout: the same program gave the event or null
    depending on timing. With the timeout at 0s the race was always lost."""
    ref = check_every_crash_point(tmp_path, "send_then_wait.flow", SEND_THEN_WAIT, 7)
    assert (ref.status, ref.result, ref.outbox) == ("completed", 7, [("Gen.acc", {"acc": 7})])


SEND_THEN_WAIT_IN_VAIN = """\
workflow wf(acc: int) -> int:
    send "Gen.s{acc % 3}"
    ev1 = wait for "Gen.acc" timeout 20ms
    if ev1 == null:
        acc = acc + 1
    else:
        acc = acc + ev1.data["acc"] % 5
    return acc
"""


def test_a_wait_subscribed_but_not_yet_parked_survives_a_crash(tmp_path: Path) -> None:
    """Found by the crash property (soak) after the fix above: the run is stored at the wait
    (its sends written first), subscribes, finds nothing, and dies before the checkpoint that
    hibernates it with its timeout. Recovery took the subscription for a wait without a
    timeout and parked the run for good; it must suspend it again instead."""
    ref = check_every_crash_point(
        tmp_path, "send_then_wait_in_vain.flow", SEND_THEN_WAIT_IN_VAIN, 0
    )
    assert (ref.status, ref.result, ref.outbox) == ("completed", 1, [("Gen.s0", None)])


SEND_THEN_TWO_WAITS = """\
workflow wf(acc: int) -> int:
    send "Gen.acc" {acc: acc}
    ev1 = wait for "Gen.acc" timeout 20ms
    if ev1 == null:
        acc = acc + 1
    else:
        acc = acc + ev1.data["acc"] % 5
    ev2 = wait for "Gen.acc" timeout 20ms
    if ev2 == null:
        acc = acc + 1
    else:
        acc = acc + ev2.data["acc"] % 5
    return acc
"""


def test_an_event_taken_by_one_wait_is_not_delivered_to_the_next(tmp_path: Path) -> None:
    """Found by the crash property (soak). The first wait takes the run's event from its
    inbox; when the dispatcher reached that event later (here: a fresh engine after a crash
    at #1), it handed it to the second wait as well, and the run, woken while its task was
    still ending, was claimed and never driven (it hung `running`)."""
    ref = check_every_crash_point(tmp_path, "send_then_two_waits.flow", SEND_THEN_TWO_WAITS, 0)
    assert (ref.status, ref.result) == ("completed", 1)
