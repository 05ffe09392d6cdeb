"""dotdo's side of the benchmark; run by bench/run.py, one process per workload.

    python bench/workloads_dotdo.py throughput --runs 200 --steps 10 --reps 3
    python bench/workloads_dotdo.py sequential --steps 1000 --reps 3
    python bench/workloads_dotdo.py resume-setup --db PATH --history 1000   # crashes on purpose
    python bench/workloads_dotdo.py resume-measure --db PATH --history 1000

Every engine uses dotdo's defaults: WAL journal, synchronous=FULL.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from _common import (
    CRASH_ENV,
    CRASH_EXIT,
    RESUME_RUN_ID,
    cpu_seconds,
    emit,
    fresh_dir,
    median,
    worker_args,
)

import dotdo
from dotdo import DO, Engine, step, workflow

NOOP_CALLS = 0
"""How many times a `noop` body ran in this process (a resumed run must not re-run any)."""
MARKS: list[tuple[float, float]] = []
"""(perf_counter(), cpu_seconds()) at the start of each `mark` step body."""
MARKED: asyncio.Event | None = None


class Bench(DO):
    @step
    async def noop(self, i: int) -> int:
        global NOOP_CALLS
        NOOP_CALLS += 1
        return i

    @step
    async def gate(self) -> int:
        """The first step after the history; in the setup process it kills the process."""
        if os.environ.get(CRASH_ENV) == "1":
            os._exit(CRASH_EXIT)
        return 0

    @step
    async def mark(self) -> int:
        """Runs only once `gate` is durably recorded: its start time ends the resume timing."""
        MARKS.append((time.perf_counter(), cpu_seconds()))
        if MARKED is not None:
            MARKED.set()
        return 0

    @workflow
    async def chain(self, n: int) -> int:
        for i in range(n):
            await self.noop(i)
        return n

    @workflow
    async def resumable(self, n: int) -> int:
        for i in range(n):
            await self.noop(i)
        await self.gate()
        await self.mark()
        return n


def completed_steps(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        (count,) = conn.execute("SELECT COUNT(*) FROM steps WHERE status = 'completed'").fetchone()
        return int(count)
    finally:
        conn.close()


# ------------------------------------------------------------- throughput
async def throughput_once(db: Path, runs: int, steps: int) -> dict[str, Any]:
    engine = Engine(db)
    engine.register(Bench)
    async with engine:
        b0, c0 = engine.store.batches, engine.store.committed
        cpu0, started = cpu_seconds(), time.perf_counter()
        handles = await asyncio.gather(*(engine.start(Bench.chain, steps) for _ in range(runs)))
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
        batches = engine.store.batches - b0
        committed = engine.store.committed - c0
    assert results == [steps] * runs, "a run returned the wrong value"
    durable = completed_steps(db)
    assert durable == runs * steps, f"{durable} steps recorded, expected {runs * steps}"
    return {
        "seconds": elapsed,
        "steps_per_s": runs * steps / elapsed,
        "cpu_seconds": cpu,
        "cpu_us_per_step": cpu / (runs * steps) * 1e6,
        "batches": batches,
        "committed": committed,
        "checkpoints_per_txn": committed / batches if batches else 0.0,
    }


async def sequential_once(db: Path, runs: int, steps: int) -> dict[str, Any]:
    engine = Engine(db)
    engine.register(Bench)
    async with engine:
        b0, c0 = engine.store.batches, engine.store.committed
        cpu0, started = cpu_seconds(), time.perf_counter()
        handle = await engine.start(Bench.chain, steps)
        result = await handle.result()
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
        batches = engine.store.batches - b0
        committed = engine.store.committed - c0
    assert result == steps
    durable = completed_steps(db)
    assert durable == steps, f"{durable} steps recorded, expected {steps}"
    return {
        "seconds": elapsed,
        "steps_per_s": steps / elapsed,
        "cpu_seconds": cpu,
        "cpu_us_per_step": cpu / steps * 1e6,
        "batches": batches,
        "committed": committed,
        "checkpoints_per_txn": committed / batches if batches else 0.0,
    }


def repeat(kind: str, args: Any) -> None:
    """Warm-up, then `reps` measured repetitions, each on a fresh database."""
    once = throughput_once if kind == "throughput" else sequential_once
    runs = args.runs if kind == "throughput" else 1

    def one(label: str) -> dict[str, Any]:
        directory = fresh_dir(args.tmp, f"dotdo-{kind}-{label}")
        try:
            return asyncio.run(once(directory / "dotdo.db", runs, args.steps))
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    warmup = [one("warmup") for _ in range(args.warmup)]
    reps = [one(f"rep{i}") for i in range(args.reps)]
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        one("profile")
        profiler.disable()
        profiler.dump_stats(args.profile)
    emit(
        {
            "peer": "dotdo",
            "workload": kind,
            "runs": runs,
            "steps_per_run": args.steps,
            "warmup": warmup,
            "reps": reps,
            "median_steps_per_s": median([r["steps_per_s"] for r in reps]),
        }
    )


# ----------------------------------------------------------------- resume
async def resume_setup(db: Path, history: int) -> None:
    """Record `history` steps, then die inside the next step (the gate) with os._exit."""
    os.environ[CRASH_ENV] = "1"
    async with Engine(db) as engine:
        engine.register(Bench)
        handle = await engine.start(Bench.resumable, history, run_id=RESUME_RUN_ID)
        await handle.result()
    raise SystemExit("the gate step should have crashed this process")


async def resume_measure(db: Path, history: int) -> dict[str, Any]:
    """Reopen the crashed file; time until the step after the crash point is recorded.

    t0 is taken just before the Engine is constructed (imports and class definitions are
    done). `open()` recovers: it claims the run of the dead process, loads its row and
    spawns it. The gate step runs again and is checkpointed (one commit); only then can the
    next step, `mark`, start: its first line stamps the end time.
    """
    global MARKED
    MARKED = asyncio.Event()
    cpu0, started = cpu_seconds(), time.perf_counter()
    engine = Engine(db)
    engine.register(Bench)
    await engine.open()
    opened = time.perf_counter()
    try:
        await asyncio.wait_for(MARKED.wait(), timeout=120)
        info = await engine.wait(RESUME_RUN_ID, timeout=120)
    finally:
        await engine.close()
    assert info.status == "completed", info.status
    durable = completed_steps(db)
    assert durable == history + 2, f"{durable} steps recorded, expected {history + 2}"
    conn = sqlite3.connect(db)
    try:
        (state_bytes,) = conn.execute(
            "SELECT length(state) FROM runs WHERE run_id = ?", (RESUME_RUN_ID,)
        ).fetchone()
    finally:
        conn.close()
    return {
        "next_step_ms": (MARKS[0][0] - started) * 1000,
        "open_ms": (opened - started) * 1000,
        "cpu_ms": (MARKS[0][1] - cpu0) * 1000,
        "replayed_steps": NOOP_CALLS,
        "history": history,
        "state_bytes": state_bytes,
    }


def main() -> None:
    args = worker_args(__doc__ or "")
    if args.workload in ("throughput", "sequential"):
        repeat(args.workload, args)
    elif args.workload == "resume-setup":
        asyncio.run(resume_setup(Path(args.db), args.history))
    else:
        result = asyncio.run(resume_measure(Path(args.db), args.history))
        emit({"peer": "dotdo", "workload": "resume", "version": dotdo.__version__, **result})


if __name__ == "__main__":
    main()
