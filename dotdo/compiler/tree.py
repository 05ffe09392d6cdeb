"""The structured tree both front ends build and the one lowering (`dotdo.compiler.lower`) reads.

A front end (a Python method, a `.flow` workflow) resolves everything that is its own —
which calls are durable, hoisting them out of expressions, its names for builtins, its
errors — and hands over only this: plain Python statements, durable operations as IR
nodes still lacking their id, step name and loop qualifiers, and the structured statements
that contain durable operations (if, while, for, try/except/else/finally). Ids, hidden
counters, step names, loop qualifiers, regions and validation are the lowering's alone, so
a `.flow` file and its Python twin cannot drift apart.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field

from dotdo.compiler.ir import Node, Param

__all__ = [
    "For",
    "Handler",
    "If",
    "Op",
    "Plain",
    "Stmt",
    "Try",
    "While",
    "Workflow",
    "plain_at",
    "walk",
]


@dataclass
class Plain:
    """A statement without durable operations (it may nest if/while/try, return, raise)."""

    stmt: ast.stmt

    @property
    def line(self) -> int:
        return self.stmt.lineno


def plain_at(src: str, line: int) -> list[Plain]:
    """Generated Python statements (bindings, counters) placed at `line` of the source."""
    out = []
    for stmt in ast.parse(src).body:
        for inner in ast.walk(stmt):
            if "lineno" in inner._attributes:
                inner.lineno = line  # type: ignore[attr-defined]
                inner.col_offset = 0  # type: ignore[attr-defined]
        out.append(Plain(ast.fix_missing_locations(stmt)))
    return out


@dataclass
class Op:
    """A durable operation: its IR node with `id` (and `name`, `loops`) left to the lowering.

    `node.name` set means an explicit step id; otherwise the lowering names it from `base`
    (`charge`, `charge_2`, ...). A send has neither.
    """

    node: Node
    base: str | None = None

    @property
    def line(self) -> int:
        return self.node.line

    @property
    def explicit_name(self) -> str | None:
        return getattr(self.node, "name", None) or None


@dataclass
class If:
    line: int
    test: str
    body: list[Stmt]
    orelse: list[Stmt] = field(default_factory=list)


@dataclass
class While:
    line: int
    test: str
    test_ops: list[Stmt] = field(default_factory=list)
    """Durable operations hoisted out of the test: they run at each loop head."""
    body: list[Stmt] = field(default_factory=list)
    orelse: list[Stmt] = field(default_factory=list)


@dataclass
class For:
    line: int
    target: str
    iter: str
    body: list[Stmt]
    orelse: list[Stmt] = field(default_factory=list)
    iter_through: str | None = None
    """A function the iterable passes through once (`.flow`'s `__flow_iter`); without one,
    anything but a list, tuple, range or string is stored as a list."""


@dataclass
class Handler:
    line: int
    test: str | None
    """The dispatch condition on the caught `__exc` (`isinstance(__exc, KeyError)`), or
    None for a bare `except:`, which must come last."""
    name: str | None
    body: list[Stmt]


@dataclass
class Try:
    line: int
    body: list[Stmt]
    handlers: list[Handler] = field(default_factory=list)
    orelse: list[Stmt] = field(default_factory=list)
    finalbody: list[Stmt] = field(default_factory=list)
    final_lines: tuple[int, int] = (0, 0)
    """First and last line of the `finally` body, as the source shows them."""


Stmt = Plain | Op | If | While | For | Try


@dataclass
class Workflow:
    """One workflow, ready for lowering."""

    name: str
    file: str
    line: int
    end_line: int
    params: list[Param]
    body: list[Stmt]
    bound: dict[str, int]
    """Names the body binds (its own locals), with the line each is first bound on."""
    self_name: str = "self"
    returns: str | None = None
    hidden: dict[str, int] = field(default_factory=dict)
    """Temporaries the front end introduced (hoisted values), with their lines."""


def walk(body: list[Stmt]) -> Iterator[Stmt]:
    """Every statement of `body`, nested ones included, in source order."""
    for s in body:
        yield s
        if isinstance(s, If):
            yield from walk(s.body)
            yield from walk(s.orelse)
        elif isinstance(s, While):
            yield from walk(s.test_ops)
            yield from walk(s.body)
            yield from walk(s.orelse)
        elif isinstance(s, For):
            yield from walk(s.body)
            yield from walk(s.orelse)
        elif isinstance(s, Try):
            yield from walk(s.body)
            for h in s.handlers:
                yield from walk(h.body)
            yield from walk(s.orelse)
            yield from walk(s.finalbody)
