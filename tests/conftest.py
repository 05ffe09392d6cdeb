"""Settings and fixtures every test shares.

The CLI draws rich tables as wide as the terminal says (`COLUMNS`), and subprocesses inherit
it; a test must not pass in one terminal and fail in a narrower one (or under pytest-xdist,
whose workers set it), so the suite fixes a width wide enough for what tests assert.

PostgreSQL: `pg_url` gives a test a fresh schema of its own on the server at
`$DOTDO_TEST_PG` (default postgresql://postgres@127.0.0.1:5432/postgres), dropped after the
test. `make test` first tries to get a server (tests/pg_server.py). When there is none the
PostgreSQL tests skip with the reason printed, except under CI=true, where they fail: a CI
machine without its database must not pass by testing less.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from pg_server import answers, server_url

os.environ["COLUMNS"] = "200"


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _unavailable(reason: str) -> None:
    if _under_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The URL of a PostgreSQL server that answers (skip, or fail under CI, without one)."""
    url = server_url()
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _unavailable("asyncpg is not installed (pip install -e '.[postgres]')")
    if not answers(url):
        _unavailable(f"no PostgreSQL answers at {url} (set DOTDO_TEST_PG; `make test` starts one)")
    try:
        asyncio.run(_admin(url, "SELECT 1"))
    except Exception as exc:
        _unavailable(f"cannot use PostgreSQL at {url}: {exc}")
    return url


def with_schema(url: str, schema: str) -> str:
    """`url` whose connections use `schema` first (a server setting in the query string)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"search_path": schema})) if q)
    return urlunsplit(parts._replace(query=query))


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A PostgreSQL URL whose schema is new and empty; dropped with its tables afterwards."""
    schema = f"dotdo_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(pg_server, f"CREATE SCHEMA {schema}"))
    try:
        yield with_schema(pg_server, schema)
    finally:
        asyncio.run(_admin(pg_server, f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
