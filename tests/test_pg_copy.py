"""`dotdo db copy --from app.db --to postgresql://...`: every row moves, a non-empty target
is refused unless told, and runs left unfinished or hibernating on SQLite continue on
PostgreSQL."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

from dotdo import DO, Engine, step, workflow
from dotdo.cli import cli
from dotdo.engine.store.postgres.copy import TABLES, copy_sqlite_to_postgres
from dotdo.errors import StoreError


class Mover(DO):
    @step
    async def double(self, n: int) -> int:
        return n * 2

    @workflow
    async def quick(self, n: int) -> int:
        return await self.double(n)

    @workflow
    async def sleepy(self, n: int) -> int:
        await self.sleep(timedelta(seconds=1))
        return await self.double(n)

    @workflow
    async def waits(self, key: str) -> Any:
        event = await self.wait_for_event("go", match={"key": key})
        return event.data["n"]


async def _sqlite_with_runs(path: Path) -> None:
    async with Engine(path) as engine:
        engine.register(Mover)
        for i in range(5):
            handle = await engine.start(Mover.quick, i, entity_id=f"m{i}")
            assert await handle.result() == 2 * i
        await engine.start(Mover.sleepy, 21, entity_id="s", run_id="sleepy-1")
        await engine.start(Mover.waits, "k1", entity_id="w", run_id="waits-1")
        await engine.send("other", {"n": 0})


def _counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as lite:
        return {t: lite.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


async def _pg_counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    finally:
        await conn.close()


async def test_every_row_moves_with_its_identity(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "app.db"
    await _sqlite_with_runs(db)
    report = await copy_sqlite_to_postgres(db, pg_url)
    assert await _pg_counts(pg_url) == _counts(db)
    assert report.runs == 7
    conn = await asyncpg.connect(pg_url)
    try:
        with sqlite3.connect(db) as lite:
            lite_id = lite.execute("SELECT value FROM meta WHERE key = 'db_id'").fetchone()[0]
            lite_state = lite.execute("SELECT state FROM runs WHERE run_id = 'waits-1'").fetchone()
        assert await conn.fetchval("SELECT value FROM meta WHERE key = 'db_id'") == lite_id
        assert (await conn.fetchval("SELECT state::text FROM runs WHERE run_id = 'waits-1'"),) == (
            lite_state
        )
        assert await conn.fetchval("SELECT count(*) FROM runs WHERE lease_owner IS NOT NULL") == 0
        # New events get ids after the copied ones.
        top = await conn.fetchval("SELECT max(id) FROM outbox")
        new = await conn.fetchval(
            "INSERT INTO outbox(event, data, created_at) VALUES ('x', 'null', 0) RETURNING id"
        )
        assert new == top + 1
    finally:
        await conn.close()


async def test_a_non_empty_target_is_refused_unless_told(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "app.db"
    await _sqlite_with_runs(db)
    await copy_sqlite_to_postgres(db, pg_url)
    before = await _pg_counts(pg_url)
    with pytest.raises(StoreError, match=r"already holds dotdo data .*nothing copied"):
        await copy_sqlite_to_postgres(db, pg_url)
    assert await _pg_counts(pg_url) == before
    again = await copy_sqlite_to_postgres(db, pg_url, into_non_empty=True)
    assert sum(again.copied.values()) == 0 and again.kept["runs"] == 7
    assert await _pg_counts(pg_url) == before


def test_cli_copy_and_its_bad_input(tmp_path: Path, pg_url: str) -> None:
    import asyncio

    db = tmp_path / "app.db"
    asyncio.run(_sqlite_with_runs(db))
    runner = CliRunner()
    done = runner.invoke(cli, ["db", "copy", "--from", str(db), "--to", pg_url])
    assert done.exit_code == 0, done.output
    assert "copied 7 runs" in done.output
    again = runner.invoke(cli, ["db", "copy", "--from", str(db), "--to", pg_url])
    assert again.exit_code == 1 and "already holds dotdo data" in again.output
    forced = runner.invoke(cli, ["db", "copy", "--from", str(db), "--to", pg_url, "--force"])
    assert forced.exit_code == 0 and "already there, kept" in forced.output
    for args, expected in (
        (["--from", str(db), "--to", "mysql://u@h/db"], "unknown database URL scheme"),
        (["--from", str(db), "--to", str(tmp_path / "b.db")], "--to must be a postgresql://"),
        (["--from", str(tmp_path / "none.db"), "--to", pg_url], "no dotdo database"),
        (
            ["--from", str(db), "--to", "postgresql://postgres@127.0.0.1:1/x"],
            "connection refused",
        ),
    ):
        out = runner.invoke(cli, ["db", "copy", *args])
        assert out.exit_code != 0 and expected in out.output, (args, out.output)
        assert "Traceback" not in out.output
