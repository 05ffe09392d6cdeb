"""What a backend's own exceptions mean to the engine: a passing fault, or a refusal.

The engine retries a run from its last checkpoint after a store fault (a full disk, an I/O
error, a lock held too long) and treats anything else as a bug; only the store knows its
driver's exception types, so the classification lives here, one function per question.
"""

from __future__ import annotations

import sqlite3

from dotdo.engine.store.files import is_read_only_error

__all__ = ["is_backend_fault", "is_read_only_refusal"]


def is_backend_fault(error: BaseException) -> bool:
    """A database driver's error that may go away (not a statement the database refuses)."""
    if isinstance(error, sqlite3.OperationalError):
        # SQLITE_ERROR (1) is a statement the database refuses (no such table): a bug. An
        # error raised by hand (a test injecting "disk is full") carries no code.
        code = getattr(error, "sqlite_errorcode", None)
        return code is None or code & 0xFF != sqlite3.SQLITE_ERROR
    return False


def is_read_only_refusal(error: BaseException) -> bool:
    """The database refused a write because it is read-only (a file's permissions)."""
    return isinstance(error, sqlite3.OperationalError) and is_read_only_error(error)
