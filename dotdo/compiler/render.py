"""Draw a graph (and optionally a live run on it) as Graphviz DOT or Mermaid text.

The diagram is drawn from the same IR the engine walks, so it cannot drift from the program.
Style is data (`STYLE`, one table of attributes per node kind and edge kind); renderers are
functions of (graph, overlay) to text, so adding one means adding a function. DOT and
Mermaid need no binary; SVG/PNG/PDF go through Graphviz's `dot` when it is installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import graphviz

from dotdo.compiler.ir import (
    ApprovalNode,
    BlockNode,
    CascadeNode,
    ChoiceNode,
    EndFinallyNode,
    FailNode,
    Graph,
    Node,
    RecordNode,
    SendNode,
    SleepNode,
    StepNode,
    WaitEventNode,
)
from dotdo.errors import DotdoError

__all__ = ["STYLE", "Overlay", "render", "to_digraph", "to_dot", "to_mermaid"]

STYLE: dict[str, dict[str, str]] = {
    "start": {
        "shape": "circle",
        "label": "",
        "width": "0.25",
        "style": "filled",
        "fillcolor": "black",
    },
    "end": {
        "shape": "doublecircle",
        "label": "",
        "width": "0.2",
        "style": "filled",
        "fillcolor": "black",
    },
    "block": {"shape": "box", "style": "rounded", "fontname": "monospace", "fontsize": "10"},
    "choice": {"shape": "diamond", "fontname": "monospace", "fontsize": "10"},
    "step": {"shape": "box", "style": "filled,bold", "fillcolor": "#dbeafe"},
    "step.try": {"shape": "box", "style": "filled,dashed", "fillcolor": "#fef9c3"},
    "record": {"shape": "note", "style": "filled", "fillcolor": "#f3e8ff"},
    "send": {"shape": "cds", "style": "filled", "fillcolor": "#dcfce7"},
    "sleep": {"shape": "octagon", "style": "filled", "fillcolor": "#e0f2fe"},
    "fail": {"shape": "box", "style": "filled", "fillcolor": "#fee2e2"},
    "approval": {"shape": "house", "style": "filled", "fillcolor": "#ffedd5"},
    "wait_event": {"shape": "invhouse", "style": "filled", "fillcolor": "#e0f2fe"},
    "cascade": {"shape": "tab", "style": "filled", "fillcolor": "#fae8ff"},
    "endfinally": {"shape": "box", "style": "rounded,dashed"},
    "edge.next": {},
    "edge.true": {"label": "true"},
    "edge.false": {"label": "false"},
    "edge.error": {"color": "#dc2626", "fontcolor": "#dc2626", "style": "dashed"},
    "edge.return": {"style": "dotted", "label": "return"},
    "edge.jump": {"style": "dotted"},
    "edge.compensate": {"style": "dashed", "color": "#9333ea", "dir": "back"},
    "run.done": {"fillcolor": "#bbf7d0", "style": "filled"},
    "run.current": {"penwidth": "3", "color": "#2563eb"},
    "run.failed": {"fillcolor": "#fecaca", "style": "filled"},
    "run.untouched": {"fontcolor": "#9ca3af", "color": "#d1d5db"},
    "run.last_edge": {"penwidth": "3"},
}


@dataclass
class Overlay:
    """A live run drawn on its graph: finished steps, the current node, failures."""

    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    current: str | None = None
    last_edge: tuple[str, str] | None = None


def _label(node: Node) -> str:
    if isinstance(node, StepNode):
        badge = f"  ↻{node.policy.retries}" if node.mode == "do" and node.policy.retries else ""
        kind = "try " if node.mode == "try" else ""
        return f"{kind}{node.name}{badge}"
    if isinstance(node, BlockNode):
        lines = [_clip(s.src.splitlines()[0] + (" …" if "\n" in s.src else "")) for s in node.code]
        if len(lines) > 6:
            lines = [*lines[:5], f"… {len(lines) - 5} more"]
        return "\n".join(lines)
    if isinstance(node, ChoiceNode):
        return node.cond
    if isinstance(node, RecordNode):
        return f"{node.result} = {node.what}()"
    if isinstance(node, SendNode):
        return f"send {node.event}"
    if isinstance(node, SleepNode):
        return f"sleep {node.duration or 'until ' + str(node.until)}"
    if isinstance(node, FailNode):
        return f"raise {node.expr}"
    if isinstance(node, ApprovalNode):
        return f"approval {node.name}"
    if isinstance(node, WaitEventNode):
        return f"wait for {node.event}"
    if isinstance(node, CascadeNode):
        return f"cascade {node.name}\n" + " → ".join(t for t, _ in node.tiers)
    if isinstance(node, EndFinallyNode):
        return "end finally"
    return node.kind


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _style_key(node: Node) -> str:
    if isinstance(node, StepNode) and node.mode == "try":
        return "step.try"
    return node.kind


def _edges(graph: Graph) -> Iterable[tuple[str, str, str]]:
    yield from graph.edges()
    for node in graph.nodes.values():
        if isinstance(node, StepNode) and node.compensate:
            yield node.id, f"undo_{node.id}", "compensate"


def to_digraph(graph: Graph, overlay: Overlay | None = None) -> graphviz.Digraph:
    """The graph as a `graphviz.Digraph`, with a live run's state when `overlay` is given."""
    dot = graphviz.Digraph(name=graph.name)
    # nslimit bounds dot's network-simplex passes: big graphs lay out in ~1 s instead of ~5.
    dot.attr(
        "graph",
        rankdir="TB",
        fontname="Helvetica",
        labelloc="t",
        label=graph.name,
        nslimit="0.2",
    )
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    for node in graph.nodes.values():
        attrs = dict(STYLE.get(_style_key(node), {}))
        if "label" not in attrs:
            label = _label(node)
            attrs["label"] = _dot_label(label)
        if overlay is not None:
            if node.id in overlay.failed:
                attrs.update(STYLE["run.failed"])
            elif node.id in overlay.done:
                attrs.update(STYLE["run.done"])
            elif node.id != overlay.current:
                attrs.update(STYLE["run.untouched"])
            if node.id == overlay.current:
                attrs.update(STYLE["run.current"])
        dot.node(node.id, **attrs)
        if isinstance(node, StepNode) and node.compensate:
            undo = {"shape": "box", "style": "dashed", "label": f"undo: {node.compensate}"}
            if overlay is not None and f"undo_{node.id}" in overlay.done:
                undo.update(STYLE["run.done"], style="filled,dashed")
            dot.node(f"undo_{node.id}", **undo)
    for src, dst, kind in _edges(graph):
        attrs = dict(STYLE.get(f"edge.{kind}", {}))
        if overlay is not None and overlay.last_edge == (src, dst):
            attrs.update(STYLE["run.last_edge"])
        dot.edge(src, dst, **attrs)
    return dot


def _dot_label(label: str) -> str:
    """Multi-line code labels are left-aligned: DOT ends each such line with a backslash-l."""
    if "\n" not in label:
        return label
    return "".join(line.replace("\\", "\\\\") + "\\l" for line in label.split("\n"))


def to_dot(graph: Graph, overlay: Overlay | None = None) -> str:
    """Graphviz DOT source for `graph` (no Graphviz binary needed)."""
    return str(to_digraph(graph, overlay).source)


_MERMAID_SHAPES = {
    "start": ("((", "))"),
    "end": ("(((", ")))"),
    "choice": ("{", "}"),
    "step": ("[", "]"),
    "record": ("[/", "/]"),
    "send": (">", "]"),
    "sleep": ("{{", "}}"),
    "fail": ("[[", "]]"),
    "approval": ("[/", "\\]"),
    "wait_event": ("[\\", "/]"),
    "cascade": ("[[", "]]"),
}


def to_mermaid(graph: Graph, overlay: Overlay | None = None) -> str:
    """Mermaid flowchart text; pastes into Markdown renderers that support Mermaid."""
    lines = ["flowchart TD"]
    for node in graph.nodes.values():
        left, right = _MERMAID_SHAPES.get(node.kind, ("(", ")"))
        label = _label(node).replace('"', "#quot;").replace("\n", "<br/>") or node.kind
        lines.append(f'  {node.id}{left}"{label}"{right}')
        if isinstance(node, StepNode) and node.compensate:
            lines.append(f'  undo_{node.id}["undo: {node.compensate}"]')
    for src, dst, kind in _edges(graph):
        arrow = {
            "error": "-. error .->",
            "compensate": "-. undo .->",
            "true": "-- true -->",
            "false": "-- false -->",
            "return": "-. return .->",
            "jump": "-.->",
        }.get(kind, "-->")
        lines.append(f"  {src} {arrow} {dst}")
    if overlay is not None:
        lines.append("  classDef done fill:#bbf7d0;")
        lines.append("  classDef current stroke:#2563eb,stroke-width:3px;")
        lines.append("  classDef failed fill:#fecaca;")
        for cls, ids in (
            ("done", overlay.done),
            ("failed", overlay.failed),
            ("current", {overlay.current} if overlay.current else set()),
        ):
            if ids:
                lines.append(f"  class {','.join(sorted(ids))} {cls};")
    return "\n".join(lines) + "\n"


def render(graph: Graph, path: str | Path, overlay: Overlay | None = None) -> Path:
    """Write `graph` to `path`; the suffix picks the format: .dot .mmd .svg .png .pdf."""
    out = Path(path)
    suffix = out.suffix.lower().lstrip(".")
    if suffix in ("dot", "gv"):
        out.write_text(to_dot(graph, overlay))
    elif suffix in ("mmd", "mermaid"):
        out.write_text(to_mermaid(graph, overlay))
    elif suffix in ("svg", "png", "pdf"):
        if shutil.which("dot") is None:
            raise DotdoError(
                f"rendering .{suffix} needs Graphviz's `dot`: install it "
                "(apt-get install graphviz, brew install graphviz) or write .dot / .mmd"
            )
        try:
            out.write_bytes(to_digraph(graph, overlay).pipe(format=suffix))
        except graphviz.backend.CalledProcessError as exc:
            raise DotdoError(f"dot failed: {exc}") from None
    else:
        raise DotdoError(f"unknown diagram format {out.suffix!r}: use .svg .png .pdf .dot .mmd")
    return out
