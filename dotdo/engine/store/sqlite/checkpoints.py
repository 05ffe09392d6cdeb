"""Writing a batch of checkpoints inside the group transaction, fenced by lease epochs.

A checkpoint is written only if its run is still leased to this owner at the epoch the
checkpoint carries; otherwise nothing of it is written (no state, journal, approval or
outbox row) and its run id is reported lost, so its writer drops the run.
"""

from __future__ import annotations

import sqlite3

from dotdo.engine.store.interface import Checkpoint

__all__ = ["write_checkpoints"]


def write_checkpoints(
    raw: sqlite3.Connection, owner: str, checkpoints: list[Checkpoint]
) -> set[str]:
    """Write what is still ours; returns the run ids whose lease was lost."""
    ids = list({c.run_id for c in checkpoints})
    marks = ",".join("?" * len(ids))
    # Ownership is read first, inside the transaction: a run whose lease was taken over
    # (or released, or claimed again since) writes nothing.
    held = dict(
        raw.execute(
            f"SELECT run_id, lease_epoch FROM runs WHERE run_id IN ({marks}) AND lease_owner = ?",
            (*ids, owner),
        ).fetchall()
    )
    kept = [c for c in checkpoints if held.get(c.run_id) == c.lease.epoch]
    lost = {c.run_id for c in checkpoints} - {c.run_id for c in kept}
    raw.executemany(
        "UPDATE runs SET status = ?, node = ?, state = ?, wake_at = ?, result = ?, "
        "error = ?, steps_done = ?, updated_at = ?, "
        "lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END, "
        "lease_until = CASE WHEN ? THEN NULL ELSE lease_until END "
        "WHERE run_id = ? AND lease_owner = ? AND lease_epoch = ?",
        [
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
                c.lease.epoch,
            )
            for c in kept
        ],
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
    approvals = [
        (a.id, a.run_id, a.approver, a.deadline, a.body, c.now, c.now)
        for c in kept
        if (a := c.approval) is not None
    ]
    events = [(*a.event, c.now, a.id) for c in kept if (a := c.approval) is not None and a.event]
    if events:  # before the approval row: only a new approval announces itself
        raw.executemany(
            "INSERT INTO outbox(run_id, event, data, created_at) SELECT NULL, ?, ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM approvals WHERE id = ?)",
            events,
        )
    if approvals:
        raw.executemany(
            "INSERT INTO approvals(id, run_id, status, approver, deadline, body, created_at, "
            "updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
            approvals,
        )
    sends = [(c.run_id, name, data, c.now) for c in kept for name, data in c.sends]
    if sends:
        raw.executemany(
            "INSERT INTO outbox(run_id, event, data, created_at) VALUES (?, ?, ?, ?)", sends
        )
    return lost
