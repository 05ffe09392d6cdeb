"""The SQLite schema: migrations keyed by `meta.schema_version`, applied in order.

Append a migration to change the schema; never edit one that has shipped (a database made
by an older dotdo runs only the ones after its version).
"""

from __future__ import annotations

import aiosqlite

from dotdo.errors import StoreError

__all__ = ["SCHEMA_VERSION", "migrate", "schema_version"]

_MIGRATIONS: list[str] = [
    # 1: the initial schema.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE graphs (
        hash TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        graph_hash TEXT NOT NULL REFERENCES graphs(hash),
        entity_id TEXT NOT NULL,
        status TEXT NOT NULL,
        node TEXT NOT NULL,
        state TEXT NOT NULL,
        input TEXT NOT NULL,
        result TEXT,
        error TEXT,
        wake_at REAL,
        lease_owner TEXT,
        lease_until REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        steps_done INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX runs_by_status ON runs(status, wake_at);
    CREATE INDEX runs_by_owner ON runs(lease_owner);
    CREATE TABLE steps (
        run_id TEXT NOT NULL,
        step_key TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        value TEXT,
        error TEXT,
        seq INTEGER,
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (run_id, step_key)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at REAL NOT NULL,
        dispatched_at REAL
    );
    """,
    # 2: hibernation (approvals, event waits, schedules, handler cursors) and the module a
    # workflow's code lives in, so a CLI deciding an approval can load and drive the run.
    """
    ALTER TABLE graphs ADD COLUMN module TEXT;
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        status TEXT NOT NULL,
        approver TEXT,
        deadline REAL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX approvals_by_status ON approvals(status, approver);
    CREATE TABLE waits (
        run_id TEXT NOT NULL,
        step_key TEXT NOT NULL,
        event TEXT NOT NULL,
        match TEXT,
        since REAL NOT NULL,
        event_id INTEGER,
        PRIMARY KEY (run_id, step_key)
    ) WITHOUT ROWID;
    CREATE INDEX waits_open ON waits(event) WHERE event_id IS NULL;
    CREATE INDEX outbox_by_event ON outbox(event, id);
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        next_fire REAL NOT NULL,
        last_fire REAL
    );
    CREATE TABLE cursors (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL)
    """,
    # 3: entities (dotdo.entities): each DO instance's state with a version for optimistic
    # concurrency, the results of applied calls by call id (so a repeated call is answered,
    # not applied again), and the outbox of fire-and-forget calls.
    """
    CREATE TABLE entities (
        cls TEXT NOT NULL,
        id TEXT NOT NULL,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (cls, id)
    ) WITHOUT ROWID;
    CREATE TABLE entity_calls (
        call_id TEXT PRIMARY KEY,
        cls TEXT NOT NULL,
        id TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX entity_calls_by_age ON entity_calls(created_at);
    CREATE TABLE entity_outbox (
        call_id TEXT PRIMARY KEY,
        cls TEXT NOT NULL,
        request TEXT NOT NULL,
        run_id TEXT,
        step_key TEXT,
        created_at REAL NOT NULL,
        next_try REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL,
        outcome TEXT,
        error TEXT
    ) WITHOUT ROWID;
    CREATE INDEX entity_outbox_due ON entity_outbox(next_try) WHERE delivered_at IS NULL
    """,
    # 4: call identity (dotdo.entities.identity): a random id for this database, which starts
    # every call id its engine sends, and, with each applied call, its chain and a digest of
    # its hops and arguments, so a reused call id with another request is refused.
    """
    INSERT INTO meta(key, value) VALUES ('db_id', lower(hex(randomblob(16))))
        ON CONFLICT(key) DO NOTHING;
    ALTER TABLE entity_calls ADD COLUMN chain TEXT;
    ALTER TABLE entity_calls ADD COLUMN digest TEXT
    """,
    # 5: lease epochs (fencing): every claim of a run increments its epoch, and every write
    # its owner makes carries the epoch it claimed, refused once it has changed.
    """
    ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0
    """,
    # 6: operations (docs/operations.md): the run a retry continues, the trace a run's
    # stretches share, and each run's history of operations (an upgrade applied, a retry).
    """
    ALTER TABLE runs ADD COLUMN retry_of TEXT;
    ALTER TABLE runs ADD COLUMN trace TEXT;
    CREATE INDEX runs_by_retry ON runs(retry_of) WHERE retry_of IS NOT NULL;
    CREATE INDEX runs_by_age ON runs(status, updated_at);
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX history_by_run ON history(run_id, id)
    """,
    # 7: the web console (dotdo.console; numbered after the operations work's 6): users
    # with hashed passwords, the approver names and groups each acts as (`user_name`:
    # PostgreSQL reserves `user`), API tokens (digests), the single-use signed links already
    # spent, and indexes for the runs list's keyset pages and a run's approvals.
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password TEXT,
        role TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE user_names (
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        PRIMARY KEY (user_name, name)
    ) WITHOUT ROWID;
    CREATE INDEX user_names_by_name ON user_names(name, user_name);
    CREATE TABLE api_tokens (
        digest TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE used_links (
        nonce TEXT PRIMARY KEY,
        used_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX runs_by_created ON runs(created_at, run_id);
    CREATE INDEX approvals_by_run ON approvals(run_id)
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


async def migrate(conn: aiosqlite.Connection, path: str) -> None:
    """Bring the file to SCHEMA_VERSION in one transaction (a new file gets every step)."""
    if await schema_version(conn, path) == SCHEMA_VERSION:
        return
    await conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process opening the same new file at
        # the same moment may have migrated it since the read above.
        version = await schema_version(conn, path)
        if version < SCHEMA_VERSION:
            for script in _MIGRATIONS[version:]:
                for statement in filter(str.strip, script.split(";")):
                    await conn.execute(statement)
            await conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


async def schema_version(conn: aiosqlite.Connection, path: str) -> int:
    """The file's schema version (0 when empty); refuses foreign and newer databases."""
    tables = {
        r[0]
        for r in await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    version = 0
    if "meta" in tables:
        rows = list(
            await conn.execute_fetchall("SELECT value FROM meta WHERE key = 'schema_version'")
        )
        version = int(rows[0][0]) if rows else 0
    elif tables - {"sqlite_sequence"}:
        raise StoreError(f"{path} is an SQLite database, but not a dotdo one")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this dotdo "
            f"understands ({SCHEMA_VERSION}); upgrade dotdo to open it"
        )
    return version
