"""Runs on PostgreSQL: creating, reading, claiming, renewing, waking, cancelling, listing.

Claims take rows with `FOR UPDATE SKIP LOCKED`: workers claiming at the same moment each get
different runs and never wait on each other's locks. Each claim increments the run's lease
epoch and returns it (`RETURNING`), so the claimer's writes are fenced by it. A lease is free
when it has no owner, has expired (another machine's worker stopped heartbeating), or its
owner is certainly dead (same host, process gone: `leases.is_dead`). A claim takes at most
`claim_batch` runs, so workers that tick together share a backlog instead of one taking it.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from dotdo.engine.leases import is_dead
from dotdo.engine.store.interface import (
    ClaimRequest,
    Lease,
    RunToCreate,
    StartOutcome,
    StoredRun,
    StoredStep,
    Waker,
)
from dotdo.engine.store.postgres.database import Database

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
    "run_id, workflow, graph_hash, entity_id, status, node, state::text, input::text, "
    "result::text, error::text, wake_at, lease_owner, lease_until, lease_epoch, "
    "cancel_requested, steps_done, created_at, updated_at"
)
_STEP_COLUMNS = (
    "run_id, step_key, status, attempts, value::text, error::text, seq, started_at, finished_at"
)


def stored_run(row: Any) -> StoredRun:
    (run_id, workflow, graph_hash, entity_id, status, node, state, input_, result, error,
     wake_at, owner, until, epoch, cancel, steps, created, updated) = row  # fmt: skip
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
    )


# ------------------------------------------------------------------------ creating
_CREATE = """
WITH graph AS (
    INSERT INTO graphs(hash, name, body, created_at, module)
    SELECT $3, $11, $12::json, $10, $13 WHERE $14
    ON CONFLICT (hash) DO NOTHING
), made AS (
    INSERT INTO runs(run_id, workflow, graph_hash, entity_id, status, node, state, input,
        lease_owner, lease_until, lease_epoch, created_at, updated_at)
    VALUES ($1, $2, $3, $4, 'running', $5, $6::json, $7::json, $8, $9, 1, $10, $10)
    ON CONFLICT (run_id) DO NOTHING RETURNING 1
)
SELECT (SELECT count(*) FROM made) AS made, old.workflow, old.entity_id, old.input::text
FROM (SELECT 1) AS one LEFT JOIN runs AS old ON old.run_id = $1
"""
"""A run (and its graph, the first time) in one round trip. The LEFT JOIN reads the
statement's snapshot, so it finds only a run that existed before: the one to report."""


async def create_run(db: Database, new: RunToCreate, graphs: set[str]) -> StartOutcome:
    """`graphs`: hashes this store already wrote (their INSERT is skipped)."""

    async def job(conn: asyncpg.Connection) -> StartOutcome:
        if new.mac is not None:
            await conn.execute(
                "INSERT INTO meta(key, value) VALUES ($1, $2) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                *new.mac,
            )
        row = await conn.fetchrow(
            _CREATE,
            new.run_id,
            new.workflow,
            new.graph_hash,
            new.entity_id,
            new.node,
            new.state,
            new.input,
            db.owner,
            new.lease_until,
            new.now,
            new.graph_name,
            new.graph_body,
            new.module,
            new.graph_hash not in graphs,
        )
        assert row is not None
        if row["made"]:
            return StartOutcome(Lease(new.run_id, 1))
        return StartOutcome(None, existing=(row[1], row[2], row[3]))

    outcome = await db.write(job)
    graphs.add(new.graph_hash)  # committed: later runs of this graph skip its INSERT
    return outcome


# ------------------------------------------------------------------------- reading
async def load_run(db: Database, run_id: str) -> StoredRun | None:
    row = await db.fetch_one(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1", run_id)
    return None if row is None else stored_run(row)


async def list_runs(
    db: Database, status: str | None, workflow: str | None, limit: int
) -> list[StoredRun]:
    rows = await db.fetch(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR status = $1) "
        "AND ($2::text IS NULL OR workflow = $2) ORDER BY created_at DESC, run_id "
        "LIMIT CASE WHEN $3 < 0 THEN NULL ELSE $3 END",
        status,
        workflow,
        limit,
    )
    return [stored_run(r) for r in rows]


async def journal(db: Database, run_id: str) -> list[StoredStep]:
    rows = await db.fetch(
        f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = $1 "
        "ORDER BY seq IS NULL, seq, started_at",
        run_id,
    )
    return [StoredStep(*r) for r in rows]


async def any_due(db: Database, now: float) -> bool:
    row = await db.fetch_one(
        "SELECT 1 FROM runs WHERE status = 'waiting' AND wake_at <= $1 LIMIT 1", now
    )
    return row is not None


async def next_wake(db: Database) -> float | None:
    value: float | None = await db.fetch_value(
        "SELECT min(wake_at) FROM runs WHERE status = 'waiting'"
    )
    return value


async def held_runs(db: Database) -> list[str]:
    rows = await db.fetch(
        "SELECT run_id FROM runs WHERE lease_owner = $1 AND status = 'running'", db.owner
    )
    return [r[0] for r in rows]


# -------------------------------------------------------------------------- leases
async def take(conn: asyncpg.Connection, owner: str, ttl: float, run_ids: list[str]) -> list[Lease]:
    """Lease these runs to `owner` (they become running), each at its next epoch."""
    rows = await conn.fetch(
        "UPDATE runs SET status = 'running', lease_owner = $1, lease_until = $2, "
        "lease_epoch = lease_epoch + 1 WHERE run_id = ANY($3::text[]) "
        "RETURNING run_id, lease_epoch",
        owner,
        time.time() + ttl,
        run_ids,
    )
    epochs = {r[0]: int(r[1]) for r in rows}
    return [Lease(r, epochs[r]) for r in run_ids if r in epochs]


_CANDIDATES = """
SELECT run_id FROM runs
WHERE status = $1 AND workflow = ANY($2::text[])
  AND (lease_owner IS NULL OR lease_owner <> $3)
  AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until < $4
       OR lease_owner = ANY($5::text[]))
  AND ($6::float8 IS NULL OR wake_at <= $6)
  AND NOT (run_id = ANY($7::text[]))
ORDER BY wake_at NULLS FIRST, run_id
LIMIT $8
FOR UPDATE SKIP LOCKED
"""


async def claim_runs(db: Database, request: ClaimRequest, claim_batch: int) -> list[Lease]:
    if not request.workflows:
        return []
    now = time.time()
    # Owners whose leases have not expired but whose process is certainly gone (same host):
    # read without locking, checked here, then named in the locking claim.
    holders = await db.fetch(
        "SELECT DISTINCT lease_owner FROM runs WHERE status = $1 AND workflow = ANY($2::text[]) "
        "AND lease_owner IS NOT NULL AND lease_owner <> $3 AND lease_until >= $4",
        request.status,
        list(request.workflows),
        db.owner,
        now,
    )
    dead = [r[0] for r in holders if is_dead(r[0])]

    async def job(conn: asyncpg.Connection) -> list[Lease]:
        rows = await conn.fetch(
            _CANDIDATES,
            request.status,
            list(request.workflows),
            db.owner,
            time.time(),
            dead,
            request.due_before,
            list(request.skip),
            claim_batch,
        )
        free = [r[0] for r in rows]
        return await take(conn, db.owner, request.ttl, free) if free else []

    return await db.write(job)


async def renew_leases(db: Database, ttl: float) -> list[str]:
    async def job(conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch(
            "UPDATE runs SET lease_until = $1 WHERE lease_owner = $2 "
            "RETURNING run_id, cancel_requested",
            time.time() + ttl,
            db.owner,
        )
        return [r[0] for r in rows if r[1]]

    return await db.write(job)


async def release_leases(db: Database) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
            db.owner,
        )

    await db.write(job, notify=True)


async def wake(conn: asyncpg.Connection, db: Database, run_id: str, waker: Waker) -> Lease | None:
    """Inside a write: make a waiting run runnable, claimed here when `waker` allows; else
    due now, and the other workers are notified (when this transaction commits)."""
    row = await conn.fetchrow(
        "SELECT workflow, lease_owner, lease_until FROM runs WHERE run_id = $1 "
        "AND status = 'waiting' FOR UPDATE",
        run_id,
    )
    if row is None:
        return None
    workflow, holder, until = row
    if waker.may_claim and workflow in waker.workflows and _free(holder, until):
        leases = await take(conn, db.owner, waker.ttl, [run_id])
        return leases[0] if leases else None
    await conn.execute("UPDATE runs SET wake_at = $1 WHERE run_id = $2", waker.now, run_id)
    await db.notify(conn)
    return None


def _free(owner: str | None, until: float | None) -> bool:
    return owner is None or until is None or until < time.time() or is_dead(owner)


# ------------------------------------------------------------------ ending, cancelling
async def fail_run(db: Database, lease: Lease, error: str, now: float) -> bool:
    async def job(conn: asyncpg.Connection) -> bool:
        done = await conn.fetchval(
            "UPDATE runs SET status = 'failed', error = $1::json, lease_owner = NULL, "
            "lease_until = NULL, wake_at = NULL, updated_at = $2 WHERE run_id = $3 "
            "AND lease_owner = $4 AND lease_epoch = $5 RETURNING 1",
            error,
            now,
            lease.run_id,
            db.owner,
            lease.epoch,
        )
        return done is not None

    return await db.write(job, notify=True)


async def request_cancel(db: Database, run_id: str, error: str, now: float) -> bool:
    async def job(conn: asyncpg.Connection) -> bool:
        row = await conn.fetchrow(
            "UPDATE runs SET cancel_requested = 1 WHERE run_id = $1 "
            "RETURNING lease_owner, lease_until",
            run_id,
        )
        if row is None or not _free(row[0], row[1]):
            return False
        done = await conn.fetchval(
            "UPDATE runs SET status = 'cancelled', error = $1::json, lease_owner = NULL, "
            "lease_until = NULL, wake_at = NULL, updated_at = $2 WHERE run_id = $3 "
            "AND status IN ('running', 'waiting') RETURNING 1",
            error,
            now,
            run_id,
        )
        return done is not None

    return await db.write(job, notify=True)
