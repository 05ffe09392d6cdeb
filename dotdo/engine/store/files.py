"""Which paths may hold a dotdo database, and how to open one only to read it.

SQLite happily opens `/dev/null` (and then writes `/dev/null-journal` next to it), blocks on
a FIFO, and reports a missing directory as "unable to open database file". So a path is
checked before SQLite sees it: it must be a regular file, or not exist yet in a directory
that does; nothing is created when the check fails.

Reading commands (`dotdo status`, `runs`, `approvals`, `render --run`) open the file with
`mode=ro`, so they work on a database they may not write (a file of mode 0444, a read-only
directory or mount) and can never change it. A WAL database read that way still needs its
`-shm` index: SQLite creates it if it can. When it cannot (a read-only directory and no
writer running), the file is opened `immutable`: SQLite then reads the main file as it is,
which is complete because the last writer to close checkpointed its WAL into it.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import aiosqlite

from dotdo.errors import StoreError

__all__ = ["check_path", "connect_read_only", "is_read_only_error", "read_only_reason"]

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def check_path(path: str, *, must_exist: bool = False) -> None:
    """Refuse what cannot be a database file, before anything is opened or created."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if must_exist:
            raise StoreError(f"no dotdo database at {path}") from None
        parent = Path(path).parent
        if not parent.is_dir():
            raise StoreError(
                f"cannot create a database at {path}: directory {parent} does not exist"
            ) from None
        return
    except OSError as exc:
        raise StoreError(f"cannot use {path} as a database: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise StoreError(f"{path} is {kind}, not a database file")


def read_only_reason(path: str) -> str | None:
    """Why this process cannot write the database at `path` (None: it can, as far as the
    file system tells; root may write anything, and SQLite's own errors back this up)."""
    file = Path(path)
    if file.exists() and not os.access(file, os.W_OK):
        return f"{path} is read-only"
    folder = file.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        sidecars = [Path(f"{path}{suffix}") for suffix in ("-wal", "-shm")]
        if not file.exists() or not all(os.access(s, os.W_OK) for s in sidecars):
            return f"the directory of {path} is read-only"
    return None


def is_read_only_error(exc: BaseException) -> bool:
    """SQLite's 'attempt to write a readonly database' in any of its variants."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_READONLY") or "readonly database" in str(exc)


async def connect_read_only(path: str, busy_timeout: float) -> aiosqlite.Connection:
    """A connection that cannot write: `mode=ro`, or `immutable` when even that fails."""
    uri = Path(path).resolve().as_uri()
    last: sqlite3.Error | None = None
    for query in ("?mode=ro", "?mode=ro&immutable=1"):
        conn = await aiosqlite.connect(uri + query, uri=True, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            await conn.execute("SELECT count(*) FROM sqlite_master")  # opens the WAL index
            return conn
        except sqlite3.OperationalError as exc:
            await conn.close()
            last = exc
            if not (is_read_only_error(exc) or "unable to open" in str(exc)):
                raise
        except BaseException:
            await conn.close()
            raise
    assert last is not None
    raise last
