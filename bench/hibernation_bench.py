"""Hibernation bench: what a waiting run costs, and how fast a decision wakes it.

    .venv/bin/python bench/hibernation_bench.py                # 100,000 hibernating runs
    .venv/bin/python bench/hibernation_bench.py --quick        # 5,000
    .venv/bin/python bench/hibernation_bench.py --runs 20000 --json out/hib.json

1. memory: start N runs of `Hib.hold` (an approval, then a `mark` step) in batches of
   `--batch` with asyncio.gather, wait until all are `waiting`, gc.collect(), and compare the
   process's resident memory with the idle baseline (engine open, nothing started). Target:
   growth < 20 MB. Also: the database size per waiting run (page_count * page_size after a
   TRUNCATE checkpoint, / N). Target < 2 KB.
2. in-process wake: with those N runs still hibernating, approve `--approvals` of them one at
   a time; latency = from just before `engine.approve(...)` to the first line of the resumed
   run's `mark` step. Target p99 < 10 ms.
3. cross-process wake: a worker subprocess (bench/_hibernation_worker.py) serves the
   workflow; this process approves through its own Engine, which does NOT register the
   workflow, so the worker must notice and drive the run. Latency = from just before
   approve() to the timestamp the worker's `mark` step wrote. Target p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _hibernation_worker as hw  # noqa: E402

from dotdo import Engine  # noqa: E402

TARGETS = {
    "rss_growth_mb": 20.0,
    "db_bytes_per_run": 2048.0,
    "inprocess_p99_ms": 10.0,
    "crossprocess_p99_ms": 250.0,
}


# ------------------------------------------------------------------ measuring
def rss_bytes() -> int:
    """Resident memory of this process: psutil if installed, else /proc/self/status."""
    try:
        import psutil  # type: ignore[import-not-found, import-untyped, unused-ignore]

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read resident memory (no psutil, no /proc)")


def settled_rss() -> int:
    for _ in range(3):
        gc.collect()
    return rss_bytes()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50_ms": percentile(values_ms, 50),
        "p90_ms": percentile(values_ms, 90),
        "p99_ms": percentile(values_ms, 99),
        "max_ms": max(values_ms) if values_ms else float("nan"),
        "mean_ms": statistics.fmean(values_ms) if values_ms else float("nan"),
    }


def db_size(path: Path) -> dict[str, Any]:
    """Checkpoint the WAL into the main file, then measure what the pages take.

    page_count is the logical size (WAL included) whether or not the checkpoint could
    truncate the WAL; call it off the event loop (it may wait on the engine's connections).
    """
    conn = sqlite3.connect(path, timeout=2)
    try:
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError:
            busy = 1
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        tables = {
            name: conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
            for name in ("runs", "approvals", "steps", "graphs")
        }
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    return {
        "checkpoint_busy": bool(busy),
        "page_size": page_size,
        "page_count": pages,
        "freelist_pages": free,
        "bytes": page_size * pages,
        "file_bytes": path.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        "rows": tables,
    }


async def wait_all_waiting(engine: Engine, expected: int, timeout: float = 600) -> float:
    started = time.monotonic()
    while True:
        row = await engine.store.fetch_one(
            "SELECT COUNT(*) AS n FROM runs WHERE status = 'waiting'"
        )
        if row is not None and row["n"] >= expected and not engine._active:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"only {row['n'] if row else 0} of {expected} runs are waiting")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------ 1 + 2: one process
async def bench_memory_and_inprocess(
    directory: Path, runs: int, batch: int, approvals: int
) -> dict[str, Any]:
    db = directory / "hibernate.db"
    out: dict[str, Any] = {"runs": runs, "batch": batch}
    async with Engine(db).register(hw.Hib) as engine:
        await asyncio.sleep(0.2)  # the background loops have started and settled
        baseline = settled_rss()
        out["rss_baseline_mb"] = baseline / 2**20
        t0 = time.perf_counter()
        tenth: int | None = None
        for first in range(0, runs, batch):
            ids = range(first, min(first + batch, runs))
            await asyncio.gather(*(engine.start(hw.Hib.hold, i, run_id=f"h{i}") for i in ids))
            # let this batch reach its approval before the next (keeps the peak low)
            while engine._active:
                await asyncio.sleep(0.002)
            if tenth is None and first + batch >= runs // 10:
                tenth = settled_rss()
                out["rss_at_tenth_runs"] = first + batch
        await wait_all_waiting(engine, runs)
        elapsed = time.perf_counter() - t0
        out["start_seconds"] = elapsed
        out["starts_per_second"] = runs / elapsed
        after = settled_rss()
        out["rss_after_mb"] = after / 2**20
        out["rss_growth_mb"] = (after - baseline) / 2**20
        if tenth is not None and runs - out["rss_at_tenth_runs"] > 0:
            out["rss_marginal_bytes_per_run"] = (after - tenth) / (runs - out["rss_at_tenth_runs"])
        out["engine_active_tasks"] = len(engine._active)
        out["engine_runs_in_memory"] = len(engine._runs)
        out["engine_waiters"] = sum(len(v) for v in engine._waiters.values())
        out["asyncio_tasks"] = len(asyncio.all_tasks())

        # database size with every run hibernating (the engine is idle: nothing writes)
        size = await asyncio.to_thread(db_size, db)
        out["db"] = size
        out["db_bytes_per_run"] = size["bytes"] / runs

        # 2. approve some of them, one at a time, while the rest keep hibernating
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        approve_call: list[float] = []
        for i in random.Random(7).sample(range(runs), min(approvals, runs)):
            run_id = f"h{i}"
            future: asyncio.Future[float] = loop.create_future()
            hw.WAITERS[run_id] = future
            t0 = time.time()
            await engine.approve(f"{run_id}/approval", by="boss")
            approve_call.append((time.time() - t0) * 1000)
            marked = await asyncio.wait_for(future, timeout=10)
            latencies.append((marked - t0) * 1000)
            await engine.handle(run_id).result(timeout=10)  # let it finish before the next
        out["inprocess"] = summary(latencies)
        out["inprocess"]["approve_call_p50_ms"] = percentile(approve_call, 50)
        out["inprocess"]["approve_call_p99_ms"] = percentile(approve_call, 99)
        out["store_batches"] = engine.store.batches
    return out


# --------------------------------------------------------------- 3: two processes
def _read_marks(path: Path, offset: int, marks: dict[str, float]) -> int:
    if not path.exists():
        return offset
    with path.open() as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk[: chunk.rfind("\n") + 1]
    for line in complete.splitlines():
        run_id, at = line.split()
        marks[run_id] = float(at)
    return offset + len(complete)


async def bench_crossprocess(directory: Path, count: int, poll: float) -> dict[str, Any]:
    db = directory / "cross.db"
    marks_file = directory / "marks.txt"
    # the runs are started (and hibernate) before the worker exists
    async with Engine(db).register(hw.Hib) as starter:
        await asyncio.gather(*(starter.start(hw.Hib.hold, i, run_id=f"x{i}") for i in range(count)))
        await wait_all_waiting(starter, count)
    worker = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_hibernation_worker.py"),
            str(db),
            "--marks",
            str(marks_file),
            "--poll",
            str(poll),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    latencies: list[float] = []
    try:
        assert worker.stdout is not None
        ready = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), timeout=60)
        if ready.strip() != "READY":
            raise RuntimeError(f"the worker did not start: {ready!r}")
        marks: dict[str, float] = {}
        offset = 0
        jitter = random.Random(11)
        async with Engine(db) as approver:  # registers nothing: it cannot drive the runs
            assert approver.workflows == {}
            for i in range(count):
                run_id = f"x{i}"
                # approvals arrive at random moments relative to the worker's poll
                await asyncio.sleep(jitter.uniform(0, poll))
                t0 = time.time()
                await approver.approve(f"{run_id}/approval", by="boss")
                deadline = time.monotonic() + 10
                while run_id not in marks:
                    offset = _read_marks(marks_file, offset, marks)
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the worker never ran {run_id}")
                    await asyncio.sleep(0.0005)
                latencies.append((marks[run_id] - t0) * 1000)
            deadline = time.monotonic() + 30
            while len(await approver.runs(status="completed", limit=count + 10)) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not finish every approved run")
                await asyncio.sleep(0.01)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    out = summary(latencies)
    out["worker_poll_seconds"] = poll
    out["worker_exit"] = worker.returncode
    return out


# ---------------------------------------------------------------------- report
def verdict(value: float, target: float) -> str:
    if value != value:  # nan
        return "n/a"
    if value < target:
        return "ok"
    return f"MISSED by {value - target:.3g} ({value / target:.1f}x)"


def report(result: dict[str, Any]) -> None:
    m = result["memory"]
    rows = [
        (
            f"RSS growth, {m['runs']:,} waiting runs (MB)",
            m["rss_growth_mb"],
            TARGETS["rss_growth_mb"],
        ),
        ("DB bytes per waiting run", m["db_bytes_per_run"], TARGETS["db_bytes_per_run"]),
        (
            f"in-process approve -> next step p99 (ms, n={m['inprocess']['n']})",
            m["inprocess"]["p99_ms"],
            TARGETS["inprocess_p99_ms"],
        ),
    ]
    x = result.get("crossprocess")
    if x is not None:
        rows.append(
            (
                f"cross-process approve -> worker step p99 (ms, n={x['n']})",
                x["p99_ms"],
                TARGETS["crossprocess_p99_ms"],
            )
        )
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="dotdo hibernation bench")
        for column in ("measure", "value", "target", "verdict"):
            table.add_column(column)
        for name, value, target in rows:
            table.add_row(name, f"{value:,.2f}", f"< {target:,.0f}", verdict(value, target))
        Console().print(table)
    except ImportError:
        for name, value, target in rows:
            print(f"{name:<58} {value:>12,.2f}  < {target:<8,.0f} {verdict(value, target)}")
    ip = m["inprocess"]
    print(
        f"memory: baseline {m['rss_baseline_mb']:.1f} MB -> {m['rss_after_mb']:.1f} MB; "
        f"marginal {m.get('rss_marginal_bytes_per_run', float('nan')):.1f} B/run; "
        f"in memory while waiting: {m['engine_active_tasks']} run tasks, "
        f"{m['engine_runs_in_memory']} run objects, {m['asyncio_tasks']} asyncio tasks"
    )
    print(
        f"start: {m['runs']:,} runs hibernated in {m['start_seconds']:.1f}s "
        f"({m['starts_per_second']:,.0f}/s); db {m['db']['bytes'] / 2**20:.1f} MB, "
        f"{m['db']['freelist_pages']} free pages"
    )
    print(
        f"in-process: p50 {ip['p50_ms']:.2f} ms, p90 {ip['p90_ms']:.2f}, p99 {ip['p99_ms']:.2f}, "
        f"max {ip['max_ms']:.2f}; approve() call alone p50 {ip['approve_call_p50_ms']:.2f} ms, "
        f"p99 {ip['approve_call_p99_ms']:.2f}"
    )
    if x is not None:
        print(
            f"cross-process (worker poll {x['worker_poll_seconds']}s): p50 {x['p50_ms']:.1f} ms, "
            f"p90 {x['p90_ms']:.1f}, p99 {x['p99_ms']:.1f}, max {x['max_ms']:.1f}"
        )


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-hibernation-", dir=args.tmp))
    result: dict[str, Any] = {"python": sys.version.split()[0], "pid": os.getpid()}
    result["memory"] = await bench_memory_and_inprocess(base, args.runs, args.batch, args.approvals)
    if not args.skip_cross:
        result["crossprocess"] = await bench_crossprocess(base, args.cross, args.poll)
    result["targets"] = TARGETS
    result["directory"] = str(base)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="hibernating runs")
    parser.add_argument("--quick", action="store_true", help="5,000 runs")
    parser.add_argument("--batch", type=int, default=1000, help="starts per asyncio.gather")
    parser.add_argument("--approvals", type=int, default=200, help="in-process approvals")
    parser.add_argument("--cross", type=int, default=100, help="cross-process approvals")
    parser.add_argument("--poll", type=float, default=0.05, help="the worker's poll_seconds")
    parser.add_argument("--skip-cross", action="store_true")
    parser.add_argument("--tmp", default=None, help="parent directory for the databases")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if args.quick:
        args.runs = 5000
    result = asyncio.run(amain(args))
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
