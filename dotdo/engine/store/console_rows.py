"""The records of the console's store operations: people and the runs list's filter.

Plain values, like rows.py (re-exported by interface.py): a user's password is its stored
hash (hashing is `dotdo.engine.people`'s job), a token is known to the store by its digest.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRIORITY_ORDER", "RunFilter", "StoredUser"]

PRIORITY_ORDER = ("urgent", "high", "normal", "low")
"""An approval's priorities, most urgent first (an inbox's order; unknown ones rank as normal)."""


@dataclass(frozen=True)
class StoredUser:
    """A console user: their role, the approver names (people or groups) they act as, and
    their password hash (None: no password, e.g. a token-only robot)."""

    name: str
    role: str
    names: tuple[str, ...]
    password: str | None = None


@dataclass(frozen=True)
class RunFilter:
    """Which runs a runs page lists (all given conditions hold)."""

    status: str | None = None
    workflow: str | None = None
    prefix: str | None = None
    """Run ids starting with this text (a range on the key, not a pattern)."""
    since: float | None = None
    until: float | None = None
