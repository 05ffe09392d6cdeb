"""The SQLite database of a store: its two connections, migrations on open, group commit.

One writer task owns every write. Checkpoints that arrive while a transaction is in flight
wait in a queue and all go into the next transaction together (group commit), so one fsync
serves many runs; each run's coroutine resumes only after its own commit. Other writes
(creating a run, claiming leases) are jobs in that same transaction, each inside a savepoint
so one failing job cannot undo another's work. Reads use a second connection: in WAL mode
they see committed data and never wait for the writer.

A transaction that fails (a full disk, an I/O error, a lock held past busy_timeout) stores
nothing: each of its writers gets a `StoreWriteError` and the writer task goes on with the
next batch; `health` logs the outage and tells waiting retries when writes work again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from dotdo.engine.store.files import (
    check_path,
    connect_read_only,
    is_read_only_error,
    read_only_reason,
)
from dotdo.engine.store.health import WriteHealth
from dotdo.engine.store.interface import Checkpoint
from dotdo.engine.store.sqlite.checkpoints import write_checkpoints
from dotdo.engine.store.sqlite.migrations import SCHEMA_VERSION, migrate, schema_version
from dotdo.errors import LeaseLost, StoreError

__all__ = ["CommitHook", "Database"]

T = TypeVar("T")


@dataclass
class _Job:
    fn: Callable[[aiosqlite.Connection], Awaitable[Any]]
    future: asyncio.Future[Any]


@dataclass
class _ThreadJob:
    """A job that runs as plain sqlite3 code on the writer thread, in the group's hop."""

    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


CommitHook = Callable[[str, Sequence[str]], None]


class Database:
    """The connections of one store and its writer task: open it, write through it (each
    write joins the next group transaction), read from it, close it. `SqliteStore` adds the
    domain operations; `write`, `fetch` and friends are SQLite's own (tests use them)."""

    def __init__(
        self,
        path: str | Path,
        *,
        owner: str,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        commit_hook: CommitHook | None = None,
        busy_timeout: float = 5.0,
        read_only: bool = False,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        self.busy_timeout = busy_timeout
        self.path = str(path)
        self.owner = owner
        self.synchronous = synchronous
        self.commit_hook = commit_hook
        self.read_only = read_only
        """Only a reader connection opened `mode=ro`: every write raises StoreError."""
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._jobs: list[_Job] = []
        self._thread_jobs: list[_ThreadJob] = []
        self._checkpoints: list[tuple[Checkpoint, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self.batches = 0
        self.committed = 0
        self.health = WriteHealth(self.path)

    # -------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        check_path(self.path, must_exist=self.read_only)
        if self.read_only:
            await self._open_read_only()
            return
        reason = read_only_reason(self.path)
        if reason is not None:
            raise StoreError(
                f"{reason}: only commands that read (status, runs, approvals) can use it"
            )
        try:
            self._writer = await self._connect()
            # Refuse a foreign or newer database before touching it (WAL changes the header).
            await migrate(self._writer, self.path)
            await self._configure(self._writer)
            self._reader = await self._connect()
            await self._configure(self._reader)
        except sqlite3.DatabaseError as exc:
            await self._close_connections()
            raise StoreError(_describe(self.path, exc)) from None
        except StoreError:
            await self._close_connections()
            raise
        self._task = asyncio.create_task(self._write_loop(), name="dotdo-store-writer")

    async def _open_read_only(self) -> None:
        try:
            self._reader = await connect_read_only(self.path, self.busy_timeout)
            version = await schema_version(self._reader, self.path)
        except sqlite3.DatabaseError as exc:
            await self._close_connections()
            raise StoreError(_describe(self.path, exc)) from None
        except StoreError:
            await self._close_connections()
            raise
        if version != SCHEMA_VERSION:
            await self._close_connections()
            what = "is not a dotdo database" if version == 0 else f"has schema version {version}"
            raise StoreError(
                f"{self.path} {what}; reading it needs version {SCHEMA_VERSION} "
                "(a writing command such as `dotdo worker` upgrades it)"
            )

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _configure(self, conn: aiosqlite.Connection) -> None:
        # Switching a new file to WAL needs it to itself, and SQLite answers "locked" at once
        # instead of waiting: another process opening the same new file at the same moment
        # holds it for milliseconds. Retry for as long as any other statement would wait.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                await conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.005)
        await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        await conn.execute("PRAGMA foreign_keys = ON")

    async def close(self) -> None:
        """Finish queued writes, then close. Safe to call twice."""
        self.health.close()
        if self._task is not None:
            if self._failed is None and not self._task.done():
                # Flush what is queued; a writer that stopped answering must not hang close.
                with contextlib.suppress(Exception, TimeoutError):
                    await asyncio.wait_for(self.write(_noop), timeout=30)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._close_connections()

    async def abandon(self, error: BaseException) -> None:
        """Stop at once, committing nothing more (a simulated crash). Safe to call again
        after an abandon that was cancelled half-way: it finishes closing."""
        self._failed = error
        self.health.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._fail_pending(error)
        if self._writer is not None:
            try:
                await self._writer.execute("ROLLBACK")
            except (sqlite3.Error, ValueError):  # ValueError: already closed
                pass
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                try:
                    await conn.close()
                except (sqlite3.Error, ValueError):
                    pass
        self._writer = self._reader = None

    # ------------------------------------------------------------------ writes
    async def write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `fn` inside the next group transaction; returns after it commits."""
        self._check()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(fn, future))
        self._wake.set()
        return await future

    async def write_on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Like `write`, for synchronous sqlite3 code: it joins the group transaction on the
        writer thread, costing no thread hop of its own."""
        self._check()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._thread_jobs.append(_ThreadJob(fn, future))
        self._wake.set()
        return await future

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement in the next group transaction."""

        async def job(conn: aiosqlite.Connection) -> None:
            await conn.execute(sql, params)

        await self.write(job)

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Persist a transition; returns once committed. Raises LeaseLost if not ours."""
        self._check()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._checkpoints.append((checkpoint, future))
        self._wake.set()
        await future

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only: nothing can be written")
        if self._task is None:
            raise StoreError("the store is not open")

    async def _write_loop(self) -> None:
        assert self._writer is not None
        conn = self._writer
        while True:
            await self._wake.wait()
            self._wake.clear()
            jobs, self._jobs = self._jobs, []
            thread_jobs, self._thread_jobs = self._thread_jobs, []
            checkpoints, self._checkpoints = self._checkpoints, []
            if not jobs and not checkpoints and not thread_jobs:
                continue
            lost: set[str] = set()
            outcomes: list[tuple[bool, Any]] = []
            run_ids = [c.run_id for c, _ in checkpoints]
            try:
                if jobs:
                    await conn.execute("BEGIN IMMEDIATE")
                    outcomes = [await _run_job(conn, job) for job in jobs]
                # The checkpoints and the COMMIT (and BEGIN, when no job opened the
                # transaction) run as one function on the connection's thread: one hop.
                lost, thread_outcomes = await _on_thread(
                    conn,
                    _commit_checkpoints,
                    self.owner,
                    [c for c, _ in checkpoints],
                    self.commit_hook,
                    not jobs,
                    [j.fn for j in thread_jobs],
                )
                self.batches += 1
                self.committed += len(checkpoints)
                if self.health.since is not None:
                    self.health.succeeded()
                if self.commit_hook:
                    try:
                        self.commit_hook("after_commit", run_ids)
                    except Exception:  # the commit stands: a hook's error cannot undo it
                        self.health.hook_failed()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                try:
                    await conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                error: BaseException = exc
                if isinstance(exc, Exception):
                    error = self.health.failed(exc)
                for pending in [j.future for j in jobs] + [j.future for j in thread_jobs]:
                    _settle(pending, error=error)
                for _, future in checkpoints:
                    _settle(future, error=error)
                if not isinstance(exc, Exception):
                    self._failed = exc
                    self._fail_pending(exc)
                    return
                continue
            futures = [j.future for j in jobs] + [j.future for j in thread_jobs]
            for future, (ok, value) in zip(futures, outcomes + thread_outcomes, strict=True):
                if ok:
                    _settle(future, value=value)
                else:
                    _settle(future, error=value)
            for cp, future in checkpoints:
                if cp.run_id in lost:
                    _settle(future, error=LeaseLost(f"run {cp.run_id!r} is owned elsewhere"))
                else:
                    _settle(future, value=None)

    def _fail_pending(self, error: BaseException) -> None:
        for future in [j.future for j in self._jobs] + [j.future for j in self._thread_jobs]:
            _settle(future, error=error)
        self._thread_jobs = []
        for _, future in self._checkpoints:
            _settle(future, error=error)
        self._jobs, self._checkpoints = [], []

    # ------------------------------------------------------------------- reads
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if self._reader is None:
            raise StoreError("the store is not open")
        self._reader.row_factory = sqlite3.Row
        return list(await self._reader.execute_fetchall(sql, params))

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None


async def _noop(conn: aiosqlite.Connection) -> None:
    return None


async def _run_job(conn: aiosqlite.Connection, job: _Job) -> tuple[bool, Any]:
    await conn.execute("SAVEPOINT job")
    try:
        value = await job.fn(conn)
    except Exception as exc:
        if not conn.in_transaction:
            raise  # SQLite rolled the whole transaction back (a full disk): the batch failed
        await conn.execute("ROLLBACK TO job")
        await conn.execute("RELEASE job")
        return False, exc
    await conn.execute("RELEASE job")
    return True, value


def _settle(
    future: asyncio.Future[Any], *, value: Any = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _describe(path: str, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a usable database (corrupt or not SQLite): {text}"
    if "locked" in text:
        return f"{path} is locked by another process: {text}"
    if is_read_only_error(exc):
        return f"{path} is read-only ({text}): only reading commands can use it"
    if "unable to open" in text:
        return f"cannot open {path}: {text}"
    return f"{path}: {text}"


async def _on_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` on aiosqlite's connection thread in one hop.

    aiosqlite hops threads once per statement; a group transaction of a dozen statements
    would pay a dozen hops. Its `_execute` queues one function on the same thread instead.
    """
    raw = conn._connection
    assert raw is not None
    result: T = await conn._execute(fn, raw, *args)  # type: ignore[no-untyped-call]
    return result


def _commit_checkpoints(
    raw: sqlite3.Connection,
    owner: str,
    checkpoints: list[Checkpoint],
    hook: CommitHook | None,
    begin: bool,
    thread_jobs: list[Callable[[sqlite3.Connection], Any]],
) -> tuple[set[str], list[tuple[bool, Any]]]:
    """Run thread jobs (each in a savepoint), write a batch of checkpoints (lease-guarded)
    and commit: the whole group transaction in one call on the writer thread."""
    outcomes: list[tuple[bool, Any]] = []
    try:
        if begin:
            raw.execute("BEGIN IMMEDIATE")
        for fn in thread_jobs:
            raw.execute("SAVEPOINT job")
            try:
                outcomes.append((True, fn(raw)))
                raw.execute("RELEASE job")
            except Exception as exc:
                if not raw.in_transaction:
                    raise  # the whole transaction was rolled back (a full disk)
                raw.execute("ROLLBACK TO job")
                raw.execute("RELEASE job")
                outcomes.append((False, exc))
        lost = write_checkpoints(raw, owner, checkpoints) if checkpoints else set()
        if hook:
            hook("before_commit", [c.run_id for c in checkpoints])
        raw.execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise
    return lost, outcomes
