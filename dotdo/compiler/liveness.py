"""Which locals a run can still read at each node: the only ones worth persisting.

A checkpoint stores the locals that are live where the run resumes. A local that is never
read again (a helper lambda used before the step, an imported module, a large temporary)
is not stored, so it neither costs space nor fails the checkpoint for being unstorable.
Classic backward dataflow: live_in(n) = uses(n) | (live_out(n) - defs(n)). Uses are
over-approximated (any read anywhere in a node's code, nested functions included) and defs
under-approximated (only unconditional top-level assignments), which keeps the answer safe.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from dotdo.compiler.ir import (
    END,
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

__all__ = ["live_locals"]

_ALWAYS = frozenset({"__ret", "__exc"})
"""Set by the interpreter itself (return values, caught exceptions), never by node code."""
_INTROSPECTION = frozenset({"locals", "vars", "eval", "exec", "dir"})


def live_locals(graph: Graph) -> dict[str, frozenset[str]]:
    """For every node, the frame variables that may be read from there on."""
    names = set(graph.locals) | set(_ALWAYS)
    uses: dict[str, set[str]] = {}
    defs: dict[str, set[str]] = {}
    for node in graph.nodes.values():
        used, defined = _effects(node, names)
        uses[node.id], defs[node.id] = used, defined
    # Definitions kill liveness only along the fall-through edges: an exception, a jump or
    # a return can leave a node before its assignments happen (a failed step binds nothing).
    through: dict[str, set[str]] = {n: set() for n in graph.nodes}
    around: dict[str, set[str]] = {n: set() for n in graph.nodes}
    for src, dst, kind in graph.edges():
        (through if kind in ("next", "true", "false") else around)[src].add(dst)
    for node in graph.nodes.values():
        if isinstance(node, EndFinallyNode):
            # A pending return or jump may resume in an enclosing finally or at the end.
            parent = graph.regions[node.region].parent
            around[node.id].add(graph.regions[parent].entry if parent else END)
    live: dict[str, set[str]] = {n: set() for n in graph.nodes}
    changed = True
    order = list(reversed(list(graph.nodes)))
    while changed:
        changed = False
        for node_id in order:
            out: set[str] = set()
            for succ in through[node_id]:
                out |= live.get(succ, set())
            new = uses[node_id] | (out - defs[node_id])
            for succ in around[node_id]:
                new |= live.get(succ, set())
            if new != live[node_id]:
                live[node_id] = new
                changed = True
    return {n: frozenset(v) for n, v in live.items()}


def _effects(node: Node, names: set[str]) -> tuple[set[str], set[str]]:
    loops = set(getattr(node, "loops", []))
    if isinstance(node, BlockNode):
        return _block_effects([s.src for s in node.code], names)
    if isinstance(node, ChoiceNode):
        return _reads([node.cond], names), set()
    if isinstance(node, StepNode):
        sources = [node.call, *node.args, *(v for _, v in node.kwargs)]
        return _reads(sources, names) | loops, {node.result} if node.result else set()
    if isinstance(node, RecordNode):
        return set(loops), {node.result}
    if isinstance(node, SendNode):
        return _reads([node.event, node.data], names), set()
    if isinstance(node, SleepNode):
        return _reads([node.duration or node.until or "0"], names) | loops, set()
    if isinstance(node, ApprovalNode):
        return _reads([node.request], names) | loops, _result(node.result)
    if isinstance(node, WaitEventNode):
        sources = [node.event, node.match or "None", node.timeout or "None"]
        return _reads(sources, names) | loops, _result(node.result)
    if isinstance(node, CascadeNode):
        sources = [node.task, node.threshold, *(src for _, src in node.tiers)]
        used = _reads(sources, names) | loops | {f"__cascade_{node.id}"}
        return used, _result(node.result)
    if isinstance(node, FailNode):
        return _reads([node.expr], names), set()
    if isinstance(node, EndFinallyNode):
        return {f"__fin{node.region}", "__ret"}, set()
    if node.kind == "end":
        return {"__ret"}, set()
    return set(), set()


def _result(name: str | None) -> set[str]:
    return {name} if name else set()


def _reads(sources: Iterable[str], names: set[str]) -> set[str]:
    found: set[str] = set()
    for src in sources:
        found |= _names_read(ast.parse(src), names)
    return found


def _names_read(tree: ast.AST, names: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id in _INTROSPECTION:
                return set(names)
            if node.id in names and not isinstance(node.ctx, ast.Store):
                found.add(node.id)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            if node.target.id in names:
                found.add(node.target.id)  # `x += 1` reads x
    return found


def _block_effects(sources: list[str], names: set[str]) -> tuple[set[str], set[str]]:
    """Walk a block's statements backwards: a name assigned before it is read is not used."""
    used: set[str] = set()
    defined: set[str] = set()
    for src in reversed(sources):
        for stmt in reversed(ast.parse(src).body):
            killed = _assigned(stmt, names)
            used = (used - killed) | _names_read(stmt, names)
            defined |= killed
    return used, defined


def _assigned(stmt: ast.stmt, names: set[str]) -> set[str]:
    """Names certainly (re)bound by a top-level statement."""
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        targets = [stmt.target]
    elif isinstance(stmt, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names} & names
    elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return {stmt.name} & names
    out: set[str] = set()
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                out.add(node.id)
            elif not isinstance(node, ast.Tuple | ast.List | ast.Starred | ast.Name):
                if isinstance(node, ast.expr_context):
                    continue
                return set()  # subscript/attribute targets: not a plain rebinding
    return out & names
