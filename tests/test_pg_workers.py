"""Many worker processes on one PostgreSQL schema (PostgreSQL only).

Each worker has its own host id, so a dead or paused worker is noticed only by its leases
expiring, as between machines. One worker is SIGKILLed and another SIGSTOPped past its lease
and then resumed: every run still completes exactly once (one `fleet.done` event per run:
sends are written with the fenced checkpoint), and the resumed worker's writes for runs
taken over meanwhile are refused. And entity instances shared by workflows on every worker
keep one writer each: ten counters incremented 1,000 times in all end exact.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

WORKERS = Path(__file__).parent / "_workers"
sys.path.insert(0, str(WORKERS))

from pg_fleet import Counter, Fleet  # noqa: E402

from dotdo import Engine  # noqa: E402

LEASE = 1.5


def _spawn(url: str, name: str, done_when: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKERS / "pg_fleet.py"), url, name, str(LEASE), str(done_when)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DOTDO_HOST_ID": name},
    )


async def _count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _wait_for(url: str, sql: str, at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = await _count(url, sql)
        if n >= at_least or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.05)


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 90) -> list[str]:
    outs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        outs.append(out + err)
    return outs


async def test_killed_and_paused_workers_lose_their_runs_and_nothing_runs_twice(
    pg_url: str,
) -> None:
    runs = 1000
    at = time.time() + 6.0
    async with Engine(pg_url).register(Fleet) as starter:
        for first in range(0, runs, 200):
            await asyncio.gather(
                *(
                    starter.start(Fleet.job, at, run_id=f"job-{i:04}")
                    for i in range(first, first + 200)
                )
            )
    procs = [_spawn(pg_url, f"host{i}", runs) for i in range(4)]
    try:
        done = "SELECT count(*) FROM runs WHERE status = 'completed'"
        await _wait_for(pg_url, done, 150, timeout=60)
        # Stop host1 while it is in the middle of runs (it holds running leases).
        held = "SELECT count(*) FROM runs WHERE status = 'running' AND lease_owner LIKE 'host1:%'"
        assert await _wait_for(pg_url, held, 3, timeout=30) >= 3
        procs[0].send_signal(signal.SIGKILL)
        procs[1].send_signal(signal.SIGSTOP)
        conn = await asyncpg.connect(pg_url)
        try:
            stalled = [
                r[0]
                for r in await conn.fetch(
                    "SELECT run_id FROM runs WHERE status = 'running' "
                    "AND lease_owner LIKE 'host1:%'"
                )
            ]
        finally:
            await conn.close()
        # Past the paused worker's lease (and the server's cut of a session idle inside a
        # transaction, 3 s, in case it froze inside one): the others take its runs over.
        await asyncio.sleep(LEASE * 4)
        procs[1].send_signal(signal.SIGCONT)
        assert await _wait_for(pg_url, done, runs, timeout=90) == runs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        outs = _finish(procs[1:])
        procs[0].wait()
    assert all("lost=" in out for out in outs), outs
    conn = await asyncpg.connect(pg_url)
    try:
        statuses = await conn.fetch("SELECT status, count(*) FROM runs GROUP BY status")
        assert {r[0]: r[1] for r in statuses} == {"completed": runs}
        per_run = await conn.fetch(
            "SELECT data->>'run' AS run, count(*) AS n FROM outbox "
            "WHERE event = 'fleet.done' GROUP BY 1"
        )
        assert len(per_run) == runs and {r["n"] for r in per_run} == {1}
        # The paused worker's runs were taken over (a new claim: a new epoch) and finished
        # by another worker; when it woke, its own writes for them were refused or dropped
        # (each still has exactly one completion event, checked above).
        moved = await conn.fetch(
            "SELECT run_id, result::text AS who, lease_epoch FROM runs "
            "WHERE run_id = ANY($1::text[]) AND result::text <> '\"host1\"'",
            stalled,
        )
        assert moved, stalled
        assert all(r["lease_epoch"] >= 3 for r in moved)  # created, claimed when due, taken
    finally:
        await conn.close()


async def test_entities_shared_by_four_workers_keep_one_writer_each(pg_url: str) -> None:
    at = time.time() + 6.0
    keys = [f"c{i}" for i in range(10)]
    async with Engine(pg_url).register(Fleet, Counter) as starter:
        # 40 runs of 25 increments each: 1,000 increments, 100 per counter.
        await asyncio.gather(
            *(
                starter.start(Fleet.bump, at, keys[i % 10], 25, run_id=f"bump-{i:02}")
                for i in range(40)
            )
        )
    procs = [_spawn(pg_url, f"host{i}", 40) for i in range(4)]
    outs = _finish(procs, timeout=120)
    assert all("lost=" in out for out in outs), outs
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'") == 40
        counters = {
            r["id"]: r["n"]
            for r in await conn.fetch("SELECT id, (state->>'n')::int AS n FROM entities")
        }
        assert counters == dict.fromkeys(keys, 100)
        assert await conn.fetchval("SELECT count(*) FROM entity_calls") == 1000
    finally:
        await conn.close()


pytestmark = pytest.mark.timeout(240)
