"""Reaching under the store in tests, on either backend: the few raw writes a test makes to
simulate what time or another machine would do (a lease running out)."""

from __future__ import annotations

import sqlite3

from dotdo.engine.store.location import locate


async def expire_lease(location: str, run_id: str) -> None:
    """Make the run's lease look expired (its owner stalled past its time-to-live)."""
    where = locate(location)
    if where.backend == "sqlite":
        with sqlite3.connect(where.target) as conn:
            conn.execute("UPDATE runs SET lease_until = 0 WHERE run_id = ?", (run_id,))
        conn.close()
        return
    import asyncpg

    conn_pg = await asyncpg.connect(where.target)
    try:
        await conn_pg.execute("UPDATE runs SET lease_until = 0 WHERE run_id = $1", run_id)
    finally:
        await conn_pg.close()
