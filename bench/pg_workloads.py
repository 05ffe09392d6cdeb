"""The workflows bench/pg_bench.py runs, and its worker processes.

    python bench/pg_workloads.py throughput --url URL --runs 200 --steps 10
    python bench/pg_workloads.py dbos --url URL --runs 200 --steps 10
    python bench/pg_workloads.py produce --url URL --runs 2000 --steps 10 --at T
    python bench/pg_workloads.py work --url URL --until-done N
    python bench/pg_workloads.py listen --url URL --trials N
    python bench/pg_workloads.py decide --url URL --trials N

Each prints one JSON line on stdout (the orchestrator parses the last line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from datetime import UTC, datetime
from typing import Any

from dotdo import DO, Engine, step, workflow


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


class Bench(DO):
    @step
    async def noop(self, i: int) -> int:
        return i

    @step
    async def stamp(self) -> float:
        return time.time()

    @workflow
    async def chain(self, n: int) -> int:
        for i in range(n):
            await self.noop(i)
        return n

    @workflow
    async def gated(self, at: float, n: int) -> str:
        await self.sleep_until(datetime.fromtimestamp(at, UTC))
        for i in range(n):
            await self.noop(i)
        return os.environ.get("DOTDO_BENCH_WORKER", "?")

    @workflow
    async def answer(self, key: str) -> float:
        await self.wait_for_event("bench.go", match={"key": key})
        return await self.stamp()


# ---------------------------------------------------------------------- dotdo on PG
async def throughput(url: str, runs: int, steps: int) -> dict[str, Any]:
    async with Engine(url) as engine:
        engine.register(Bench)
        b0, c0 = engine.store.batches, engine.store.committed
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        handles = await asyncio.gather(
            *(engine.start(Bench.chain, steps, entity_id=f"t{i}") for i in range(runs))
        )
        results = await asyncio.gather(*(h.result() for h in handles))
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        assert results == [steps] * runs
        batches = engine.store.batches - b0
        committed = engine.store.committed - c0
    return {
        "wall": wall,
        "cpu": cpu,
        "steps": runs * steps,
        "batches": batches,
        "checkpoints": committed,
    }


# ------------------------------------------------------------------------ DBOS on PG
def dbos_throughput(url: str, runs: int, steps: int) -> dict[str, Any]:
    from dbos import DBOS, DBOSConfig

    @DBOS.step()
    async def noop(i: int) -> int:
        return i

    @DBOS.workflow()
    async def chain(n: int) -> int:
        for i in range(n):
            await noop(i)
        return n

    config: DBOSConfig = {
        "name": "dotdo-pg-bench",
        "system_database_url": url,
        "application_version": "dotdo-pg-bench",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()

    async def go() -> tuple[float, float]:
        await DBOS.start_workflow_async(chain, 1)  # warm-up: pools, prepared paths
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        handles = await asyncio.gather(
            *(DBOS.start_workflow_async(chain, steps) for _ in range(runs))
        )
        results = await asyncio.gather(*(h.get_result() for h in handles))
        assert results == [steps] * runs
        return time.perf_counter() - t0, cpu_seconds() - cpu0

    try:
        wall, cpu = asyncio.run(go())
    finally:
        DBOS.destroy()
    return {"wall": wall, "cpu": cpu, "steps": runs * steps}


# ------------------------------------------------------------------ many workers
async def produce(url: str, runs: int, steps: int, at: float) -> dict[str, Any]:
    """Start `runs` gated runs that all hibernate until `at`, then leave."""
    async with Engine(url) as engine:
        engine.register(Bench)
        await asyncio.gather(
            *(engine.start(Bench.gated, at, steps, run_id=f"g{i:05}") for i in range(runs))
        )
    return {"runs": runs}


async def _count_done(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'"))
    finally:
        await conn.close()


async def work(url: str, until_done: int) -> dict[str, Any]:
    """Drive runs until `until_done` runs have completed (by any worker); the count is
    watched on a side connection, so the watching costs this engine nothing."""
    import asyncpg

    me = os.environ.get("DOTDO_BENCH_WORKER", "?")
    cpu0 = cpu_seconds()
    async with Engine(url) as engine:
        engine.register(Bench)
        emit({"open": True})
        while await _count_done(url) < until_done:
            await asyncio.sleep(0.1)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT result::text AS result, updated_at FROM runs WHERE status = 'completed'"
        )
    finally:
        await conn.close()
    mine = sum(1 for r in rows if json.loads(r["result"]) == me)
    last = max(r["updated_at"] for r in rows)
    return {"worker": me, "mine": mine, "last": last, "cpu": cpu_seconds() - cpu0}


# ---------------------------------------------------------------- cross-process latency
async def listen(url: str, trials: int) -> dict[str, Any]:
    """Start `trials` runs that wait for an event, then keep driving them."""
    async with Engine(url) as engine:
        engine.register(Bench)
        for i in range(trials):
            await engine.start(Bench.answer, f"k{i}", run_id=f"answer-{i}")
        emit({"ready": True})
        while await _count_done(url) < trials:
            await asyncio.sleep(0.5)
    return {"done": trials}


async def decide(url: str, trials: int) -> dict[str, Any]:
    """Send each run its event, one at a time; latency = the step's stamp - the send."""
    latencies: list[float] = []
    async with Engine(url) as engine:
        for i in range(trials):
            sent = time.time()
            await engine.send("bench.go", {"key": f"k{i}"})
            deadline = time.monotonic() + 10
            while True:
                info = await engine.get_run(f"answer-{i}")
                if info.status == "completed":
                    latencies.append(float(info.result) - sent)
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"run answer-{i} did not complete in 10 s")
                await asyncio.sleep(0.002)
    return {"latencies": latencies}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("--url", required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--at", type=float, default=0.0)
    parser.add_argument("--until-done", type=int, default=0)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    if args.kind == "dbos":
        emit(dbos_throughput(args.url, args.runs, args.steps))
        return
    work_for = {
        "throughput": lambda: throughput(args.url, args.runs, args.steps),
        "produce": lambda: produce(args.url, args.runs, args.steps, args.at),
        "work": lambda: work(args.url, args.until_done),
        "listen": lambda: listen(args.url, args.trials),
        "decide": lambda: decide(args.url, args.trials),
    }
    if args.kind not in work_for:
        sys.exit(f"unknown workload {args.kind!r}")
    emit(asyncio.run(work_for[args.kind]()))


if __name__ == "__main__":
    main()
