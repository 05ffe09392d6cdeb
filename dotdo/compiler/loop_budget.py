"""How much pure code a run may execute between two durable operations.

Code between durable operations runs inside one call of the interpreter, holding the event
loop. A `.flow` loop with no durable step in it (`while true:`) would spin there forever,
so each call gets a budget: the interpreter counts the graph nodes it walks (loops with a
durable step somewhere inside are back edges through choice nodes), and the plain loops a
`.flow` compiles into Python source call `tick` once per iteration. Whichever runs out
first stops the run with `LoopBudgetExceeded`, naming the loop's line.

The tick counter lives in a thread-local slot that the interpreter arms at the start of each
transition: a transition never awaits, so nothing else runs on that thread meanwhile.
"""

from __future__ import annotations

import threading

__all__ = ["DEFAULT_LOOP_BUDGET", "OutOfBudget", "arm", "limit", "tick"]

DEFAULT_LOOP_BUDGET = 1_000_000
"""Loop iterations (or graph nodes walked) allowed between two durable operations."""


class OutOfBudget(BaseException):
    """Raised by `tick` inside node code. A BaseException, so that a flow's own `except`
    clauses (which catch `Exception`) cannot swallow it; the interpreter turns it into the
    run's `LoopBudgetExceeded` failure."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Slot(threading.local):
    left: int = DEFAULT_LOOP_BUDGET
    limit: int = DEFAULT_LOOP_BUDGET
    line: int = 0
    """The loop that spent the budget: a `finally` loop ticking after it is not the cause."""


_slot = _Slot()


def arm(budget: int) -> None:
    """Start a transition with `budget` iterations for plain loops (and as many node visits)."""
    _slot.left = budget
    _slot.limit = budget


def limit() -> int:
    """The budget the current transition was armed with."""
    return _slot.limit


def tick(line: int) -> None:
    """One iteration of the plain loop at `line`; raise once the budget is spent."""
    left = _slot.left - 1
    _slot.left = left
    if left < 0:
        if left == -1:
            _slot.line = line
        raise OutOfBudget(_slot.line)
