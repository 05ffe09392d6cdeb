"""Runs on SQLite: creating, reading, leasing, cancelling and listing them.

Every claim increments the run's lease epoch (`RETURNING` hands it to the claimer), and the
owner writes here (`fail_run`) are fenced by it, as checkpoints are (`checkpoints.py`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

from dotdo.engine.leases import lease_is_free
from dotdo.engine.store.interface import (
    ClaimRequest,
    Lease,
    RunToCreate,
    StartOutcome,
    StoredRun,
    StoredStep,
    Waker,
)
from dotdo.engine.store.sqlite.connection import Database

__all__ = [
    "RUN_COLUMNS",
    "any_due",
    "claim_runs",
    "create_run",
    "fail_run",
    "held_runs",
    "journal",
    "list_runs",
    "load_run",
    "next_wake",
    "release_leases",
    "renew_leases",
    "request_cancel",
    "stored_run",
    "take",
    "wake",
]

RUN_COLUMNS = (
    "run_id, workflow, graph_hash, entity_id, status, node, state, input, result, error, "
    "wake_at, lease_owner, lease_until, lease_epoch, cancel_requested, steps_done, "
    "created_at, updated_at, retry_of, trace"
)
_STEP_COLUMNS = "run_id, step_key, status, attempts, value, error, seq, started_at, finished_at"


def stored_run(row: Sequence[Any]) -> StoredRun:
    """A row of `RUN_COLUMNS` as a record."""
    (run_id, workflow, graph_hash, entity_id, status, node, state, input_, result, error,
     wake_at, owner, until, epoch, cancel, steps, created, updated, retry_of, trace,
     ) = row  # fmt: skip
    return StoredRun(
        run_id=run_id,
        workflow=workflow,
        graph_hash=graph_hash,
        entity_id=entity_id,
        status=status,
        node=node,
        state=state,
        input=input_,
        result=result,
        error=error,
        wake_at=wake_at,
        lease_owner=owner,
        lease_until=until,
        lease_epoch=int(epoch),
        cancel_requested=bool(cancel),
        steps_done=int(steps),
        created_at=created,
        updated_at=updated,
        retry_of=retry_of,
        trace=trace,
    )


def _step(row: Sequence[Any]) -> StoredStep:
    return StoredStep(*row)


# ------------------------------------------------------------------------ creating
def create_run(conn: sqlite3.Connection, new: RunToCreate, owner: str) -> StartOutcome:
    """On the writer thread, inside the group transaction (many starts, one commit)."""
    conn.execute(
        "INSERT INTO graphs(hash, name, body, created_at, module) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(hash) DO NOTHING",
        (new.graph_hash, new.graph_name, new.graph_body, new.now, new.module),
    )
    if new.mac is not None:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            new.mac,
        )
    inserted = conn.execute(
        "INSERT INTO runs(run_id, workflow, graph_hash, entity_id, status, node, state, "
        "input, lease_owner, lease_until, lease_epoch, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, 1, ?, ?) "
        "ON CONFLICT(run_id) DO NOTHING",
        (
            new.run_id,
            new.workflow,
            new.graph_hash,
            new.entity_id,
            new.node,
            new.state,
            new.input,
            owner,
            new.lease_until,
            new.now,
            new.now,
        ),
    ).rowcount
    if inserted:
        return StartOutcome(Lease(new.run_id, 1))
    row = conn.execute(
        "SELECT workflow, entity_id, input FROM runs WHERE run_id = ?", (new.run_id,)
    ).fetchone()
    return StartOutcome(None, existing=(row[0], row[1], row[2]))


# ------------------------------------------------------------------------- reading
async def load_run(db: Database, run_id: str) -> StoredRun | None:
    row = await db.fetch_one(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
    return None if row is None else stored_run(row)


async def list_runs(
    db: Database, status: str | None, workflow: str | None, limit: int
) -> list[StoredRun]:
    clauses = [(c, v) for c, v in (("status", status), ("workflow", workflow)) if v]
    where = " AND ".join(f"{column} = ?" for column, _ in clauses) or "1"
    rows = await db.fetch(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY created_at DESC, run_id LIMIT ?",
        (*(v for _, v in clauses), limit),
    )
    return [stored_run(r) for r in rows]


async def journal(db: Database, run_id: str) -> list[StoredStep]:
    rows = await db.fetch(
        f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY seq IS NULL, seq, started_at",
        (run_id,),
    )
    return [_step(r) for r in rows]


async def any_due(db: Database, now: float) -> bool:
    row = await db.fetch_one(
        "SELECT 1 FROM runs WHERE status = 'waiting' AND wake_at <= ? LIMIT 1", (now,)
    )
    return row is not None


async def next_wake(db: Database) -> float | None:
    row = await db.fetch_one("SELECT MIN(wake_at) FROM runs WHERE status = 'waiting'")
    return None if row is None else row[0]


async def held_runs(db: Database) -> list[str]:
    rows = await db.fetch(
        "SELECT run_id FROM runs WHERE lease_owner = ? AND status = 'running'", (db.owner,)
    )
    return [r[0] for r in rows]


# -------------------------------------------------------------------------- leases
def _take(owner: str, ttl: float, run_ids: list[str]) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements leasing these runs to `owner` (they become running), each at its
    next epoch (`RETURNING run_id, lease_epoch`)."""
    until = time.time() + ttl
    return [
        (
            "UPDATE runs SET status = 'running', lease_owner = ?, lease_until = ?, "
            f"lease_epoch = lease_epoch + 1 WHERE run_id IN ({','.join('?' * len(chunk))}) "
            "RETURNING run_id, lease_epoch",
            (owner, until, *chunk),
        )
        for chunk in (run_ids[i : i + 500] for i in range(0, len(run_ids), 500))
    ]


def _leases(run_ids: list[str], rows: Iterable[Sequence[Any]]) -> list[Lease]:
    epochs = {str(r[0]): int(r[1]) for r in rows}
    return [Lease(r, epochs[r]) for r in run_ids if r in epochs]


async def take(
    conn: aiosqlite.Connection, owner: str, ttl: float, run_ids: list[str]
) -> list[Lease]:
    """Inside an async write: lease these runs to `owner`."""
    rows: list[Sequence[Any]] = []
    for sql, params in _take(owner, ttl, run_ids):
        rows.extend(await conn.execute_fetchall(sql, params))
    return _leases(run_ids, rows)


def _claim(raw: sqlite3.Connection, owner: str, request: ClaimRequest) -> list[Lease]:
    marks = ",".join("?" * len(request.workflows))
    sql = (
        "SELECT run_id, lease_owner, lease_until FROM runs "
        f"WHERE status = ? AND workflow IN ({marks})"
    )
    params: list[object] = [request.status, *request.workflows]
    if request.due_before is not None:
        sql += " AND wake_at <= ?"
        params.append(request.due_before)
    free = [
        r[0]
        for r in raw.execute(sql, params).fetchall()
        if r[0] not in request.skip and r[1] != owner and lease_is_free(r[1], r[2])
    ]
    rows: list[Sequence[Any]] = []
    for statement, values in _take(owner, request.ttl, free):
        rows.extend(raw.execute(statement, values).fetchall())
    return _leases(free, rows)


async def claim_runs(db: Database, request: ClaimRequest) -> list[Lease]:
    """On the writer thread, inside the group transaction: one hop, and no step of it waits
    for the event loop while the transaction holds the write lock."""
    if not request.workflows:
        return []
    owner = db.owner

    def claim_runs(raw: sqlite3.Connection) -> list[Lease]:
        return _claim(raw, owner, request)

    return await db.write_on_thread(claim_runs)


async def renew_leases(db: Database, ttl: float) -> list[str]:
    owner = db.owner

    def renew_leases(raw: sqlite3.Connection) -> list[str]:
        raw.execute(
            "UPDATE runs SET lease_until = ? WHERE lease_owner = ?", (time.time() + ttl, owner)
        )
        rows = raw.execute(
            "SELECT run_id FROM runs WHERE lease_owner = ? AND cancel_requested = 1", (owner,)
        ).fetchall()
        return [r[0] for r in rows]

    return await db.write_on_thread(renew_leases)


async def release_leases(db: Database) -> None:
    owner = db.owner

    def release_leases(raw: sqlite3.Connection) -> None:
        raw.execute(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
            (owner,),
        )

    await db.write_on_thread(release_leases)


async def wake(conn: aiosqlite.Connection, owner: str, run_id: str, waker: Waker) -> Lease | None:
    """Inside a write: make a waiting run runnable, claimed here when `waker` allows."""
    rows = list(
        await conn.execute_fetchall(
            "SELECT workflow, lease_owner, lease_until FROM runs WHERE run_id = ? "
            "AND status = 'waiting'",
            (run_id,),
        )
    )
    if not rows:
        return None
    workflow, holder, until = rows[0]
    if waker.may_claim and workflow in waker.workflows and lease_is_free(holder, until):
        leases = await take(conn, owner, waker.ttl, [run_id])
        return leases[0] if leases else None
    await conn.execute("UPDATE runs SET wake_at = ? WHERE run_id = ?", (waker.now, run_id))
    return None


# ------------------------------------------------------------------ ending, cancelling
async def fail_run(db: Database, lease: Lease, error: str, now: float) -> bool:
    async def job(conn: aiosqlite.Connection) -> bool:
        cursor = await conn.execute(
            "UPDATE runs SET status = 'failed', error = ?, lease_owner = NULL, "
            "lease_until = NULL, wake_at = NULL, updated_at = ? WHERE run_id = ? "
            "AND lease_owner = ? AND lease_epoch = ?",
            (error, now, lease.run_id, db.owner, lease.epoch),
        )
        return cursor.rowcount == 1

    return await db.write(job)


async def request_cancel(db: Database, run_id: str, error: str, now: float) -> bool:
    async def job(conn: aiosqlite.Connection) -> bool:
        await conn.execute("UPDATE runs SET cancel_requested = 1 WHERE run_id = ?", (run_id,))
        rows = list(
            await conn.execute_fetchall(
                "SELECT lease_owner, lease_until FROM runs WHERE run_id = ?", (run_id,)
            )
        )
        if not rows or not lease_is_free(rows[0][0], rows[0][1]):
            return False
        cursor = await conn.execute(
            "UPDATE runs SET status = 'cancelled', error = ?, lease_owner = NULL, "
            "lease_until = NULL, wake_at = NULL, updated_at = ? WHERE run_id = ? "
            "AND status IN ('running', 'waiting')",
            (error, now, run_id),
        )
        return cursor.rowcount == 1

    return await db.write(job)
