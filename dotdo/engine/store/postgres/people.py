"""People on PostgreSQL: console users, the approver names they act as, API token digests,
spent link nonces, and meta values made once (the console's signing key).

Passwords arrive hashed and tokens as digests (`dotdo.engine.people` does that); this module
only keeps rows.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from dotdo.engine.store.interface import StoredUser
from dotdo.engine.store.postgres.database import Database

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

_USER = (
    "SELECT u.name, u.role, COALESCE(array_agg(n.name ORDER BY n.name) "
    "FILTER (WHERE n.name IS NOT NULL), '{}'), u.password FROM users u "
    "LEFT JOIN user_names n ON n.user_name = u.name"
)


def _user(row: Any) -> StoredUser:
    return StoredUser(row[0], row[1], tuple(row[2]), row[3])


async def put_user(db: Database, person: StoredUser, now: float) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "INSERT INTO users(name, password, role, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (name) DO UPDATE SET password = COALESCE(excluded.password, "
            "users.password), role = excluded.role",
            person.name,
            person.password,
            person.role,
            now,
        )
        await conn.execute("DELETE FROM user_names WHERE user_name = $1", person.name)
        await conn.execute(
            "INSERT INTO user_names(user_name, name) SELECT $1, n FROM unnest($2::text[]) AS n "
            "ON CONFLICT DO NOTHING",
            person.name,
            list(person.names),
        )

    await db.write(job)


async def remove_user(db: Database, name: str) -> bool:
    async def job(conn: asyncpg.Connection) -> bool:
        await conn.execute("DELETE FROM user_names WHERE user_name = $1", name)
        await conn.execute("DELETE FROM api_tokens WHERE user_name = $1", name)
        result = await conn.execute("DELETE FROM users WHERE name = $1", name)
        return str(result).split()[-1] != "0"

    return bool(await db.write(job))


async def user(db: Database, name: str) -> StoredUser | None:
    row = await db.fetch_one(f"{_USER} WHERE u.name = $1 GROUP BY u.name", name)
    return None if row is None else _user(row)


async def user_by_token(db: Database, digest: str) -> StoredUser | None:
    row = await db.fetch_one(
        f"{_USER} WHERE u.name = (SELECT user_name FROM api_tokens WHERE digest = $1) "
        "GROUP BY u.name",
        digest,
    )
    return None if row is None else _user(row)


async def users(db: Database) -> list[StoredUser]:
    return [_user(r) for r in await db.fetch(f"{_USER} GROUP BY u.name ORDER BY u.name")]


async def add_token(db: Database, digest: str, user: str, now: float) -> None:
    async def job(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "INSERT INTO api_tokens(digest, user_name, created_at) VALUES ($1, $2, $3)",
            digest,
            user,
            now,
        )

    await db.write(job)


async def meta_default(db: Database, key: str, value: str) -> str:
    found = await db.fetch_one("SELECT value FROM meta WHERE key = $1", key)
    if found is not None:
        return str(found[0])

    async def job(conn: asyncpg.Connection) -> str:
        await conn.execute(
            "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            key,
            value,
        )
        return str(await conn.fetchval("SELECT value FROM meta WHERE key = $1", key))

    return str(await db.write(job))


async def spend_nonce(db: Database, nonce: str, now: float, expires_at: float) -> bool:
    async def job(conn: asyncpg.Connection) -> bool:
        await conn.execute("DELETE FROM used_links WHERE expires_at < $1", now)
        result = await conn.execute(
            "INSERT INTO used_links(nonce, used_at, expires_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (nonce) DO NOTHING",
            nonce,
            now,
            expires_at,
        )
        return str(result).split()[-1] != "0"

    return bool(await db.write(job))
