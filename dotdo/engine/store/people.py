"""People in the dotdo database: console users, the approver names they act as, API tokens.

Every statement about people lives here, so the rest of the code speaks in domain terms
(`add_user`, `user_by_token`, `acts_as`). Passwords are stored as scrypt hashes with a salt
of their own; API tokens only as their SHA-256 digest (a token is 32 random bytes, so a fast
hash is enough); a signed approval link's nonce is stored once it is spent, so the link
works once. The key that signs console cookies and links is random per database, made on
first use and kept in `meta`: every console and worker on this database shares it.

Functions that write take the raw `aiosqlite` connection of a store write job, or the store
itself (anything with `write`, `fetch` and `fetch_one`); reads use the store's reader.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import aiosqlite

__all__ = [
    "ROLES",
    "PeopleStore",
    "Person",
    "acts_as",
    "add_user",
    "console_key",
    "hash_password",
    "is_member",
    "list_users",
    "new_token",
    "remove_user",
    "spend_link",
    "user_by_name",
    "user_by_token",
    "users_exist",
    "verify_password",
]

T = TypeVar("T")

Role = Literal["viewer", "approver", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "approver", "operator")
"""viewer: sees runs and approvals; approver: also decides its own; operator: also cancels
runs and sends events."""

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class PeopleStore(Protocol):
    """What this module needs of a store: group-commit writes and reads."""

    async def write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]: ...

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None: ...


@dataclass(frozen=True)
class Person:
    """A console user: their role and the approver names (people or groups) they act as."""

    name: str
    role: Role
    names: tuple[str, ...]
    has_password: bool = False

    @property
    def can_decide(self) -> bool:
        return self.role in ("approver", "operator")

    @property
    def can_operate(self) -> bool:
        return self.role == "operator"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$salt$hash` (hex): slow on purpose, so a stolen database is not a password list."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or stored.count("$") != 2:
        return False
    kind, salt, _ = stored.split("$")
    if kind != "scrypt":
        return False
    try:
        again = hash_password(password, salt=bytes.fromhex(salt))
    except ValueError:
        return False
    return hmac.compare_digest(again, stored)


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def add_user(
    store: PeopleStore,
    name: str,
    *,
    role: Role,
    names: Sequence[str],
    password: str | None,
    now: float,
) -> None:
    """Create or replace a user (its role, its approver names, its password)."""
    hashed = hash_password(password) if password else None

    async def job(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "INSERT INTO users(name, password, role, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET password = COALESCE(excluded.password, "
            "users.password), role = excluded.role",
            (name, hashed, role, now),
        )
        await conn.execute("DELETE FROM user_names WHERE user = ?", (name,))
        await conn.executemany(
            "INSERT OR IGNORE INTO user_names(user, name) VALUES (?, ?)",
            [(name, n) for n in names],
        )

    await store.write(job)


async def new_token(store: PeopleStore, user: str, *, now: float) -> str:
    """A fresh API token for `user`; only its digest is stored, so it is shown once."""
    token = "dotdo_" + secrets.token_urlsafe(32)

    async def job(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "INSERT INTO api_tokens(digest, user, created_at) VALUES (?, ?, ?)",
            (_token_digest(token), user, now),
        )

    await store.write(job)
    return token


async def remove_user(store: PeopleStore, name: str) -> bool:
    """Remove a user with their names and tokens; False when there was none."""

    async def job(conn: aiosqlite.Connection) -> bool:
        await conn.execute("DELETE FROM user_names WHERE user = ?", (name,))
        await conn.execute("DELETE FROM api_tokens WHERE user = ?", (name,))
        cursor = await conn.execute("DELETE FROM users WHERE name = ?", (name,))
        return cursor.rowcount > 0

    return await store.write(job)


def _person(row: sqlite3.Row, names: list[str]) -> Person:
    return Person(
        name=row["name"],
        role=row["role"],
        names=tuple(sorted(names)),
        has_password=row["password"] is not None,
    )


async def _names_of(store: PeopleStore, user: str) -> list[str]:
    rows = await store.fetch("SELECT name FROM user_names WHERE user = ?", (user,))
    return [r["name"] for r in rows]


async def user_by_name(store: PeopleStore, name: str) -> tuple[Person, str | None] | None:
    """The user and their stored password hash, or None."""
    row = await store.fetch_one("SELECT name, password, role FROM users WHERE name = ?", (name,))
    if row is None:
        return None
    return _person(row, await _names_of(store, name)), row["password"]


async def user_by_token(store: PeopleStore, token: str) -> Person | None:
    row = await store.fetch_one(
        "SELECT u.name, u.password, u.role FROM api_tokens t JOIN users u ON u.name = t.user "
        "WHERE t.digest = ?",
        (_token_digest(token),),
    )
    if row is None:
        return None
    return _person(row, await _names_of(store, row["name"]))


async def list_users(store: PeopleStore) -> list[Person]:
    rows = await store.fetch("SELECT name, password, role FROM users ORDER BY name")
    names: dict[str, list[str]] = {}
    for r in await store.fetch("SELECT user, name FROM user_names"):
        names.setdefault(r["user"], []).append(r["name"])
    return [_person(r, names.get(r["name"], [])) for r in rows]


async def users_exist(store: PeopleStore) -> bool:
    return await store.fetch_one("SELECT 1 FROM users LIMIT 1") is not None


def acts_as(person: Person, approver: str) -> bool:
    """Whether `person` may decide for the approver name `approver` (their own or a group)."""
    return approver in person.names


async def is_member(conn: aiosqlite.Connection, user: str, approver: str) -> bool:
    """Inside a write job: whether the user `user` acts as `approver` (a group they are in)."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM user_names WHERE user = ? AND name = ? LIMIT 1", (user, approver)
    )
    return bool(list(rows))


async def console_key(store: PeopleStore) -> bytes:
    """The database's key for console cookies and approval links (made on first use)."""
    row = await store.fetch_one("SELECT value FROM meta WHERE key = 'console_key'")
    if row is not None:
        return bytes.fromhex(row["value"])

    async def job(conn: aiosqlite.Connection) -> str:
        await conn.execute(
            "INSERT INTO meta(key, value) VALUES ('console_key', ?) ON CONFLICT(key) DO NOTHING",
            (secrets.token_hex(32),),
        )
        rows = list(await conn.execute_fetchall("SELECT value FROM meta WHERE key = 'console_key'"))
        return str(rows[0][0])

    return bytes.fromhex(await store.write(job))


async def spend_link(store: PeopleStore, nonce: str, *, now: float, expires_at: float) -> bool:
    """Mark a signed link's nonce used; False when it was used before (a replay)."""

    async def job(conn: aiosqlite.Connection) -> bool:
        await conn.execute("DELETE FROM used_links WHERE expires_at < ?", (now,))
        cursor = await conn.execute(
            "INSERT OR IGNORE INTO used_links(nonce, used_at, expires_at) VALUES (?, ?, ?)",
            (nonce, now, expires_at),
        )
        return cursor.rowcount > 0

    return await store.write(job)
