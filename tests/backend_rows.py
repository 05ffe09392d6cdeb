"""Reaching under the store in tests, on either backend: the few raw writes a test makes to
simulate what time or another machine would do (a lease running out)."""

from __future__ import annotations

import sqlite3

from dotdo.engine.store.location import locate


async def expire_lease(location: str, run_id: str) -> None:
    """Make the run's lease look expired (its owner stalled past its time-to-live)."""
    await _set_zero(location, run_id, "lease_until")


async def make_due(location: str, run_id: str) -> None:
    """Make a waiting run's timer due now (as if its sleep had passed)."""
    await _set_zero(location, run_id, "wake_at")


async def _set_zero(location: str, run_id: str, column: str) -> None:
    where = locate(location)
    if where.backend == "sqlite":
        with sqlite3.connect(where.target) as conn:
            conn.execute(f"UPDATE runs SET {column} = 0 WHERE run_id = ?", (run_id,))
        conn.close()
        return
    import asyncpg

    conn_pg = await asyncpg.connect(where.target)
    try:
        await conn_pg.execute(f"UPDATE runs SET {column} = 0 WHERE run_id = $1", run_id)
    finally:
        await conn_pg.close()
