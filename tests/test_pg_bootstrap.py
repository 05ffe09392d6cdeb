"""Without a PostgreSQL server the PostgreSQL tests skip, saying why, except under CI=true,
where they fail; `make test` tries to get a server first (tests/pg_server.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pg_server

HERE = Path(__file__).parent
TARGET = "tests/test_pg_store.py::test_values_keep_their_exact_text_and_are_queryable"
NOWHERE = "postgresql://postgres@127.0.0.1:1/postgres"


def _pytest(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["DOTDO_TEST_PG"] = NOWHERE
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", TARGET],
        cwd=HERE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_no_server_skips_with_the_reason_outside_ci() -> None:
    done = _pytest(None)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert f"no PostgreSQL answers at {NOWHERE}" in done.stdout


def test_no_server_fails_under_ci() -> None:
    done = _pytest("true")
    assert done.returncode == 1, done.stdout
    assert "CI=true and no PostgreSQL answers at" in done.stdout


def test_the_server_check_reads_host_and_port_from_the_url() -> None:
    assert pg_server.answers(NOWHERE) is False
    assert pg_server.host_port("postgresql://u@db.example:6543/x") == ("db.example", 6543)
