"""Fixtures for the console tests (helpers live in console_support).

`console` runs on every store backend (`store_location`, tests/conftest.py): the console
only reads and writes through the `Store` protocol, so its pages, API and security rules
are checked on each."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from console_support import Console, open_console


@pytest.fixture
async def console(store_location: str) -> AsyncIterator[Console]:
    async for opened in open_console(store_location):
        yield opened
