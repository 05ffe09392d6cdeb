"""Settings and fixtures every test shares.

The CLI draws rich tables as wide as the terminal says (`COLUMNS`), and subprocesses inherit
it; a test must not pass in one terminal and fail in a narrower one (or under pytest-xdist,
whose workers set it), so the suite fixes a width wide enough for what tests assert.

PostgreSQL: `pg_url` gives a test a fresh schema of its own on the server at
`$DOTDO_TEST_PG` (default postgresql://postgres@127.0.0.1:5432/postgres), dropped after the
test. `make test` first tries to get a server (tests/pg_server.py). When there is none the
PostgreSQL tests skip with the reason printed, except under CI=true, where they fail: a CI
machine without its database must not pass by testing less.

Store backends: `backend`, `store_location` and `open_store` (below) let a suite run once
per backend: the store contract suite (tests/store_contract/) and the durability and
hibernation-crash suites take their database from them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from pg_server import answers, server_url

from dotdo.engine.store.factory import make_store
from dotdo.engine.store.interface import Store, StoreOptions

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


# ------------------------------------------------------------------- store backends
# The store contract suite (tests/store_contract/) and the suites that take `store_location`
# run once per backend. A backend is a name here plus two answers below: where a test's
# fresh database lives, and how to open a `Store` on it. PostgreSQL adds "postgres" to
# BACKENDS, returns a URL of a fresh database from `store_location`, and its `make_store`
# branch opens it: nothing else in the suites changes.
BACKENDS = ["sqlite", "postgres"]

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where this test's (empty) database lives on `backend`: what `Engine(...)`, `--db` and
    `make_store` take (PostgreSQL: a fresh schema, see `pg_url`)."""
    if backend == "sqlite":
        return str(tmp_path / "dotdo.db")
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    pytest.fail(f"no database location for backend {backend!r}")


@pytest.fixture
async def open_store(store_location: str) -> AsyncIterator[OpenStore]:
    """Opens `Store`s on this test's database (one per owner, as engines would); closes
    them all when the test ends."""
    opened: list[Store] = []

    async def open_one(owner: str = "owner-a", **options: object) -> Store:
        store = make_store(store_location, StoreOptions(owner=owner, **options))  # type: ignore[arg-type]
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()
