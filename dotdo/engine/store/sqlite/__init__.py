"""The SQLite store (dotdo's embedded default): `SqliteStore` and its schema.

connection.py  the two connections, migrations on open, the group-commit writer
migrations.py  the schema, one migration per version
checkpoints.py a batch of checkpoints, fenced by lease epochs
runs.py        creating, reading, leasing, cancelling and listing runs
events.py      the outbox, event waits and delivery cursors
approvals.py   approvals and schedule cursors
entities.py    entity state, applied calls, entity sends
store.py       the `Store` protocol, routed to the modules above
"""

from dotdo.engine.store.interface import ACTIVE, FINISHED, Checkpoint, JournalRow
from dotdo.engine.store.sqlite.migrations import _MIGRATIONS, SCHEMA_VERSION
from dotdo.engine.store.sqlite.store import SqliteStore, read_started_steps

Store = SqliteStore
"""The name tests and tools open a SQLite file with: `Store(path, owner=...)`."""

__all__ = [
    "ACTIVE",
    "FINISHED",
    "SCHEMA_VERSION",
    "_MIGRATIONS",
    "Checkpoint",
    "JournalRow",
    "SqliteStore",
    "Store",
    "read_started_steps",
]
