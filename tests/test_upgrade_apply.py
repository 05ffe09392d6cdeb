"""`upgrade apply`: a parked run moves onto the current graph only when its position and
completed steps map by step id and the locals the new graph reads exist; the move is in its
history, and a refusal changes nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import dotdo.cli
from dotdo import DotdoError, Engine, RunNotFound

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_upgrade_check import park_runs  # noqa: E402
from upgrade_app import v1, v2, v3, v4  # noqa: E402


def snapshot(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [
            *conn.execute("SELECT * FROM runs ORDER BY run_id"),
            *conn.execute("SELECT * FROM history ORDER BY id"),
        ]
    finally:
        conn.close()


async def finish(engine: Engine, run_id: str) -> str:
    info = await engine.get_run(run_id)
    if info.wake_at is None:
        pending = [a for a in await engine.approvals() if a.id.startswith(run_id + "/")]
        await engine.approve(pending[0].id, by="boss")
        await engine.idle(run_id, timeout=10)
    await engine.store.execute("UPDATE runs SET wake_at = 0 WHERE run_id = ?", (run_id,))
    engine._kick.set()
    return str(await engine.handle(run_id).result(timeout=10))


async def test_parked_runs_move_and_finish_on_the_new_code(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    await park_runs(db)
    async with Engine(db).register(v2.Billing) as engine:
        outcomes = {o.run_id: o for o in await engine.upgrade_apply()}
        assert set(outcomes) == {"at-sign", "at-sleep"}
        assert all(o.applied for o in outcomes.values()), outcomes
        assert outcomes["at-sign"].to_hash == v2.Billing.bill.graph.hash
        assert "approval 'sign'" in outcomes["at-sign"].reason
        info = await engine.get_run("at-sign")
        assert info.graph_hash == v2.Billing.bill.graph.hash
        # v2's charge (20) and ship run; v1's reservation stays; audit never ran for it.
        assert await finish(engine, "at-sign") == "reserved a, 20, shipped a (v2)"
        assert await finish(engine, "at-sleep") == "reserved b, 10, shipped b (v2)"
        notes = (await engine.export("at-sign"))["history"]
        assert [n["kind"] for n in notes] == ["upgraded"]
        assert notes[0]["from"] == v1.Billing.bill.graph.hash
        assert notes[0]["to"] == v2.Billing.bill.graph.hash
        # Nothing left to move.
        assert await engine.upgrade_apply() == []


async def test_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    await park_runs(db)
    before = snapshot(db)
    async with Engine(db).register(v2.Billing) as engine:
        outcomes = await engine.upgrade_apply(dry_run=True)
    assert [o.applied for o in outcomes] == [True, True]
    assert all(o.reason.startswith("would be moved") for o in outcomes)
    assert snapshot(db) == before


async def test_refusals_say_why_and_change_nothing(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    await park_runs(db)
    before = snapshot(db)
    async with Engine(db).register(v3.Billing) as engine:
        outcomes = {o.run_id: o for o in await engine.upgrade_apply()}
    assert not any(o.applied for o in outcomes.values())
    assert "it completed step 'reserve', which the new graph does not have" in (
        outcomes["at-sign"].reason
    )
    async with Engine(db).register(v4.Billing) as engine:
        refused = (await engine.upgrade_apply(["at-sign"]))[0]
        assert not refused.applied
        assert "the new graph reads audited from approval 'sign' on" in refused.reason
        with pytest.raises(RunNotFound):
            await engine.upgrade_apply(["nope"])
    async with Engine(db).register(v1.Billing) as engine:
        same = (await engine.upgrade_apply(["at-sign"]))[0]
        assert not same.applied and same.reason == "it is already on the current graph"
    assert snapshot(db) == before


async def test_only_parked_runs_move(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    await park_runs(db)
    async with Engine(db).register(v1.Billing) as engine:
        await finish(engine, "at-sleep")
    async with Engine(db).register(v2.Billing) as engine:
        done = (await engine.upgrade_apply(["at-sleep"]))[0]
        assert not done.applied and "it is completed" in done.reason


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(TESTS)
    db = tmp_path / "u.db"
    asyncio.run(park_runs(db))
    before = snapshot(db)

    def error(result: Result, code: int, text: str) -> None:
        assert result.exit_code == code, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines

    v3_app = ("--app", "upgrade_app.v3", "--db", db)
    error(cli("upgrade", "apply", "at-sign", *v3_app), 1, "run 'at-sign' cannot be upgraded:")
    error(cli("upgrade", "apply", *v3_app), 2, "name one RUN or pass --all")
    error(cli("upgrade", "apply", "x", "--all", *v3_app), 2, "name one RUN or pass --all")
    error(cli("upgrade", "apply", "nope", *v3_app), 1, "no run with id 'nope'")
    all_v3 = cli("upgrade", "apply", "--all", *v3_app)
    assert all_v3.exit_code == 1 and "moved 0 of 2" in all_v3.stdout
    assert snapshot(db) == before
    one = cli("upgrade", "apply", "at-sign", "--app", "upgrade_app.v2", "--db", db)
    assert one.exit_code == 0, one.output
    assert one.stdout.startswith("run at-sign: moved from approval 'sign'")
    rest = cli("upgrade", "apply", "--all", "--app", "upgrade_app.v2", "--db", db)
    assert rest.exit_code == 0 and "moved 1 of 1" in rest.stdout


def test_apply_refusal_is_a_dotdo_error() -> None:
    from dotdo.engine.upgrade_apply import UpgradeOutcome, check_one

    with pytest.raises(DotdoError, match="cannot be upgraded: because"):
        check_one([UpgradeOutcome("r", False, "because")])
