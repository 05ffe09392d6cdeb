"""Draw a graph (and optionally a live run on it) as Graphviz DOT, Mermaid text or SVG.

The diagram is drawn from the same IR the engine walks, so it cannot drift from the program.
Style is data (`STYLE`, one table of attributes per node kind and edge kind); renderers are
functions of (graph, overlay) to text, so adding one means adding a function. A `Diagram`
draws several workflows of one file, one cluster each, with their schedules and event
handlers as entry points. DOT and Mermaid need no binary; SVG/PNG/PDF go through Graphviz's
`dot` when it is installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import graphviz

from dotdo.errors import DotdoError

if TYPE_CHECKING:
    from dotdo.compiler.ir import Graph, Node

__all__ = [
    "STYLE",
    "Diagram",
    "Overlay",
    "render",
    "to_digraph",
    "to_dot",
    "to_mermaid",
    "to_svg",
]

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
    "run.last_edge": {"penwidth": "3", "color": "#2563eb"},
    "entry": {"shape": "cds", "style": "filled", "fillcolor": "#fef3c7", "fontsize": "10"},
    "edge.entry": {"style": "bold", "color": "#b45309"},
}


@dataclass
class Overlay:
    """A live run drawn on its graph: finished steps, the current node, failures, and the
    last edge it took."""

    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    current: str | None = None
    last_edge: tuple[str, str] | None = None


@dataclass
class Diagram:
    """Several workflows drawn together (a `.flow` file, a DO class): one cluster each."""

    graphs: dict[str, Graph]
    entries: dict[str, list[str]] = field(default_factory=dict)
    """Per workflow, what starts it besides a caller: `every day at 06:00 UTC`, `on X.y`."""
    name: str = ""


def _label(node: Node) -> str:
    kind = node.kind
    n: Any = node
    if kind == "step":
        badge = f"  ↻{n.policy.retries}" if n.mode == "do" and n.policy.retries else ""
        return f"{'try ' if n.mode == 'try' else ''}{n.name}{badge}"
    if kind == "block":
        lines = [_clip(s.src.splitlines()[0] + (" …" if "\n" in s.src else "")) for s in n.code]
        if len(lines) > 6:
            lines = [*lines[:5], f"… {len(lines) - 5} more"]
        return "\n".join(lines)
    labels: dict[str, Callable[[], str]] = {
        "choice": lambda: str(n.cond),
        "record": lambda: f"{n.result} = {n.what}()",
        "send": lambda: f"send {n.event}",
        "sleep": lambda: f"sleep {n.duration or 'until ' + str(n.until)}",
        "fail": lambda: f"raise {n.expr}",
        "approval": lambda: f"approval {n.name}",
        "wait_event": lambda: f"wait for {n.event}",
        "cascade": lambda: f"cascade {n.name}\n" + " → ".join(t for t, _ in n.tiers),
        "endfinally": lambda: "end finally",
    }
    make = labels.get(kind)
    return make() if make is not None else kind


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _style_key(node: Node) -> str:
    if node.kind == "step" and getattr(node, "mode", "do") == "try":
        return "step.try"
    return node.kind


def _edges(graph: Graph) -> Iterable[tuple[str, str, str]]:
    yield from graph.edges()
    for node in graph.nodes.values():
        if node.kind == "step" and getattr(node, "compensate", None):
            yield node.id, f"undo_{node.id}", "compensate"


def _draw(dot: graphviz.Digraph, graph: Graph, overlay: Overlay | None, prefix: str = "") -> None:
    """Nodes and edges of `graph` into `dot`; ids get `prefix` (unique across clusters)."""
    for node in graph.nodes.values():
        attrs = dict(STYLE.get(_style_key(node), {}))
        if "label" not in attrs:
            attrs["label"] = _dot_label(_label(node))
        if overlay is not None:
            if node.id in overlay.failed:
                attrs.update(STYLE["run.failed"])
            elif node.id in overlay.done:
                attrs.update(STYLE["run.done"])
            elif node.id != overlay.current:
                attrs.update(STYLE["run.untouched"])
            if node.id == overlay.current:
                attrs.update(STYLE["run.current"])
        dot.node(prefix + node.id, **attrs)
        compensate = getattr(node, "compensate", None) if node.kind == "step" else None
        if compensate:
            undo = {"shape": "box", "style": "dashed", "label": f"undo: {compensate}"}
            if overlay is not None and f"undo_{node.id}" in overlay.done:
                undo.update(STYLE["run.done"], style="filled,dashed")
            dot.node(f"{prefix}undo_{node.id}", **undo)
    for src, dst, kind in _edges(graph):
        attrs = dict(STYLE.get(f"edge.{kind}", {}))
        if overlay is not None and overlay.last_edge == (src, dst):
            attrs.update(STYLE["run.last_edge"])
        dot.edge(prefix + src, prefix + dst, **attrs)


def _new_digraph(name: str, label: str) -> graphviz.Digraph:
    dot = graphviz.Digraph(name=name)
    # nslimit bounds dot's network-simplex passes: big graphs lay out in ~1 s instead of ~5.
    dot.attr("graph", rankdir="TB", fontname="Helvetica", labelloc="t", label=label, nslimit="0.2")
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    return dot


def to_digraph(target: Graph | Diagram, overlay: Overlay | None = None) -> graphviz.Digraph:
    """The graph (or every workflow of a diagram) as a `graphviz.Digraph`, with a live run's
    state when `overlay` is given (a single graph only)."""
    if not isinstance(target, Diagram):
        dot = _new_digraph(target.name, target.name)
        _draw(dot, target, overlay)
        return dot
    dot = _new_digraph(target.name or "workflows", target.name)
    for i, (name, graph) in enumerate(target.graphs.items()):
        prefix = f"w{i}_"
        with dot.subgraph(name=f"cluster_{i}") as cluster:
            cluster.attr(label=name, style="rounded", color="#9ca3af")
            _draw(cluster, graph, None, prefix)
            for j, entry in enumerate(target.entries.get(name, [])):
                cluster.node(f"{prefix}entry{j}", label=entry, **STYLE["entry"])
                cluster.edge(f"{prefix}entry{j}", f"{prefix}{graph.start}", **STYLE["edge.entry"])
    return dot


def _dot_label(label: str) -> str:
    """Multi-line code labels are left-aligned: DOT ends each such line with a backslash-l."""
    if "\n" not in label:
        return label
    return "".join(line.replace("\\", "\\\\") + "\\l" for line in label.split("\n"))


def to_dot(target: Graph | Diagram, overlay: Overlay | None = None) -> str:
    """Graphviz DOT source (no Graphviz binary needed)."""
    return str(to_digraph(target, overlay).source)


def to_svg(target: Graph | Diagram, overlay: Overlay | None = None) -> str | None:
    """SVG text, or None when Graphviz's `dot` is not installed (notebooks then fall back
    to the text representation)."""
    if shutil.which("dot") is None:
        return None
    try:
        return str(to_digraph(target, overlay).pipe(format="svg", encoding="utf-8"))
    except graphviz.backend.CalledProcessError as exc:
        raise DotdoError(f"dot failed: {exc}") from None


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

_MERMAID_ARROWS = {
    "error": "-. error .->",
    "compensate": "-. undo .->",
    "true": "-- true -->",
    "false": "-- false -->",
    "return": "-. return .->",
    "jump": "-.->",
}


def _mermaid_text(label: str) -> str:
    return label.replace('"', "#quot;").replace("\n", "<br/>")


def _mermaid_graph(
    graph: Graph, overlay: Overlay | None, prefix: str, lines: list[str], edges: list[bool]
) -> None:
    for node in graph.nodes.values():
        left, right = _MERMAID_SHAPES.get(node.kind, ("(", ")"))
        label = _mermaid_text(_label(node)) or node.kind
        lines.append(f'  {prefix}{node.id}{left}"{label}"{right}')
        compensate = getattr(node, "compensate", None) if node.kind == "step" else None
        if compensate:
            lines.append(f'  {prefix}undo_{node.id}["undo: {compensate}"]')
    for src, dst, kind in _edges(graph):
        arrow = _MERMAID_ARROWS.get(kind, "-->")
        lines.append(f"  {prefix}{src} {arrow} {prefix}{dst}")
        edges.append(overlay is not None and overlay.last_edge == (src, dst))


def to_mermaid(target: Graph | Diagram, overlay: Overlay | None = None) -> str:
    """Mermaid flowchart text; pastes into Markdown renderers that support Mermaid."""
    lines = ["flowchart TD"]
    edges: list[bool] = []
    """Per edge drawn, in order: whether it is the run's last edge (Mermaid styles by index)."""
    if isinstance(target, Diagram):
        for i, (name, graph) in enumerate(target.graphs.items()):
            prefix = f"w{i}_"
            lines.append(f'  subgraph {prefix}wf["{_mermaid_text(name)}"]')
            _mermaid_graph(graph, None, prefix, lines, edges)
            for j, entry in enumerate(target.entries.get(name, [])):
                lines.append(f'  {prefix}entry{j}>"{_mermaid_text(entry)}"]')
                lines.append(f"  {prefix}entry{j} ==> {prefix}{graph.start}")
                edges.append(False)
            lines.append("  end")
        return "\n".join(lines) + "\n"
    _mermaid_graph(target, overlay, "", lines, edges)
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
        for index, last in enumerate(edges):
            if last:
                lines.append(f"  linkStyle {index} stroke:#2563eb,stroke-width:3px;")
    return "\n".join(lines) + "\n"


def render(target: Graph | Diagram, path: str | Path, overlay: Overlay | None = None) -> Path:
    """Write `target` to `path`; the suffix picks the format: .dot .mmd .svg .png .pdf."""
    out = Path(path)
    suffix = out.suffix.lower().lstrip(".")
    if suffix in ("dot", "gv"):
        out.write_text(to_dot(target, overlay))
    elif suffix in ("mmd", "mermaid"):
        out.write_text(to_mermaid(target, overlay))
    elif suffix in ("svg", "png", "pdf"):
        if shutil.which("dot") is None:
            raise DotdoError(
                f"rendering .{suffix} needs Graphviz's `dot`: install it "
                "(apt-get install graphviz, brew install graphviz) or write .dot / .mmd"
            )
        try:
            out.write_bytes(to_digraph(target, overlay).pipe(format=suffix))
        except graphviz.backend.CalledProcessError as exc:
            raise DotdoError(f"dot failed: {exc}") from None
    else:
        raise DotdoError(f"unknown diagram format {out.suffix!r}: use .svg .png .pdf .dot .mmd")
    return out


def entries_of(workflows: Mapping[str, Any]) -> dict[str, list[str]]:
    """Entry points of workflow objects with `schedule` / `trigger` attributes."""
    out: dict[str, list[str]] = {}
    for name, wf in workflows.items():
        schedule, trigger = getattr(wf, "schedule", None), getattr(wf, "trigger", None)
        found = [schedule.spec] if schedule is not None else []
        found += [f"on {trigger}"] if trigger is not None else []
        if found:
            out[name] = found
    return out
