"""Upgrade-check bench: `engine.upgrade_check()` over N parked runs (target: 10,000 < 2 s).

    .venv/bin/python bench/upgrade_bench.py              # 10,000 parked runs, 3 reps
    .venv/bin/python bench/upgrade_bench.py --runs 50000 --reps 5

Setup: on release 1 (bench/_billing_v1.py), one run parks at its approval and one, approved
and charged, at its hour's sleep (refund on its compensation stack); their rows are then
cloned in SQL up to N runs, half at each place. The check runs with release 2 registered
(bench/_billing_v2.py: a new graph, and `ship` needs a new argument, so every run strands:
the full report is built). Peer, same invocation and database: reading the same runs with
`engine.runs(status="waiting", limit=N)`, which decodes each row (what `dotdo runs` does).
Reported: wall seconds (median of reps), CPU seconds, ratio to the peer, runs per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _billing_v1 as v1  # noqa: E402
import _billing_v2 as v2  # noqa: E402
from _common import cpu_seconds  # noqa: E402

from dotdo import Engine  # noqa: E402

TARGET_SECONDS = 2.0


async def setup(db: Path, runs: int) -> None:
    async with Engine(db).register(v1.Billing) as engine:
        await engine.start(v1.Billing.bill, "a", run_id="sign-0")
        await engine.start(v1.Billing.bill, "b", run_id="sleep-0")
        await engine.idle("sign-0", timeout=30)
        await engine.idle("sleep-0", timeout=30)
        pending = [a for a in await engine.approvals() if a.id.startswith("sleep-0")]
        await engine.approve(pending[0].id, by="boss")
        for _ in range(1000):
            info = await engine.get_run("sleep-0")
            if info.status == "waiting" and info.wake_at is not None:
                break
            await asyncio.sleep(0.01)
    conn = sqlite3.connect(db)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)") if r[1] != "run_id"]
    cols = ", ".join(columns)
    with conn:
        for template in ("sign-0", "sleep-0"):
            prefix = template.split("-")[0]
            conn.execute(
                f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                f"INSERT INTO runs(run_id, {cols}) SELECT '{prefix}-' || i, {cols} "
                f"FROM runs, n WHERE run_id = ?",
                (runs // 2 - 1, template),
            )
    conn.close()


async def measure(db: Path, runs: int) -> dict[str, float]:
    async with Engine(db, read_only=True).register(v2.Billing) as engine:
        cpu, wall = cpu_seconds(), time.perf_counter()
        report = await engine.upgrade_check()
        check_wall, check_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        assert len(report.runs) == runs and len(report.stranded) == runs, len(report.runs)
        cpu, wall = cpu_seconds(), time.perf_counter()
        listed = await engine.runs(status="waiting", limit=runs)
        peer_wall, peer_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        assert len(listed) == runs
    return {
        "check_s": check_wall,
        "check_cpu_s": check_cpu,
        "peer_s": peer_wall,
        "peer_cpu_s": peer_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upgrade-") as tmp:
        db = Path(tmp) / "upgrade.db"
        asyncio.run(setup(db, args.runs))
        reps = [asyncio.run(measure(db, args.runs)) for _ in range(args.reps)]
    median = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
    result = {
        "runs": args.runs,
        **{k: round(v, 4) for k, v in median.items()},
        "ratio_to_peer": round(median["check_s"] / median["peer_s"], 3),
        "runs_per_s": round(args.runs / median["check_s"]),
        "cpu_us_per_run": round(median["check_cpu_s"] / args.runs * 1e6, 1),
        "target_s": TARGET_SECONDS,
        "meets_target": median["check_s"] < TARGET_SECONDS * args.runs / 10_000,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
