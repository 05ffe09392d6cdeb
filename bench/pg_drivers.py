"""Which PostgreSQL driver the backend uses: psycopg 3 or asyncpg, measured on dotdo's writes.

    .venv/bin/python bench/pg_drivers.py [--dsn postgresql://postgres@127.0.0.1/postgres]

The backend's hot path is the group commit: one transaction that advances many runs (an
UPDATE of each run row, an INSERT of each step's journal row), and, for a single run, one
such transaction per step. Both drivers run the same three workloads on the same server in
the same invocation, alternating, on a fresh schema:

- **sequential**: one checkpoint per transaction (UPDATE run + INSERT step + COMMIT),
  1,000 times: the fsync-bound path of a single workflow;
- **batch**: 200 checkpoints per transaction (200 UPDATEs + 200 INSERTs), 20 times: the
  group commit of 200 concurrent runs; psycopg with `executemany` in pipeline mode,
  asyncpg with `executemany`;
- **one-statement**: the sequential checkpoint as ONE statement (a CTE: the UPDATE, fenced
  by owner and epoch, feeds the INSERT), autocommit: one round trip instead of four;
- **read**: load one run row by primary key, 2,000 times (a resume, a claim check).

It prints steps/s (or reads/s) and CPU microseconds per operation for each, medians of 3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

SCHEMA = """
DROP TABLE IF EXISTS bench_steps;
DROP TABLE IF EXISTS bench_runs;
CREATE TABLE bench_runs (
    run_id text PRIMARY KEY, node text NOT NULL, state jsonb NOT NULL,
    steps_done int NOT NULL, lease_owner text, lease_epoch bigint NOT NULL DEFAULT 0
);
CREATE TABLE bench_steps (
    run_id text NOT NULL, step_key text NOT NULL, status text NOT NULL, value jsonb,
    seq int, PRIMARY KEY (run_id, step_key)
);
"""
UPDATE = (
    "UPDATE bench_runs SET node = {0}, state = {1}, steps_done = {2} "
    "WHERE run_id = {3} AND lease_owner = {4} AND lease_epoch = {5}"
)
INSERT = (
    "INSERT INTO bench_steps(run_id, step_key, status, value, seq) VALUES ({0},{1},{2},{3},{4})"
)
CTE = (
    "WITH u AS (UPDATE bench_runs SET node = {0}, state = {1}, steps_done = {2} "
    "WHERE run_id = {3} AND lease_owner = {4} AND lease_epoch = {5} RETURNING run_id) "
    "INSERT INTO bench_steps(run_id, step_key, status, value, seq) "
    "SELECT run_id, {6}, {7}, {8}, {9} FROM u"
)
STATE = json.dumps({"frame": {"order": {"id": 7, "items": [1, 2, 3]}, "i": 3}, "attempt": 0})


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sql(template: str, style: str, count: int) -> str:
    marks = ["%s"] * count if style == "psycopg" else [f"${i + 1}" for i in range(count)]
    return template.format(*marks)


async def seed(runs: int, execute: Callable[[str], Awaitable[Any]], insert_runs: Any) -> None:
    await execute(SCHEMA)
    await insert_runs([(f"r{i}", "start", STATE, 0, "me") for i in range(runs)])


# ------------------------------------------------------------------------- psycopg
async def psycopg_workloads(dsn: str, runs: int, seq: int, batches: int) -> dict[str, Any]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:

        async def execute(text: str) -> None:
            await conn.execute(text)

        async def insert_runs(rows: list[tuple[Any, ...]]) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO bench_runs(run_id, node, state, steps_done, lease_owner) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    rows,
                )

        await seed(runs, execute, insert_runs)
        update, insert = sql(UPDATE, "psycopg", 6), sql(INSERT, "psycopg", 5)
        out: dict[str, Any] = {}

        t0, c0 = time.perf_counter(), cpu()
        for i in range(seq):
            async with conn.transaction():
                await conn.execute(update, (f"n{i}", STATE, i, "r0", "me", 0))
                await conn.execute(insert, ("r0", f"s{i}", "completed", "1", i))
        out["sequential"] = (seq / (time.perf_counter() - t0), (cpu() - c0) / seq * 1e6)

        cte = sql(CTE, "psycopg", 10)
        t0, c0 = time.perf_counter(), cpu()
        for i in range(seq):
            await conn.execute(
                cte, (f"n{i}", STATE, i, "r1", "me", 0, f"c{i}", "completed", "1", i)
            )
        out["one-statement"] = (seq / (time.perf_counter() - t0), (cpu() - c0) / seq * 1e6)

        t0, c0 = time.perf_counter(), cpu()
        for b in range(batches):
            async with conn.transaction(), conn.pipeline(), conn.cursor() as cur:
                await cur.executemany(
                    update, [(f"n{b}", STATE, b, f"r{i}", "me", 0) for i in range(runs)]
                )
                await cur.executemany(
                    insert, [(f"r{i}", f"b{b}", "completed", "1", b) for i in range(runs)]
                )
        n = runs * batches
        out["batch"] = (n / (time.perf_counter() - t0), (cpu() - c0) / n * 1e6)

        t0, c0 = time.perf_counter(), cpu()
        for i in range(seq * 2):
            cur = await conn.execute(
                "SELECT * FROM bench_runs WHERE run_id = %s", (f"r{i % runs}",)
            )
            await cur.fetchone()
        out["read"] = (seq * 2 / (time.perf_counter() - t0), (cpu() - c0) / (seq * 2) * 1e6)
        return out


# ------------------------------------------------------------------------- asyncpg
async def asyncpg_workloads(dsn: str, runs: int, seq: int, batches: int) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec("jsonb", encoder=str, decoder=str, schema="pg_catalog")

        async def execute(text: str) -> None:
            await conn.execute(text)

        async def insert_runs(rows: list[tuple[Any, ...]]) -> None:
            await conn.executemany(
                "INSERT INTO bench_runs(run_id, node, state, steps_done, lease_owner) "
                "VALUES ($1, $2, $3, $4, $5)",
                rows,
            )

        await seed(runs, execute, insert_runs)
        update, insert = sql(UPDATE, "asyncpg", 6), sql(INSERT, "asyncpg", 5)
        out: dict[str, Any] = {}

        t0, c0 = time.perf_counter(), cpu()
        for i in range(seq):
            async with conn.transaction():
                await conn.execute(update, f"n{i}", STATE, i, "r0", "me", 0)
                await conn.execute(insert, "r0", f"s{i}", "completed", "1", i)
        out["sequential"] = (seq / (time.perf_counter() - t0), (cpu() - c0) / seq * 1e6)

        cte = sql(CTE, "asyncpg", 10)
        t0, c0 = time.perf_counter(), cpu()
        for i in range(seq):
            await conn.execute(cte, f"n{i}", STATE, i, "r1", "me", 0, f"c{i}", "completed", "1", i)
        out["one-statement"] = (seq / (time.perf_counter() - t0), (cpu() - c0) / seq * 1e6)

        t0, c0 = time.perf_counter(), cpu()
        for b in range(batches):
            async with conn.transaction():
                await conn.executemany(
                    update, [(f"n{b}", STATE, b, f"r{i}", "me", 0) for i in range(runs)]
                )
                await conn.executemany(
                    insert, [(f"r{i}", f"b{b}", "completed", "1", b) for i in range(runs)]
                )
        n = runs * batches
        out["batch"] = (n / (time.perf_counter() - t0), (cpu() - c0) / n * 1e6)

        t0, c0 = time.perf_counter(), cpu()
        for i in range(seq * 2):
            await conn.fetchrow("SELECT * FROM bench_runs WHERE run_id = $1", f"r{i % runs}")
        out["read"] = (seq * 2 / (time.perf_counter() - t0), (cpu() - c0) / (seq * 2) * 1e6)
        return out
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seq", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    drivers = {"psycopg": psycopg_workloads, "asyncpg": asyncpg_workloads}
    results: dict[str, dict[str, list[tuple[float, float]]]] = {d: {} for d in drivers}
    for _ in range(args.reps):
        for name, run in drivers.items():
            for workload, figures in (
                await run(args.dsn, args.runs, args.seq, args.batches)
            ).items():
                results[name].setdefault(workload, []).append(figures)
    print(f"{'workload':<15}{'driver':<10}{'ops/s':>12}{'CPU µs/op':>12}")
    for workload in ("sequential", "one-statement", "batch", "read"):
        for name in drivers:
            rows = results[name][workload]
            rate = statistics.median(r[0] for r in rows)
            cost = statistics.median(r[1] for r in rows)
            print(f"{workload:<15}{name:<10}{rate:>12,.0f}{cost:>12.1f}")


if __name__ == "__main__":
    asyncio.run(main())
