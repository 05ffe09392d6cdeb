"""Where a store lives: an SQLite file or a PostgreSQL URL, told apart by the text alone.

`Engine(...)`, `--db` and `DOTDO_DB` all take one string: a path is an SQLite file (as it
always was), `postgresql://` or `postgres://` selects the PostgreSQL backend, and any other
`scheme://` is refused at once, before anything is opened or created: a mistyped URL must
not become a file named after it. `sqlite:///app.db` (relative) and `sqlite:////srv/app.db`
(absolute) name files explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from dotdo.errors import UnknownStoreURL

__all__ = ["Location", "locate", "redact"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class Location:
    """A parsed store location: `target` is the file path or the full URL."""

    backend: Literal["sqlite", "postgres"]
    target: str

    @property
    def display(self) -> str:
        """What messages show: the path, or the URL without its password."""
        return redact(self.target) if self.backend == "postgres" else self.target

    @property
    def path(self) -> Path:
        return Path(self.target)


def locate(db: str | Path) -> Location:
    """Tell a store's backend from its location; refuses a URL of an unknown scheme."""
    if isinstance(db, Path):
        return Location("sqlite", str(db))
    text = str(db)
    match = _SCHEME.match(text)
    if match is None:
        return Location("sqlite", text)
    scheme = match.group(1).lower()
    if scheme in POSTGRES_SCHEMES:
        return Location("postgres", text)
    if scheme == "sqlite":
        # SQLAlchemy's spelling: sqlite:///app.db is relative, sqlite:////srv/app.db absolute.
        path = text[len(match.group(0)) :]
        if not path.startswith("/") or len(path) < 2:
            raise UnknownStoreURL(
                f"{text}: an sqlite URL is sqlite:///relative.db or sqlite:////absolute.db"
            )
        return Location("sqlite", path[1:])
    raise UnknownStoreURL(
        f"{redact(text)}: unknown database URL scheme {scheme!r}; use an SQLite file path "
        "or postgresql://user@host/dbname"
    )


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))
