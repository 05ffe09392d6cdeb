"""Whether a graph's nodes still resolve in today's code: the pure part of `upgrade check`.

A stored graph holds source text. What it runs lives in the app's classes: the steps and
helpers it calls as `self.name(...)`, the compensations named on step nodes, the entity
methods it calls as `self.Cls(id).method(...)`. Each node is checked once per graph: every
`self.name(...)` call must name something the class defines, callable with the call's
arguments (positional count, keyword names), whose annotations resolve; every compensation
must take the step's result; an entity method of a class registered here must exist and
bind. Entity classes not registered here may be served elsewhere: a warning, not a strand.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dotdo.compiler.ir import (
    ApprovalNode,
    BlockNode,
    CascadeNode,
    ChoiceNode,
    FailNode,
    Graph,
    SendNode,
    SleepNode,
    StepNode,
    WaitEventNode,
)

__all__ = ["CodeChecker", "Finding"]

_MISSING = object()
_MAX_SOURCE = 100_000
"""A stored graph is read back from the database, which is not trusted: its source text is
only parsed (never compiled or run here), and text no real node holds is skipped."""


@dataclass(frozen=True)
class Finding:
    """One reason a node cannot run on today's code (or, `strands=False`, a warning)."""

    node: str
    line: int
    message: str
    strands: bool = True

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else f"node {self.node}"
        return f"{self.message} ({where})"


def _sources(node: Any, self_name: str) -> Iterator[str]:
    """The Python source snippets a node evaluates."""
    if isinstance(node, BlockNode):
        yield from (s.src for s in node.code)
    elif isinstance(node, ChoiceNode):
        yield node.cond
    elif isinstance(node, StepNode):
        kwargs = [f"{k}={v}" if k else f"**{v}" for k, v in node.kwargs]
        yield f"{node.call}({', '.join([*node.args, *kwargs])})"
    elif isinstance(node, SendNode):
        yield from (node.event, node.data)
    elif isinstance(node, SleepNode):
        yield from (s for s in (node.duration, node.until) if s)
    elif isinstance(node, ApprovalNode):
        yield node.request
    elif isinstance(node, WaitEventNode):
        yield from (s for s in (node.event, node.match, node.timeout) if s)
    elif isinstance(node, CascadeNode):
        yield from (node.task, node.threshold, *(src for _, src in node.tiers))
    elif isinstance(node, FailNode):
        yield node.expr


def _parse(src: str) -> ast.AST | None:
    text = textwrap.dedent(src).strip()
    if len(text) > _MAX_SOURCE:
        return None
    for mode in ("exec", "eval"):
        try:
            return ast.parse(text, mode=mode)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return None  # a fragment (a loop header, say), or text no compiler made: nothing to check


def _placeholders(call: ast.Call) -> tuple[list[object], dict[str, object]] | None:
    """Stand-ins for a call's arguments, or None when it spreads some (`*xs`, `**kw`)."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        return None
    return [object() for _ in call.args], {k.arg: object() for k in call.keywords if k.arg}


class CodeChecker:
    """Checks graphs' nodes against one app's classes; caches per graph and per method."""

    def __init__(self, owner: type[Any] | None, classes: Mapping[str, type[Any]]) -> None:
        self.owner = owner
        self.classes = classes
        self._methods: dict[tuple[str, str, tuple[int, tuple[str, ...]] | None], str | None] = {}

    def node(self, graph: Graph, node_id: str) -> list[Finding]:
        node = graph.nodes[node_id]
        found: list[Finding] = []
        for src in _sources(node, graph.self_name):
            tree = _parse(src)
            if tree is None:
                continue
            for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                message, strands = self._call(call, graph.self_name)
                if message:
                    found.append(Finding(node_id, node.line, message, strands))
        if isinstance(node, StepNode) and node.compensate:
            message = self.compensation(node.compensate)
            if message:
                found.append(Finding(node_id, node.line, message))
        return found

    def compensation(self, method: str) -> str | None:
        """Why the compensation `method` (it receives the step's result) cannot run, if so."""
        if self.owner is None:
            return None
        return self._method(self.owner, method, (1, ()), "compensation")

    def _call(self, call: ast.Call, self_name: str) -> tuple[str | None, bool]:
        func = call.func
        if not isinstance(func, ast.Attribute):
            return None, True
        target = func.value
        if isinstance(target, ast.Name) and target.id == self_name and self.owner is not None:
            if func.attr[:1].isupper() or func.attr.startswith("__dotdo"):
                return None, True  # a stub factory (`self.Inventory(id)`) or the engine's own
            return self._method(self.owner, func.attr, _shape(call), "calls"), True
        if (
            isinstance(target, ast.Call)
            and isinstance(target.func, ast.Attribute)
            and isinstance(target.func.value, ast.Name)
            and target.func.value.id == self_name
            and target.func.attr[:1].isupper()
        ):
            name = target.func.attr
            cls = self.classes.get(name)
            if cls is None:
                return (
                    f"calls entity {name}.{func.attr}, and {name} is not registered with "
                    "this app (fine if another server hosts it)",
                    False,
                )
            return self._method(cls, func.attr, _shape(call), "calls entity"), True
        return None, True

    def _method(
        self,
        cls: type[Any],
        name: str,
        shape: tuple[int, tuple[str, ...]] | None,
        what: str,
    ) -> str | None:
        key = (cls.__qualname__, name, shape)
        if key not in self._methods:
            self._methods[key] = _method_problem(cls, name, shape, what)
        return self._methods[key]


def _shape(call: ast.Call) -> tuple[int, tuple[str, ...]] | None:
    placeholders = _placeholders(call)
    if placeholders is None:
        return None
    return len(placeholders[0]), tuple(sorted(placeholders[1]))


def _method_problem(
    cls: type[Any], name: str, shape: tuple[int, tuple[str, ...]] | None, what: str
) -> str | None:
    label = f"{cls.__name__}.{name}"
    static = inspect.getattr_static(cls, name, _MISSING)
    if static is _MISSING:
        return f"{what} {label}, which the current code does not define"
    found = getattr(cls, name, None)
    if not callable(found):
        return f"{what} {label}, which is no longer callable in the current code"
    fn = getattr(found, "fn", found)
    try:
        signature = inspect.signature(found)
    except (TypeError, ValueError):
        return None  # a builtin or C callable: nothing to compare
    if shape is not None:
        count, names = shape
        takes_self = not isinstance(static, staticmethod | classmethod)
        args = [object()] * (count + takes_self)
        try:
            signature.bind(*args, **dict.fromkeys(names))
        except TypeError as exc:
            params = ", ".join(signature.parameters)
            return f"{what} {label}({params}) with arguments it no longer accepts ({exc})"
    try:
        typing.get_type_hints(fn)
    except Exception as exc:  # NameError for a removed class, anything an annotation raises
        return f"{label} has annotations the current code cannot load ({type(exc).__name__}: {exc})"
    return None
