"""`dotdo.render`: draw whatever a user holds — a workflow, a DO class, a loaded or unloaded
`.flow` file, a graph — optionally with a live run on it.

Both front ends' objects are known here (the compiler's renderer knows only graphs), so
this is the one place that turns them into a drawing: one graph, or a `Diagram` of every
workflow with its schedules and event handlers as entry points.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dotdo.compiler.ir import Graph
from dotdo.compiler.live import live_overlay
from dotdo.compiler.render import Diagram, Overlay, entries_of
from dotdo.compiler.render import render as _render
from dotdo.dsl.flow.loader import FlowModule, flow_diagram
from dotdo.dsl.python.decorators import WorkflowDef
from dotdo.errors import DotdoError

__all__ = ["drawing_of", "render"]


def drawing_of(target: Any) -> Graph | Diagram:
    """What `target` draws as: a graph, or a diagram of several workflows."""
    if isinstance(target, Graph):
        return target
    if isinstance(target, WorkflowDef):
        return target.graph
    if isinstance(target, FlowModule):
        return _several(target.workflows, target.path.name)
    if isinstance(target, str | os.PathLike) and str(target).endswith(".flow"):
        return _single(flow_diagram(target))
    workflows = getattr(target, "__dotdo_workflows__", None)
    if isinstance(target, type) and isinstance(workflows, dict) and workflows:
        return _several(workflows, target.__name__)
    raise DotdoError(
        f"cannot draw {target!r}: pass a workflow, a DO class, a .flow path or module, or a Graph"
    )


def _several(workflows: dict[str, Any], name: str) -> Graph | Diagram:
    graphs = {n: wf.graph for n, wf in workflows.items()}
    return _single(Diagram(graphs, entries_of(workflows), name=name))


def _single(diagram: Diagram) -> Graph | Diagram:
    """A diagram of one workflow without entry points is just its graph."""
    if len(diagram.graphs) == 1 and not diagram.entries:
        return next(iter(diagram.graphs.values()))
    return diagram


def render(target: Any, path: str | os.PathLike[str], run: Any = None) -> Path:
    """Draw `target` to `path` (.svg .png .pdf need Graphviz; .dot .mmd need nothing).

    With `run` (a `RunHandle` of a run of this workflow), the run's progress is drawn on
    the graph: finished steps, where it is now, the last edge it took.
    """
    drawing = drawing_of(target)
    overlay: Overlay | None = None
    if run is not None:
        if not isinstance(drawing, Graph):
            raise DotdoError("a run is drawn on one workflow: pass that workflow as the target")
        overlay = live_overlay(run.engine, run.run_id, drawing)
        if overlay is None:
            raise DotdoError(
                f"run {run.run_id!r} runs another version of this workflow: draw it with "
                f"`dotdo render --run {run.run_id}`, which reads the graph the run pinned"
            )
    return _render(drawing, Path(path), overlay)
