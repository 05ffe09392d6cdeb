"""Worker for tests/test_sigkill.py: start RUNS workflows on DB and drive them until killed.

Usage: python sigkill_worker.py DB LOG RUNS
Runs are started in waves (so they finish at different times) with ids run-000, run-001, ...
and seed = their index. The test SIGKILLs this process part-way through.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sigkill_flows import Counter

from dotdo import Engine


async def main(db: str, log: str, runs: int) -> None:
    async with Engine(db) as engine:
        engine.register(Counter)
        handles = []
        for wave in range(0, runs, 10):
            handles += await asyncio.gather(
                *(
                    engine.start(Counter.count, log, i, run_id=f"run-{i:03d}")
                    for i in range(wave, min(wave + 10, runs))
                )
            )
            await asyncio.sleep(0.02)
        print("started", flush=True)
        for handle in handles:
            await handle.result()
        print("finished", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
