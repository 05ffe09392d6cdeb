"""Handing a retried run the results it reuses instead of running their steps again.

The driver asks `replay` before it performs a command of a run that still holds reused
journal rows (see dotdo.engine.retry); a run without any never gets here.
"""

from __future__ import annotations

from typing import Any, Protocol

from dotdo.compiler.codegen import Program
from dotdo.compiler.ir import SleepNode
from dotdo.engine import serde
from dotdo.engine.interpreter import (
    Call,
    Command,
    Event,
    Record,
    Recorded,
    Resolved,
    StepOk,
    Suspend,
    TimerFired,
    Transition,
    Wait,
    advance,
)
from dotdo.engine.store.interface import JournalRow

__all__ = ["replay"]


class Replaying(Protocol):
    """What `replay` needs of a run being driven (dotdo.engine.driver.ActiveRun)."""

    reuse: dict[str, str | None]
    program: Program
    instance: Any
    steps_done: int


def replay(
    run: Replaying, t: Transition, now: float, budget: int
) -> tuple[Transition, list[JournalRow]] | None:
    """The run's next transition when `t.command` is answered by a reused result (a retry),
    with the journal row that records it; None when the command must really be performed.
    A sleep met while reused results remain is not slept again."""
    command: Command = t.command
    answer: Event
    rows: list[JournalRow] = []
    if isinstance(command, Wait):
        if not isinstance(run.program.graph.nodes.get(t.state.node), SleepNode):
            return None
        answer = TimerFired()
    elif not isinstance(command, Call | Record | Suspend) or command.key not in run.reuse:
        return None
    elif isinstance(command, Call) and command.undo:
        return None
    else:
        text = run.reuse.pop(command.key)
        value: Any = serde.loads(text) if text is not None else None
        run.steps_done += 1
        rows.append(
            JournalRow(command.key, "completed", 1, value=text, seq=run.steps_done, finished_at=now)
        )
        answer = (
            StepOk(value)
            if isinstance(command, Call)
            else Recorded(value)
            if isinstance(command, Record)
            else Resolved(value)
        )
    return advance(run.program, run.instance, t.state, answer, now, budget), rows
