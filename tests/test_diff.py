"""`dotdo diff` and dotdo.compiler.diff: two graphs of one workflow matched by step id."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import dotdo.cli
from dotdo import Engine
from dotdo.compiler.diff import diff_graphs, to_diff_dot, to_diff_mermaid

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from upgrade_app import v1, v2, v3  # noqa: E402

OLD, MIDDLE, NEW = v1.Billing.bill.graph, v2.Billing.bill.graph, v3.Billing.bill.graph


def names(graph_ids: set[str], graph: object) -> set[str]:
    nodes = graph.nodes  # type: ignore[attr-defined]
    return {getattr(nodes[i], "name", None) or nodes[i].kind for i in graph_ids}


def test_an_inserted_step_is_added_and_nothing_else_moves() -> None:
    diff = diff_graphs(OLD, MIDDLE)
    assert names(diff.added, MIDDLE) == {"audit"}
    assert diff.changed == set() and diff.removed == set()
    # Node ids shifted (audit came first), yet every old step matched its step id.
    charge_new = next(i for i, n in MIDDLE.nodes.items() if getattr(n, "name", "") == "charge")
    charge_old = next(i for i, n in OLD.nodes.items() if getattr(n, "name", "") == "charge")
    assert charge_new != charge_old and diff.matched[charge_new] == charge_old


def test_renamed_removed_and_changed_steps() -> None:
    diff = diff_graphs(OLD, NEW)
    assert {"invoice"} <= names(diff.added, NEW)
    assert {"reserve", "charge"} <= names(diff.removed, OLD)
    assert "ship" in names(diff.changed, NEW)  # a new argument
    assert "sign" not in names(diff.changed | diff.added, NEW)
    assert diff_graphs(OLD, OLD).same


def test_drawings_mark_each_kind_of_change() -> None:
    diff = diff_graphs(OLD, NEW)
    dot = to_diff_dot(diff)
    ship = next(i for i, n in NEW.nodes.items() if getattr(n, "name", "") == "ship")
    invoice = next(i for i, n in NEW.nodes.items() if getattr(n, "name", "") == "invoice")
    assert f"{ship} [label=ship" in dot and "#fde68a" in dot  # changed: amber
    assert f"{invoice} [label=invoice" in dot and "#bbf7d0" in dot  # added: green
    assert "old_" in dot and "#fecaca" in dot  # removed: red, kept under old_ ids
    mermaid = to_diff_mermaid(diff)
    assert f"class {ship} changed;" in mermaid or f",{ship}" in mermaid
    assert "classDef removed" in mermaid and "removed;" in mermaid


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(TESTS)
    path = tmp_path / "d.db"

    async def store_v1() -> None:
        async with Engine(path).register(v1.Billing) as engine:
            await engine.start(v1.Billing.bill, "a", run_id="a")
            await engine.idle("a", timeout=10)

    asyncio.run(store_v1())
    return path


@pytest.mark.parametrize("suffix", [".dot", ".mmd", ".svg"])
def test_cli_diff_writes_each_format(db: Path, tmp_path: Path, suffix: str) -> None:
    if suffix == ".svg" and shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    out = tmp_path / f"diff{suffix}"
    result = cli(
        "diff", "upgrade_app.v3:Billing.bill", "--from", OLD.hash[:8], "-o", out, "--db", db
    )
    assert result.exit_code == 0, result.output
    assert f"Billing.bill {OLD.hash} -> {NEW.hash}:" in result.stdout
    assert "added" in result.stdout and "removed" in result.stdout
    text = out.read_text()
    assert ("invoice" in text) and ("#fecaca" in text or "fecaca" in text)


def test_cli_diff_bad_input_is_one_line(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.dot"

    def error(result: Result, code: int, text: str) -> None:
        assert result.exit_code == code, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines

    target = "upgrade_app.v3:Billing.bill"
    error(cli("diff", target, "--from", "abcdef12", "-o", out, "--db", db), 1, "is not stored")
    error(cli("diff", target, "--from", "zz", "-o", out, "--db", db), 2, "expected a graph hash")
    error(
        cli("diff", target, "--from", OLD.hash, "-o", tmp_path / "x.txt", "--db", db), 2, "format"
    )
    error(
        cli("diff", target, "--from", OLD.hash, "-o", out, "--db", tmp_path / "no.db"),
        1,
        "no dotdo database",
    )
    assert not out.exists()
