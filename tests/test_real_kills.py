"""Proof of durability with real processes: SIGKILL at scale, and two workers on one file.

`test_sigkill.py` kills one worker once. Here:

1. One worker drives 1,000 runs (plain, durable sleeps, an at-most-once `try_` probe,
   compensation) and is SIGKILLed 20 times at random moments: during recovery, right
   after it, after a random time, after a random amount of progress. Each time the test
   reaps it, snapshots what the database holds, and starts a new one, which recovers the
   orphans and idempotently starts every run id again. The effect log (one line per
   execution, with its pid) is then checked against the snapshots: every step ran at least
   once; it ran again only when a kill caught it in flight (uncommitted in the snapshot
   right after that kill), once per such kill; nothing recorded, and no finished run, ever
   ran again; every journal holds each step exactly once, in order.
2. Two workers race on one database: both start the same 300 run ids at the same moment.
   Leases and transactional claims must keep every stretch of a run (before and after its
   durable sleep, whose due-claim both timer loops race for) in one process, and no step
   may run twice. Then one of them is killed: the survivor must adopt exactly the dead
   one's unfinished runs, re-running only the steps that were in flight at the kill. Then
   rolling kills: a replacement's recovery races the survivor's orphan scan.
3. Regressions for the engine bugs these tests found, reproduced in one process.

Randomness comes from a seeded `random.Random`; every assertion message names the seed
(rerun with DOTDO_KILL_SEED=<seed>).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dotdo import DO, Engine, PermanentError, StepInterrupted, step, workflow
from dotdo.engine.store.sqlite import SqliteStore

WORKERS = Path(__file__).resolve().parent / "_workers"
if str(WORKERS) not in sys.path:
    sys.path.insert(0, str(WORKERS))

import kill_flows as flows  # noqa: E402
from kill_support import (  # noqa: E402
    Era,
    Kill,
    Snapshot,
    Worker,
    audit,
    audit_concurrent,
    check_relays,
    effects,
    final_state,
    finish,
    integrity,
    kill,
    leases,
    paused,
    race,
    reap,
    recorded,
    segments,
    snapshot,
    spawn,
    wait_line,
)

RUNS = 1000
LEASE = 2.0  # short, so even a reused pid (a lease not seen as dead) expires quickly
STALL = 60.0  # no recorded progress for this long fails the test: a hang, not slowness
MODES = ["recovery"] * 3 + ["startup"] * 4 + ["timed"] * 5 + ["progress"] * 8


def _seed() -> int:
    return int(os.environ.get("DOTDO_KILL_SEED") or random.randrange(2**32))


def _kill_when(
    worker: Worker, db: Path, rng: random.Random, mode: str, total: int, tag: str
) -> None:
    """Wait for this kill's moment: a random delay or a random share of the work left,
    whichever comes first (the share caps every kill, so work is left for the next)."""
    wait_line(worker, "recovering", STALL)
    if mode != "recovery":
        wait_line(worker, "open", STALL)
    base = last = recorded(db)
    share = rng.uniform(0.02, 0.10) if mode == "progress" else 0.12
    target = base + max(1, int((total - base) * share))
    delay = {
        "recovery": rng.uniform(0.0, 0.02),
        "startup": rng.uniform(0.0, 0.04),
        "timed": rng.uniform(0.05, 0.5),
    }.get(mode, float("inf"))
    began = moved = time.monotonic()
    while time.monotonic() - began < delay:
        done = recorded(db)
        if done >= target:
            return
        if done != last:
            last, moved = done, time.monotonic()
        assert time.monotonic() - moved < STALL, f"{tag} no progress for {STALL}s at {done}"
        assert worker.proc.poll() is None, f"{tag} worker died by itself: {worker.stderr()}"
        time.sleep(0.002)


def test_thousand_runs_survive_twenty_sigkills(tmp_path: Path) -> None:
    seed = _seed()
    rng = random.Random(seed)
    tag = f"(seed={seed}; DOTDO_KILL_SEED={seed} replays this kill plan)"
    began = time.monotonic()
    db, log = tmp_path / "kills.db", tmp_path / "effects.log"
    order = {flows.run_id(i): flows.plan(i) for i in range(RUNS)}
    total = sum(len(keys) for keys in order.values())
    modes = list(MODES)
    rng.shuffle(modes)
    eras: list[Era] = []
    workers: list[Worker] = []
    before = Snapshot()
    try:
        for mode in modes:
            worker = spawn(db, log, "ledger", RUNS, LEASE, 100)
            workers.append(worker)
            _kill_when(worker, db, rng, mode, total, tag)
            kill(worker)
            after = snapshot(db)
            unfinished = RUNS - len(after.finished())
            eras.append(Era(worker.pid, before, after, mode, unfinished))
            before = after
        last = spawn(db, log, "ledger", RUNS, LEASE, 100)
        workers.append(last)
        finish(last, 150)
        eras.append(Era(last.pid, before, snapshot(db), "final"))
    finally:
        for worker in workers:
            reap(worker)
    for worker in workers:
        assert not worker.stderr().strip(), f"{tag} worker {worker.pid}: {worker.stderr()}"

    # Every run ended as its kind prescribes, with the result only a full chain gives, and
    # its journal holds each step exactly once, completed ones numbered 1..n in order.
    infos, journals = asyncio.run(final_state(db))
    assert sorted(infos) == sorted(order), tag
    interrupted = set()
    for i in range(RUNS):
        run, info = flows.run_id(i), infos[flows.run_id(i)]
        records = journals[run]
        by_key = {r.key: r for r in records}
        assert len(by_key) == len(records) and set(by_key) == set(order[run]), (tag, run)
        failed = {k: r.error for k, r in by_key.items() if r.status != "completed"}
        completed = [k for k in order[run] if k not in failed]
        if flows.kind(i) == "compensate":
            assert info.status == "compensated", (tag, run, info.status)
            assert isinstance(info.error, PermanentError), (tag, run, info.error)
            assert str(info.error) == f"declined {i}", (tag, run)
            assert list(failed) == ["boom"], (tag, run, failed)
        else:
            probe_ran = "probe" not in failed
            if not probe_ran:
                assert isinstance(failed.pop("probe"), StepInterrupted), (tag, run)
                interrupted.add(run)
            assert not failed, (tag, run, failed)
            assert info.status == "completed", (tag, run, info.status, info.error)
            assert info.result == flows.expected(i, probe_ran=probe_ran), (tag, run)
        done = [r for r in records if r.status == "completed"]
        assert [r.key for r in done] == completed, (tag, run)
        assert [r.seq for r in done] == list(range(1, len(done) + 1)), (tag, run)

    # Executions against the snapshots: once, plus once more per kill that caught the step
    # in flight; a `try_` probe at most once, and interrupted only if a kill caught it.
    log_lines = effects(log)
    cuts = audit(eras, log_lines, order, {"probe"})
    runs_of = Counter((x.run, x.key) for x in log_lines)
    for run, keys in order.items():
        for key in keys:
            n, cut = runs_of[(run, key)], cuts[(run, key)]
            if key == "probe":
                assert n <= 1 and n == cut + (run not in interrupted), (tag, run, n, cut)
                if run in interrupted:
                    assert any(key in e.after.started.get(run, ()) for e in eras), (tag, run)
            else:
                assert n == 1 + cut, f"{tag} {run} {key} ran {n}x, {cut} kill(s) caught it"
    assert set(runs_of) <= {(run, key) for run, keys in order.items() for key in keys}, tag

    # The kills landed on unfinished work, and most of them cut steps short.
    killed = eras[:-1]
    assert all(e.unfinished > 0 for e in killed), (tag, [e.unfinished for e in killed])
    assert sum(e.in_flight > 0 for e in killed) >= 10, (tag, [e.in_flight for e in killed])
    assert integrity(db) == "ok", tag
    print(
        f"\n{tag}: {len(killed)} kills in {time.monotonic() - began:.1f}s; unfinished at each "
        f"{[e.unfinished for e in killed]}; in flight {[e.in_flight for e in killed]}; "
        f"modes {[e.mode for e in killed]}; {sum(cuts.values())} re-executions, "
        f"{len(interrupted)} interrupted probes"
    )


# ------------------------------------------------------------------ two workers
PAIR_RUNS = 300


def test_two_workers_never_advance_the_same_run(tmp_path: Path) -> None:
    tag = "(two workers, no kill)"
    began = time.monotonic()
    workers: list[Worker] = []
    try:
        db, log = race(tmp_path, 1.0, workers, PAIR_RUNS)
        for worker in workers:
            finish(worker, 150)
    finally:
        for worker in workers:
            reap(worker)
    for worker in workers:
        assert not worker.stderr().strip(), f"{tag} worker {worker.pid}: {worker.stderr()}"
    check_relays(db, tag, PAIR_RUNS)

    log_lines = effects(log)
    twice = [pair for pair, n in Counter((x.run, x.key) for x in log_lines).items() if n > 1]
    assert not twice, f"{tag} steps ran twice: {twice[:10]}"
    assert len(log_lines) == PAIR_RUNS * flows.RELAY_STEPS, tag
    # Between durable waits a run is advanced by one process; only the claim of a due
    # sleep may hand it to the other.
    stretches = segments(log_lines, flows.SEGMENTS)
    for (run, n), executions in stretches.items():
        pids = {pid for _, pid in executions}
        assert len(pids) == 1, f"{tag} {run} segment {n} advanced by {pids}"
    pids = [w.pid for w in workers]
    first = [stretches[(flows.run_id(i), 0)][0][1] for i in range(PAIR_RUNS)]
    after_sleep = [stretches[(flows.run_id(i), 1)][0][1] for i in range(PAIR_RUNS)]
    started, woken = Counter(first), Counter(after_sleep)
    moved = sum(a != b for a, b in zip(first, after_sleep, strict=True))
    print(
        f"\n{tag}: {time.monotonic() - began:.1f}s; first segments by pid "
        f"{[started[p] for p in pids]}, due claims won {[woken[p] for p in pids]}, "
        f"{moved} runs changed process at their sleep"
    )


def test_survivor_adopts_a_killed_workers_runs(tmp_path: Path) -> None:
    seed = _seed()
    rng = random.Random(seed)
    tag = f"(seed={seed})"
    began = time.monotonic()
    total = PAIR_RUNS * flows.RELAY_STEPS
    target = int(total * rng.uniform(0.2, 0.6))
    workers: list[Worker] = []
    try:
        db, log = race(tmp_path, 1.0, workers, PAIR_RUNS)
        # Past a random share of the work, kill whichever worker holds more running runs.
        deadline = time.monotonic() + STALL
        while True:
            held = [leases(db, w.pid) for w in workers] if recorded(db) >= target else [0, 0]
            if max(held) > 0:
                break
            assert time.monotonic() < deadline, f"{tag} no progress to {target} in {STALL}s"
            assert all(w.proc.poll() is None for w in workers), (tag, [w.stderr() for w in workers])
            time.sleep(0.002)
        victim, survivor = workers if held[0] >= held[1] else workers[::-1]
        with paused(survivor):  # so that it cannot adopt anything before the snapshot
            kill(victim)
            at_kill = snapshot(db)
            logged_at_kill = len(effects(log))
        finish(survivor, 150)
    finally:
        for worker in workers:
            reap(worker)
    for worker in workers:
        assert not worker.stderr().strip(), f"{tag} worker {worker.pid}: {worker.stderr()}"
    check_relays(db, tag, PAIR_RUNS)

    log_lines = effects(log)
    assert {x.pid for x in log_lines[logged_at_kill:]} <= {survivor.pid}, tag
    adopted = {r for r, o in at_kill.owner.items() if o and f":{victim.pid}:" in o}
    assert adopted, f"{tag} the kill left the victim owning no unfinished run"
    assert all(at_kill.status[r] == "running" for r in adopted), tag
    # A step ran twice only if the victim had it in flight (unrecorded at the kill, the
    # run's next step, one per run); within a stretch between durable waits a run changed
    # process only after the kill, from the victim to the survivor.
    order = {flows.run_id(i): flows.relay_keys() for i in range(PAIR_RUNS)}
    kills = [Kill(victim.pid, at_kill, logged_at_kill)]
    reran = audit_concurrent(log_lines, kills, order, flows.SEGMENTS)
    assert all(run in adopted for run, _ in reran), (tag, reran)
    stretches = segments(log_lines, flows.SEGMENTS)
    for (run, n), executions in stretches.items():
        pids = [pid for _, pid in executions]
        if len(set(pids)) > 1:
            assert run in adopted and pids[0] == victim.pid, (tag, run, n, pids)
    unfinished = PAIR_RUNS - len(at_kill.finished())
    woke = sum(
        stretches[(flows.run_id(i), 0)][-1][1] == victim.pid
        and stretches[(flows.run_id(i), 1)][0][0] >= logged_at_kill
        for i in range(PAIR_RUNS)
    )
    print(
        f"\n{tag}: {time.monotonic() - began:.1f}s; killed at {target}/{total} steps with "
        f"{unfinished} runs unfinished; survivor adopted {len(adopted)} running runs and "
        f"re-ran {len(reran)} steps in flight; it woke {woke} runs the victim had put to sleep"
    )


def test_two_workers_under_rolling_kills(tmp_path: Path) -> None:
    """Kill one of two workers, start a replacement, four times: each replacement's recovery
    races the survivor's orphan scan for the dead one's runs, and both race for due sleeps."""
    seed = _seed()
    rng = random.Random(seed)
    tag = f"(seed={seed}, rolling)"
    began = time.monotonic()
    total = PAIR_RUNS * flows.RELAY_STEPS
    workers: list[Worker] = []
    kills: list[Kill] = []
    try:
        db, log = race(tmp_path, 1.0, workers, PAIR_RUNS)
        live = list(workers)
        for _ in range(4):
            base = recorded(db)
            target = base + int((total - base) * rng.uniform(0.05, 0.2))
            deadline = time.monotonic() + STALL
            while True:
                held = [leases(db, w.pid) for w in live] if recorded(db) >= target else [0]
                if max(held) > 0 or recorded(db) >= total:
                    break
                assert time.monotonic() < deadline, f"{tag} no progress to {target} in {STALL}s"
                time.sleep(0.002)
            victim = live[held.index(max(held))] if len(held) == len(live) else rng.choice(live)
            live.remove(victim)
            with paused(live[0]):
                kill(victim)
                kills.append(Kill(victim.pid, snapshot(db), len(effects(log))))
            live.append(spawn(db, log, "relay", PAIR_RUNS, 1.0, 10))
            workers.append(live[-1])
        for worker in live:
            finish(worker, 150)
    finally:
        for worker in workers:
            reap(worker)
    for worker in workers:
        assert not worker.stderr().strip(), f"{tag} worker {worker.pid}: {worker.stderr()}"
    check_relays(db, tag, PAIR_RUNS)
    order = {flows.run_id(i): flows.relay_keys() for i in range(PAIR_RUNS)}
    cuts = audit_concurrent(effects(log), kills, order, flows.SEGMENTS)
    held_at_kill = [sum(1 for o in k.at.owner.values() if o and f":{k.pid}:" in o) for k in kills]
    print(
        f"\n{tag}: {time.monotonic() - began:.1f}s; the 4 victims held {held_at_kill} running "
        f"runs; {sum(cuts.values())} steps cut short and run again"
    )


# ------------------------------------------------------- regressions found here
async def test_two_engines_opening_a_new_file_at_once_both_open(tmp_path: Path) -> None:
    """Two workers started on a new database: both read "no schema" before either took the
    write lock and the second failed with "table meta already exists"; and the switch to
    WAL failed at once with "database is locked" while the other held the file briefly."""
    for i in range(50):
        engines = [Engine(tmp_path / f"new{i}.db") for _ in range(2)]
        outcomes = await asyncio.gather(*(e.open() for e in engines), return_exceptions=True)
        for engine in engines:
            await engine.close()
        assert outcomes == [None, None], outcomes


class _Slow(DO):
    calls = 0

    @step
    async def crawl(self) -> int:
        _Slow.calls += 1
        await asyncio.sleep(1.0)
        return _Slow.calls

    @workflow
    async def go(self) -> int:
        return await self.crawl()


async def test_a_failed_lease_renewal_does_not_end_renewals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One renewal failing (a busy database) ended the lease loop: the leases then expired
    while their runs were still being advanced, and another process took them over."""
    renewals = 0

    renew = SqliteStore.renew_leases

    async def flaky(store: SqliteStore, ttl: float) -> list[str]:
        nonlocal renewals
        renewals += 1
        if renewals == 1:
            raise sqlite3.OperationalError("database is locked")
        return await renew(store, ttl)

    monkeypatch.setattr(SqliteStore, "renew_leases", flaky)
    monkeypatch.setattr(_Slow, "calls", 0)
    db = tmp_path / "lease.db"
    async with Engine(db, lease_seconds=0.6) as first:
        first.register(_Slow)
        handle = await first.start(_Slow.go, run_id="slow")
        deadline = time.monotonic() + 10
        while renewals < 3:  # with the bug, renewals stop at the failed first one
            assert time.monotonic() < deadline, f"renewals stopped after {renewals}"
            await asyncio.sleep(0.01)
        # The lease is fresh: another engine opening now must not take the run over.
        async with Engine(db, lease_seconds=0.6) as second:
            second.register(_Slow)
            assert await second.recover() == []
        assert await handle.result(timeout=10) == 1
    assert _Slow.calls == 1
