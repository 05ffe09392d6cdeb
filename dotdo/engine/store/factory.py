"""Which backend a database location names, and the unopened store for it.

A filesystem path (the default, ./dotdo.db) is a SQLite file; a postgresql:// URL is a
PostgreSQL database (`dotdo.engine.store.postgres`, imported only then: asyncpg is an extra);
any other scheme is refused (`location.locate`). The one place a backend is chosen: nothing
else in the engine knows which backend it talks to.
"""

from __future__ import annotations

from pathlib import Path

from dotdo.engine.store.interface import Store, StoreOptions
from dotdo.engine.store.location import locate
from dotdo.engine.store.sqlite import SqliteStore

__all__ = ["make_store"]


def make_store(location: str | Path, options: StoreOptions) -> Store:
    """An unopened store for `location` with `options` (see `StoreFactory`)."""
    where = locate(location)
    if where.backend == "postgres":
        from dotdo.engine.store.postgres.store import PostgresStore

        return PostgresStore(where.target, options)
    return SqliteStore(
        where.target,
        owner=options.owner,
        synchronous=options.synchronous,
        commit_hook=options.commit_hook,
        busy_timeout=options.busy_timeout,
        read_only=options.read_only,
    )
