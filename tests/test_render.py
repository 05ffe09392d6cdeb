"""Drawing: every workflow of a file at once, the last edge a run took, `dotdo.render`, and
the `_repr_svg_` a notebook calls on graphs, workflows, flow modules and run handles.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dotdo  # noqa: E402
import dotdo.cli  # noqa: E402
from dotdo import DO, DotdoError, Engine, step, workflow  # noqa: E402
from dotdo.compiler import render as R  # noqa: E402
from dotdo.compiler.ir import END, BlockNode, ChoiceNode, Graph  # noqa: E402
from dotdo.compiler.overlay import last_edge, run_overlay  # noqa: E402
from dotdo.dsl.flow.loader import load_flow  # noqa: E402

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")


def cli(*args: str | Path) -> Any:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


class Shop(DO):
    @step
    async def charge(self, amount: int) -> int:
        return amount

    @step
    async def ship(self, amount: int) -> str:
        return f"shipped {amount}"

    @workflow
    async def order(self, amount: int) -> str:
        paid = await self.charge(amount)
        if paid == 0:
            return "nothing to ship"
        return await self.ship(paid)

    @workflow
    async def either(self, amount: int) -> str:
        paid = await self.charge(amount)
        if paid > 1:
            return "big"
        return "small"

    @workflow
    async def held(self, amount: int) -> str:
        paid = await self.charge(amount)
        await self.approval_flow.request_approval(title="ship?", approvers=["boss"])
        return await self.ship(paid)


# ------------------------------------------------------------ several workflows
def test_render_of_a_flow_file_with_several_workflows_draws_them_all(tmp_path: Path) -> None:
    out = tmp_path / "schedules.dot"
    result = cli("render", ROOT / "examples" / "schedules.flow", "-o", out)
    assert result.exit_code == 0, result.output
    dot = out.read_text()
    assert dot.count("subgraph cluster_") == 3
    for name in ("generate_weekly_report", "send_daily_summary", "check_health_status"):
        assert f"label={name}" in dot
    assert '"every monday at 09:00 UTC"' in dot and '"every 15 minutes"' in dot
    assert "w2_entry0 -> w2_start" in dot  # the schedule starts its own workflow


def test_event_handlers_are_entry_points_and_a_name_picks_one(tmp_path: Path) -> None:
    out = tmp_path / "events.mmd"
    assert cli("render", ROOT / "examples" / "events.flow", "-o", out).exit_code == 0
    text = out.read_text()
    assert text.count("subgraph ") == 4 and '"on Order.placed"' in text
    assert '"on *.failed"' in text
    one = tmp_path / "one.dot"
    target = f"{ROOT / 'examples' / 'events.flow'}:ship_when_paid"
    assert cli("render", target, "-o", one).exit_code == 0
    assert "cluster_" not in one.read_text()


def test_a_flow_file_with_one_workflow_is_drawn_as_its_graph(tmp_path: Path) -> None:
    out = tmp_path / "purchase.dot"
    assert cli("render", ROOT / "examples" / "purchase.flow", "-o", out).exit_code == 0
    assert "cluster_" not in out.read_text() and "shape=diamond" in out.read_text()


# ------------------------------------------------------------ the last edge taken
async def _finished(tmp_path: Path, wf: Any, *args: Any) -> tuple[Graph, R.Overlay]:
    async with Engine(tmp_path / "r.db") as engine:
        engine.register(Shop)
        handle = await engine.start(wf, *args)
        await handle.result(timeout=10)
        info = await engine.get_run(handle.run_id)
        journal = await engine.journal(handle.run_id)
    graph = wf.graph
    overlay = run_overlay(
        graph, status=info.status, node=info.node, finished=info.finished, journal=journal
    )
    return graph, overlay


async def test_a_completed_run_draws_the_edge_it_ended_on(tmp_path: Path) -> None:
    graph, overlay = await _finished(tmp_path, Shop.order, 0)
    assert overlay.last_edge is not None
    src, dst = overlay.last_edge
    assert dst == END
    block = graph.nodes[src]
    assert isinstance(block, BlockNode) and block.code[0].src == "return 'nothing to ship'"
    assert f'{src} -> {END} [label=return color="#2563eb" penwidth=3' in R.to_dot(graph, overlay)
    assert "linkStyle" in R.to_mermaid(graph, overlay)


async def test_an_edge_the_journal_cannot_tell_is_not_claimed(tmp_path: Path) -> None:
    """Both branches of the decision reach the end through code only: no checkpoint says
    which ran, so no edge is drawn rather than a guess."""
    graph, overlay = await _finished(tmp_path, Shop.either, 5)
    assert overlay.last_edge is None and END in overlay.done
    (choice,) = [n for n in graph.nodes.values() if isinstance(n, ChoiceNode)]
    assert last_edge(graph, choice.then or "", END) is not None  # from one branch, it is known


async def test_a_waiting_run_draws_the_edge_into_where_it_waits(tmp_path: Path) -> None:
    async with Engine(tmp_path / "w.db") as engine:
        engine.register(Shop)
        handle = await engine.start(Shop.held, 3)
        await engine.idle(handle.run_id, timeout=10)
        info = await engine.get_run(handle.run_id)
        journal = await engine.journal(handle.run_id)
        graph = Shop.held.graph
        overlay = run_overlay(
            graph, status=info.status, node=info.node, finished=info.finished, journal=journal
        )
        assert overlay.current == info.node and graph.nodes[info.node].kind == "approval"
        charge = next(n.id for n in graph.nodes.values() if getattr(n, "name", "") == "charge")
        assert overlay.last_edge == (charge, info.node)
        if HAS_DOT:
            svg = handle._repr_svg_()  # inside a running loop, as in a notebook
            assert svg is not None and svg.lstrip().startswith("<?xml")
            assert "#2563eb" in svg  # the current node and the last edge are highlighted


# ------------------------------------------------------------ dotdo.render
def test_dotdo_render_draws_workflows_classes_modules_and_paths(tmp_path: Path) -> None:
    assert "dotdo.render" in {f"dotdo.{n}" for n in dotdo.__all__}
    single = dotdo.render(Shop.order, tmp_path / "order.dot").read_text()
    assert "cluster_" not in single and "charge" in single
    whole = dotdo.render(Shop, tmp_path / "shop.mmd").read_text()
    assert whole.count("subgraph ") == 3
    module = load_flow(ROOT / "examples" / "schedules.flow")
    assert dotdo.render(module, tmp_path / "m.dot").read_text().count("cluster_") == 3
    path = ROOT / "examples" / "events.flow"
    assert dotdo.render(path, tmp_path / "p.dot").read_text().count("cluster_") == 4
    assert "cluster_" not in dotdo.render(Shop.order.graph, tmp_path / "g.dot").read_text()


@pytest.mark.parametrize("bad", [42, "notes.txt", object(), Shop.charge])
def test_dotdo_render_refuses_what_it_cannot_draw(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(DotdoError, match="cannot draw"):
        dotdo.render(bad, tmp_path / "x.dot")


async def test_dotdo_render_with_a_run_draws_its_progress(tmp_path: Path) -> None:
    async with Engine(tmp_path / "p.db") as engine:
        engine.register(Shop)
        handle = await engine.start(Shop.held, 3)
        await engine.idle(handle.run_id, timeout=10)
        text = await asyncio.to_thread(dotdo.render, Shop.held, tmp_path / "run.mmd", handle)
        assert "class" in text.read_text() and "current" in text.read_text()
        with pytest.raises(DotdoError, match="another version"):
            await asyncio.to_thread(dotdo.render, Shop.order, tmp_path / "x.dot", handle)
        with pytest.raises(DotdoError, match="one workflow"):
            await asyncio.to_thread(dotdo.render, Shop, tmp_path / "y.dot", handle)


# ------------------------------------------------------------ notebooks
@needs_dot
def test_graphs_workflows_and_modules_show_themselves_in_a_notebook() -> None:
    for shown in (Shop.order.graph, Shop.order, load_flow(ROOT / "examples" / "events.flow")):
        svg = shown._repr_svg_()
        assert svg is not None and "<svg" in svg


def test_without_graphviz_a_notebook_falls_back_to_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R.shutil, "which", lambda _name: None)
    assert Shop.order.graph._repr_svg_() is None
    assert Shop.order._repr_svg_() is None
