"""Compare two graphs of one workflow, matched by step id, and draw the difference.

Node ids are positions (`t3`, `b7`) and shift when code is inserted; step ids are what the
journal, retries and upgrades go by, so durable nodes (steps, records, sleeps, approvals,
waits, cascades) are matched by kind and step id. Other nodes are matched by what they hold
(a block by its statements, a choice by its condition), in order when several hold the
same. A matched durable node whose definition differs (its call, arguments, policy,
compensation) is *changed*; unmatched nodes are *added* (in the new graph) or *removed*
(only in the old one). The drawing is the new graph, coloured, with removed nodes dashed.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import graphviz

from dotdo.compiler.ir import (
    DURABLE_KINDS,
    BlockNode,
    ChoiceNode,
    FailNode,
    Graph,
    Node,
    SendNode,
)
from dotdo.compiler.render import STYLE, _dot_label, _label, _style_key
from dotdo.errors import DotdoError

__all__ = [
    "DIFF_STYLE",
    "GraphDiff",
    "diff_graphs",
    "render_diff",
    "to_diff_digraph",
    "to_diff_dot",
    "to_diff_mermaid",
]

DIFF_STYLE: dict[str, dict[str, str]] = {
    "added": {"style": "filled,bold", "fillcolor": "#bbf7d0", "color": "#15803d"},
    "changed": {"style": "filled,bold", "fillcolor": "#fde68a", "color": "#b45309"},
    "removed": {
        "style": "filled,dashed",
        "fillcolor": "#fecaca",
        "color": "#b91c1c",
        "fontcolor": "#7f1d1d",
    },
    "edge.removed": {"style": "dashed", "color": "#b91c1c"},
}

_POSITION = {"id", "line", "next", "catch", "fin", "then", "orelse", "targets"}


def _key(node: Node) -> Hashable:
    if node.kind in DURABLE_KINDS:
        return ("durable", node.kind, getattr(node, "name", node.id))
    if isinstance(node, BlockNode):
        return ("block", tuple(s.src for s in node.code))
    if isinstance(node, ChoiceNode):
        return ("choice", node.cond)
    if isinstance(node, SendNode):
        return ("send", node.event, node.data)
    if isinstance(node, FailNode):
        return ("fail", node.expr)
    if node.kind in ("start", "end"):
        return (node.kind,)
    return (node.kind, node.id)


def _definition(node: Node) -> dict[str, object]:
    """What a node does, without where it stands (ids, edges, line numbers)."""
    data = node.model_dump(mode="json", exclude=_POSITION)
    if isinstance(node, BlockNode):
        data["code"] = [s.src for s in node.code]
        data.pop("breaks_to", None)
        data.pop("continues_to", None)
    return data


@dataclass
class GraphDiff:
    """How `new` differs from `old`: node ids of each, matched by step id."""

    old: Graph
    new: Graph
    matched: dict[str, str] = field(default_factory=dict)
    """new node id -> old node id"""
    added: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)

    @property
    def same(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def summary(self) -> str:
        def steps(ids: Iterable[str], graph: Graph) -> str:
            names = sorted(
                str(getattr(graph.nodes[i], "name", None) or graph.nodes[i].kind) for i in ids
            )
            return f"{len(names)}" + (f" ({', '.join(names[:8])})" if names else "")

        return (
            f"{steps(self.added, self.new)} added, {steps(self.changed, self.new)} changed, "
            f"{steps(self.removed, self.old)} removed"
        )


def diff_graphs(old: Graph, new: Graph) -> GraphDiff:
    diff = GraphDiff(old, new)
    waiting: dict[Hashable, list[str]] = defaultdict(list)
    for node in old.nodes.values():
        waiting[_key(node)].append(node.id)
    for node in new.nodes.values():
        candidates = waiting.get(_key(node))
        if not candidates:
            diff.added.add(node.id)
            continue
        old_id = candidates.pop(0)
        diff.matched[node.id] = old_id
        if _definition(node) != _definition(old.nodes[old_id]):
            diff.changed.add(node.id)
    diff.removed = set(old.nodes) - set(diff.matched.values())
    return diff


def _removed_edges(diff: GraphDiff) -> Iterable[tuple[str, str]]:
    """Old edges that touch a removed node, in the drawing's node ids."""
    back = {old: new for new, old in diff.matched.items()}
    for src, dst, _ in diff.old.edges():
        if src in diff.removed or dst in diff.removed:
            yield back.get(src, f"old_{src}"), back.get(dst, f"old_{dst}")


def to_diff_digraph(diff: GraphDiff) -> graphviz.Digraph:
    dot = graphviz.Digraph(name=diff.new.name)
    title = f"{diff.new.name}: {diff.old.hash} → {diff.new.hash}"
    dot.attr("graph", rankdir="TB", fontname="Helvetica", labelloc="t", label=title)
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    for node in diff.new.nodes.values():
        attrs = dict(STYLE.get(_style_key(node), {}))
        attrs.setdefault("label", _dot_label(_label(node)))
        for mark in ("added", "changed"):
            if node.id in getattr(diff, mark):
                attrs.update(DIFF_STYLE[mark])
        dot.node(node.id, **attrs)
    for old_id in sorted(diff.removed):
        node = diff.old.nodes[old_id]
        attrs = dict(STYLE.get(_style_key(node), {}))
        attrs.setdefault("label", _dot_label(_label(node)))
        attrs.update(DIFF_STYLE["removed"])
        dot.node(f"old_{old_id}", **attrs)
    for src, dst, kind in diff.new.edges():
        dot.edge(src, dst, **STYLE.get(f"edge.{kind}", {}))
    for src, dst in _removed_edges(diff):
        dot.edge(src, dst, **DIFF_STYLE["edge.removed"])
    return dot


def to_diff_dot(diff: GraphDiff) -> str:
    return str(to_diff_digraph(diff).source)


def to_diff_mermaid(diff: GraphDiff) -> str:
    lines = ["flowchart TD"]

    def node_line(node_id: str, node: Node) -> str:
        label = _label(node).replace('"', "#quot;").replace("\n", "<br/>") or node.kind
        return f'  {node_id}["{label}"]'

    lines += [node_line(i, n) for i, n in diff.new.nodes.items()]
    lines += [node_line(f"old_{i}", diff.old.nodes[i]) for i in sorted(diff.removed)]
    lines += [f"  {src} --> {dst}" for src, dst, _ in diff.new.edges()]
    lines += [f"  {src} -.-> {dst}" for src, dst in _removed_edges(diff)]
    lines.append("  classDef added fill:#bbf7d0,stroke:#15803d;")
    lines.append("  classDef changed fill:#fde68a,stroke:#b45309;")
    lines.append("  classDef removed fill:#fecaca,stroke:#b91c1c,stroke-dasharray:4;")
    for mark, ids in (
        ("added", sorted(diff.added)),
        ("changed", sorted(diff.changed)),
        ("removed", [f"old_{i}" for i in sorted(diff.removed)]),
    ):
        if ids:
            lines.append(f"  class {','.join(ids)} {mark};")
    return "\n".join(lines) + "\n"


def render_diff(diff: GraphDiff, path: str | Path) -> Path:
    """Write the diff to `path`; the suffix picks the format: .svg .png .pdf .dot .mmd."""
    out = Path(path)
    suffix = out.suffix.lower().lstrip(".")
    if suffix in ("dot", "gv"):
        out.write_text(to_diff_dot(diff))
    elif suffix in ("mmd", "mermaid"):
        out.write_text(to_diff_mermaid(diff))
    elif suffix in ("svg", "png", "pdf"):
        if shutil.which("dot") is None:
            raise DotdoError(
                f"rendering .{suffix} needs Graphviz's `dot`: install it or write .dot / .mmd"
            )
        try:
            out.write_bytes(to_diff_digraph(diff).pipe(format=suffix))
        except graphviz.backend.CalledProcessError as exc:
            raise DotdoError(f"dot failed: {exc}") from None
    else:
        raise DotdoError(f"unknown diagram format {out.suffix!r}: use .svg .png .pdf .dot .mmd")
    return out
