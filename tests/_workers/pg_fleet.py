"""Worker process for tests/test_pg_workers.py: one `Engine` on a shared PostgreSQL schema.

Usage: python pg_fleet.py URL NAME LEASE_SECONDS DONE_WHEN

NAME becomes this worker's host id (DOTDO_HOST_ID, set by the test), so no worker can see
another's death by its pid: only lease expiry hands a run over, as between machines. The
worker drives whatever runs it claims until DONE_WHEN runs have completed (any worker's),
counted on a side connection, then prints `lost=N`: how many of its runs it found owned by
another worker when it tried to write (fenced out).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime

import asyncpg
from pydantic import BaseModel

from dotdo import DO, Engine, step, workflow


class CounterState(BaseModel):
    n: int = 0


class Counter(DO):
    State = CounterState

    async def increment(self) -> int:
        n = self.state.n
        await asyncio.sleep(0.001)  # a lost update would show if two calls interleaved here
        self.state.n = n + 1
        return self.state.n


class Fleet(DO):
    @step
    async def work(self, i: int) -> int:
        await asyncio.sleep(0.02)
        return i

    @step
    async def whoami(self) -> str:
        return os.environ.get("DOTDO_HOST_ID", "?")

    @workflow
    async def job(self, at: float) -> str:
        await self.sleep_until(datetime.fromtimestamp(at, UTC))
        for i in range(3):
            await self.work(i)
        who = await self.whoami()
        self.send("fleet.done", {"run": self.run_id, "by": who})
        return who

    @workflow
    async def bump(self, at: float, key: str, times: int) -> int:
        await self.sleep_until(datetime.fromtimestamp(at, UTC))
        last = 0
        for _ in range(times):
            last = await self.Counter(key).increment()
        return last


class _Lost(logging.Handler):
    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "owned by another process" in record.getMessage():
            _Lost.count += 1


async def main(url: str, lease: float, done_when: int) -> None:
    logging.getLogger("dotdo").addHandler(_Lost())
    logging.getLogger("dotdo").setLevel(logging.INFO)
    side = await asyncpg.connect(url)
    async with Engine(url, lease_seconds=lease).register(Fleet, Counter):
        print("open", flush=True)
        while True:
            done = await side.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'")
            if done >= done_when:
                break
            await asyncio.sleep(0.1)
    await side.close()
    print(f"lost={_Lost.count}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[3]), int(sys.argv[4])))
