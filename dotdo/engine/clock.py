"""Time as the engine sees it: a real clock, or a virtual one tests can jump forward.

The engine never reads `time.time()` directly for workflow time (timers, retry backoff,
recorded `now()`); it asks its clock, so a 7-day deadline can pass in a test instantly.
Leases use real time regardless: they guard against real processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "SystemClock", "VirtualClock"]


class Clock:
    """Interface: `now()` in epoch seconds; `subscribe` is told when time jumps."""

    def now(self) -> float:
        raise NotImplementedError

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Real time needs no notification; a virtual clock calls back on every jump."""

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        """Undo `subscribe`."""

    def wall(self) -> bool:
        """True when `now()` follows real time, so sleeping for the gap is meaningful."""
        return True


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()


class VirtualClock(Clock):
    """A clock that moves only when told to: `advance(timedelta(days=7))`."""

    def __init__(self, start: datetime | float | None = None) -> None:
        if start is None:
            start = datetime(2030, 1, 1, tzinfo=UTC)
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> bool:
        return False

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def advance(self, delta: timedelta | float) -> None:
        """Move time forward; engines on this clock fire whatever timers fell due."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("a virtual clock only moves forward")
        self._now += seconds
        for callback in list(self._listeners):
            callback()

    def set(self, when: datetime) -> None:
        self.advance(max(when.timestamp() - self._now, 0.0))

    async def run_for(self, delta: timedelta | float, *, step: float = 1.0) -> None:
        """Advance in `step`-second hops, yielding so woken runs make progress between hops."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        while seconds > 0:
            hop = min(step, seconds)
            self.advance(hop)
            seconds -= hop
            for _ in range(20):
                await asyncio.sleep(0)
            await asyncio.sleep(0.005)  # let engines' database threads answer between hops
