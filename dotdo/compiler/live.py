"""A live run drawn from synchronous code: a notebook's `_repr_svg_` on a run handle.

Notebooks call `_repr_svg_` synchronously, often inside a running event loop, while the
engine's store is asynchronous. The run is read on a helper thread with its own loop (the
store's connection answers any loop), then drawn with `dotdo.compiler.overlay`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dotdo.compiler.ir import Graph
from dotdo.compiler.overlay import run_overlay
from dotdo.compiler.render import Overlay, to_svg

__all__ = ["live_overlay", "live_svg", "read_run"]


def read_run(engine: Any, run_id: str) -> tuple[Any, list[Any]]:
    """`(await engine.get_run(run_id), await engine.journal(run_id))`, from sync code."""

    async def read() -> tuple[Any, list[Any]]:
        return await engine.get_run(run_id), await engine.journal(run_id)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(read())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, read()).result(timeout=30)


def live_overlay(engine: Any, run_id: str, graph: Graph) -> Overlay | None:
    """The run's progress on `graph`, or None when the run pinned another graph version."""
    info, journal = read_run(engine, run_id)
    if info.graph_hash != graph.hash:
        return None
    return run_overlay(
        graph, status=info.status, node=info.node, finished=info.finished, journal=journal
    )


def live_svg(engine: Any, run_id: str, graph: Graph | None) -> str | None:
    """SVG of the run on its graph; None without Graphviz or without the run's graph."""
    if graph is None:
        info, _ = read_run(engine, run_id)
        workflow = engine.workflows.get(info.workflow)
        if workflow is None:
            return None
        graph = workflow.graph
    assert graph is not None
    overlay = live_overlay(engine, run_id, graph)
    return to_svg(graph, overlay) if overlay is not None else None
