"""The console's targets: with 100,000 runs and 10,000 pending approvals in SQLite, the inbox,
the runs list and the run page answer in under 100 ms p95, and a decision made in the
console reaches the run's next step in under 50 ms p99.

    .venv/bin/python bench/console_bench.py [--runs 100000] [--approvals 10000] [--n 200]

The database is filled from real template runs (one started by the engine for each shape)
copied with new ids in bulk, so rows, bodies and graphs are exactly what the engine writes.
The console is served by uvicorn on 127.0.0.1 in a thread, as `dotdo ui` serves it, and read
by an HTTP client over loopback. The decision latency is measured from the moment the
client sends the POST to the moment the step after the approval starts, and compared with a
peer in the same invocation: the same decision made by calling `engine.approve` in-process
(what `dotdo approve --app` does), so the ratio is the console's own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from dotdo import DO, Engine, approval, step, workflow
from dotdo.console import ConsoleConfig, create_app
from dotdo.engine import people

T = TypeVar("T")
REACHED: dict[str, float] = {}
PASSWORD = "bench password"


class BenchShop(DO):
    @step
    async def reached(self, amount: float) -> float:
        REACHED.setdefault(self.run_id, time.perf_counter())
        return amount

    @step
    async def noop(self, n: int) -> int:
        return n

    @approval(approvers=["manager"])
    def sign_off(self, amount: float) -> dict[str, Any]:
        return {"title": f"PO {amount}", "amount": amount, "requested_by": "bench"}

    @workflow
    async def order(self, amount: float) -> float:
        decision = await self.sign_off(amount)
        if decision.status != "approved":
            return 0.0
        return await self.reached(amount)

    @workflow
    async def batch(self, n: int) -> int:
        total = 0
        for i in range(3):
            total += await self.noop(i + n)
        return total


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _templates(db: Path) -> None:
    engine = Engine(db).register(BenchShop)
    async with engine:
        await engine.start(BenchShop.order, 1.0, run_id="tpl-wait")
        await engine.idle("tpl-wait", timeout=10)
        handle = await engine.start(BenchShop.batch, 1, run_id="tpl-done")
        await handle.result()


def fill(db: Path, runs: int, approvals: int, mine: int) -> None:
    """Copy the template runs: `runs - approvals` finished ones (3 journal rows each) and
    `approvals` waiting ones with a pending approval, `mine` of them on "manager", the rest
    spread over 50 other approvers."""
    asyncio.run(_templates(db))
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    wait = dict(conn.execute("SELECT * FROM runs WHERE run_id = 'tpl-wait'").fetchone())
    done = dict(conn.execute("SELECT * FROM runs WHERE run_id = 'tpl-done'").fetchone())
    steps = [dict(r) for r in conn.execute("SELECT * FROM steps WHERE run_id = 'tpl-done'")]
    pending = dict(conn.execute("SELECT * FROM approvals WHERE run_id = 'tpl-wait'").fetchone())
    start = time.time() - runs
    columns = list(done)
    marks = ",".join("?" * len(columns))
    finished = runs - approvals
    rows = []
    for i in range(finished):
        row = dict(done, run_id=f"done-{i:06d}", entity_id=f"done-{i:06d}")
        row["created_at"] = row["updated_at"] = start + i * 0.9
        rows.append(tuple(row[c] for c in columns))
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO runs({','.join(columns)}) VALUES ({marks})", rows)
    step_columns = list(steps[0])
    step_marks = ",".join("?" * len(step_columns))
    conn.executemany(
        f"INSERT INTO steps({','.join(step_columns)}) VALUES ({step_marks})",
        (
            tuple(dict(s, run_id=f"done-{i:06d}")[c] for c in step_columns)
            for i in range(finished)
            for s in steps
        ),
    )
    run_rows, approval_rows = [], []
    approval_columns = list(pending)
    body = pending["body"]
    for i in range(approvals):
        run_id = f"wait-{i:05d}"
        who = "manager" if i < mine else f"mgr{i % 50}"
        row = dict(wait, run_id=run_id, entity_id=run_id)
        row["created_at"] = row["updated_at"] = start + finished * 0.9 + i * 0.9
        run_rows.append(tuple(row[c] for c in columns))
        text = body.replace("tpl-wait", run_id).replace(
            '"approvers":["manager"]', f'"approvers":["{who}"]'
        )
        text = re.sub(
            r'"priority":"normal"', f'"priority":"{("low", "normal", "high")[i % 3]}"', text
        )
        arow = dict(pending, id=f"{run_id}/sign_off", run_id=run_id, approver=who, body=text)
        arow["created_at"] = row["created_at"]
        approval_rows.append(tuple(arow[c] for c in approval_columns))
    conn.executemany(f"INSERT INTO runs({','.join(columns)}) VALUES ({marks})", run_rows)
    conn.executemany(
        f"INSERT INTO approvals({','.join(approval_columns)}) VALUES "
        f"({','.join('?' * len(approval_columns))})",
        approval_rows,
    )
    conn.execute("DELETE FROM approvals WHERE run_id = 'tpl-wait'")
    conn.execute("DELETE FROM runs WHERE run_id IN ('tpl-wait', 'tpl-done')")
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


class Server:
    def __init__(self, db: Path) -> None:
        self.db = db
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: Engine | None = None
        self.server: uvicorn.Server | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.engine = Engine(self.db, poll_seconds=0.05).register(BenchShop)
        await self.engine.open()
        for name, names in (("alice", ["manager"]), ("bob", ["mgr7"])):
            await people.add_user(
                self.engine.store,
                name,
                role="operator",
                names=names,
                password=PASSWORD,
                now=time.time(),
            )
        app = create_app(self.engine, ConsoleConfig())
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            await asyncio.sleep(0.01)
        self.ready.set()
        await task
        await self.engine.close()

    def start(self) -> Server:
        self.thread.start()
        self.ready.wait(60)
        return self

    def call(self, make: Callable[[Engine], Awaitable[T]]) -> T:
        assert self.loop is not None and self.engine is not None
        engine = self.engine

        async def run() -> T:
            return await make(engine)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(60)

    def stop(self) -> None:
        assert self.server is not None
        self.server.should_exit = True
        self.thread.join(20)


def login(url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    page = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    client.post("/login", data={"csrf": csrf.group(1), "username": name, "password": PASSWORD})
    return client


def timed(client: httpx.Client, paths: list[str], n: int) -> dict[str, float]:
    for path in paths[:3]:
        client.get(path)  # warm caches (and the diagram's dot) once
    took: list[float] = []
    before = cpu()
    for i in range(n):
        path = paths[i % len(paths)]
        t0 = time.perf_counter()
        response = client.get(path)
        took.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    spent = cpu() - before
    return {
        "p50_ms": round(pct(took, 50), 2),
        "p95_ms": round(pct(took, 95), 2),
        "max_ms": round(max(took), 2),
        "cpu_ms_per_request": round(spent / n * 1000, 2),
    }


def decisions(server: Server, client: httpx.Client, n: int) -> dict[str, Any]:
    ids = [f"dec-{i}" for i in range(2 * n)]

    async def start_all(engine: Engine) -> None:
        for run_id in ids:
            await engine.start(BenchShop.order, 1.0, run_id=run_id)
        for run_id in ids:
            await engine.idle(run_id, timeout=30)

    server.call(start_all)
    token = server.call(lambda e: people.new_token(e.store, "alice", now=time.time()))
    headers = {"Authorization": f"Bearer {token}"}
    console_ms: list[float] = []
    before = cpu()
    for run_id in ids[:n]:
        t0 = time.perf_counter()
        response = client.post(
            f"/api/approvals/{run_id}/sign_off/decide",
            json={"decision": "approve"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        while run_id not in REACHED:
            time.sleep(0.0002)
        console_ms.append((REACHED[run_id] - t0) * 1000)
    console_cpu = (cpu() - before) / n * 1000
    direct_ms: list[float] = []

    async def direct(engine: Engine) -> list[float]:
        out = []
        for run_id in ids[n:]:
            t0 = time.perf_counter()
            await engine.approve(f"{run_id}/sign_off", by="manager")
            while run_id not in REACHED:
                await asyncio.sleep(0)
            out.append((REACHED[run_id] - t0) * 1000)
        return out

    before = cpu()
    direct_ms = server.call(direct)
    direct_cpu = (cpu() - before) / n * 1000
    return {
        "console": {
            "p50_ms": round(pct(console_ms, 50), 2),
            "p99_ms": round(pct(console_ms, 99), 2),
            "cpu_ms_per_decision": round(console_cpu, 2),
        },
        "engine.approve (peer)": {
            "p50_ms": round(pct(direct_ms, 50), 2),
            "p99_ms": round(pct(direct_ms, 99), 2),
            "cpu_ms_per_decision": round(direct_cpu, 2),
        },
        "ratio_p50": round(statistics.median(console_ms) / statistics.median(direct_ms), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--approvals", type=int, default=10_000)
    parser.add_argument("--mine", type=int, default=500, help="pending on the signed-in person")
    parser.add_argument("--n", type=int, default=200, help="requests per measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    db = Path(tempfile.mkdtemp(prefix="console-bench-")) / "console.db"
    t0 = time.perf_counter()
    fill(db, args.runs, args.approvals, args.mine)
    print(
        f"filled {db}: {args.runs} runs, {args.approvals} pending approvals "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    server = Server(db).start()
    client = login(server.url, "alice")
    results: dict[str, Any] = {}
    results["inbox (500 pending on you)"] = timed(client, ["/inbox"], args.n)
    results["inbox API"] = timed(client, ["/api/approvals"], args.n)
    bob = login(server.url, "bob")
    results["inbox (200 pending, other person)"] = timed(bob, ["/inbox"], args.n)
    results["runs list, first page"] = timed(client, ["/runs"], args.n)
    results["runs list, status filter"] = timed(client, ["/runs?status=waiting"], args.n)
    first = client.get("/api/runs", params={"limit": "50"}).json()
    deep = client.get("/api/runs", params={"limit": "50", "after": first["next"]}).json()
    for _ in range(200):  # walk 200 pages in: keyset pagination stays flat
        deep = client.get("/api/runs", params={"limit": "50", "after": deep["next"]}).json()
    results["runs list, page 200 (keyset)"] = timed(client, [f"/runs?after={deep['next']}"], args.n)
    results["runs API"] = timed(client, ["/api/runs"], args.n)
    pages = [f"/runs/done-{i:06d}" for i in range(0, args.runs - args.approvals, 997)]
    results["run page (finished run)"] = timed(client, pages, args.n)
    results["run page (waiting run)"] = timed(
        client, [f"/runs/wait-{i:05d}" for i in range(0, args.approvals, 101)], args.n
    )
    results["decision page"] = timed(
        client, [f"/approvals/wait-{i:05d}/sign_off" for i in range(0, args.mine, 7)], args.n
    )
    results["decision -> next step"] = decisions(server, client, args.n)
    server.stop()
    print(json.dumps(results, indent=2))
    targets = {
        "inbox p95 < 100 ms": results["inbox (500 pending on you)"]["p95_ms"] < 100,
        "runs list p95 < 100 ms": results["runs list, first page"]["p95_ms"] < 100,
        "run page p95 < 100 ms": results["run page (finished run)"]["p95_ms"] < 100,
        "decision -> next step p99 < 50 ms": results["decision -> next step"]["console"]["p99_ms"]
        < 50,
    }
    for name, ok in targets.items():
        print(f"{'MET ' if ok else 'MISS'} {name}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "targets": targets}, indent=2))


if __name__ == "__main__":
    main()
