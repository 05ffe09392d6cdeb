"""Graph-building mechanics of the lowering (`dotdo.compiler.lower`).

An emitter appends nodes in source order and keeps the "loose ends" (fields of earlier nodes,
and labels such as a loop's exit, that must point at whatever node comes next). Plain
statements collect in a buffer and become one block when a durable node or a jump needs a
boundary. After lowering, labels are resolved to node ids, dead nodes are pruned and each
`finally` exit learns where a return or jump passing through it may resume.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from dotdo.compiler import _scan
from dotdo.compiler.ir import END, BlockNode, EndFinallyNode, Graph, Node, Stmt

__all__ = ["Cont", "Ctx", "Emitter"]


@dataclass(frozen=True)
class Ctx:
    catch: str | None = None
    fin: str | None = None
    loops: tuple[str, ...] = ()
    break_to: str | None = None
    continue_to: str | None = None


@dataclass
class Cont:
    """Loose ends waiting for the next node: (node, field) tails and unresolved labels."""

    tails: list[tuple[str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tails or self.labels)

    def merge(self, other: Cont) -> Cont:
        return Cont(self.tails + other.tails, self.labels + other.labels)


class Emitter:
    """Node ids, loose ends, the block buffer and the try/loop context of the lowering."""

    def __init__(
        self,
        *,
        name: str,
        file: str,
        self_name: str,
    ) -> None:
        self.file = file
        self.graph = Graph(name=name, file=file, self_name=self_name)
        self.nodes: dict[str, Node] = {}
        self.order: list[str] = []
        self.counter = 0
        self.cont = Cont()
        self.buffer: list[ast.stmt] = []
        self.ctx = Ctx()
        self.labels: dict[str, str] = {}
        self.hidden: dict[str, int] = {}
        self.finally_exits: dict[str, str] = {}

    # ----------------------------------------------------------------- helpers
    def new_id(self, prefix: str = "n") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def hidden_name(self, prefix: str, line: int) -> str:
        name = f"__{prefix}{self.counter + 1}"
        self.counter += 1
        self.hidden[name] = line
        return name

    @contextmanager
    def scope(self, **changes: Any) -> Iterator[None]:
        saved = self.ctx
        self.ctx = replace(saved, **changes)
        try:
            yield
        finally:
            self.ctx = saved

    def take(self) -> Cont:
        self.flush()
        cont, self.cont = self.cont, Cont()
        return cont

    def add_node(self, node: Node) -> None:
        if node.catch is None:
            node.catch = self.ctx.catch
        if node.fin is None:
            node.fin = self.ctx.fin
        self.nodes[node.id] = node
        self.order.append(node.id)

    def emit(self, node: Node, *, tails: tuple[str, ...] = ("next",)) -> Node:
        """Add a node, wiring the loose ends to it; its own `tails` become the new ones."""
        self.flush()
        self.add_node(node)
        self.connect(self.cont, node.id)
        self.cont = Cont([(node.id, t) for t in tails])
        return node

    def connect(self, cont: Cont, target: str) -> None:
        for node_id, attr in cont.tails:
            setattr(self.nodes[node_id], attr, target)
        for label in cont.labels:
            self.labels[label] = target

    def jump_to(self, target: str) -> None:
        cont = self.take()
        self.connect(cont, target)

    def dead(self) -> bool:
        return not self.cont and not self.buffer

    def add_plain(self, stmt: ast.stmt) -> None:
        self.buffer.append(stmt)
        if _scan.is_terminal(stmt):
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        stmts, self.buffer = self.buffer, []
        breaks = continues = False
        for s in stmts:
            b, c = _scan.escaping_jumps(s)
            breaks, continues = breaks or b, continues or c
        block = BlockNode(
            id=self.new_id("b"),
            line=stmts[0].lineno,
            code=[Stmt(line=s.lineno, src=ast.unparse(s)) for s in stmts],
            returns=any(_scan.has_return(s) for s in stmts),
            breaks_to=self.ctx.break_to if breaks else None,
            continues_to=self.ctx.continue_to if continues else None,
        )
        self.add_node(block)
        self.connect(self.cont, block.id)
        self.cont = Cont() if _scan.is_terminal(stmts[-1]) else Cont([(block.id, "next")])

    def resolve_labels(self) -> None:
        def res(ref: str | None) -> str | None:
            seen = set()
            while ref is not None and ref in self.labels and ref not in seen:
                seen.add(ref)
                ref = self.labels[ref]
            return ref

        for node in self.nodes.values():
            for attr in ("next", "catch", "then", "orelse", "breaks_to", "continues_to"):
                if hasattr(node, attr):
                    setattr(node, attr, res(getattr(node, attr)))
        for region in self.graph.regions.values():
            region.entry = res(region.entry) or END
            region.members = sorted({res(m) or m for m in region.members})

    def prune(self) -> None:
        """Drop nodes no path reaches (dead code after a return is legal Python)."""
        reachable: set[str] = set()
        todo = ["start"]
        edges: dict[str, set[str]] = {}
        for src, dst, _ in self.graph.model_copy(update={"nodes": self.nodes}).edges():
            edges.setdefault(src, set()).add(dst)
        for region_id, exit_id in self.finally_exits.items():
            # A finally exit may resume a return or jump passing through it.
            parent = self.graph.regions[region_id].parent
            if parent is not None:
                edges.setdefault(exit_id, set()).add(self.graph.regions[parent].entry)
        while todo:
            current = todo.pop()
            if current in reachable or current not in self.nodes:
                continue
            reachable.add(current)
            todo.extend(edges.get(current, ()))
        reachable.add(END)
        self.nodes = {k: v for k, v in self.nodes.items() if k in reachable}

    def fill_finally_targets(self) -> None:
        """Give each finally exit its possible resume targets, so the diagram shows them."""
        regions = self.graph.regions
        passing: dict[str, set[str]] = {rid: set() for rid in regions}
        for node in self.nodes.values():
            if not isinstance(node, BlockNode):
                continue
            jumps = [t for t in (node.breaks_to, node.continues_to) if t]
            if node.returns:
                jumps.append(END)
            for target in jumps:
                rid = node.fin
                while rid is not None and target not in regions[rid].members:
                    passing[rid].add(target)
                    rid = regions[rid].parent
        for rid, exit_id in self.finally_exits.items():
            exit_node = self.nodes.get(exit_id)
            if not isinstance(exit_node, EndFinallyNode):
                continue
            parent = regions[rid].parent
            targets = set()
            for target in passing[rid]:
                if parent is not None and target not in regions[parent].members:
                    targets.add(regions[parent].entry)
                else:
                    targets.add(target)
            exit_node.targets = sorted(targets)
