"""The workflow the SIGKILL test runs in a worker process and then recovers in another.

Each step appends one line, `run_id step_id attempt pid`, to a shared log file opened with
O_APPEND (one small write() per line, so a kill never leaves half a line), then sleeps a
little so that steps are in flight when the process dies.
"""

from __future__ import annotations

import asyncio
import os

from dotdo import DO, current_step, workflow

STEPS = 10


def expected(seed: int) -> int:
    return seed + sum(range(STEPS))


class Counter(DO):
    async def bump(self, log: str, seed: int, i: int) -> int:
        ctx = current_step()
        line = f"{ctx.run_id} {ctx.step_id} {ctx.attempt} {os.getpid()}\n".encode()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        # Runs differ in pace so that they finish at different times.
        await asyncio.sleep(0.002 + 0.003 * (seed % 10))
        return i

    @workflow
    async def count(self, log: str, seed: int) -> int:
        total = seed
        for i in range(10):
            value = await self.do(self.bump, log, seed, i)
            total = total + value
        return total
