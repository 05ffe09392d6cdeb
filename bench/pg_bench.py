"""dotdo on PostgreSQL: throughput against DBOS on the same server, scaling over worker
processes, cross-process wake-up latency, and `dotdo db copy` of a large SQLite file.

    .venv/bin/python bench/pg_bench.py [--url postgresql://postgres@127.0.0.1/postgres]
        [--reps 3] [--only throughput,workers,latency,copy] [--copy-runs 100000]

Every measurement runs in fresh processes (bench/pg_workloads.py) against a fresh schema
(dotdo) or a fresh database (DBOS, which makes its own tables), on the same server in the
same invocation. The server keeps its settings: synchronous_commit = on (checked), so every
reported step was flushed to the WAL on disk before its run went on.

1. **throughput**: 200 runs x 10 steps started together in one process, results awaited
   together; durable steps/s and CPU µs/step (user+sys of the whole process, over the same
   window), dotdo and DBOS alternating, median of `--reps`. dotdo also reports checkpoints
   per transaction (its group commit).
2. **workers**: 2,000 runs of 10 steps that hibernate until a common start time, driven by
   1, 2 and 4 worker processes (each an `Engine` on the same schema); runs/s from the start
   time to the last completion, and each worker's share of the runs.
3. **latency**: one process starts runs that wait for an event and keeps driving them;
   another sends each its event, one at a time; latency = the wall time at the step after
   the wait (recorded by the step) minus the time of the send. p50/p99 over `--trials`.
4. **copy**: an SQLite file with `--copy-runs` completed runs (one journal row each) and
   the time `dotdo db copy` takes to move it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg

HERE = Path(__file__).parent
WORKLOADS = HERE / "pg_workloads.py"


def with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"search_path": schema})) if q)
    return urlunsplit(parts._replace(query=query))


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def admin(url: str, *sql: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        out = None
        for statement in sql:
            out = await conn.fetchval(statement)
        return out
    finally:
        await conn.close()


class Schema:
    """A fresh schema for one measurement, dropped afterwards."""

    def __init__(self, url: str) -> None:
        self.base = url
        self.name = f"dotdo_bench_{secrets.token_hex(4)}"
        self.url = with_schema(url, self.name)

    def __enter__(self) -> str:
        asyncio.run(admin(self.base, f"CREATE SCHEMA {self.name}"))
        return self.url

    def __exit__(self, *exc: object) -> None:
        asyncio.run(admin(self.base, f"DROP SCHEMA IF EXISTS {self.name} CASCADE"))


def run_workload(
    kind: str, url: str, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(WORKLOADS), kind, "--url", url, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ----------------------------------------------------------------------- throughput
def bench_throughput(url: str, reps: int, runs: int, steps: int) -> dict[str, Any]:
    dotdo: list[dict[str, Any]] = []
    dbos: list[dict[str, Any]] = []
    for _ in range(reps):
        with Schema(url) as schema_url:
            dotdo.append(
                run_workload("throughput", schema_url, "--runs", str(runs), "--steps", str(steps))
            )
        name = f"dotdo_bench_dbos_{secrets.token_hex(4)}"
        asyncio.run(admin(url, f"CREATE DATABASE {name}"))
        try:
            dbos.append(
                run_workload(
                    "dbos", with_database(url, name), "--runs", str(runs), "--steps", str(steps)
                )
            )
        finally:
            asyncio.run(admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
        rates = [r["steps"] / r["wall"] for r in results]
        cpu = [r["cpu"] / r["steps"] * 1e6 for r in results]
        out = {
            "steps_per_s": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "cpu_us_per_step": statistics.median(cpu),
        }
        if "batches" in results[0]:
            out["checkpoints_per_tx"] = statistics.median(
                r["checkpoints"] / max(r["batches"], 1) for r in results
            )
        return out

    a, b = summary(dotdo), summary(dbos)
    return {"dotdo": a, "dbos": b, "ratio": a["steps_per_s"] / b["steps_per_s"]}


# -------------------------------------------------------------------------- workers
def bench_workers(url: str, counts: list[int], runs: int, steps: int) -> dict[str, Any]:
    """The runs hibernate until an hour from now; once every worker is open, one UPDATE
    makes them all due at once (and notifies the workers): that moment is the start."""
    out: dict[str, Any] = {}
    for n in counts:
        with Schema(url) as schema_url:
            run_workload(
                "produce",
                schema_url,
                "--runs",
                str(runs),
                "--steps",
                str(steps),
                "--at",
                str(time.time() + 3600),
            )
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        str(WORKLOADS),
                        "work",
                        "--url",
                        schema_url,
                        "--until-done",
                        str(runs),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "DOTDO_BENCH_WORKER": f"w{i}"},
                )
                for i in range(n)
            ]
            for proc in procs:
                assert proc.stdout is not None
                if "open" not in proc.stdout.readline():
                    raise SystemExit("a worker did not open")
            time.sleep(0.5)
            start = time.time()
            asyncio.run(
                admin(
                    schema_url,
                    f"UPDATE runs SET wake_at = {start} WHERE status = 'waiting'",
                    "SELECT pg_notify('dotdo_' || left(encode(sha256(convert_to(current_database()"
                    " || '.' || current_schema(), 'UTF8')), 'hex'), 20), '')",
                )
            )
            results = []
            for proc in procs:
                stdout, stderr = proc.communicate(timeout=900)
                if proc.returncode != 0:
                    raise SystemExit(f"worker failed:\n{stderr[-3000:]}")
                results.append(json.loads(stdout.strip().splitlines()[-1]))
            last = max(r["last"] for r in results)
            shares = sorted(r["mine"] for r in results)
            out[str(n)] = {
                "runs_per_s": runs / (last - start),
                "steps_per_s": runs * steps / (last - start),
                "shares": shares,
                "least_share_of_fair": shares[0] / (runs / n),
                "cpu_us_per_step": sum(r["cpu"] for r in results) / (runs * steps) * 1e6,
            }
    return out


# -------------------------------------------------------------------------- latency
def bench_latency(url: str, trials: int) -> dict[str, Any]:
    with Schema(url) as schema_url:
        listener = subprocess.Popen(
            [
                sys.executable,
                str(WORKLOADS),
                "listen",
                "--url",
                schema_url,
                "--trials",
                str(trials),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None
        line = listener.stdout.readline()
        if "ready" not in line:
            listener.kill()
            raise SystemExit(
                f"listener did not start: {listener.stderr.read() if listener.stderr else ''}"
            )
        time.sleep(1.0)  # let it go idle
        result = run_workload("decide", schema_url, "--trials", str(trials))
        listener.communicate(timeout=120)
    ms = sorted(x * 1000 for x in result["latencies"])
    return {
        "trials": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max_ms": ms[-1],
    }


# ----------------------------------------------------------------------------- copy
def bench_copy(url: str, runs: int) -> dict[str, Any]:
    from dotdo.engine.store.postgres.copy import copy_sqlite_to_postgres

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "big.db"
        make_sqlite(db, runs)
        with Schema(url) as schema_url:
            t0 = time.perf_counter()
            report = asyncio.run(copy_sqlite_to_postgres(db, schema_url))
            seconds = time.perf_counter() - t0
    assert report.runs == runs
    return {"runs": runs, "rows": sum(report.copied.values()), "seconds": seconds}


def make_sqlite(path: Path, runs: int) -> None:
    """A dotdo SQLite file holding `runs` completed runs with one journal row each."""
    from dotdo import Engine

    async def schema() -> None:
        async with Engine(path):
            pass

    asyncio.run(schema())
    now = time.time()
    state = json.dumps({"frame": {"order": {"id": 7, "items": [1, 2, 3]}, "i": 3}, "attempt": 0})
    with sqlite3.connect(path) as lite:
        lite.execute(
            "INSERT INTO graphs(hash, name, body, created_at, module) VALUES "
            "('g', 'Bench.chain', '{}', ?, 'bench')",
            (now,),
        )
        lite.executemany(
            "INSERT INTO runs(run_id, workflow, graph_hash, entity_id, status, node, state, "
            "input, result, steps_done, created_at, updated_at) VALUES "
            "(?, 'Bench.chain', 'g', ?, 'completed', 'end', ?, '[10]', '10', 1, ?, ?)",
            ((f"r{i:07}", f"e{i}", state, now, now) for i in range(runs)),
        )
        lite.executemany(
            "INSERT INTO steps(run_id, step_key, status, attempts, value, seq, started_at, "
            "finished_at) VALUES (?, 'noop#0', 'completed', 1, '0', 1, ?, ?)",
            ((f"r{i:07}", now, now) for i in range(runs)),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("DOTDO_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="throughput,workers,latency,copy")
    parser.add_argument("--copy-runs", type=int, default=100_000)
    parser.add_argument("--worker-runs", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    only = set(args.only.split(","))
    sync = asyncio.run(admin(args.url, "SHOW synchronous_commit"))
    results: dict[str, Any] = {
        "server": asyncio.run(admin(args.url, "SELECT version()")),
        "synchronous_commit": sync,
        "cpus": os.cpu_count(),
    }
    if sync != "on":
        raise SystemExit(f"synchronous_commit is {sync!r}; the bench measures durable steps (on)")
    print(f"server: {results['server']}  synchronous_commit={sync}", flush=True)
    if "throughput" in only:
        r = bench_throughput(args.url, args.reps, 200, 10)
        results["throughput"] = r
        print(
            f"throughput 200x10: dotdo {r['dotdo']['steps_per_s']:,.0f} steps/s "
            f"[{r['dotdo']['min']:,.0f}-{r['dotdo']['max']:,.0f}], "
            f"{r['dotdo']['cpu_us_per_step']:.0f} µs CPU/step, "
            f"{r['dotdo']['checkpoints_per_tx']:.1f} checkpoints/tx | DBOS "
            f"{r['dbos']['steps_per_s']:,.0f} steps/s "
            f"[{r['dbos']['min']:,.0f}-{r['dbos']['max']:,.0f}], "
            f"{r['dbos']['cpu_us_per_step']:.0f} µs CPU/step | ratio {r['ratio']:.1f}x",
            flush=True,
        )
    if "workers" in only:
        r = bench_workers(args.url, [1, 2, 4], args.worker_runs, 10)
        results["workers"] = r
        for n, w in r.items():
            print(
                f"workers={n}: {w['runs_per_s']:,.0f} runs/s ({w['steps_per_s']:,.0f} steps/s), "
                f"shares {w['shares']}, least/fair {w['least_share_of_fair']:.2f}, "
                f"{w['cpu_us_per_step']:.0f} µs CPU/step",
                flush=True,
            )
    if "latency" in only:
        r = bench_latency(args.url, args.trials)
        results["latency"] = r
        print(
            f"event in one process -> next step in another: p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms ({r['trials']} trials)",
            flush=True,
        )
    if "copy" in only:
        r = bench_copy(args.url, args.copy_runs)
        results["copy"] = r
        print(
            f"db copy: {r['runs']:,} runs ({r['rows']:,} rows) in {r['seconds']:.1f} s", flush=True
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
