"""People in the dotdo database: console users, the approver names they act as, API tokens.

The rules about people live here, so the console and the CLI speak in domain terms
(`add_user`, `user_by_token`, `acts_as`) and the store only keeps rows (its people
operations). Passwords are stored as scrypt hashes with a salt of their own; API tokens only
as their SHA-256 digest (a token is 32 random bytes, so a fast hash is enough); a signed
approval link's nonce is stored once it is spent, so the link works once. The key that signs
console cookies and links is random per database, made on first use and kept in `meta`:
every console and worker on this database shares it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from dotdo.engine.store.interface import Store, StoredUser

__all__ = [
    "ROLES",
    "Person",
    "acts_as",
    "add_user",
    "console_key",
    "hash_password",
    "list_users",
    "new_token",
    "remove_user",
    "spend_link",
    "user_by_name",
    "user_by_token",
    "users_exist",
    "verify_password",
]

Role = Literal["viewer", "approver", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "approver", "operator")
"""viewer: sees runs and approvals; approver: also decides its own; operator: also cancels
runs and sends events."""

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


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
    store: Store,
    name: str,
    *,
    role: Role,
    names: Sequence[str],
    password: str | None,
    now: float,
) -> None:
    """Create or replace a user (its role, its approver names, its password)."""
    hashed = hash_password(password) if password else None
    await store.put_user(StoredUser(name, role, tuple(names), hashed), now)


async def new_token(store: Store, user: str, *, now: float) -> str:
    """A fresh API token for `user`; only its digest is stored, so it is shown once."""
    token = "dotdo_" + secrets.token_urlsafe(32)
    await store.add_token(_token_digest(token), user, now)
    return token


async def remove_user(store: Store, name: str) -> bool:
    """Remove a user with their names and tokens; False when there was none."""
    return await store.remove_user(name)


def _person(user: StoredUser) -> Person:
    role = user.role if user.role in ROLES else "viewer"  # a stored row is data, not trusted
    return Person(
        name=user.name,
        role=role,
        names=tuple(sorted(user.names)),
        has_password=user.password is not None,
    )


async def user_by_name(store: Store, name: str) -> tuple[Person, str | None] | None:
    """The user and their stored password hash, or None."""
    found = await store.user(name)
    return None if found is None else (_person(found), found.password)


async def user_by_token(store: Store, token: str) -> Person | None:
    found = await store.user_by_token(_token_digest(token))
    return None if found is None else _person(found)


async def list_users(store: Store) -> list[Person]:
    return [_person(u) for u in await store.users()]


async def users_exist(store: Store) -> bool:
    return bool(await store.users())


def acts_as(person: Person, approver: str) -> bool:
    """Whether `person` may decide for the approver name `approver` (their own or a group)."""
    return approver in person.names


async def console_key(store: Store) -> bytes:
    """The database's key for console cookies and approval links (made on first use)."""
    return bytes.fromhex(await store.meta_default("console_key", secrets.token_hex(32)))


async def spend_link(store: Store, nonce: str, *, now: float, expires_at: float) -> bool:
    """Mark a signed link's nonce used; False when it was used before (a replay)."""
    return await store.spend_nonce(nonce, now, expires_at)
