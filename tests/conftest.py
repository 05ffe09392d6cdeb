"""Settings every test shares.

The CLI draws rich tables as wide as the terminal says (`COLUMNS`), and subprocesses inherit
it; a test must not pass in one terminal and fail in a narrower one (or under pytest-xdist,
whose workers set it), so the suite fixes a width wide enough for what tests assert.

Store backends: `backend`, `store_location` and `open_store` (below) let a suite run once
per backend: the store contract suite (tests/store_contract/) and the durability and
hibernation-crash suites take their database from them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dotdo.engine.store.factory import make_store
from dotdo.engine.store.interface import Store, StoreOptions

os.environ["COLUMNS"] = "200"


# ------------------------------------------------------------------- store backends
# The store contract suite (tests/store_contract/) and the suites that take `store_location`
# run once per backend. A backend is a name here plus two answers below: where a test's
# fresh database lives, and how to open a `Store` on it. PostgreSQL adds "postgres" to
# BACKENDS, returns a URL of a fresh database from `store_location`, and its `make_store`
# branch opens it: nothing else in the suites changes.
BACKENDS = ["sqlite"]

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_location(backend: str, tmp_path: Path) -> str:
    """Where this test's (empty) database lives on `backend`: what `Engine(...)`, `--db` and
    `make_store` take."""
    if backend == "sqlite":
        return str(tmp_path / "dotdo.db")
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
