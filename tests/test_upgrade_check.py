"""`upgrade check`: for each unfinished run, whether what it will still execute (reachable
from where it stands in its pinned graph, and its compensation stack) resolves in the code
about to be deployed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import dotdo.cli
from dotdo import Engine

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from upgrade_app import v1, v2, v3  # noqa: E402


async def park_runs(db: Path) -> None:
    """On v1: `at-sign` waits for its approval; `at-sleep` was approved and charged (refund
    on its compensation stack) and sleeps an hour."""
    async with Engine(db).register(v1.Billing) as engine:
        await engine.start(v1.Billing.bill, "a", run_id="at-sign")
        await engine.start(v1.Billing.bill, "b", run_id="at-sleep")
        await engine.idle("at-sign", timeout=10)
        await engine.idle("at-sleep", timeout=10)
        pending = [a for a in await engine.approvals() if a.id.startswith("at-sleep")]
        await engine.approve(pending[0].id, by="boss")
        for _ in range(500):
            info = await engine.get_run("at-sleep")
            if info.status == "waiting" and info.wake_at is not None:
                break
            await engine.idle("at-sleep", timeout=10)
        assert (await engine.get_run("at-sleep")).wake_at is not None


async def test_a_compatible_release_strands_nothing(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    await park_runs(db)
    async with Engine(db).register(v2.Billing) as engine:
        report = await engine.upgrade_check()
    assert sorted(r.run_id for r in report.runs) == ["at-sign", "at-sleep"]
    assert report.ok, [r.reasons for r in report.runs]


async def test_the_same_release_strands_nothing(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    await park_runs(db)
    async with Engine(db).register(v1.Billing) as engine:
        assert (await engine.upgrade_check()).ok


async def test_a_breaking_release_names_each_stranded_run_and_why(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    await park_runs(db)
    async with Engine(db).register(v3.Billing) as engine:
        report = await engine.upgrade_check()
    verdicts = {r.run_id: " | ".join(r.reasons) for r in report.runs}
    assert not report.ok
    sign, sleep = verdicts["at-sign"], verdicts["at-sleep"]
    # What the run at the approval will still run: charge (gone), its refund (gone), ship.
    assert "calls Billing.charge, which the current code does not define" in sign
    assert "compensation Billing.refund, which the current code does not define" in sign
    assert (
        "calls Billing.ship(self, order, carrier) with arguments it no longer accepts "
        "(missing a required argument: 'carrier')"
    ) in sign
    # Past the charge: only ship is ahead, and refund is on its compensation stack.
    assert "Billing.charge" not in sleep
    assert "Billing.ship" in sleep
    assert "refund" in sleep and "on its compensation stack" in sleep
    # reserve's broken annotation is behind both runs: not a reason.
    assert "reserve" not in sign + sleep


async def test_a_removed_workflow_and_a_missing_graph_strand(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    await park_runs(db)
    async with Engine(db) as engine:  # nothing registered: the workflow is gone
        report = await engine.upgrade_check()
    assert all("workflow Billing.bill is not defined" in " ".join(r.reasons) for r in report.runs)
    import sqlite3

    conn = sqlite3.connect(db)
    with conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("UPDATE runs SET graph_hash = 'feedfeedfeedfeedfeed' WHERE run_id = 'at-sign'")
    conn.close()
    async with Engine(db).register(v2.Billing) as engine:
        report = await engine.upgrade_check()
    verdicts = {r.run_id: " | ".join(r.reasons) for r in report.runs}
    assert "graph feedfeedfeedfeedfeed" in verdicts["at-sign"]
    assert "missing from the store" in verdicts["at-sign"]
    assert verdicts["at-sleep"] == ""


@pytest.mark.parametrize("workflow", ["Billing.bill"])
async def test_check_can_be_limited_to_workflows(tmp_path: Path, workflow: str) -> None:
    db = tmp_path / "u.db"
    await park_runs(db)
    async with Engine(db).register(v3.Billing) as engine:
        assert len((await engine.upgrade_check(workflows=[workflow])).runs) == 2
        assert (await engine.upgrade_check(workflows=["Other.flow"])).runs == []


def _cli(*args: str | Path) -> Result:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_check_exits_1_naming_each_stranded_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(TESTS)
    db = tmp_path / "u.db"
    asyncio.run(park_runs(db))
    good = _cli("upgrade", "check", "--app", "upgrade_app.v2", "--db", db)
    assert good.exit_code == 0, good.output
    assert "2 unfinished runs, 2 can finish on this code, 0 would strand" in good.stdout
    bad = _cli("upgrade", "check", "--app", "upgrade_app.v3", "--db", db)
    assert bad.exit_code == 1, bad.output
    lines = bad.stdout.splitlines()
    assert "0 can finish on this code, 2 would strand" in lines[0]
    assert any(line.startswith("  run at-sign (Billing.bill at ") for line in lines)
    assert any("run at-sleep" in line and "Billing.ship" in line for line in lines)
    out = _cli("upgrade", "check", "--app", "upgrade_app.v3", "--json", "--db", db).stdout
    verdicts = {r["run_id"]: r["strands"] for r in json.loads(out)["runs"]}
    assert verdicts == {"at-sign": True, "at-sleep": True}


def test_cli_check_bad_input_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(TESTS)
    result = _cli("upgrade", "check", "--app", "upgrade_app.v2", "--db", tmp_path / "none.db")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: no dotdo database")
    assert len(result.stderr.strip().splitlines()) == 1
    result = _cli("upgrade", "check", "--db", tmp_path / "none.db")
    assert result.exit_code == 2 and "--app" in result.stderr


async def test_a_stored_graph_is_parsed_never_run(tmp_path: Path) -> None:
    """A tampered graph whose source text is absurd (deep nesting, huge, a side effect)
    is only parsed: the check finishes, and nothing in it runs."""
    import sqlite3

    from dotdo.compiler.ir import Graph

    db = tmp_path / "u.db"
    await park_runs(db)
    conn = sqlite3.connect(db)
    (body,) = conn.execute(
        "SELECT body FROM graphs g JOIN runs r ON r.graph_hash = g.hash WHERE r.run_id = 'at-sign'"
    ).fetchone()
    graph = Graph.from_json(body)
    for node in graph.nodes.values():
        if node.kind == "block":
            node.code[0].src = "(" * 5000 + "1" + ")" * 5000  # type: ignore[attr-defined]
        if node.kind == "choice":
            node.cond = "__import__('os').system('touch " + str(tmp_path / "pwned") + "')"  # type: ignore[attr-defined]
    with conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(
            "INSERT INTO graphs(hash, name, body, created_at) VALUES (?, ?, ?, 0)",
            (graph.hash, graph.name, graph.to_json()),
        )
        conn.execute("UPDATE runs SET graph_hash = ? WHERE run_id = 'at-sign'", (graph.hash,))
    conn.close()
    async with Engine(db).register(v2.Billing) as engine:
        report = await engine.upgrade_check()
    assert len(report.runs) == 2
    assert not (tmp_path / "pwned").exists()
