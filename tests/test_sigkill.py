"""One real SIGKILL: a worker process drives 200 workflows of 10 steps and is killed part-way;
an Engine in this process recovers and finishes every run.

Each step appends `run_id step_id attempt pid` to a log file before it returns, so the log
counts executions. Right after the kill, the database says which steps were committed; the
only steps allowed to run twice are the ones in flight then (one per unfinished run at most).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter as Tally
from pathlib import Path

from dotdo import Engine

WORKERS = Path(__file__).resolve().parent / "_workers"
if str(WORKERS) not in sys.path:
    sys.path.insert(0, str(WORKERS))

from sigkill_flows import STEPS, Counter, expected  # noqa: E402

RUNS = 200
KEYS = [f"bump[{i}]" for i in range(1, STEPS + 1)]


def _completed(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
    except sqlite3.Error:
        return 0
    try:
        (count,) = conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'completed'").fetchone()
        return int(count)
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _snapshot(db: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Run statuses and committed step keys, as the killed process left them."""
    with sqlite3.connect(db) as conn:
        runs = dict(conn.execute("SELECT run_id, status FROM runs").fetchall())
        done: dict[str, set[str]] = {r: set() for r in runs}
        for run_id, key in conn.execute(
            "SELECT run_id, step_key FROM steps WHERE status = 'completed'"
        ):
            done[run_id].add(key)
    conn.close()
    return runs, done


def _log(path: Path) -> list[tuple[str, str, int, int]]:
    lines = path.read_text().splitlines() if path.exists() else []
    out = []
    for line in lines:
        run_id, key, attempt, pid = line.split(" ")
        out.append((run_id, key, int(attempt), int(pid)))
    return out


async def test_sigkill_midway_then_recover_everything(tmp_path: Path) -> None:
    began = time.monotonic()
    db, log = tmp_path / "kill.db", tmp_path / "effects.log"
    threshold = random.randint(15, 80)  # kill once this many runs have completed
    worker = subprocess.Popen(
        [sys.executable, str(WORKERS / "sigkill_worker.py"), str(db), str(log), str(RUNS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while _completed(db) < threshold:
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.003)
        worker.send_signal(signal.SIGKILL)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(10)  # reap it, so its pid is gone and its leases are seen as dead
    assert worker.returncode == -signal.SIGKILL
    killed_pid = worker.pid

    statuses, done_at_kill = _snapshot(db)
    finished_at_kill = [r for r, s in statuses.items() if s == "completed"]
    unfinished_at_kill = [r for r, s in statuses.items() if s != "completed"]
    assert threshold <= len(finished_at_kill) < RUNS, "the kill did not land mid-way"
    assert unfinished_at_kill, "nothing was left to recover"
    assert all(s in ("running", "completed") for s in statuses.values()), statuses
    effects_at_kill = _log(log)
    assert {pid for *_, pid in effects_at_kill} == {killed_pid}

    # Recover in this process. Runs the worker had not created yet are started here; start
    # is idempotent, so the ones it had created are simply handed back.
    async with Engine(db) as engine:
        engine.register(Counter)
        handles = [
            await engine.start(Counter.count, str(log), i, run_id=f"run-{i:03d}")
            for i in range(RUNS)
        ]
        results = [await h.result(timeout=20) for h in handles]
        journals = {h.run_id: await engine.journal(h.run_id) for h in handles}
        infos = {h.run_id: await engine.get_run(h.run_id) for h in handles}
    assert results == [expected(i) for i in range(RUNS)]
    assert all(info.status == "completed" for info in infos.values())

    # Journal: every step completed exactly once, in order.
    for run_id, records in journals.items():
        assert [r.key for r in records] == KEYS, run_id
        assert [r.status for r in records] == ["completed"] * STEPS, run_id
        assert [r.seq for r in records] == list(range(1, STEPS + 1)), run_id

    # Executions: every step at least once; a second execution only for the one step each
    # unfinished run had in flight when the process died.
    effects = _log(log)
    counts = Tally((run_id, key) for run_id, key, _, _ in effects)
    assert set(counts) == {(f"run-{i:03d}", k) for i in range(RUNS) for k in KEYS}
    rerun = {pair: n for pair, n in counts.items() if n > 1}
    assert all(n == 2 for n in rerun.values()), rerun
    for run_id, key in rerun:
        assert run_id in unfinished_at_kill, (run_id, key)
        committed = done_at_kill[run_id]
        assert key not in committed, f"{run_id} re-ran {key}, which was already committed"
        assert key == KEYS[len(committed)], f"{run_id} re-ran {key}, not its step in flight"
    executed_at_kill = {(r, k) for r, k, _, _ in effects_at_kill}
    in_flight = sum(
        1 for r in unfinished_at_kill if (r, KEYS[len(done_at_kill[r])]) in executed_at_kill
    )
    assert len(rerun) <= in_flight <= len(unfinished_at_kill)
    # Runs that had finished before the kill never ran anything again.
    assert not any(r in finished_at_kill for r, *_ in effects[len(effects_at_kill) :])

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert time.monotonic() - began < 30
