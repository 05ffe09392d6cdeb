"""People on SQLite: console users, the approver names they act as, API token digests, spent
link nonces, and meta values made once (the console's signing key).

Passwords arrive hashed and tokens as digests (`dotdo.engine.people` does that); this module
only keeps rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite

from dotdo.engine.store.interface import StoredUser
from dotdo.engine.store.sqlite.connection import Database

__all__ = [
    "add_token",
    "meta_default",
    "put_user",
    "remove_user",
    "spend_nonce",
    "user",
    "user_by_token",
    "users",
]


async def put_user(db: Database, person: StoredUser, now: float) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "INSERT INTO users(name, password, role, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET password = COALESCE(excluded.password, "
            "users.password), role = excluded.role",
            (person.name, person.password, person.role, now),
        )
        await conn.execute("DELETE FROM user_names WHERE user_name = ?", (person.name,))
        await conn.executemany(
            "INSERT OR IGNORE INTO user_names(user_name, name) VALUES (?, ?)",
            [(person.name, n) for n in person.names],
        )

    await db.write(job)


async def remove_user(db: Database, name: str) -> bool:
    async def job(conn: aiosqlite.Connection) -> bool:
        await conn.execute("DELETE FROM user_names WHERE user_name = ?", (name,))
        await conn.execute("DELETE FROM api_tokens WHERE user_name = ?", (name,))
        cursor = await conn.execute("DELETE FROM users WHERE name = ?", (name,))
        return cursor.rowcount > 0

    return await db.write(job)


async def _with_names(db: Database, row: Sequence[Any] | None) -> StoredUser | None:
    if row is None:
        return None
    names = await db.fetch(
        "SELECT name FROM user_names WHERE user_name = ? ORDER BY name", (row[0],)
    )
    return StoredUser(row[0], row[2], tuple(n[0] for n in names), row[1])


async def user(db: Database, name: str) -> StoredUser | None:
    row = await db.fetch_one("SELECT name, password, role FROM users WHERE name = ?", (name,))
    return await _with_names(db, row)


async def user_by_token(db: Database, digest: str) -> StoredUser | None:
    row = await db.fetch_one(
        "SELECT u.name, u.password, u.role FROM api_tokens t JOIN users u ON u.name = t.user_name "
        "WHERE t.digest = ?",
        (digest,),
    )
    return await _with_names(db, row)


async def users(db: Database) -> list[StoredUser]:
    rows = await db.fetch("SELECT name, password, role FROM users ORDER BY name")
    names: dict[str, list[str]] = {}
    for r in await db.fetch("SELECT user_name, name FROM user_names ORDER BY name"):
        names.setdefault(r[0], []).append(r[1])
    return [StoredUser(r[0], r[2], tuple(names.get(r[0], ())), r[1]) for r in rows]


async def add_token(db: Database, digest: str, user: str, now: float) -> None:
    async def job(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "INSERT INTO api_tokens(digest, user_name, created_at) VALUES (?, ?, ?)",
            (digest, user, now),
        )

    await db.write(job)


async def meta_default(db: Database, key: str, value: str) -> str:
    row = await db.fetch_one("SELECT value FROM meta WHERE key = ?", (key,))
    if row is not None:
        return str(row[0])

    async def job(conn: aiosqlite.Connection) -> str:
        await conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, value)
        )
        rows = list(await conn.execute_fetchall("SELECT value FROM meta WHERE key = ?", (key,)))
        return str(rows[0][0])

    return await db.write(job)


async def spend_nonce(db: Database, nonce: str, now: float, expires_at: float) -> bool:
    async def job(conn: aiosqlite.Connection) -> bool:
        await conn.execute("DELETE FROM used_links WHERE expires_at < ?", (now,))
        cursor = await conn.execute(
            "INSERT OR IGNORE INTO used_links(nonce, used_at, expires_at) VALUES (?, ?, ?)",
            (nonce, now, expires_at),
        )
        return cursor.rowcount > 0

    return await db.write(job)
