"""Worker for tests/test_real_kills.py: drive runs run-0000.. on DB until all have finished.

Usage: python kill_worker.py DB LOG FLOW RUNS LEASE_SECONDS WAVE [--barrier]

FLOW is a key of kill_flows.FLOWS. The worker registers the flow before opening the engine,
so opening recovers the runs a killed predecessor left; then it starts every run id in
waves (start is idempotent: an existing run is handed back, not started again) and waits
until every run in the database has finished, whoever drove it. It prints `recovering`
before opening, `open` once recovery is done, `started`, and `finished`, so the test can
time its kills. With --barrier it waits for a line on stdin after `open`, so two workers
start the same runs at the same moment. WAVE runs are started together (one transaction),
then the worker pauses 30 ms.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kill_flows

from dotdo import Engine

FINISHED = "('completed', 'failed', 'compensated', 'cancelled')"


def say(word: str) -> None:
    print(word, flush=True)


async def main(
    db: str, log: str, flow: str, runs: int, lease: float, wave: int, barrier: bool
) -> None:
    kill_flows.LOG = log
    cls, wf = kill_flows.FLOWS[flow]
    engine = Engine(db, lease_seconds=lease)
    engine.register(cls)
    say("recovering")
    async with engine:
        say("open")
        if barrier:
            await asyncio.to_thread(sys.stdin.readline)
        for first in range(0, runs, wave):
            seeds = range(first, min(first + wave, runs))
            await asyncio.gather(*(engine.start(wf, i, run_id=kill_flows.run_id(i)) for i in seeds))
            await asyncio.sleep(0.03)
        say("started")
        while True:
            row = await engine.store.fetch_one(
                f"SELECT COUNT(*) AS n FROM runs WHERE status IN {FINISHED}"
            )
            if row is not None and row["n"] >= runs:
                break
            await asyncio.sleep(0.05)
    say("finished")


if __name__ == "__main__":
    db, log, flow, runs, lease, wave = sys.argv[1:7]
    barrier = "--barrier" in sys.argv[7:]
    asyncio.run(main(db, log, flow, int(runs), float(lease), int(wave), barrier))
