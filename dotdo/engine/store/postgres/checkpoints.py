"""Writing a batch of checkpoints in the group transaction: a few statements over arrays.

However many runs a batch advances, it costs the same handful of round trips: one UPDATE
of every run row, fenced by owner and lease epoch in its WHERE (its RETURNING says which
runs are still ours), then one INSERT each for the journal rows, approvals and outbox rows
of the runs that were. A run whose lease was taken over writes nothing at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from dotdo.engine.store.interface import Checkpoint

__all__ = ["announces", "needs_notify", "write_checkpoints"]

_UPDATE = """
UPDATE runs AS r SET status = c.status, node = c.node, state = c.state::json,
    wake_at = c.wake_at, result = c.result::json, error = c.error::json,
    steps_done = c.steps_done, updated_at = c.now,
    lease_owner = CASE WHEN c.release THEN NULL ELSE r.lease_owner END,
    lease_until = CASE WHEN c.release THEN NULL ELSE r.lease_until END
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::float8[],
            $7::text[], $8::text[], $9::int[], $10::float8[], $11::bool[])
    AS c(run_id, epoch, status, node, state, wake_at, result, error, steps_done, now, release)
WHERE r.run_id = c.run_id AND r.lease_owner = $12 AND r.lease_epoch = c.epoch
RETURNING r.run_id
"""

_JOURNAL = """
INSERT INTO steps AS s (run_id, step_key, status, attempts, value, error, seq, started_at,
    finished_at)
SELECT run_id, step_key, status, attempts, value::json, error::json, seq, started_at,
    finished_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::int[],
            $8::float8[], $9::float8[])
    AS j(run_id, step_key, status, attempts, value, error, seq, started_at, finished_at)
ON CONFLICT (run_id, step_key) DO UPDATE SET status = excluded.status,
    attempts = excluded.attempts, value = excluded.value, error = excluded.error,
    seq = excluded.seq, started_at = COALESCE(s.started_at, excluded.started_at),
    finished_at = excluded.finished_at
WHERE s.status <> 'completed'
"""

_APPROVALS = """
INSERT INTO approvals(id, run_id, status, approver, deadline, body, created_at, updated_at)
SELECT id, run_id, 'pending', approver, deadline, body::json, now, now
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::float8[])
    AS a(id, run_id, approver, deadline, body, now)
ON CONFLICT (id) DO NOTHING
"""

_APPROVAL_EVENTS = """
INSERT INTO outbox(run_id, event, data, created_at)
SELECT NULL, e.event, e.data::json, e.now
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[]) WITH ORDINALITY
    AS e(id, event, data, now, n)
WHERE NOT EXISTS (SELECT 1 FROM approvals a WHERE a.id = e.id)
ORDER BY n
"""

_SENDS = """
INSERT INTO outbox(run_id, event, data, created_at)
SELECT run_id, event, data::json, now
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[]) WITH ORDINALITY
    AS o(run_id, event, data, now, n)
ORDER BY n
"""


async def write_checkpoints(
    conn: asyncpg.Connection, owner: str, checkpoints: Sequence[Checkpoint]
) -> set[str]:
    """Write what is still ours; returns the run ids whose lease was lost."""
    cps = list(checkpoints)
    rows = await conn.fetch(
        _UPDATE,
        [c.run_id for c in cps],
        [c.lease.epoch for c in cps],
        [c.status for c in cps],
        [c.node for c in cps],
        [c.state for c in cps],
        [c.wake_at for c in cps],
        [c.result for c in cps],
        [c.error for c in cps],
        [c.steps_done for c in cps],
        [c.now for c in cps],
        [c.release for c in cps],
        owner,
    )
    ours = {r[0] for r in rows}
    kept = [c for c in cps if c.run_id in ours]
    # One row per (run, key): ON CONFLICT cannot touch a row twice in one statement.
    journal = {(c.run_id, j.key): (c.run_id, j) for c in kept for j in c.journal}
    if journal:
        entries = list(journal.values())
        await conn.execute(
            _JOURNAL,
            [r for r, _ in entries],
            [j.key for _, j in entries],
            [j.status for _, j in entries],
            [j.attempts for _, j in entries],
            [j.value for _, j in entries],
            [j.error for _, j in entries],
            [j.seq for _, j in entries],
            [j.started_at for _, j in entries],
            [j.finished_at for _, j in entries],
        )
    approvals = [(c, a) for c in kept if (a := c.approval) is not None]
    announced = [(c, a, a.event) for c, a in approvals if a.event is not None]
    if announced:  # before the approval rows: only a new approval announces itself
        await conn.execute(
            _APPROVAL_EVENTS,
            [a.id for _, a, _ in announced],
            [e[0] for _, _, e in announced],
            [e[1] for _, _, e in announced],
            [c.now for c, _, _ in announced],
        )
    if approvals:
        await conn.execute(
            _APPROVALS,
            [a.id for _, a in approvals],
            [a.run_id for _, a in approvals],
            [a.approver for _, a in approvals],
            [a.deadline for _, a in approvals],
            [a.body for _, a in approvals],
            [c.now for c, _ in approvals],
        )
    sends = [(c.run_id, name, data, c.now) for c in kept for name, data in c.sends]
    if sends:
        await conn.execute(
            _SENDS,
            [s[0] for s in sends],
            [s[1] for s in sends],
            [s[2] for s in sends],
            [s[3] for s in sends],
        )
    return {c.run_id for c in cps} - ours


def announces(checkpoint: Checkpoint) -> bool:
    """Whether the checkpoint appends to the outbox (its sends, an approval's event), so
    its transaction takes the events lock."""
    return bool(checkpoint.sends) or (
        checkpoint.approval is not None and checkpoint.approval.event is not None
    )


def needs_notify(checkpoints: Sequence[Checkpoint], lost: set[str]) -> bool:
    """Whether other workers must look: a run now hibernates (its wake time, or the event or
    decision it waits for, may be another worker's to act on) or sent events. A run that
    finished needs no one (a `result()` in another process polls); with many workers,
    notifying every completion would wake all of them for nothing."""
    return any(
        c.run_id not in lost and ((c.release and c.status == "waiting") or c.sends)
        for c in checkpoints
    )
