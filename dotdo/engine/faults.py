"""Store faults: a write that fails is retried; it never strands a run.

A write can fail while the process lives on: the disk is full (SQLITE_FULL, ENOSPC), an I/O
error (SQLITE_IOERR), the database stayed locked past busy_timeout. The failed transaction
stored nothing, so each run it touched is treated as if its process had died at that point,
without dying: after a backoff the run is driven again from its last committed checkpoint by
the same engine (a `do` step in flight may run again, a `try_` in flight ends
StepInterrupted, exactly as after a crash). Until then the run's retry task holds its place,
so the lease this engine keeps renewing belongs to a run it does advance; the timer loop's
orphan scan also resumes any run this engine holds that nothing advances (a path that lost
track of one).

The store logs when its writes start failing and when they work again, so an outage costs
two log lines, not a traceback per tick. A simulated crash (`dotdo.testing.SimulatedCrash`,
a BaseException) is not a fault: it still stops the engine as a process death would. These
mechanics live here, not in the driver or the engine, because they cut across both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from dotdo.engine.store.errors import is_backend_fault
from dotdo.engine.store.interface import Store
from dotdo.errors import StoreWriteError

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = ["FAULT_FIRST", "FAULT_MAX", "Outage", "Retries", "is_store_fault", "retry_delay"]

log = logging.getLogger("dotdo.engine")

T = TypeVar("T")

FAULT_FIRST = 0.05
"""Seconds before the first retry after a store fault; doubles with each further fault..."""
FAULT_MAX = 2.0
"""...up to this, so a run goes on within about two seconds of the store working again."""
ERROR_FIRST = 1.0
ERROR_MAX = 60.0
"""The same for an unexpected engine error (a bug): slower, as a retry may not help."""


def is_store_fault(error: BaseException) -> bool:
    """True for a failure of the database that may go away: a full disk, an I/O error, a lock
    held too long. Not for SQL mistakes, constraint violations or a simulated crash."""
    if isinstance(error, StoreWriteError):
        cause = error.__cause__
        return cause is None or is_store_fault(cause)
    return is_backend_fault(error) or isinstance(error, OSError)


def retry_delay(attempt: int, *, fault: bool) -> float:
    """The wait before retry number `attempt` (0-based): exponential, capped."""
    first, cap = (FAULT_FIRST, FAULT_MAX) if fault else (ERROR_FIRST, ERROR_MAX)
    return float(min(cap, first * 2 ** min(attempt, 16)))


class Outage:
    """A background loop's view of failures: how long to back off, and one log line when
    its store writes start failing and one when they work again, not one per try. (With
    `announce` unset the loop stays quiet about store faults: the store logs them.)"""

    def __init__(self, what: str, *, announce: str | None = None) -> None:
        self.what = what
        self.announce = announce
        self.since: float | None = None
        self.faults = 0

    def failed(self, error: Exception) -> float:
        """Note a failure (call it in the `except` block); returns the seconds to wait."""
        if not is_store_fault(error):
            log.exception("%s failed: will retry", self.what)
            return 0.0
        if self.since is None:
            self.since = time.monotonic()
            if self.announce:
                log.warning("%s failed (%s); %s", self.what, error, self.announce)
        self.faults += 1
        return retry_delay(self.faults - 1, fault=True)

    def over(self) -> None:
        """Note a success."""
        if self.since is not None and self.announce:
            log.warning("%s works again after %.1fs", self.what, time.monotonic() - self.since)
        self.since, self.faults = None, 0


class Retries:
    """The part of the engine that retries: a run after a failure (from its last checkpoint,
    after a backoff), an idempotent write until it commits, lease release at close."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def _stopped(self) -> bool:
        return self.shell._closing or self.shell._crashed is not None or self.shell._store is None

    def retry_later(self, run_id: str, error: Exception) -> None:
        """Drive `run_id` again from its last committed checkpoint after a backoff."""
        if self._stopped() or run_id in self.shell._active:
            return
        fault = is_store_fault(error)
        attempt = self.shell._faulted.get(run_id, 0)
        self.shell._faulted[run_id] = attempt + 1
        delay = retry_delay(attempt, fault=fault)
        task = asyncio.create_task(
            self._redrive(run_id, delay, fault), name=f"dotdo-retry-{run_id}"
        )
        self.shell._active[run_id] = task  # claims skip it, wake-ups queue behind it
        self.shell._retrying.add(task)
        task.add_done_callback(self.shell._retrying.discard)

    async def _redrive(self, run_id: str, delay: float, fault: bool) -> None:
        try:
            await self._backoff(delay, fault=fault)
        finally:
            if self.shell._active.get(run_id) is asyncio.current_task():
                del self.shell._active[run_id]
        if self._stopped():
            return
        self.shell._resume_after.discard(run_id)  # the reload below sees whatever woke it
        try:
            await self.shell._resume(run_id)
        except Exception as exc:  # _resume handles store faults itself: this is a bug
            log.exception("cannot resume run %s; retrying", run_id)
            self.retry_later(run_id, exc)
        except BaseException as crash:
            if isinstance(crash, asyncio.CancelledError):
                raise
            await self.shell._crash(crash)

    async def _backoff(self, delay: float, *, fault: bool) -> None:
        """Wait `delay` seconds; after a store fault, only until a write succeeds again."""
        store = self.shell._store
        if not fault or store is None or store.health.writable.is_set():
            await asyncio.sleep(delay)
            return
        try:
            async with asyncio.timeout(delay):
                await store.health.writable.wait()
        except TimeoutError:
            pass

    async def persist(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run an idempotent write until it commits, backing off after each store fault.
        Other errors, and a fault while the engine is closing, go to the caller."""
        attempt = 0
        while True:
            try:
                return await write()
            except Exception as exc:
                if not is_store_fault(exc) or self._stopped():
                    raise
            await self._backoff(retry_delay(attempt, fault=True), fault=True)
            attempt += 1

    async def release_leases(self, store: Store) -> None:
        """Hand every lease back at close; a failing store gets a few seconds of retries.
        Leases not released expire after lease_seconds (at once for another process on this
        host, which sees this one gone)."""
        deadline = time.monotonic() + min(self.shell.shutdown_grace, 5.0)
        attempt = 0
        while True:
            try:
                await store.release_leases()
                return
            except Exception as exc:
                if not is_store_fault(exc) or time.monotonic() >= deadline:
                    log.warning("could not release this engine's leases at close: %s", exc)
                    return
            await asyncio.sleep(retry_delay(attempt, fault=True))
            attempt += 1

    async def resume_stranded(self, idle_before: set[str]) -> set[str]:
        """Resume the runs this engine holds the lease of but advances nowhere, if they were
        so at the previous sweep too (a run is briefly so between its claim and its task).
        Returns this sweep's idle runs, for the next. Never raises (the timer loop calls it)."""
        try:
            assert self.shell._store is not None
            idle = (
                set(await self.shell._store.held_runs())
                - set(self.shell._active)
                - self.shell._loading
            )
            for run_id in sorted(idle & idle_before):
                if not self._stopped() and run_id not in self.shell._active:
                    log.warning("run %s was held here but nothing advanced it: resuming", run_id)
                    await self.shell._resume(run_id)
        except Exception as exc:
            if not is_store_fault(exc):
                log.exception("looking for runs held here but not advanced failed")
            return set()
        return idle
