"""A run drawn on the exact graph the engine walks, with its live overlay, as SVG.

The graph is the run's pinned one, read from the store and verified against its hash before
it is used (`trust.stored_graph`); the overlay comes from the run's journal. Rendering calls
Graphviz's `dot`, which takes tens of milliseconds, so SVGs are cached by graph hash and
overlay: the run page links the diagram as an image and never waits for `dot` itself.
Without `dot` installed the diagram is Mermaid text.
"""

from __future__ import annotations

import re
import shutil
from collections import OrderedDict
from collections.abc import Iterable

from dotdo.compiler.ir import Graph
from dotdo.compiler.render import Overlay, to_digraph, to_mermaid
from dotdo.engine.trust import stored_graph

__all__ = ["DiagramCache", "has_dot", "overlay_of"]

_LOOP_SUFFIX = re.compile(r"(\[\d+\])+$")
FINISHED = ("completed", "failed", "compensated", "cancelled")


def has_dot() -> bool:
    return shutil.which("dot") is not None


def overlay_of(
    graph: Graph,
    status: str,
    node: str,
    journal: Iterable[tuple[str, str]],
    highlight: str | None = None,
) -> Overlay:
    """Finished and failed steps from the journal (step key, status), the current node,
    and `highlight` (an approval's node) drawn as current when the run stands there."""
    rows = list(journal)
    done_keys = {_LOOP_SUFFIX.sub("", k.split(":")[0]) for k, s in rows if s == "completed"}
    failed_keys = {_LOOP_SUFFIX.sub("", k) for k, s in rows if s == "failed"}
    done: set[str] = set()
    failed: set[str] = set()
    for n in graph.nodes.values():
        name = getattr(n, "name", None)
        if name in done_keys:
            done.add(n.id)
        if name is not None and f"compensate:{name}" in done_keys:
            done.add(f"undo_{n.id}")
        if name in failed_keys and status in ("failed", "compensated"):
            failed.add(n.id)
    if status == "completed":
        done.add("end")
    current = None if status in FINISHED else node
    return Overlay(done=done, failed=failed, current=highlight or current)


class DiagramCache:
    """SVG (or Mermaid) per (graph hash, overlay), least recently used out first."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._svg: OrderedDict[tuple[object, ...], tuple[str, str]] = OrderedDict()
        self._graphs: OrderedDict[str, Graph] = OrderedDict()

    def graph(self, body: str | None, graph_hash: str, name: str, run_id: str) -> Graph:
        graph = self._graphs.get(graph_hash)
        if graph is None:
            graph = stored_graph(body, graph_hash, name=name, run_id=run_id)
            self._graphs[graph_hash] = graph
            if len(self._graphs) > self.size:
                self._graphs.popitem(last=False)
        return graph

    def render(self, graph: Graph, overlay: Overlay) -> tuple[str, str]:
        """(media type, document) of the diagram."""
        key = (
            graph.hash,
            frozenset(overlay.done),
            frozenset(overlay.failed),
            overlay.current,
        )
        found = self._svg.get(key)
        if found is not None:
            self._svg.move_to_end(key)
            return found
        if has_dot():
            svg = to_digraph(graph, overlay).pipe(format="svg").decode()
            found = ("image/svg+xml", svg)
        else:
            found = ("text/plain; charset=utf-8", to_mermaid(graph, overlay))
        self._svg[key] = found
        if len(self._svg) > self.size:
            self._svg.popitem(last=False)
        return found
