"""The SQLite store: schema, migrations, group commit and leases.

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
from dataclasses import dataclass, field
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
from dotdo.errors import LeaseLost, StoreError

__all__ = [
    "ACTIVE",
    "FINISHED",
    "SCHEMA_VERSION",
    "Checkpoint",
    "JournalRow",
    "Store",
]

T = TypeVar("T")

ACTIVE = ("running", "waiting")
FINISHED = ("completed", "failed", "compensated", "cancelled")

_MIGRATIONS: list[str] = [
    # 1: the initial schema.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE graphs (
        hash TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        graph_hash TEXT NOT NULL REFERENCES graphs(hash),
        entity_id TEXT NOT NULL,
        status TEXT NOT NULL,
        node TEXT NOT NULL,
        state TEXT NOT NULL,
        input TEXT NOT NULL,
        result TEXT,
        error TEXT,
        wake_at REAL,
        lease_owner TEXT,
        lease_until REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        steps_done INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX runs_by_status ON runs(status, wake_at);
    CREATE INDEX runs_by_owner ON runs(lease_owner);
    CREATE TABLE steps (
        run_id TEXT NOT NULL,
        step_key TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        value TEXT,
        error TEXT,
        seq INTEGER,
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (run_id, step_key)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at REAL NOT NULL,
        dispatched_at REAL
    );
    """,
    # 2: hibernation (approvals, event waits, schedules, handler cursors) and the module a
    # workflow's code lives in, so a CLI deciding an approval can load and drive the run.
    """
    ALTER TABLE graphs ADD COLUMN module TEXT;
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        status TEXT NOT NULL,
        approver TEXT,
        deadline REAL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX approvals_by_status ON approvals(status, approver);
    CREATE TABLE waits (
        run_id TEXT NOT NULL,
        step_key TEXT NOT NULL,
        event TEXT NOT NULL,
        match TEXT,
        since REAL NOT NULL,
        event_id INTEGER,
        PRIMARY KEY (run_id, step_key)
    ) WITHOUT ROWID;
    CREATE INDEX waits_open ON waits(event) WHERE event_id IS NULL;
    CREATE INDEX outbox_by_event ON outbox(event, id);
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        next_fire REAL NOT NULL,
        last_fire REAL
    );
    CREATE TABLE cursors (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL)
    """,
    # 3: entities (dotdo.entities): each DO instance's state with a version for optimistic
    # concurrency, the results of applied calls by call id (so a repeated call is answered,
    # not applied again), and the outbox of fire-and-forget calls.
    """
    CREATE TABLE entities (
        cls TEXT NOT NULL,
        id TEXT NOT NULL,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (cls, id)
    ) WITHOUT ROWID;
    CREATE TABLE entity_calls (
        call_id TEXT PRIMARY KEY,
        cls TEXT NOT NULL,
        id TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX entity_calls_by_age ON entity_calls(created_at);
    CREATE TABLE entity_outbox (
        call_id TEXT PRIMARY KEY,
        cls TEXT NOT NULL,
        request TEXT NOT NULL,
        run_id TEXT,
        step_key TEXT,
        created_at REAL NOT NULL,
        next_try REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL,
        outcome TEXT,
        error TEXT
    ) WITHOUT ROWID;
    CREATE INDEX entity_outbox_due ON entity_outbox(next_try) WHERE delivered_at IS NULL
    """,
    # 4: call identity (dotdo.entities.identity): a random id for this database, which starts
    # every call id its engine sends, and, with each applied call, its chain and a digest of
    # its hops and arguments, so a reused call id with another request is refused.
    """
    INSERT INTO meta(key, value) VALUES ('db_id', lower(hex(randomblob(16))))
        ON CONFLICT(key) DO NOTHING;
    ALTER TABLE entity_calls ADD COLUMN chain TEXT;
    ALTER TABLE entity_calls ADD COLUMN digest TEXT
    """,
    # 5: the web console (dotdo.engine.store.people): users with hashed passwords, the
    # approver names and groups each acts as, API tokens (hashed), the single-use signed
    # links already spent, and an index for keyset pagination of the runs list.
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password TEXT,
        role TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE user_names (
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        PRIMARY KEY (user, name)
    ) WITHOUT ROWID;
    CREATE INDEX user_names_by_name ON user_names(name, user);
    CREATE TABLE api_tokens (
        digest TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE used_links (
        nonce TEXT PRIMARY KEY,
        used_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX runs_by_created ON runs(created_at, run_id);
    CREATE INDEX approvals_by_run ON approvals(run_id)
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class JournalRow:
    """One line of a run's step journal: started (try_), failed attempt, or completed."""

    key: str
    status: Literal["started", "completed", "failed"]
    attempts: int
    value: str | None = None
    error: str | None = None
    seq: int | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class Checkpoint:
    """A run's transition, written atomically with its cause (journal) and its sends."""

    run_id: str
    status: str
    node: str
    state: str
    steps_done: int
    now: float
    wake_at: float | None = None
    result: str | None = None
    error: str | None = None
    journal: list[JournalRow] = field(default_factory=list)
    sends: list[tuple[str, str]] = field(default_factory=list)
    release: bool = False
    """Give up the lease (the run now waits or has finished)."""
    extra: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    """More statements of the same transaction (an approval row, an event subscription)."""


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


class Store:
    """All persistence of one engine: open it, write through it, close it."""

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
            await self._migrate(self._writer)
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
            version = await self._schema_version(self._reader)
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

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        if await self._schema_version(conn) == SCHEMA_VERSION:
            return
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process opening the same new file at
            # the same moment may have migrated it since the read above.
            version = await self._schema_version(conn)
            if version < SCHEMA_VERSION:
                for script in _MIGRATIONS[version:]:
                    for statement in filter(str.strip, script.split(";")):
                        await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def _schema_version(self, conn: aiosqlite.Connection) -> int:
        """The file's schema version (0 when empty); refuses foreign and newer databases."""
        tables = {
            r[0]
            for r in await conn.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        version = 0
        if "meta" in tables:
            rows = list(
                await conn.execute_fetchall("SELECT value FROM meta WHERE key = 'schema_version'")
            )
            version = int(rows[0][0]) if rows else 0
        elif tables - {"sqlite_sequence"}:
            raise StoreError(f"{self.path} is an SQLite database, but not a dotdo one")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this dotdo "
                f"understands ({SCHEMA_VERSION}); upgrade dotdo to open it"
            )
        return version

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
        lost = _write_checkpoints(raw, owner, checkpoints) if checkpoints else set()
        if hook:
            hook("before_commit", [c.run_id for c in checkpoints])
        raw.execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise
    return lost, outcomes


def _write_checkpoints(
    raw: sqlite3.Connection, owner: str, checkpoints: list[Checkpoint]
) -> set[str]:
    params = [
        (
            c.status,
            c.node,
            c.state,
            c.wake_at,
            c.result,
            c.error,
            c.steps_done,
            c.now,
            int(c.release),
            int(c.release),
            c.run_id,
            owner,
        )
        for c in checkpoints
    ]
    # Ownership is read first, inside the transaction: a run whose lease was taken over
    # (or released) writes nothing, not even its journal or outbox rows.
    ids = list({c.run_id for c in checkpoints})
    marks = ",".join("?" * len(ids))
    owned = {
        r[0]
        for r in raw.execute(
            f"SELECT run_id FROM runs WHERE run_id IN ({marks}) AND lease_owner = ?",
            (*ids, owner),
        ).fetchall()
    }
    lost = {c.run_id for c in checkpoints} - owned
    kept = [c for c in checkpoints if c.run_id in owned]
    params = [p for p in params if p[-2] in owned]
    raw.executemany(
        "UPDATE runs SET status = ?, node = ?, state = ?, wake_at = ?, result = ?, "
        "error = ?, steps_done = ?, updated_at = ?, "
        "lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END, "
        "lease_until = CASE WHEN ? THEN NULL ELSE lease_until END "
        "WHERE run_id = ? AND lease_owner = ?",
        params,
    )
    journal = [
        (
            c.run_id,
            j.key,
            j.status,
            j.attempts,
            j.value,
            j.error,
            j.seq,
            j.started_at,
            j.finished_at,
        )
        for c in kept
        for j in c.journal
    ]
    if journal:
        raw.executemany(
            "INSERT INTO steps(run_id, step_key, status, attempts, value, error, seq, "
            "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(run_id, step_key) DO UPDATE SET status = excluded.status, "
            "attempts = excluded.attempts, value = excluded.value, "
            "error = excluded.error, seq = excluded.seq, "
            "started_at = COALESCE(steps.started_at, excluded.started_at), "
            "finished_at = excluded.finished_at WHERE steps.status != 'completed'",
            journal,
        )
    for c in kept:
        for statement, values in c.extra:
            raw.execute(statement, values)
    sends = [(c.run_id, name, data, c.now) for c in kept for name, data in c.sends]
    if sends:
        raw.executemany(
            "INSERT INTO outbox(run_id, event, data, created_at) VALUES (?, ?, ?, ?)", sends
        )
    return lost
