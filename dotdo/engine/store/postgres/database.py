"""The PostgreSQL connections of one store: the group-commit writer, a reader pool and the
LISTEN connection that wakes an idle worker.

One writer task owns the writer connection. Writes that arrive while a transaction is in
flight queue up and all go into the next transaction (group commit): checkpoints as a few
set-based statements over arrays (`checkpoints.py`), other jobs each inside a savepoint so
one failing job cannot undo another's work. Each caller resumes only after its own commit.

A batch that needs other workers to look (a run now waits or ended, an event, a decision,
a released lease) sends one NOTIFY inside the committing transaction: PostgreSQL delivers it
only if the transaction commits, and folds duplicates of one transaction into one. The
listener connection calls the `watch`ers on every notification (the `ChangeFeed` protocol);
while it is down `listening` is False and the engine falls back to polling.

A lost connection fails the batch in flight with a `StoreWriteError` whose cause is an
`OSError` (a store fault: the engine retries from the last checkpoint), and the next batch
reconnects with exponential backoff. A COMMIT whose answer was lost may have committed; the
engine's retry reloads the run from the database, so nothing is done twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from dotdo.engine.store.health import WriteHealth
from dotdo.engine.store.interface import Checkpoint
from dotdo.engine.store.location import redact
from dotdo.engine.store.postgres.checkpoints import (
    announces,
    needs_notify,
    write_checkpoints,
)
from dotdo.engine.store.postgres.connect import connect, describe, is_connection_loss
from dotdo.engine.store.postgres.schema import SCHEMA_VERSION, migrate, schema_version
from dotdo.errors import LeaseLost, StoreError, StoreUnreachable

__all__ = ["Database", "Job"]

T = TypeVar("T")
log = logging.getLogger("dotdo.store.postgres")

Job = Callable[[asyncpg.Connection], Awaitable[Any]]
CommitHook = Callable[[str, Sequence[str]], None]

_TRANSIENT = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,
)


IDLE_TX = "3s"
"""How long the server lets a dotdo session sit idle inside a transaction (override with
`?idle_in_transaction_session_timeout=...` in the URL)."""

EVENTS_LOCK = 0x646F74646F01
"""The advisory lock every transaction that appends to the outbox, subscribes a wait or
delivers events holds until it commits: event ids then commit in the order they were given
(a reader that saw id 11 will never later see 10 appear), and a wait registered in one
worker cannot miss an event delivered in another at the same moment. Taken first in the
transaction, before any row lock, so it cannot deadlock with them."""


class _JobFailed(Exception):
    """A job failed in a batch run without savepoints: run the batch again with them."""


@dataclass
class _Pending:
    fn: Job
    future: asyncio.Future[Any]
    notify: bool
    events: bool


class Database:
    """Connections and the write queue of one PostgreSQL store."""

    def __init__(
        self,
        url: str,
        *,
        owner: str,
        synchronous: str = "FULL",
        read_only: bool = False,
        commit_hook: CommitHook | None = None,
        readers: int = 4,
    ) -> None:
        self.url, self.listen = _listen_option(url)
        self.where = redact(self.url)
        self.owner = owner
        self.read_only = read_only
        self.commit_hook = commit_hook
        self.health = WriteHealth(self.where)
        self.batches = 0
        self.committed = 0
        self.channel = ""
        self._watchers: list[Callable[[], None]] = []
        self.listening = False
        """Whether notifications arrive now (else the engine must poll)."""
        self._settings = {"synchronous_commit": "on" if synchronous != "NORMAL" else "off"}
        if "idle_in_transaction_session_timeout" not in self.url:
            # A worker frozen inside a group transaction (SIGSTOP, a VM paused) would hold its
            # row and advisory locks, and every other worker would queue behind them. dotdo
            # never idles inside a transaction (its statements go back to back), so the
            # server may cut such a session after IDLE_TX: its locks go, its commit fails
            # (a store fault), and its runs move on with their leases.
            self._settings["idle_in_transaction_session_timeout"] = IDLE_TX
        self._readers = readers
        self._writer: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._jobs: list[_Pending] = []
        self._checkpoints: list[tuple[Checkpoint, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._in_flight: list[asyncio.Future[Any]] = []
        """The futures of the batch the writer is committing (failed if the writer dies)."""
        self._failed: BaseException | None = None
        self._closing = False

    # -------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        conn = await connect(self.url, server_settings=self._settings)
        try:
            if self.read_only:
                version = await schema_version(conn, self.where)
                if version != SCHEMA_VERSION:
                    what = "is not a dotdo database" if version == 0 else f"has schema {version}"
                    raise StoreError(
                        f"{self.where} {what}; reading it needs version {SCHEMA_VERSION} "
                        "(a writing command such as `dotdo worker` upgrades it)"
                    )
            else:
                await migrate(conn, self.where)
            ident = await conn.fetchval("SELECT current_database() || '.' || current_schema()")
            self.channel = "dotdo_" + hashlib.sha256(ident.encode()).hexdigest()[:20]
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._readers,
                server_settings=self._settings,
                reset=_keep,  # reads leave no session state: skip asyncpg's reset round trip
            )
        except BaseException as exc:
            conn.terminate()
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            error = describe(self.url, exc) if isinstance(exc, Exception) else None
            if error is not None and error is not exc:
                raise error from None
            raise
        if self.read_only:
            conn.terminate()
            return
        self._writer = conn
        self._task = asyncio.create_task(self._write_loop(), name="dotdo-pg-writer")
        self._task.add_done_callback(self._writer_ended)
        if self.listen:
            self._listen_task = asyncio.create_task(self._listen_loop(), name="dotdo-pg-listen")

    async def close(self) -> None:
        """Finish queued writes, then close. Safe to call twice."""
        self._closing = True
        self.health.close()
        if self._task is not None:
            if self._failed is None and not self._task.done():
                with contextlib.suppress(Exception, TimeoutError):
                    await asyncio.wait_for(self.write(_noop), timeout=30)
            await self._stop_tasks()
        await self._close_connections(graceful=True)

    async def abandon(self, error: BaseException) -> None:
        """Stop at once, committing nothing more (a simulated crash)."""
        self._failed = error
        self._closing = True
        self.health.close()
        await self._stop_tasks()
        self._fail_pending(error)
        await self._close_connections(graceful=False)

    async def _stop_tasks(self) -> None:
        tasks = [t for t in (self._task, self._listen_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._listen_task = None

    async def _close_connections(self, *, graceful: bool) -> None:
        for conn in (self._writer, self._listener):
            if conn is not None and not conn.is_closed():
                if graceful:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=5)
                if not conn.is_closed():
                    conn.terminate()
        self._writer = self._listener = None
        if self._pool is not None:
            if graceful:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._pool.close(), timeout=5)
            self._pool.terminate()
            self._pool = None
        self.listening = False

    # ------------------------------------------------------------------ writes
    async def write(
        self,
        fn: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        notify: bool = False,
        events: bool = False,
    ) -> T:
        """Run `fn` inside the next group transaction (in a savepoint); returns after it
        commits. `notify`: wake the other workers when it does; `events`: it touches the
        outbox or the waits (hold EVENTS_LOCK)."""
        self._check()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Pending(fn, future, notify, events))
        self._wake.set()
        return await future

    async def notify(self, conn: asyncpg.Connection) -> None:
        """Inside a write: wake the other workers when this transaction commits (all the
        notifications of one transaction fold into one)."""
        await conn.execute("SELECT pg_notify($1, '')", self.channel)

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
            raise StoreError(f"{self.where} is open read-only: nothing can be written")
        if self._task is None:
            raise StoreError("the store is not open")

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        """The writer task must never end while the store is open: were it to die of a bug,
        every queued and later write would wait forever (a worker hung at close). Fail them
        instead, with the cause, and refuse further writes."""
        if task.cancelled() or self._closing:
            return
        error = task.exception()
        if error is None or self._failed is not None:
            return
        log.error("the PostgreSQL writer of %s stopped: %r", self.where, error, exc_info=error)
        failure = StoreError(f"{self.where}: the writer stopped ({error!r})")
        failure.__cause__ = error
        self._failed = failure
        for future in self._in_flight:
            _settle(future, error=failure)
        self._fail_pending(failure)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            jobs, self._jobs = self._jobs, []
            checkpoints, self._checkpoints = self._checkpoints, []
            if not jobs and not checkpoints:
                continue
            self._in_flight = [j.future for j in jobs] + [f for _, f in checkpoints]
            try:
                conn = await self._connection()
                lost, outcomes = await self._commit(conn, jobs, [c for c, _ in checkpoints])
                self.batches += 1
                self.committed += len(checkpoints)
                if self.health.since is not None:
                    self.health.succeeded()
                if self.commit_hook:
                    try:
                        self.commit_hook("after_commit", [c.run_id for c, _ in checkpoints])
                    except Exception:  # the commit stands: a hook's error cannot undo it
                        self.health.hook_failed()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    self._failed = exc
                    for pending in [j.future for j in jobs] + [f for _, f in checkpoints]:
                        _settle(pending, error=exc)
                    self._fail_pending(exc)
                    return
                error = self.health.failed(_as_fault(exc))
                if is_connection_loss(exc) and self._writer is not None:
                    self._writer.terminate()
                    self._writer = None
                for pending in [j.future for j in jobs] + [f for _, f in checkpoints]:
                    _settle(pending, error=error)
                continue
            for job, (ok, value) in zip(jobs, outcomes, strict=True):
                _settle(job.future, value=value if ok else None, error=None if ok else value)
            for cp, future in checkpoints:
                if cp.run_id in lost:
                    _settle(future, error=LeaseLost(f"run {cp.run_id!r} is owned elsewhere"))
                else:
                    _settle(future, value=None)

    async def _commit(
        self, conn: asyncpg.Connection, jobs: list[_Pending], checkpoints: list[Checkpoint]
    ) -> tuple[set[str], list[tuple[bool, Any]]]:
        """One group transaction. Jobs first run back to back without savepoints (two round
        trips each saved); if one of them fails, the transaction is rolled back and run
        again with each job in its own savepoint, so the failing one undoes only itself."""
        if len(jobs) > 1 or (jobs and checkpoints):
            try:
                return await self._transaction(conn, jobs, checkpoints, savepoints=False)
            except _JobFailed:
                return await self._transaction(conn, jobs, checkpoints, savepoints=True)
        return await self._transaction(conn, jobs, checkpoints, savepoints=False)

    async def _transaction(
        self,
        conn: asyncpg.Connection,
        jobs: list[_Pending],
        checkpoints: list[Checkpoint],
        *,
        savepoints: bool,
    ) -> tuple[set[str], list[tuple[bool, Any]]]:
        outcomes: list[tuple[bool, Any]] = []
        transaction = conn.transaction()
        await transaction.start()
        try:
            if any(j.events for j in jobs) or any(announces(c) for c in checkpoints):
                await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)
            for job in jobs:
                outcome = await _run_job(conn, job, savepoint=savepoints)
                if not outcome[0] and not savepoints:
                    if len(jobs) > 1 or checkpoints:
                        raise _JobFailed
                    await transaction.rollback()  # a lone job: its error is the answer
                    return set(), [outcome]
                outcomes.append(outcome)
            lost = await write_checkpoints(conn, self.owner, checkpoints) if checkpoints else set()
            if self.commit_hook:
                self.commit_hook("before_commit", [c.run_id for c in checkpoints])
            if any(j.notify for j in jobs) or needs_notify(checkpoints, lost):
                await self.notify(conn)
            await transaction.commit()
        except BaseException:
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await transaction.rollback()
            raise
        return lost, outcomes

    async def _connection(self) -> asyncpg.Connection:
        """The writer connection, reconnected with exponential backoff when lost."""
        if self._writer is not None and not self._writer.is_closed():
            return self._writer
        delay = 0.05
        while True:
            try:
                self._writer = await connect(self.url, server_settings=self._settings)
                return self._writer
            except (StoreUnreachable, OSError) as exc:
                if self._jobs or self._checkpoints or delay > 2.0:
                    raise  # callers are waiting: let them see the fault (they retry)
                log.info("PostgreSQL %s unreachable (%s); retrying", self.where, exc)
            await asyncio.sleep(delay)
            delay *= 2

    def _fail_pending(self, error: BaseException) -> None:
        for job in self._jobs:
            _settle(job.future, error=error)
        for _, future in self._checkpoints:
            _settle(future, error=error)
        self._jobs, self._checkpoints = [], []

    # ------------------------------------------------------------------- reads
    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = self._readers_pool()
        for attempt in range(3):
            try:
                async with pool.acquire() as conn:
                    return list(await conn.fetch(sql, *args))
            except Exception as exc:
                if self._failed is not None:  # abandoned meanwhile (a simulated crash)
                    raise self._failed from None
                if self._closing:
                    raise StoreError("the store is closed") from None
                if not is_connection_loss(exc) or attempt == 2:
                    if is_connection_loss(exc):
                        raise StoreUnreachable(f"{self.where}: connection lost: {exc}") from exc
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def fetch_one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetch_value(self, sql: str, *args: Any) -> Any:
        row = await self.fetch_one(sql, *args)
        return None if row is None else row[0]

    def _readers_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    # -------------------------------------------------------------- listening
    async def _listen_loop(self) -> None:
        """Keep one LISTEN connection; reconnect with backoff when it drops."""
        delay = 0.05
        while not self._closing:
            lost = asyncio.Event()
            try:
                conn = await connect(self.url)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._notified)
                self._listener = conn
                self.listening = True
                self._notified()  # whatever happened while deaf: look once
                delay = 0.05
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("LISTEN on %s failed (%s); polling until it is back", self.where, exc)
            self.listening = False
            if self._listener is not None:
                self._listener.terminate()
                self._listener = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback` on every notification (and when LISTEN (re)connects)."""
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(callback)

    def _notified(self, *_args: object) -> None:
        for callback in list(self._watchers):
            callback()


def _listen_option(url: str) -> tuple[str, bool]:
    """`dotdo_listen=off` in the URL's query: no LISTEN connection (behind a pooler in
    transaction mode, which cannot keep one: see docs/scaling.md); the engine then polls.
    Removed from the URL, so asyncpg does not send it to the server as a setting."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [v.lower() for k, v in query if k == "dotdo_listen"]
    if not flags:
        return url, True
    if flags[-1] not in ("on", "off", "true", "false", "1", "0"):
        raise StoreError(f"dotdo_listen={flags[-1]!r} in the URL: expected on or off")
    kept = urlencode([(k, v) for k, v in query if k != "dotdo_listen"])
    return urlunsplit(parts._replace(query=kept)), flags[-1] in ("on", "true", "1")


async def _noop(conn: asyncpg.Connection) -> None:
    return None


async def _keep(conn: asyncpg.Connection) -> None:
    return None


async def _run_job(conn: asyncpg.Connection, job: _Pending, *, savepoint: bool) -> tuple[bool, Any]:
    if not savepoint:
        try:
            return True, await job.fn(conn)
        except Exception as exc:
            if is_connection_loss(exc) or isinstance(exc, _TRANSIENT):
                raise
            return False, exc
    point = conn.transaction()
    await point.start()
    try:
        value = await job.fn(conn)
    except Exception as exc:
        if is_connection_loss(exc) or isinstance(exc, _TRANSIENT):
            raise
        await point.rollback()
        return False, exc
    await point.commit()
    return True, value


def _as_fault(exc: Exception) -> Exception:
    """A lost connection or a transient conflict as an OSError (a retryable store fault)."""
    if is_connection_loss(exc) or isinstance(exc, _TRANSIENT | StoreUnreachable):
        fault = ConnectionError(f"PostgreSQL: {exc}")
        fault.__cause__ = exc
        return fault
    return exc


def _settle(
    future: asyncio.Future[Any], *, value: Any = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
