"""`dotdo retry | prune | export` as an operator meets them: what they print, what they change,
and one clear line (nothing changed) for each bad request."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import dotdo.cli
from dotdo import Engine

TESTS = Path(__file__).resolve().parent
DISPATCH = "cli_app.flaky:Depot.dispatch"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ops.db"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(TESTS)
    monkeypatch.setattr(sys, "path", [str(TESTS), *sys.path])
    monkeypatch.setenv("FLAKY_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FLAKY_BROKEN", str(tmp_path / "broken"))
    monkeypatch.delenv("DOTDO_DB", raising=False)
    logger = logging.getLogger("dotdo")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def cmd(*args: str | Path) -> Result:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


def one_error(result: Result, code: int, contains: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert contains in lines[0], lines[0]


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def snapshot(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        tables = ["runs", "steps", "history", "outbox", "approvals", "entity_calls"]
        return [row for t in tables for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1")]
    finally:
        conn.close()


def failed_run(db: Path, tmp_path: Path, run_id: str = "d1") -> None:
    (tmp_path / "broken").touch()
    result = cmd("run", DISPATCH, "--input", '{"item": "lamp"}', "--run-id", run_id, "--db", db)
    assert result.exit_code == 1, result.stderr
    (tmp_path / "broken").unlink()


def test_retry_continues_a_failed_run_on_the_fixed_code(db: Path, tmp_path: Path) -> None:
    failed_run(db, tmp_path)
    result = cmd("retry", "d1", "--app", "cli_app.flaky", "--run-id", "d1b", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == "box(lamp#1)"  # pick reused, not picked again
    assert "run d1b (retry of d1) completed" in result.stderr
    assert calls(tmp_path) == ["pick", "pack", "pack"]


def test_retry_from_the_first_step_runs_everything_again(db: Path, tmp_path: Path) -> None:
    failed_run(db, tmp_path)
    result = cmd("retry", "d1", "--from", "pick", "--app", "cli_app.flaky", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == "box(lamp#2)"
    assert calls(tmp_path) == ["pick", "pack", "pick", "pack"]


def test_bad_retries_are_one_line_and_change_nothing(db: Path, tmp_path: Path) -> None:
    failed_run(db, tmp_path)
    before = snapshot(db)
    app = ("--app", "cli_app.flaky", "--db", db)
    one_error(cmd("retry", "d1", "--from", "wrap", *app), 1, "has no step 'wrap' (its steps:")
    one_error(cmd("retry", "nope", *app), 1, "no run with id 'nope'")
    one_error(cmd("retry", "d1", "--run-id", "d1", *app), 1, "already exists")
    one_error(cmd("retry", "../x", *app), 2, "looks like a path")
    one_error(cmd("retry", "d1", "--db", db), 2, "--app")
    assert snapshot(db) == before
    assert cmd("run", DISPATCH, "--input", '{"item": "cup"}', "--run-id", "ok", "--db", db)
    one_error(cmd("retry", "ok", *app), 1, "is completed: only a failed")


def _age_runs(db: Path, seconds: float) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE runs SET updated_at = updated_at - ?", (seconds,))
    conn.close()


def test_prune_removes_old_finished_runs_with_their_rows(db: Path, tmp_path: Path) -> None:
    failed_run(db, tmp_path, "old")
    _age_runs(db, 40 * 86400)
    assert cmd("run", DISPATCH, "--input", '{"item": "new"}', "--run-id", "new", "--db", db)
    dry = cmd("prune", "--older-than", "30d", "--dry-run", "--db", db)
    assert dry.exit_code == 0 and "would remove 1 finished run" in dry.stdout
    exports = tmp_path / "exports"
    exports.mkdir()
    result = cmd("prune", "--older-than", "30d", "--export-to", exports, "--db", db)
    assert result.exit_code == 0, result.stderr
    assert "removed 1 finished run" in result.stdout
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("SELECT run_id FROM runs")] == ["new"]
    assert {r[0] for r in conn.execute("SELECT DISTINCT run_id FROM steps")} == {"new"}
    conn.close()
    saved = json.loads((exports / "old.json").read_text())
    assert saved["run"]["run_id"] == "old" and saved["run"]["status"] == "failed"
    assert [s["step_key"] for s in saved["steps"]] == ["pick", "pack"]


def test_prune_by_status_keeps_other_runs(db: Path, tmp_path: Path) -> None:
    failed_run(db, tmp_path, "bad")
    assert cmd("run", DISPATCH, "--input", '{"item": "x"}', "--run-id", "good", "--db", db)
    result = cmd("prune", "--status", "failed", "--db", db)
    assert result.exit_code == 0, result.stderr
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("SELECT run_id FROM runs")] == ["good"]
    conn.close()


def test_bad_prunes_are_one_line_and_change_nothing(db: Path, tmp_path: Path) -> None:
    failed_run(db, tmp_path)
    before = snapshot(db)
    one_error(cmd("prune", "--db", db), 1, "prune needs a filter")
    one_error(cmd("prune", "--older-than", "30 days", "--db", db), 2, "bad age '30 days'")
    one_error(cmd("prune", "--older-than", "-1d", "--db", db), 2, "bad age")
    one_error(cmd("prune", "--status", "running", "--db", db), 2, "'running' is not one of")
    one_error(cmd("prune", "--older-than", "1d", "--db", tmp_path / "none.db"), 1, "no dotdo")
    assert snapshot(db) == before


def test_prune_never_removes_unfinished_runs(db: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine(db) as engine:
            with pytest.raises(Exception, match="only finished runs"):
                await engine.prune(statuses=["waiting"])

    asyncio.run(scenario())


def test_export_writes_the_whole_history(db: Path, tmp_path: Path) -> None:
    failed_run(db, tmp_path)
    assert cmd("retry", "d1", "--app", "cli_app.flaky", "--run-id", "d2", "--db", db)
    result = cmd("export", "d1", "--db", db)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "dotdo.run-export/1"
    assert data["run"]["input"] == {"item": "lamp"}
    assert data["run"]["error"]["$t"] == "exc"
    assert data["retries"] == ["d2"]
    assert [h["kind"] for h in data["history"]] == ["retried"]
    out = tmp_path / "d1.json"
    assert cmd("export", "d1", "-o", out, "--db", db).exit_code == 0
    assert json.loads(out.read_text()) == data
    one_error(cmd("export", "nope", "--db", db), 1, "no run with id 'nope'")


def test_worker_retention_prunes_old_runs(db: Path, tmp_path: Path) -> None:
    failed_run(db, tmp_path, "old")
    _age_runs(db, 3 * 86400)
    assert cmd("run", DISPATCH, "--input", '{"item": "new"}', "--run-id", "new", "--db", db)

    async def scenario() -> list[str]:
        from dotdo.engine.retention import keep_pruning

        async with Engine(db) as engine:
            task = asyncio.create_task(keep_pruning(engine, 86400, every=60))
            for _ in range(200):
                if len(await engine.runs()) == 1:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            return [r.run_id for r in await engine.runs()]

    assert asyncio.run(scenario()) == ["new"]


def test_worker_refuses_a_bad_retention_age(db: Path) -> None:
    result = cmd("worker", "--app", "cli_app.flaky", "--retain", "forever", "--db", db)
    one_error(result, 2, "bad age 'forever'")
    assert not db.exists()


def test_the_operations_example_runs(tmp_path: Path) -> None:
    import subprocess

    root = TESTS.parent
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "operations.py"), str(tmp_path / "e.db")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    assert "steps executed: ['compute', 'render', 'render']" in done.stdout
    assert "pruned: ['inv-1']" in done.stdout
    assert 'dotdo_runs_started_total{workflow="Invoices.invoice"} 2.0' in done.stdout
