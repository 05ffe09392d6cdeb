"""The typed syntax tree of a `.flow` file.

The parser builds it, the checker and the compiler read it, the formatter prints it back.
Positions never take part in equality (`compare=False`), so two trees that print the same
compare equal wherever they came from: that is what the formatter's round-trip property
tests, and why a tree built by hand in a test needs no positions at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Literal, TypeAlias

__all__ = [
    "NOPOS",
    "Approval",
    "Assign",
    "Attr",
    "BinOp",
    "BoolOp",
    "Break",
    "Call",
    "Cascade",
    "Comment",
    "Compare",
    "Const",
    "Continue",
    "DictLit",
    "Do",
    "Duration",
    "Every",
    "Expr",
    "ExprStmt",
    "Fail",
    "Field",
    "For",
    "Handler",
    "If",
    "IfExp",
    "Import",
    "Index",
    "Item",
    "Keyword",
    "ListLit",
    "Module",
    "Name",
    "Node",
    "On",
    "Options",
    "Param",
    "Pass",
    "Pos",
    "Return",
    "Send",
    "Sleep",
    "StepDecl",
    "Stmt",
    "Str",
    "Tier",
    "Try",
    "TypeName",
    "TypeRef",
    "TypeUnion",
    "UnaryOp",
    "Use",
    "WaitFor",
    "While",
    "Workflow",
    "walk",
]


@dataclass(frozen=True)
class Pos:
    """1-based line and column of a node's first character, and of the end of its text."""

    line: int = 0
    col: int = 0
    end_line: int = 0
    end_col: int = 0


NOPOS = Pos()


@dataclass(frozen=True)
class Node:
    pos: Pos = field(default=NOPOS, compare=False, repr=False, kw_only=True)


# ------------------------------------------------------------------------ expressions
@dataclass(frozen=True)
class Const(Node):
    """`true`, `false`, `null`, an int or a float (never negative: `-1` is a UnaryOp)."""

    value: bool | int | float | None


@dataclass(frozen=True)
class Str(Node):
    """A string; `parts` alternate literal text and `{expr}` interpolations."""

    parts: tuple[str | Expr, ...]

    @property
    def literal(self) -> str | None:
        """The text when the string has no interpolation."""
        if all(isinstance(p, str) for p in self.parts):
            return "".join(p for p in self.parts if isinstance(p, str))
        return None


@dataclass(frozen=True)
class Duration(Node):
    """`30s`, `15m`, `1.5h`, `7d`: kept as written so it prints back the same."""

    amount: int | float
    unit: Literal["ms", "s", "m", "h", "d", "w"]

    @property
    def seconds(self) -> float:
        return float(self.amount) * UNIT_SECONDS[self.unit]


UNIT_SECONDS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Attr(Node):
    value: Expr
    name: str


@dataclass(frozen=True)
class Index(Node):
    value: Expr
    index: Expr


@dataclass(frozen=True)
class Keyword(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Call(Node):
    """A call; the checker allows only steps (under do/try), builtins and imported types."""

    func: Expr
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()

    @property
    def name(self) -> str | None:
        return self.func.id if isinstance(self.func, Name) else None


@dataclass(frozen=True)
class BinOp(Node):
    op: Literal["+", "-", "*", "/", "//", "%"]
    left: Expr
    right: Expr


@dataclass(frozen=True)
class UnaryOp(Node):
    op: Literal["-", "+", "not"]
    operand: Expr


@dataclass(frozen=True)
class Compare(Node):
    """`a < b <= c`: one left operand, then (operator, operand) pairs."""

    left: Expr
    ops: tuple[str, ...]
    comparators: tuple[Expr, ...]


@dataclass(frozen=True)
class BoolOp(Node):
    op: Literal["and", "or"]
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class IfExp(Node):
    body: Expr
    test: Expr
    orelse: Expr


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class DictLit(Node):
    """Keys are text: `{status: "ok"}` and `{"status": "ok"}` are the same dict."""

    items: tuple[tuple[str, Expr], ...] = ()


Expr: TypeAlias = (
    Const
    | Str
    | Duration
    | Name
    | Attr
    | Index
    | Call
    | BinOp
    | UnaryOp
    | Compare
    | BoolOp
    | IfExp
    | ListLit
    | DictLit
)


# ------------------------------------------------------------------------ types
@dataclass(frozen=True)
class TypeName(Node):
    """`Order`, `list[Item]`, `dict[str, int]`; `null` is the name "null"."""

    name: str
    args: tuple[TypeRef, ...] = ()


@dataclass(frozen=True)
class TypeUnion(Node):
    options: tuple[TypeName, ...]


TypeRef: TypeAlias = TypeName | TypeUnion


# ------------------------------------------------------------------------ statements
@dataclass(frozen=True)
class Options(Node):
    """Step options, at a declaration or a call site. Fields hold literals (numbers or
    durations) so they print back as written; the compiler turns them into a Policy."""

    step_id: str | None = None
    retries: Expr | None = None
    backoff: Expr | None = None
    delay: Expr | None = None
    max_delay: Expr | None = None
    timeout: Expr | None = None
    compensate: str | None = None

    def given(self) -> list[str]:
        return [
            f.name for f in fields(self) if f.name != "pos" and getattr(self, f.name) is not None
        ]


NO_OPTIONS = Options()


@dataclass(frozen=True)
class Assign(Node):
    target: str
    value: Expr


@dataclass(frozen=True)
class ExprStmt(Node):
    """An expression on its own line: legal syntax, always reported by the checker."""

    value: Expr


@dataclass(frozen=True)
class Do(Node):
    """`x = do step(args)` (durable, retried) or `x = try step(args)` (single attempt)."""

    mode: Literal["do", "try"]
    call: Call
    target: str | None = None
    options: Options = NO_OPTIONS


@dataclass(frozen=True)
class Send(Node):
    event: Str
    data: Expr | None = None


@dataclass(frozen=True)
class Sleep(Node):
    """`sleep 1h` (a duration) or `sleep until when` (a datetime)."""

    value: Expr
    until: bool = False


@dataclass(frozen=True)
class Field(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Approval(Node):
    name: str
    fields: tuple[Field, ...]
    target: str | None = None


@dataclass(frozen=True)
class WaitFor(Node):
    event: Str
    where: Expr | None = None
    timeout: Expr | None = None
    target: str | None = None
    step_id: str | None = None


@dataclass(frozen=True)
class Tier(Node):
    name: str
    call: Call


@dataclass(frozen=True)
class Cascade(Node):
    task: str
    tiers: tuple[Tier, ...]
    threshold: Expr | None = None
    target: str | None = None
    step_id: str | None = None


@dataclass(frozen=True)
class If(Node):
    """`elif` is an If alone in `orelse`; the formatter prints it back as `elif`."""

    test: Expr
    body: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class For(Node):
    var: str
    iter: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class While(Node):
    test: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Handler(Node):
    """`except A, B as e:`; no types catches everything."""

    types: tuple[str, ...]
    name: str | None
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Try(Node):
    body: tuple[Stmt, ...]
    handlers: tuple[Handler, ...] = ()
    finalbody: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class Return(Node):
    value: Expr | None = None


@dataclass(frozen=True)
class Fail(Node):
    """`fail "reason"` stops the run with an error; a bare `fail` re-raises in `except`."""

    value: Expr | None = None


@dataclass(frozen=True)
class Break(Node):
    pass


@dataclass(frozen=True)
class Continue(Node):
    pass


@dataclass(frozen=True)
class Pass(Node):
    pass


Stmt: TypeAlias = (
    Assign
    | ExprStmt
    | Do
    | Send
    | Sleep
    | Approval
    | WaitFor
    | Cascade
    | If
    | For
    | While
    | Try
    | Return
    | Fail
    | Break
    | Continue
    | Pass
)


# ------------------------------------------------------------------------ top level
@dataclass(frozen=True)
class Use(Node):
    """`use examples.flow_steps`: declared steps are looked up in this module."""

    module: str


@dataclass(frozen=True)
class Import(Node):
    """`import examples.orders: Order, Receipt`: types for parameters and values."""

    module: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class StepDecl(Node):
    """`step charge retries 3` or `step refund = examples.flow_steps:refund`."""

    name: str
    module: str | None = None
    function: str | None = None
    options: Options = NO_OPTIONS


@dataclass(frozen=True)
class Param(Node):
    name: str
    type: TypeRef | None = None
    default: Expr | None = None


@dataclass(frozen=True)
class Workflow(Node):
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    returns: TypeRef | None = None


@dataclass(frozen=True)
class Every(Node):
    """`every 15 minutes`, `every day at 6pm timezone "Europe/Paris"`, `every monday at 9am`."""

    unit: str
    target: str
    count: int | float | None = None
    at: str | None = None
    timezone: str | None = None


@dataclass(frozen=True)
class On(Node):
    """`on Order.placed run confirm`; segments may be `*`."""

    pattern: str
    target: str


Item: TypeAlias = Use | Import | StepDecl | Workflow | Every | On


@dataclass(frozen=True)
class Comment:
    line: int
    col: int
    text: str


@dataclass(frozen=True)
class Module(Node):
    items: tuple[Item, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)


def walk(node: object) -> Iterator[Node]:
    """Every node under `node` (itself included), depth first, in source order."""
    if isinstance(node, Node):
        yield node
        for f in fields(node):
            if f.name != "pos":
                yield from walk(getattr(node, f.name))
    elif isinstance(node, tuple):
        for item in node:
            yield from walk(item)
