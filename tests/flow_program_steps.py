"""The step functions that generated `.flow` programs bind, and what they record.

`tests/_flow_programs.py` generates the programs; their steps live here because a `.flow`
file may only bind a public module (no segment starting with `_`), and only functions that
module defines itself. Everything is re-exported by `_flow_programs`.
"""

from __future__ import annotations

from dotdo import PermanentError, current_step

EXEC: list[str] = []
"""Every execution of a step body (work, book, once), by call id (site plus iterations)."""
BOOKED: list[tuple[str, int]] = []
"""Compensable steps whose body succeeded, in order, with the value their undo receives."""
UNDONE: list[int] = []
"""Undo executions, in order, by the value they received."""
NOTED: list[tuple[str, str]] = []
"""Recorded values (now/uuid/random) as the `note` step saw them, by call id."""
PLAN: dict[str, tuple[str, int]] = {}
"""Outcome of each call site: ("ok", 0), ("flaky", k) (fail the first k attempts) or
("fail", 0) (fail for good at once)."""


def reset() -> None:
    for effects in (EXEC, BOOKED, UNDONE, NOTED):
        effects.clear()


def _act(sid: str) -> int:
    EXEC.append(sid)
    kind, k = PLAN[sid.split("-")[0]]
    if kind == "fail":
        raise PermanentError("failed " + sid)
    if kind == "flaky" and current_step().attempt <= k:
        raise ConnectionError("transient " + sid)
    return len(sid)


def work(sid: str, acc: int) -> int:
    return acc + _act(sid)


async def book(sid: str, acc: int) -> int:
    value = acc + _act(sid)
    BOOKED.append((sid, value))
    return value


def unbook(value: int) -> None:
    UNDONE.append(value)


async def once(sid: str, acc: int) -> int:
    return acc + _act(sid)


def note(sid: str, value: str) -> None:
    NOTED.append((sid, value))
