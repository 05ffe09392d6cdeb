"""Testing support: a virtual clock and crash injection at durable boundaries.

`CrashAt` is the documented fault-injection hook. Give it to `Engine(faults=...)`; at the
chosen boundary it raises `SimulatedCrash`, which stops that engine as if its process had
been killed (nothing further is committed). A fresh Engine on the same file then resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dotdo.engine.clock import VirtualClock
from dotdo.testing.answers import Approve, Expire, Reject, Send, Waiting

__all__ = [
    "BOUNDARIES",
    "Approve",
    "CrashAt",
    "CrashReport",
    "CrashSafetyError",
    "Expire",
    "Reject",
    "Send",
    "SimulatedCrash",
    "VirtualClock",
    "Waiting",
    "assert_crash_safe",
]

BOUNDARIES = ("before_step", "after_step", "before_commit", "after_commit")
"""Where the engine calls its fault hook: around each step's execution, around each commit."""


class SimulatedCrash(BaseException):
    """Raised by a fault hook to kill an engine; a BaseException so user code cannot catch it."""


@dataclass
class CrashAt:
    """Crash at the `nth` (0-based) time any of `points` is reached, optionally for one run.

    `CrashAt(n)` with the default points counts every boundary, so iterating n from 0 until
    `fired` stays False enumerates every crash point of a workflow.
    """

    nth: int
    points: tuple[str, ...] = BOUNDARIES
    run_id: str | None = None
    seen: int = 0
    fired: bool = False
    trace: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, point: str, run_id: str) -> None:
        if point not in self.points or (self.run_id is not None and run_id != self.run_id):
            return
        self.trace.append((point, run_id))
        if not self.fired and self.seen == self.nth:
            self.fired = True
            self.seen += 1
            raise SimulatedCrash(f"simulated crash #{self.nth} at {point} of run {run_id}")
        self.seen += 1


from dotdo.testing.crashcheck import (  # noqa: E402  (crashcheck needs the names above)
    CrashReport,
    CrashSafetyError,
    assert_crash_safe,
)
