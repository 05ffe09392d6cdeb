"""Fixtures for the console tests (helpers live in console_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from console_support import Console, open_console


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async for opened in open_console(tmp_path):
        yield opened
