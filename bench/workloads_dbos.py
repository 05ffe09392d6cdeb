"""The DBOS peer: the same workloads with DBOS on an SQLite system database.

Run by bench/run.py in its own process (DBOS is a process-wide singleton); it is never
imported by the orchestrator, so the benchmark runs without DBOS installed.

    python bench/workloads_dbos.py throughput --runs 200 --steps 10 --reps 3
    python bench/workloads_dbos.py sequential --steps 1000 --reps 3
    python bench/workloads_dbos.py resume-setup --db PATH --history 1000   # crashes on purpose
    python bench/workloads_dbos.py resume-measure --db PATH --history 1000

`--journal wal` (default) switches the file to WAL before DBOS opens it, so both peers run
WAL + synchronous=FULL (SQLite's default synchronous, which DBOS does not change). With
`--journal delete` DBOS gets SQLite's default rollback journal, as it does out of the box.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import threading
import time
from importlib.metadata import version
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
from dbos import DBOS, DBOSConfig, SetWorkflowID

NOOP_CALLS = 0
MARKS: list[tuple[float, float]] = []
"""(perf_counter(), cpu_seconds()) at the start of each `mark` step body."""
STARTS: list[float] = []
"""perf_counter() each time the body of `resumable` begins (on recovery: the replay's start)."""
MARKED = threading.Event()
"""Recovered workflows run on DBOS's own event loop thread, hence a threading.Event."""


@DBOS.step()
async def noop(i: int) -> int:
    global NOOP_CALLS
    NOOP_CALLS += 1
    return i


@DBOS.step()
async def gate() -> int:
    if os.environ.get(CRASH_ENV) == "1":
        os._exit(CRASH_EXIT)
    return 0


@DBOS.step()
async def mark() -> int:
    MARKS.append((time.perf_counter(), cpu_seconds()))
    MARKED.set()
    return 0


@DBOS.workflow()
async def chain(n: int) -> int:
    for i in range(n):
        await noop(i)
    return n


@DBOS.workflow()
async def resumable(n: int) -> int:
    STARTS.append(time.perf_counter())
    for i in range(n):
        await noop(i)
    await gate()
    await mark()
    return n


def prepare(db: Path, journal: str) -> None:
    if journal == "wal" and not db.exists():
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.close()


def launch(db: Path) -> None:
    config: DBOSConfig = {
        "name": "dotdo-bench",
        "system_database_url": f"sqlite:///{db}",
        "application_version": "dotdo-bench",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()


def completed_steps(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM operation_outputs WHERE function_name LIKE '%noop'"
        ).fetchone()
        return int(count)
    finally:
        conn.close()


async def throughput_once(runs: int, steps: int) -> tuple[float, float]:
    cpu0, started = cpu_seconds(), time.perf_counter()
    handles = await asyncio.gather(*(DBOS.start_workflow_async(chain, steps) for _ in range(runs)))
    results = await asyncio.gather(*(h.get_result() for h in handles))
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    assert results == [steps] * runs
    return elapsed, cpu


async def sequential_once(runs: int, steps: int) -> tuple[float, float]:
    cpu0, started = cpu_seconds(), time.perf_counter()
    handle = await DBOS.start_workflow_async(chain, steps)
    result = await handle.get_result()
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    assert result == steps
    return elapsed, cpu


def repeat(kind: str, args: Any) -> None:
    once = throughput_once if kind == "throughput" else sequential_once
    runs = args.runs if kind == "throughput" else 1

    def one(label: str) -> dict[str, Any]:
        directory = fresh_dir(args.tmp, f"dbos-{kind}-{label}")
        db = directory / "dbos.sqlite"
        try:
            prepare(db, args.journal)
            launch(db)
            try:
                elapsed, cpu = asyncio.run(once(runs, args.steps))
            finally:
                DBOS.destroy()
            durable = completed_steps(db)
            assert durable == runs * args.steps, f"{durable} steps recorded"
            return {
                "seconds": elapsed,
                "steps_per_s": runs * args.steps / elapsed,
                "cpu_seconds": cpu,
                "cpu_us_per_step": cpu / (runs * args.steps) * 1e6,
            }
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    warmup = [one("warmup") for _ in range(args.warmup)]
    reps = [one(f"rep{i}") for i in range(args.reps)]
    emit(
        {
            "peer": "dbos",
            "workload": kind,
            "runs": runs,
            "steps_per_run": args.steps,
            "journal": args.journal,
            "warmup": warmup,
            "reps": reps,
            "median_steps_per_s": median([r["steps_per_s"] for r in reps]),
        }
    )


async def resume_setup(db: Path, history: int) -> None:
    os.environ[CRASH_ENV] = "1"
    with SetWorkflowID(RESUME_RUN_ID):
        handle = await DBOS.start_workflow_async(resumable, history)
    await handle.get_result()


def resume_measure(db: Path, history: int) -> dict[str, Any]:
    """Launch DBOS on the crashed file; time until the step after the crash point starts.

    t0 is taken just before DBOS(config=...) (imports and decorators are done). launch()
    finds the PENDING workflow and recovers it: DBOS re-executes the workflow function from
    the top, each of the `history` steps returning its recorded output, then runs `gate`
    and records it; `mark` then starts and stamps the end time. Recovery goes through DBOS's
    internal queue, polled about once a second: `dispatch_ms` is launch -> the workflow body
    starting again, `replay_ms` is that start -> `mark` (the part that grows with history).
    """
    cpu0, started = cpu_seconds(), time.perf_counter()
    launch(db)
    opened = time.perf_counter()
    try:
        if not MARKED.wait(timeout=600):
            raise TimeoutError("the recovered workflow never reached its next step")
        result = DBOS.retrieve_workflow(RESUME_RUN_ID).get_result()
    finally:
        DBOS.destroy()
    assert result == history
    return {
        "next_step_ms": (MARKS[0][0] - started) * 1000,
        "open_ms": (opened - started) * 1000,
        "cpu_ms": (MARKS[0][1] - cpu0) * 1000,
        "dispatch_ms": (STARTS[0] - started) * 1000,
        "replay_ms": (MARKS[0][0] - STARTS[0]) * 1000,
        "replayed_steps": NOOP_CALLS,
        "history": history,
    }


def main() -> None:
    args = worker_args(__doc__ or "")
    logging.getLogger("dbos").setLevel(logging.WARNING)
    if args.workload in ("throughput", "sequential"):
        repeat(args.workload, args)
    elif args.workload == "resume-setup":
        db = Path(args.db)
        prepare(db, args.journal)
        launch(db)
        asyncio.run(resume_setup(db, args.history))
        raise SystemExit("the gate step should have crashed this process")
    else:
        result = resume_measure(Path(args.db), args.history)
        emit({"peer": "dbos", "workload": "resume", "version": version("dbos"), **result})


if __name__ == "__main__":
    main()
