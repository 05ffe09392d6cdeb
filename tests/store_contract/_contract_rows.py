"""Rows the store contract suite writes, shared by its modules.

Every test here talks to the `Store` protocol only (no SQL, no backend type), through the
`open_store` fixture of tests/conftest.py, so each runs once per backend in `BACKENDS`.
"""

from __future__ import annotations

import time

from dotdo.engine.store.interface import Checkpoint, JournalRow, Lease, NewApproval, RunToCreate

WF = "Flow.run"


def new_run(
    run_id: str = "r", *, workflow: str = WF, ttl: float = 30.0, **extra: object
) -> RunToCreate:
    now = time.time()
    fields: dict[str, object] = {
        "run_id": run_id,
        "workflow": workflow,
        "entity_id": run_id,
        "graph_hash": "hash-1",
        "graph_name": "run",
        "graph_body": '{"graph": 1}',
        "module": "app.flows",
        "node": "start",
        "state": '{"frame": {}}',
        "input": '{"x": 1}',
        "lease_until": now + ttl,
        "now": now,
    }
    fields.update(extra)
    return RunToCreate(**fields)  # type: ignore[arg-type]


def checkpoint(
    lease: Lease,
    *,
    status: str = "running",
    node: str = "n1",
    journal: tuple[JournalRow, ...] = (),
    sends: tuple[tuple[str, str], ...] = (),
    approval: NewApproval | None = None,
    release: bool = False,
    wake_at: float | None = None,
    result: str | None = None,
    now: float | None = None,
) -> Checkpoint:
    return Checkpoint(
        lease=lease,
        status=status,
        node=node,
        state='{"frame": {"n": 1}}',
        steps_done=len(journal),
        now=time.time() if now is None else now,
        wake_at=wake_at,
        result=result,
        journal=journal,
        sends=sends,
        approval=approval,
        release=release,
    )


def done(key: str, seq: int, value: str = '"v"') -> JournalRow:
    return JournalRow(key, "completed", 1, value=value, seq=seq, finished_at=time.time())
