"""Which backend a database location names, and the unopened store for it.

A filesystem path (the default, ./dotdo.db) is a SQLite file. The one place a new backend is
chosen: a URL scheme it understands goes to its module here; nothing else in the engine
knows which backend it talks to.
"""

from __future__ import annotations

from pathlib import Path

from dotdo.engine.store.interface import Store, StoreOptions
from dotdo.engine.store.sqlite import SqliteStore

__all__ = ["make_store"]


def make_store(location: str | Path, options: StoreOptions) -> Store:
    """An unopened store for `location` with `options` (see `StoreFactory`)."""
    return SqliteStore(
        location,
        owner=options.owner,
        synchronous=options.synchronous,
        commit_hook=options.commit_hook,
        busy_timeout=options.busy_timeout,
        read_only=options.read_only,
    )
