"""Helpers shared by the orchestrator (run.py) and the per-peer workers.

Workers are separate processes (`python bench/workloads_<peer>.py WORKLOAD ...`). Each prints
its measurements as one JSON line prefixed with RESULT_PREFIX, so whatever else a library
prints (DBOS logs on stdout) cannot break the parsing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "
CRASH_ENV = "BENCH_CRASH_AT_GATE"
"""Set to 1 in the resume *setup* process: its `gate` step then kills the process (os._exit)."""
CRASH_EXIT = 75
"""The exit code of that deliberate crash, so the orchestrator can tell it from a failure."""
RESUME_RUN_ID = "bench-resume"


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            value = json.loads(line[len(RESULT_PREFIX) :])
            assert isinstance(value, dict)
            return value
    raise ValueError("the worker printed no result line")


def cpu_seconds() -> float:
    """User + system CPU time of this whole process so far, in seconds.

    RUSAGE_SELF sums every thread of the process, so SQLite's work in aiosqlite's worker
    thread and any background thread a library runs (DBOS's queue poller) is counted too.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fresh_dir(base: str | None, label: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bench-{label}-", dir=base))


def copy_database(src: Path, dst: Path) -> None:
    """Copy an SQLite file with its WAL and shared-memory files, as a crash left them."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        source = src.with_name(src.name + suffix)
        if source.exists():
            shutil.copyfile(source, dst.with_name(dst.name + suffix))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def worker_args(description: str) -> argparse.Namespace:
    """The command line every worker understands."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "workload", choices=["throughput", "sequential", "resume-setup", "resume-measure"]
    )
    parser.add_argument("--tmp", default=None, help="parent directory for fresh databases")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200, help="throughput: concurrent runs")
    parser.add_argument("--steps", type=int, default=10, help="steps per run")
    parser.add_argument("--db", default=None, help="resume: the database file")
    parser.add_argument("--history", type=int, default=1000, help="resume: completed steps")
    parser.add_argument("--profile", default=None, help="also profile one extra rep (cProfile)")
    parser.add_argument("--journal", choices=["wal", "delete"], default="wal", help="DBOS only")
    return parser.parse_args()


def sqlite_commit_rate(base: str | None, commits: int = 1000) -> float:
    """The fsync limit: one-row transactions per second, WAL + synchronous=FULL.

    A raw loop on Python's sqlite3, one INSERT of one 100-byte row per transaction, each
    committed (and so fsynced) before the next begins. A workload that commits once per
    step cannot go faster than this on the same disk at the same moment.
    """
    directory = fresh_dir(base, "calibrate")
    try:
        conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = FULL")
        (sync,) = conn.execute("PRAGMA synchronous").fetchone()
        assert mode == "wal" and sync == 2, f"calibration runs journal={mode} synchronous={sync}"
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        started = time.perf_counter()
        for _ in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t(body) VALUES (?)", ("x" * 100,))
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        (rows,) = conn.execute("SELECT COUNT(*) FROM t").fetchone()
        conn.close()
        assert rows == commits
        return commits / elapsed
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def environment() -> dict[str, Any]:
    """The machine as the report describes it."""
    cpu = "unknown"
    memory = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                kib = int(line.split()[1])
                memory = f"{kib / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "platform": sys.platform,
    }
