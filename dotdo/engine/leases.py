"""Who owns a run: lease owner ids and how to tell that an owner has died.

A lease expires after its time-to-live, but waiting that long after a crash is needless when
the owner's death can be seen: same host and its process is gone, or same process and the
engine that held it is closed (a simulated crash in a test).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Container, Sequence

import aiosqlite

__all__ = [
    "claim",
    "is_dead",
    "lease_is_free",
    "new_owner",
    "release_all",
    "release_owner",
    "renew",
]

_HOST = socket.gethostname()
_LIVE: set[str] = set()


def new_owner() -> str:
    owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _LIVE.add(owner)
    return owner


def release_owner(owner: str) -> None:
    _LIVE.discard(owner)


def is_dead(owner: str) -> bool:
    """True when `owner` certainly no longer runs anything."""
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in _LIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet still answers kill(0); it is dead."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _claimable(owner: str | None, until: float | None, now: float) -> bool:
    return owner is None or until is None or until < now or is_dead(owner)


async def claim(
    conn: aiosqlite.Connection,
    *,
    owner: str,
    ttl: float,
    workflows: Sequence[str],
    status: str,
    due_before: float | None = None,
    skip: Container[str] = (),
) -> list[str]:
    """Take the lease of every claimable run in `status` (waiting ones: only if due).

    Runs inside the writer's transaction, so two processes never claim the same run. A
    claimed waiting run becomes running; its wake time stays, so a crash right after the
    claim still knows its timer had fired.
    """
    if not workflows:
        return []
    marks = ",".join("?" * len(workflows))
    sql = (
        "SELECT run_id, lease_owner, lease_until FROM runs "
        f"WHERE status = ? AND workflow IN ({marks})"
    )
    params: list[object] = [status, *workflows]
    if due_before is not None:
        sql += " AND wake_at <= ?"
        params.append(due_before)
    now = time.time()
    rows = await conn.execute_fetchall(sql, params)
    free = [
        r[0] for r in rows if r[0] not in skip and r[1] != owner and _claimable(r[1], r[2], now)
    ]
    if free:
        await conn.executemany(
            "UPDATE runs SET status = 'running', lease_owner = ?, lease_until = ? WHERE run_id = ?",
            [(owner, now + ttl, run_id) for run_id in free],
        )
    return free


async def renew(conn: aiosqlite.Connection, *, owner: str, ttl: float) -> list[str]:
    """Extend this owner's leases; returns its runs that another process asked to cancel."""
    await conn.execute(
        "UPDATE runs SET lease_until = ? WHERE lease_owner = ?", (time.time() + ttl, owner)
    )
    rows = await conn.execute_fetchall(
        "SELECT run_id FROM runs WHERE lease_owner = ? AND cancel_requested = 1", (owner,)
    )
    return [r[0] for r in rows]


async def release_all(conn: aiosqlite.Connection, *, owner: str) -> None:
    """A clean shutdown hands every lease back, so another process may take over at once."""
    await conn.execute(
        "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (owner,)
    )


def lease_is_free(owner: str | None, until: float | None) -> bool:
    return _claimable(owner, until, time.time())
