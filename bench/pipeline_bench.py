"""Promise pipelining and cross-DO calls over loopback HTTP.

    .venv/bin/python bench/pipeline_bench.py            # full run
    .venv/bin/python bench/pipeline_bench.py --quick    # fewer repetitions

A `dotdo serve` of this file's DO classes runs in a subprocess on 127.0.0.1 (its own
database); the caller is an Engine in this process that routes `User` and `Counter` there.

1. pipelined vs hop by hop, inside a workflow: `await self.User(id).profile.email` (one
   step, one request) against the same three hops awaited one by one (`await self.User(id)`,
   `await self.User(id).profile`, `await self.User(id).profile.email`: three steps, three
   requests), each in a loop of `--hops` iterations in one run, so a run's start and end do
   not dilute the per-await cost. Every await is a durable step: request plus checkpoint.
   Also measured without an engine (a `connect()` client): the bare transport ratio.
   Target: pipelined at least 2.5x faster.
2. 1,000 concurrent workflow runs, each one cross-DO call `Counter(f"c{i % 100}").increment()`:
   every counter must end at exactly 10 and every call id be recorded once (no lost or
   doubled update), and each counter's answers must be 1..10.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import BaseModel, Field

from dotdo import DO, Engine, workflow
from dotdo.entities import connect, remote

TOKEN = "bench-token"


# ------------------------------------------------------------------ served classes
class Profile(BaseModel):
    email: str = "ada@example.com"
    name: str = "Ada"


class UserState(BaseModel):
    profile: Profile = Field(default_factory=Profile)


class User(DO):
    State = UserState

    @property
    def profile(self) -> Profile:
        return self.state.profile


class CounterState(BaseModel):
    n: int = 0


class Counter(DO):
    State = CounterState

    async def increment(self) -> int:
        self.state.n += 1
        return self.state.n


# ---------------------------------------------------------------- caller workflows
class Bench(DO):
    @workflow
    async def pipelined(self, uid: str, hops: int) -> str:
        email = ""
        for _ in range(hops):
            email = await self.User(uid).profile.email
        return email

    @workflow
    async def hop_by_hop(self, uid: str, hops: int) -> str:
        email = ""
        for _ in range(hops):
            user = await self.User(uid)
            profile = await self.User(uid).profile
            email = await self.User(uid).profile.email
            assert user.profile == profile
        return email

    @workflow
    async def bump(self, key: str) -> int:
        return await self.Counter(key).increment()


# --------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DOTDO_TOKEN": TOKEN}
    cmd = [sys.executable, __file__, "--serve", str(port), str(db)]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/dotdo/health", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


# -------------------------------------------------------------------------- measure
async def workflow_latency(engine: Engine, hops: int, reps: int) -> tuple[float, float]:
    """Per-await seconds (median over reps) of each variant, runs interleaved."""
    piped: list[float] = []
    serial: list[float] = []
    for rep in range(reps + 1):  # the first round warms up
        for flow, out in ((Bench.pipelined, piped), (Bench.hop_by_hop, serial)):
            begun = time.perf_counter()
            handle = await engine.start(flow, "u1", hops)
            assert await handle.result(timeout=120) == "ada@example.com"
            if rep:
                out.append((time.perf_counter() - begun) / hops)
    return statistics.median(piped), statistics.median(serial)


async def client_latency(url: str, n: int) -> tuple[float, float]:
    async with connect(url, token=TOKEN) as client:
        for _ in range(20):
            await client.User("u1").profile.email
        piped: list[float] = []
        serial: list[float] = []
        for _ in range(n):
            begun = time.perf_counter()
            await client.User("u1").profile.email
            piped.append(time.perf_counter() - begun)
            begun = time.perf_counter()
            await client.User("u1")
            await client.User("u1").profile
            await client.User("u1").profile.email
            serial.append(time.perf_counter() - begun)
        return statistics.median(piped), statistics.median(serial)


async def concurrent_counters(engine: Engine, server_db: Path, calls: int, keys: int) -> dict:
    begun = time.perf_counter()
    handles = await asyncio.gather(
        *(engine.start(Bench.bump, f"c{i % keys}", run_id=f"bump-{i}") for i in range(calls))
    )
    results = await asyncio.gather(*(h.result(timeout=300) for h in handles))
    elapsed = time.perf_counter() - begun
    per_key: dict[str, list[int]] = {}
    for i, value in enumerate(results):
        per_key.setdefault(f"c{i % keys}", []).append(value)
    expected = calls // keys
    answers_ok = all(sorted(v) == list(range(1, expected + 1)) for v in per_key.values())
    with sqlite3.connect(server_db) as db:
        states = dict(db.execute("SELECT id, json_extract(state, '$.n') FROM entities"))
        recorded = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT call_id) FROM entity_calls "
            "WHERE call_id LIKE '%:bump-%'"
        ).fetchone()
    return {
        "seconds": elapsed,
        "calls_per_s": calls / elapsed,
        "counters_exact": all(states.get(f"c{k}") == expected for k in range(keys)),
        "total": sum(states.get(f"c{k}", 0) for k in range(keys)),
        "answers_ok": answers_ok,
        "recorded": recorded[0],
        "distinct_call_ids": recorded[1],
    }


async def main(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    server_db = folder / "server.db"
    proc, url = start_server(server_db)
    failures: list[str] = []
    try:
        engine = Engine(folder / "caller.db").register(Bench)
        remote(engine, "User", url, token=TOKEN)
        remote(engine, "Counter", url, token=TOKEN)
        async with engine:
            print(f"server {url} (pid {proc.pid}); caller db {folder / 'caller.db'}")
            piped, serial = await workflow_latency(engine, args.hops, args.reps)
            ratio = serial / piped
            print("\n1. `await self.User(id).profile.email` vs three awaited hops")
            print(
                f"   workflow, per await:  pipelined {piped * 1e3:7.3f} ms   "
                f"hop by hop {serial * 1e3:7.3f} ms   ratio {ratio:4.2f}x  (target >= 2.5x)"
            )
            c_piped, c_serial = await client_latency(url, args.client_n)
            print(
                f"   client, no engine:    pipelined {c_piped * 1e3:7.3f} ms   "
                f"hop by hop {c_serial * 1e3:7.3f} ms   ratio {c_serial / c_piped:4.2f}x"
            )
            if ratio < 2.5:
                failures.append(f"pipelining ratio {ratio:.2f}x < 2.5x")

            print(f"\n2. {args.calls} concurrent cross-DO calls to {args.keys} instances")
            report = await concurrent_counters(engine, server_db, args.calls, args.keys)
            print(
                f"   {report['seconds']:.2f}s, {report['calls_per_s']:.0f} calls/s; "
                f"total {report['total']} (expected {args.calls}); every counter exact: "
                f"{report['counters_exact']}; answers 1..{args.calls // args.keys} per counter: "
                f"{report['answers_ok']}; call ids recorded {report['recorded']} "
                f"({report['distinct_call_ids']} distinct)"
            )
            ok = (
                report["counters_exact"]
                and report["answers_ok"]
                and report["total"] == args.calls
                and report["recorded"] == report["distinct_call_ids"] == args.calls
            )
            if not ok:
                failures.append("lost or doubled updates")
    finally:
        stop_server(proc)
    print("\nresult:", "all targets met" if not failures else "; ".join(failures))
    return 1 if failures else 0


def serve_here(port: int, db: str) -> None:
    from dotdo.entities import serve

    serve([sys.modules[__name__]], port=port, db=db, log_level="warning")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve_here(int(sys.argv[2]), sys.argv[3])
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--hops", type=int, default=50, help="awaits per workflow run")
    parser.add_argument("--reps", type=int, default=9, help="runs per variant")
    parser.add_argument("--client-n", type=int, default=300, help="client measurements")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=100)
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.reps, arguments.client_n, arguments.hops = 2, 100, 20
    raise SystemExit(asyncio.run(main(arguments)))
