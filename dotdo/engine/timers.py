"""The engine's background work: the timer loop and lease renewal.

The timer loop wakes due runs, adopts orphaned ones (a dead owner's, or an expired lease's),
resumes runs held here that nothing advances, delivers events and fires schedules; it never
dies of one bad run or a busy database (it logs and tries again on the next tick). Lease
renewal keeps this engine's leases alive while it advances their runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from dotdo.engine.faults import Outage
from dotdo.engine.store.interface import ClaimRequest, Lease

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = ["Timers"]


class Timers:
    """The part of the engine that runs in the background while it is open."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    async def claim_orphans(self) -> list[Lease]:
        return await self.shell.store.claim_runs(
            ClaimRequest(
                ttl=self.shell.lease_seconds,
                workflows=tuple(self.shell._workflows),
                status="running",
                skip=frozenset(self.shell._active),
            )
        )

    async def claim_due(self) -> list[Lease]:
        return await self.shell.store.claim_runs(
            ClaimRequest(
                ttl=self.shell.lease_seconds,
                workflows=tuple(self.shell._workflows),
                status="waiting",
                due_before=self.shell.clock.now(),
            )
        )

    async def timer_loop(self) -> None:
        """Wake due runs, adopt orphans, deliver events, fire schedules; never dies of one
        bad run or a busy database (it logs and tries again on the next tick)."""
        last_scan = 0.0
        idle: set[str] = set()
        outage = Outage("timer loop")
        while not self.shell._closing:
            self.shell._kick.clear()
            # Never sleep past the next orphan scan: a dead worker's runs must move when its
            # leases expire, not when the (slow, feed-backed) idle poll comes round.
            scan_in = last_scan + self.shell.lease_seconds / 2 - time.monotonic()
            delay = min(self.shell.idle_poll(), max(scan_in, 0.0))
            try:
                if time.monotonic() - last_scan >= self.shell.lease_seconds / 2:
                    last_scan = time.monotonic()
                    for lease in await self.claim_orphans():
                        await self.shell._resume(lease.run_id)
                    idle = await self.shell.retries.resume_stranded(
                        idle
                    )  # and runs held here, idle
                if await self.anything_due():
                    for lease in await self.claim_due():
                        await self.shell._resume(lease.run_id)
                await self.shell.waits.dispatch()
                upcoming = await self.shell.waits.fire_schedules()
                if self.shell.clock.wall():
                    wake = await self.shell.store.next_wake()
                    soonest = [t for t in (upcoming, wake) if t is not None]
                    if soonest:
                        delay = min(delay, max(min(soonest) - self.shell.clock.now(), 0.0))
                outage.over()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = max(delay, outage.failed(exc))
            except BaseException as crash:  # a simulated process death hit this loop's write
                await self.shell._crash(crash)
                return
            if self.shell._closing:
                return
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives together with a kick, and close() would wait on this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.001)):
                    await self.shell._kick.wait()

    async def anything_due(self) -> bool:
        """A read first, so an idle engine polls without opening write transactions."""
        return await self.shell.store.any_due(self.shell.clock.now())

    async def lease_loop(self) -> None:
        """Renew this engine's leases; a failed renewal (a busy database, a full disk) is
        retried on the next tick, logged once. Were this loop to end, the leases would expire
        while their runs are still being advanced here, and another process would take them
        over."""
        outage = Outage("lease renewal", announce=f"leases expire in {self.shell.lease_seconds}s")
        while True:
            await asyncio.sleep(self.shell.lease_seconds / 3)
            try:
                cancelled = await self.shell.store.renew_leases(self.shell.lease_seconds)
            except Exception as exc:
                outage.failed(exc)
                continue
            outage.over()
            for run_id in cancelled:
                if run_id in self.shell._runs:
                    self.shell._runs[run_id].cancel = True
