"""Helpers for tests/test_real_kills.py: worker processes, DB snapshots, the effect log.

A snapshot is read right after a worker was SIGKILLed and reaped (any other worker held
still with SIGSTOP), through a read-only connection: it holds everything the dead process
had committed. Together with the effect log (one line per step execution, with the
executing pid) it tells, for every execution, whether the step was recorded before (it
must never run again), recorded by that process, or in flight when it died (the only kind
allowed to run again). `audit` checks workers that ran one after another, and
`audit_concurrent` workers that ran side by side.
"""

from __future__ import annotations

import asyncio
import itertools
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import kill_flows

from dotdo import Engine, RunInfo, StepRecord

WORKER = Path(__file__).resolve().parent / "kill_worker.py"
FINISHED = ("completed", "failed", "compensated", "cancelled")


# ------------------------------------------------------------------- processes
@dataclass
class Worker:
    """A worker process; its stderr goes to a file (a pipe nobody reads could fill up)."""

    proc: subprocess.Popen[bytes]
    errors: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.errors.read_text(errors="replace") if self.errors.exists() else ""

    def close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def spawn(
    db: Path, log: Path, flow: str, runs: int, lease: float, wave: int, *, barrier: bool = False
) -> Worker:
    argv = [sys.executable, str(WORKER), str(db), str(log), flow, str(runs), str(lease), str(wave)]
    errors = log.with_name(f"worker-{time.monotonic_ns()}.err")
    with open(errors, "wb") as sink:
        proc = subprocess.Popen(
            [*argv, *(["--barrier"] if barrier else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sink,
            bufsize=0,  # unbuffered: a line read never leaves the next one hidden from select
        )
    return Worker(proc, errors)


def wait_line(worker: Worker, word: str, timeout: float) -> None:
    """Block until the worker prints `word` on a line of its own (or fail, with its stderr)."""
    out: IO[bytes] | None = worker.proc.stdout
    assert out is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        problem = f"worker {worker.pid} did not say {word!r} in {timeout}s: {worker.stderr()}"
        assert left > 0, problem
        ready, _, _ = select.select([out], [], [], min(left, 0.5))
        if ready:
            line = out.readline()
            assert line, f"worker {worker.pid} exited before {word!r}: {worker.stderr()}"
            if line.decode().strip() == word:
                return


def kill(worker: Worker) -> None:
    """SIGKILL and reap, so the pid is gone and the leases it held are seen as dead."""
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(30)
    assert worker.proc.returncode == -signal.SIGKILL, (worker.proc.returncode, worker.stderr())
    worker.close_pipes()


@contextmanager
def paused(worker: Worker) -> Iterator[None]:
    """Hold a worker still (SIGSTOP) so a snapshot and the log agree with each other."""
    worker.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        worker.proc.send_signal(signal.SIGCONT)


def finish(worker: Worker, timeout: float) -> None:
    """Wait for a worker to end by itself: every run done, exit status 0."""
    try:
        worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        worker.proc.wait()
        raise AssertionError(f"worker {worker.pid} did not finish in {timeout}s") from None
    assert worker.proc.returncode == 0, (worker.proc.returncode, worker.stderr())
    assert worker.proc.stdout is not None
    assert b"finished" in worker.proc.stdout.read(), worker.stderr()
    worker.close_pipes()


def reap(worker: Worker) -> None:
    """Clean-up after a failed test: never leave a worker behind."""
    if worker.proc.poll() is None:
        worker.proc.kill()
        worker.proc.wait(30)
    worker.close_pipes()


# -------------------------------------------------------------------- database
def _read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


@dataclass
class Snapshot:
    """What the database held at one moment: run statuses and per-run step keys by status."""

    status: dict[str, str] = field(default_factory=dict)
    done: dict[str, set[str]] = field(default_factory=dict)
    """Completed or failed step keys: recorded for good, never to run again."""
    started: dict[str, set[str]] = field(default_factory=dict)
    """`try_` steps journalled as started but not finished (in flight, at most once)."""
    owner: dict[str, str | None] = field(default_factory=dict)

    def finished(self) -> set[str]:
        return {r for r, s in self.status.items() if s in FINISHED}

    def done_of(self, run: str) -> set[str]:
        return self.done.get(run, set())


def snapshot(db: Path) -> Snapshot:
    snap = Snapshot()
    if not db.exists():
        return snap
    conn = _read_only(db)
    try:
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.OperationalError:
            # Killed inside its first transaction (the schema, before WAL): a hot rollback
            # journal, which a read-only connection cannot roll back. Read through a normal
            # one, which rolls it back as the next worker would: the committed state.
            if not Path(f"{db}-journal").exists():
                raise
            conn.close()
            conn = sqlite3.connect(db, timeout=5)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "runs" not in tables:
            return snap  # killed before its schema was committed: nothing recorded yet
        for run, status, owner in conn.execute("SELECT run_id, status, lease_owner FROM runs"):
            snap.status[run], snap.owner[run] = status, owner
        for run, key, status in conn.execute("SELECT run_id, step_key, status FROM steps"):
            target = snap.started if status == "started" else snap.done
            target.setdefault(run, set()).add(key)
    finally:
        conn.close()
    return snap


def recorded(db: Path) -> int:
    """How many steps are recorded for good (a cheap progress gauge; 0 when unreadable)."""
    try:
        conn = _read_only(db)
    except sqlite3.Error:
        return 0
    try:
        (n,) = conn.execute("SELECT COUNT(*) FROM steps WHERE status != 'started'").fetchone()
        return int(n)
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def leases(db: Path, pid: int) -> int:
    """How many running runs the process `pid` holds the lease of (0 when unreadable)."""
    try:
        conn = _read_only(db)
    except sqlite3.Error:
        return 0
    try:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM runs WHERE status = 'running' AND lease_owner LIKE ?",
            (f"%:{pid}:%",),
        ).fetchone()
        return int(n)
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def integrity(db: Path) -> str:
    conn = _read_only(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# ------------------------------------------------------------------ effect log
@dataclass(frozen=True)
class Effect:
    run: str
    key: str
    attempt: int
    pid: int


def effects(log: Path) -> list[Effect]:
    """The log's lines in write order (O_APPEND: the order the executions happened)."""
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        run, key, attempt, pid = line.split(" ")
        out.append(Effect(run, key, int(attempt), int(pid)))
    return out


def segments(
    log: list[Effect], stretches: tuple[tuple[str, ...], ...]
) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """(run, stretch number) -> [(log position, pid)] of its executions, in order; a stretch
    is the steps between two durable waits."""
    stretch_of = {key: n for n, keys in enumerate(stretches) for key in keys}
    out: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for position, x in enumerate(log):
        out.setdefault((x.run, stretch_of[x.key]), []).append((position, x.pid))
    return out


def next_step(order: list[str], done: set[str]) -> str | None:
    return next((k for k in order if k not in done), None)


@dataclass
class Era:
    """One worker's life: what was recorded when it started and when it was killed."""

    pid: int
    before: Snapshot
    after: Snapshot
    mode: str = ""
    unfinished: int = 0
    in_flight: int = 0


def audit(
    eras: list[Era], log: list[Effect], order: dict[str, list[str]], at_most_once: set[str]
) -> Counter[tuple[str, str]]:
    """Check every execution of sequential worker lives against the snapshots between them.

    An execution by era k's process must be of a step not recorded when k started; each
    process runs a step at most once; a step it ran but had not recorded when it died must
    be the run's next step (the one in flight), at most one per run; a step it recorded it
    must have run (except an `at_most_once` step recorded as interrupted). Sets each era's
    `in_flight` (executions its kill cut short) and returns, per (run, key), how many kills
    cut that step short.
    """
    cuts: Counter[tuple[str, str]] = Counter()
    pids = {e.pid for e in eras}
    strangers = {x.pid for x in log} - pids
    assert not strangers, f"executions by unknown processes {strangers}"
    for era in eras:
        mine = Counter((x.run, x.key) for x in log if x.pid == era.pid)
        twice = [pair for pair, n in mine.items() if n > 1]
        assert not twice, f"pid {era.pid} ({era.mode}) ran steps twice: {twice[:5]}"
        cut: dict[str, str] = {}
        for run, key in mine:
            before = era.before.done_of(run) | era.before.started.get(run, set())
            assert key not in before, f"{run} re-ran {key}, recorded before pid {era.pid}"
            assert run not in era.before.finished(), f"{run} ran {key} after it had finished"
            if key not in era.after.done_of(run):
                assert run not in cut, f"{run} had {cut.get(run)} and {key} in flight at once"
                cut[run] = key
                cuts[(run, key)] += 1
                expected = next_step(order[run], era.after.done_of(run))
                assert key == expected, f"{run}: {key} in flight, its next step is {expected}"
        era.in_flight = len(cut)
        for run, keys in era.after.done.items():
            for key in keys - era.before.done_of(run) - at_most_once:
                assert (run, key) in mine, f"{run}: {key} recorded by pid {era.pid} unrun"
    return cuts


# ---------------------------------------------------------------- final state
async def final_state(db: Path) -> tuple[dict[str, RunInfo], dict[str, list[StepRecord]]]:
    """Every run and its journal, through the public API (no workflow registered, so this
    engine recovers nothing: it only reads)."""
    async with Engine(db) as engine:
        infos = {info.run_id: info for info in await engine.runs(limit=1_000_000)}
        journals = {run: await engine.journal(run) for run in infos}
    return infos, journals


@dataclass
class Kill:
    """A worker killed while others ran: `at` was read with the others paused, so it holds
    everything the dead process ever recorded; `logged` counts the log lines before it."""

    pid: int
    at: Snapshot
    logged: int


def audit_concurrent(
    log: list[Effect],
    kills: list[Kill],
    order: dict[str, list[str]],
    stretches: tuple[tuple[str, ...], ...],
) -> Counter[tuple[str, str]]:
    """Check executions by workers that ran side by side, some of them killed.

    Each step has exactly one execution that counts; any other must be by a killed process
    that had not recorded it when it died and for which it was that run's next step, one
    per run and kill. Within a stretch between durable waits a run changes process only
    after the process it leaves was killed. Returns, per (run, key), the kills that cut it.
    """
    killed = {k.pid: k for k in kills}
    runs_of: dict[tuple[str, str], list[int]] = {}
    for x in log:
        runs_of.setdefault((x.run, x.key), []).append(x.pid)
    cuts: Counter[tuple[str, str]] = Counter()
    cut_runs: set[tuple[int, str]] = set()
    for (run, key), pids in runs_of.items():
        for pid in pids:
            k = killed.get(pid)
            if k is None or key in k.at.done_of(run):
                continue
            assert (pid, run) not in cut_runs, f"{run}: two steps in flight when {pid} died"
            cut_runs.add((pid, run))
            expected = next_step(order[run], k.at.done_of(run))
            assert key == expected, f"{run}: {key} in flight at kill of {pid}, next is {expected}"
            cuts[(run, key)] += 1
        counted = len(pids) - cuts[(run, key)]
        assert counted == 1, f"{run} {key}: run by {pids}, {cuts[(run, key)]} cut by kills"
    for (run, n), executions in segments(log, stretches).items():
        for (_, before), (position, after) in itertools.pairwise(executions):
            if before != after:
                k = killed.get(before)
                assert k is not None and position >= k.logged, (
                    f"{run} stretch {n} went from {before} to {after} while {before} lived"
                )
    return cuts


# ------------------------------------------------------------- two relay workers
def race(tmp_path: Path, lease: float, workers: list[Worker], runs: int) -> tuple[Path, Path]:
    """Two relay workers on one new database, released together to start the same run ids
    (appended to `workers` at once, so the caller can always reap them)."""
    db, log = tmp_path / "pair.db", tmp_path / "effects.log"
    for _ in range(2):
        workers.append(spawn(db, log, "relay", runs, lease, 10, barrier=True))
    for worker in workers:
        wait_line(worker, "open", 60)
    for worker in workers:
        assert worker.proc.stdin is not None
        worker.proc.stdin.write(b"go\n")
        worker.proc.stdin.flush()
    return db, log


def check_relays(db: Path, tag: str, runs: int) -> None:
    """Every relay completed with the full chain's result; each step journalled once, in
    order; the file is intact."""
    infos, journals = asyncio.run(final_state(db))
    assert sorted(infos) == [kill_flows.run_id(i) for i in range(runs)], tag
    keys = kill_flows.relay_keys()
    for i in range(runs):
        run = kill_flows.run_id(i)
        info, records = infos[run], journals[run]
        assert info.status == "completed", (tag, run, info.status, info.error)
        assert info.result == kill_flows.relay_expected(i), (tag, run)
        assert [r.key for r in records] == keys, (tag, run)
        assert [r.status for r in records] == ["completed"] * len(keys), (tag, run)
        assert [r.seq for r in records] == list(range(1, len(keys) + 1)), (tag, run)
    assert integrity(db) == "ok", tag
