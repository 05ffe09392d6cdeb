"""Whether a store's writes work, and the log of its outages.

The store's writer task sees every transaction succeed or fail, so it is the one place that
can tell when writes start failing and when they work again. An outage is logged in two
lines (one when it starts, one once writes have worked for `SETTLE` seconds), whatever the
number of failed transactions, retries and flaps in between; retries waiting for the store
are woken at the first success (`writable`). A module of its own so the store, which is
already long, only calls it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from dotdo.errors import StoreWriteError

__all__ = ["SETTLE", "WriteHealth"]

log = logging.getLogger("dotdo.engine.store.sqlite")

SETTLE = 1.0
"""Seconds writes must work, with no failure, before an outage is logged as over."""


class WriteHealth:
    """One store's view of its writes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.failures = 0
        """Transactions that failed (and stored nothing) since the store opened."""
        self.writable = asyncio.Event()
        """Set while writes work; cleared by a failed transaction until one commits."""
        self.writable.set()
        self.since: float | None = None
        """When the current outage began (None: writes work)."""
        self._last = 0.0
        self._before = 0
        self._settle: asyncio.TimerHandle | None = None

    def failed(self, exc: Exception) -> StoreWriteError:
        """Note a failed transaction; returns the error its writers get."""
        self.failures += 1
        self._last = time.monotonic()
        self.writable.clear()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            error = StoreWriteError(f"{self.path} is locked by another process: {exc}")
        else:
            error = StoreWriteError(f"{self.path}: a write failed ({type(exc).__name__}: {exc})")
        error.__cause__ = exc
        if self.since is None:
            self.since, self._before = self._last, self.failures - 1
            log.warning("%s; writes will be retried until the store works again", error)
        return error

    def succeeded(self) -> None:
        """Note a commit during an outage (the writer calls this only then)."""
        self.writable.set()
        if self._settle is None:
            self._settle = asyncio.get_running_loop().call_later(SETTLE, self._settled)

    def _settled(self) -> None:
        self._settle = None
        if self.since is not None and time.monotonic() - self._last >= SETTLE * 0.99:
            self._over()
        # else: a failure came since; the next success looks again

    def _over(self) -> None:
        assert self.since is not None
        log.warning(
            "%s: writes succeed again after %.1fs (%d failed transactions)",
            self.path,
            self._last - self.since,
            self.failures - self._before,
        )
        self.since = None

    def hook_failed(self) -> None:
        log.exception("the fault hook failed after a commit; the commit stands")

    def close(self) -> None:
        """The store closes: end the log of an outage its last write had ended."""
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        if self.since is not None and self.writable.is_set():
            self._over()
