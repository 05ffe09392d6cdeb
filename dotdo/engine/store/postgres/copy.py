"""`dotdo db copy`: move an SQLite database into PostgreSQL, table for table.

Every row moves with its identity: run ids, step keys, event ids (so handler cursors and the
event a wait took stay right), approval ids, entity versions and call ids, graph bodies and
their signatures, and the database's own id (entity call ids start with it, so a send still
in the outbox is recognised as the same call on the other side). Leases are cleared, so
the first worker on the new database takes every unfinished run at once; epochs are kept.
Hibernating runs are rows with a wake time or an open wait and need nothing more: they wake
on the new backend as they would have on the old.

The copy is one PostgreSQL transaction, streamed with COPY in chunks: it lands whole or not
at all. The target must be empty (no dotdo rows) unless `into_non_empty`, which adds the rows
whose keys are not there yet and keeps the ones that are. Stop the workers of the SQLite file
first: a run they advance after its row was copied would not be seen.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from dotdo.engine.store.location import redact
from dotdo.engine.store.postgres.connect import connect
from dotdo.engine.store.postgres.schema import SCHEMA_VERSION, migrate, schema_version
from dotdo.errors import SchemaTooNew, StoreError

__all__ = ["TABLES", "CopyReport", "copy_sqlite_to_postgres"]

TABLES = (
    "graphs",
    "runs",
    "steps",
    "outbox",
    "approvals",
    "waits",
    "schedules",
    "cursors",
    "entities",
    "entity_calls",
    "entity_outbox",
    "history",
    "users",
    "user_names",
    "api_tokens",
    "used_links",
)
"""Data tables, in an order that satisfies the foreign key (graphs before runs)."""
CHUNK = 5000


@dataclass
class CopyReport:
    """Rows copied per table, and (into a non-empty target) rows kept because their key
    was already there."""

    copied: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return self.copied.get("runs", 0)


async def copy_sqlite_to_postgres(
    source: str | Path,
    url: str,
    *,
    into_non_empty: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> CopyReport:
    """Copy every dotdo row of the SQLite file `source` into the database at `url`."""
    path = Path(source)
    if not path.is_file():
        raise StoreError(f"no dotdo database at {path}")
    lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = _sqlite_version(lite, path)
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{path} has schema version {version}, newer than this dotdo understands "
                f"({SCHEMA_VERSION}); upgrade dotdo to copy it"
            )
        conn = await connect(url)
        try:
            return await _copy(lite, conn, path, url, into_non_empty, progress)
        finally:
            await conn.close()
    finally:
        lite.close()


async def _copy(
    lite: sqlite3.Connection,
    conn: asyncpg.Connection,
    path: Path,
    url: str,
    into_non_empty: bool,
    progress: Callable[[str, int], None] | None,
) -> CopyReport:
    where = redact(url)
    found = await schema_version(conn, where)  # refuses a foreign or newer target
    if found and not into_non_empty:
        busy = [t for t in TABLES if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {t})")]
        if busy:
            raise StoreError(
                f"{where} already holds dotdo data ({', '.join(busy)}): nothing copied; "
                "copy into an empty database or schema, or pass --into-non-empty to add to it"
            )
    report = CopyReport()
    async with conn.transaction():
        await migrate(conn, where)
        source_tables = {
            r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        for table in TABLES:
            if table not in source_tables:
                continue
            copied, kept = await _copy_table(lite, conn, table, into_non_empty)
            report.copied[table] = copied
            if kept:
                report.kept[table] = kept
            if progress is not None:
                progress(table, copied)
        await _copy_meta(lite, conn, keep_identity=bool(found))
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('outbox', 'id'), "
            "GREATEST((SELECT max(id) FROM outbox), 1), (SELECT max(id) FROM outbox) IS NOT NULL)"
        )
    return report


async def _copy_table(
    lite: sqlite3.Connection, conn: asyncpg.Connection, table: str, merge: bool
) -> tuple[int, int]:
    types = {
        r[0]: r[1]
        for r in await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            table,
        )
    }
    have = [r[1] for r in lite.execute(f"PRAGMA table_info({table})")]
    columns = [c for c in have if c in types]
    casts = [_cast(types[c]) for c in columns]
    clear = {"lease_owner", "lease_until"} if table == "runs" else set()
    copied = kept = 0
    for chunk in _chunks(lite, table, columns):
        records = [
            tuple(
                None if name in clear or value is None else cast(value)
                for name, cast, value in zip(columns, casts, row, strict=True)
            )
            for row in chunk
        ]
        if merge:
            inserted = await _merge(conn, table, columns, records)
            copied, kept = copied + inserted, kept + len(records) - inserted
        else:
            await conn.copy_records_to_table(table, records=records, columns=columns)
            copied += len(records)
    return copied, kept


async def _merge(
    conn: asyncpg.Connection, table: str, columns: list[str], records: list[tuple[Any, ...]]
) -> int:
    """Insert the records whose key is new (through a temporary table and one INSERT)."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS copy_{table} (LIKE {table} INCLUDING DEFAULTS) "
        "ON COMMIT DROP"
    )
    await conn.execute(f"TRUNCATE copy_{table}")
    await conn.copy_records_to_table(f"copy_{table}", records=records, columns=columns)
    names = ", ".join(columns)
    result = await conn.execute(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM copy_{table} ON CONFLICT DO NOTHING"
    )
    return int(result.split()[-1])


async def _copy_meta(
    lite: sqlite3.Connection, conn: asyncpg.Connection, keep_identity: bool
) -> None:
    """Graph signatures, and the source's database id unless the target had its own data."""
    for key, value in lite.execute("SELECT key, value FROM meta"):
        if key == "schema_version" or (key == "db_id" and keep_identity):
            continue
        await conn.execute(
            "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value",
            str(key),
            str(value),
        )


def _chunks(lite: sqlite3.Connection, table: str, columns: list[str]) -> Iterator[list[Any]]:
    cursor = lite.execute(f"SELECT {', '.join(columns)} FROM {table}")
    while rows := cursor.fetchmany(CHUNK):
        yield rows


def _cast(data_type: str) -> Callable[[Any], Any]:
    if data_type == "double precision":
        return float
    if data_type in ("integer", "bigint"):
        return int
    return str


def _sqlite_version(lite: sqlite3.Connection, path: Path) -> int:
    try:
        tables = {r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a usable SQLite database: {exc}") from None
    if "meta" not in tables:
        raise StoreError(f"{path} is not a dotdo database")
    row = lite.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0
