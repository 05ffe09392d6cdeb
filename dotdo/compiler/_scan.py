"""Questions the lowering asks of Python syntax trees, kept apart from the graph building.

Which calls are durable operations, which names a function binds, whether a statement
returns or jumps out of a block: each answer must ignore nested scopes (lambdas, inner
functions, comprehensions), which is the subtle part and why it lives in one place.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "AWAITED_OPS",
    "PLAIN_OPS",
    "SCOPE_NODES",
    "bound_names",
    "durable_op",
    "entity_chain",
    "entity_step_name",
    "escaping_jumps",
    "has_return",
    "is_terminal",
    "walk_same_scope",
]

AWAITED_OPS = frozenset(
    {"do", "try_", "sleep", "sleep_until", "wait_for_event", "cascade", "request_approval"}
)
"""Methods of `self` a workflow awaits; each becomes a durable node."""
PLAIN_OPS = frozenset({"send", "now", "uuid", "random"})
"""Methods of `self` a workflow calls without await; also nodes of the graph."""

SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def walk_same_scope(node: ast.AST) -> Iterator[ast.AST]:
    """Like ast.walk, but does not enter nested functions, lambdas or classes."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        for child in ast.iter_child_nodes(current):
            if not isinstance(child, SCOPE_NODES):
                todo.append(child)


def durable_op(call: ast.AST, self_name: str, steps: Mapping[str, Any]) -> str | None:
    """The durable operation a call expression performs, or None for an ordinary call.

    Returns one of AWAITED_OPS, PLAIN_OPS, "step" (a @step method) or "approval" (an
    @approval method). `self.approval_flow.request_approval(...)` is "request_approval".
    `self.Inventory(...)`, a capitalised name the class does not define, is "entity": the
    root of a call to another DO instance.
    """
    if not isinstance(call, ast.Call):
        return None
    func = call.func
    if not (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == self_name
    ):
        inner = func.value if isinstance(func, ast.Attribute) else None
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "request_approval"
            and isinstance(inner, ast.Attribute)
            and isinstance(inner.value, ast.Name)
            and inner.value.id == self_name
            and inner.attr == "approval_flow"
        ):
            return "request_approval"
        return None
    if func.attr in AWAITED_OPS or func.attr in PLAIN_OPS:
        return func.attr
    if func.attr in steps:
        kind = getattr(steps[func.attr], "kind", "step")
        return None if kind == "local" else kind
    if func.attr[:1].isupper():
        return "entity"
    return None


def entity_chain(node: ast.AST, self_name: str, steps: Mapping[str, Any]) -> ast.Call | None:
    """The root `self.Noun(id)` of an attribute/call/subscript chain built on it, or None.

    `self.User(id).profile.email` and `self.Inventory(w).reserve(items)` are chains; the
    chain is what one entity step sends (pipelined: one round trip, however long).
    """
    while True:
        if isinstance(node, ast.Call):
            if durable_op(node, self_name, steps) == "entity":
                return node
            node = node.func
        elif isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        else:
            return None


def entity_step_name(chain: ast.AST) -> str:
    """A readable step name for a chain: `Inventory.reserve`, `User.profile.email`."""
    parts: list[str] = []
    node = chain
    while not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
    ):
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:  # pragma: no cover - entity_chain vetted the shape
            break
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        parts.append(node.func.attr)
    return ".".join(reversed(parts))


def bound_names(body: list[ast.stmt]) -> dict[str, int]:
    """Names a function body binds in its own scope, each with the first line binding it."""
    found: dict[str, int] = {}

    def bind(name: str, line: int) -> None:
        found.setdefault(name, line)

    for stmt in body:
        for node in walk_same_scope(stmt):
            line = getattr(node, "lineno", 0)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
                bind(node.id, line)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bind(node.name, line)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    bind((alias.asname or alias.name).split(".")[0], line)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                bind(node.name, line)
            elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
                bind(node.target.id, line)
        for node in ast.walk(stmt):
            # A walrus inside a comprehension binds in the enclosing function.
            if isinstance(node, _COMPREHENSIONS):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.NamedExpr) and isinstance(inner.target, ast.Name):
                        bind(inner.target.id, getattr(inner, "lineno", 0))
    return found


def has_return(stmt: ast.stmt) -> bool:
    return any(isinstance(n, ast.Return) for n in walk_same_scope(stmt))


def escaping_jumps(stmt: ast.stmt) -> tuple[bool, bool]:
    """Whether `stmt` holds a break / continue that leaves it (not one of an inner loop)."""
    breaks = continues = False
    todo: list[ast.AST] = list(stmt.orelse) if isinstance(stmt, ast.For | ast.While) else [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Break):
            breaks = True
        elif isinstance(node, ast.Continue):
            continues = True
        for child in ast.iter_child_nodes(node):
            if isinstance(child, SCOPE_NODES):
                continue
            if isinstance(child, ast.For | ast.AsyncFor | ast.While):
                # Only the else clause of an inner loop can break the outer one.
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return breaks, continues


def is_terminal(stmt: ast.stmt) -> bool:
    """A statement after which the rest of its list never runs."""
    return isinstance(stmt, ast.Return | ast.Raise | ast.Break | ast.Continue)
