"""Rerunning a run that ended badly, from a step, on the current code.

`engine.retry(run_id, from_step=...)` starts a new run of the same workflow, entity and
input, linked to the original (`runs.retry_of`, and a `retry` line in both runs' history).
The original's completed results before `from_step` (all of them when no step is named: the
run continues where it failed) are copied into the new run's journal as `reused` rows. The
new run walks the *current* graph from its start; each durable operation whose step id has a
reused row gets that row's value back instead of running (a step, a recorded now/uuid/
random, an approval's decision, an event), and a sleep met while reused rows remain is not
slept again. From the first step without a reused row on, it executes normally.

A reused row turns `completed` in the same transaction as the checkpoint after it, so a
crash in between hands the value back again on recovery, never runs the step.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING

from dotdo.compiler.codegen import Frame
from dotdo.engine import serde
from dotdo.engine.driver import ActiveRun
from dotdo.engine.ids import check_id, shown_id
from dotdo.engine.interpreter import Resume, RunState
from dotdo.engine.starts import NewRun, rows_of
from dotdo.engine.state import encode_state
from dotdo.engine.store.interface import FINISHED, RetryToCreate, StoredStep
from dotdo.engine.trust import source_of
from dotdo.engine.workflow import Workflow
from dotdo.errors import DotdoError, RunNotFound

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = ["retry_run", "reused_before"]

RETRYABLE = tuple(s for s in FINISHED if s != "completed")
_LOOP_SUFFIX = re.compile(r"(\[\d+\])+$")


def reused_before(run_id: str, rows: list[StoredStep], from_step: str | None) -> list[StoredStep]:
    """The journal rows a retry reuses: completed results (not undos) recorded before
    `from_step`, or all of them. Raises DotdoError naming the run's steps when the step is
    not in its journal. `from_step` is a step id (`charge`, reusing nothing from its first
    iteration on) or a qualified key (`charge[2]`)."""
    done = [
        r
        for r in rows
        if r.status == "completed" and r.seq is not None
        if not r.key.startswith("compensate:")
    ]
    if from_step is None:
        return done
    matches = [r for r in rows if r.key == from_step] or [
        r for r in rows if _LOOP_SUFFIX.sub("", r.key) == from_step
    ]
    if not matches:
        known = sorted({_LOOP_SUFFIX.sub("", r.key) for r in rows})
        steps = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") or "none"
        raise DotdoError(
            f"run {shown_id(run_id)} has no step {shown_id(from_step)} (its steps: {steps})"
        )
    seqs = [r.seq for r in matches if r.seq is not None]
    if not seqs:  # it never completed (it failed, or was in flight): reuse all before it
        return done
    first = min(seqs)
    return [r for r in done if r.seq is not None and r.seq < first]


async def retry_run(
    engine: Shell, run_id: str, *, from_step: str | None = None, new_run_id: str | None = None
) -> tuple[str, Workflow]:
    """Start the retry of `run_id` (see the module docstring); returns its id and workflow."""
    row = await engine.store.load_run(run_id)
    if row is None:
        raise RunNotFound(f"no run with id {shown_id(run_id)}")
    if row.status not in RETRYABLE:
        what = "still " + row.status if row.status in ("running", "waiting") else "completed"
        raise DotdoError(
            f"run {shown_id(run_id)} is {what}: only a failed, compensated or cancelled run "
            "can be retried"
        )
    if from_step is not None and (not isinstance(from_step, str) or not from_step):
        raise DotdoError("from_step must be a step id such as 'charge'")
    wf = engine.workflow(row.workflow)
    reuse = reused_before(run_id, await engine.store.journal(run_id), from_step)
    new_id = check_id(new_run_id if new_run_id is not None else _retry_id(run_id), "run id")
    inputs = serde.loads(row.input)
    if not isinstance(inputs, dict):
        raise DotdoError(f"run {shown_id(run_id)} has no stored input to retry with")
    graph = wf.graph
    state = RunState(node=graph.start, frame=Frame(inputs))
    new = NewRun(
        run_id=new_id,
        workflow=wf.qualname,
        entity_id=row.entity_id,
        entity_given=True,
        graph=graph,
        graph_body=graph.to_json(),
        source=source_of(wf),
        node=graph.start,
        state=encode_state(state, graph),
        input=row.input,
        lease_until=time.time() + engine.lease_seconds,
        now=engine.clock.now(),
        secret=engine._secret,
        sign=engine._secret is not None,
    )
    note = {"retry_of": run_id, "retry": new_id, "from_step": from_step, "reused": len(reuse)}
    retry = RetryToCreate(rows_of(new), run_id, tuple(reuse), json.dumps(note, sort_keys=True))
    outcome = await engine.store.create_retry(retry)
    if outcome.lease is None:
        raise DotdoError(f"run {shown_id(new_id)} already exists: choose another run id")
    engine.telemetry.run_started(new_id, wf.qualname)
    instance = engine._instance(wf, new.entity_id, new_id)
    run = ActiveRun(new_id, wf, wf.program(), state, instance, 0, outcome.lease)
    run.reuse = {r.key: r.value for r in reuse}
    engine.driver.spawn(run, Resume())
    return new_id, wf


def _retry_id(run_id: str) -> str:
    suffix = f"~retry-{uuid.uuid4().hex[:8]}"
    return run_id[: 200 - len(suffix)] + suffix
