"""Questions about a flow tree that the checker and the compiler both ask.

Which names a workflow binds, which statements hold a durable operation (and so must be
split by the lowering), what a `where` clause asks of an event: answered once here, so the
checker cannot accept a shape the compiler would read differently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.builtins import RECORDED

__all__ = [
    "APPROVAL_FIELDS",
    "CASCADE_TIERS",
    "approval_value_problem",
    "assigned_names",
    "is_durable",
    "is_literal",
    "match_fields",
    "record_call",
    "statements",
]

APPROVAL_FIELDS = (
    "type",
    "title",
    "description",
    "amount",
    "requested_by",
    "approver",
    "approvers",
    "deadline",
    "priority",
    "extra",
)
CASCADE_TIERS = ("code", "generative", "agentic", "human")

_DURABLE = (A.Do, A.Send, A.Sleep, A.Approval, A.WaitFor, A.Cascade)


def assigned_names(body: Iterable[A.Stmt]) -> dict[str, A.Pos]:
    """Names a workflow body binds, each with where it is first bound (source order)."""
    found: dict[str, A.Pos] = {}
    for stmt in statements(body):
        for name in _binds(stmt):
            found.setdefault(name, stmt.pos)
    return found


def _binds(stmt: A.Stmt) -> Iterator[str]:
    if isinstance(stmt, A.Assign):
        yield stmt.target
    elif isinstance(stmt, A.Do | A.Approval | A.WaitFor | A.Cascade) and stmt.target:
        yield stmt.target
    elif isinstance(stmt, A.For):
        yield stmt.var
    elif isinstance(stmt, A.Try):
        for handler in stmt.handlers:
            if handler.name:
                yield handler.name


def statements(body: Iterable[A.Stmt]) -> Iterator[A.Stmt]:
    """Every statement, nested ones included, in source order."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, A.If):
            yield from statements(stmt.body)
            yield from statements(stmt.orelse)
        elif isinstance(stmt, A.For | A.While):
            yield from statements(stmt.body)
        elif isinstance(stmt, A.Try):
            yield from statements(stmt.body)
            for handler in stmt.handlers:
                yield from statements(handler.body)
            yield from statements(stmt.finalbody)


def is_durable(stmt: A.Stmt) -> bool:
    """Whether lowering must split `stmt` (it holds a durable operation somewhere)."""
    for inner in statements((stmt,)):
        if isinstance(inner, _DURABLE):
            return True
        if isinstance(inner, A.Assign) and record_call(inner.value):
            return True
    return False


def record_call(value: A.Expr) -> str | None:
    """`now()`, `uuid()` or `random()`: a recorded value, when it is a whole right side."""
    if isinstance(value, A.Call) and value.name in RECORDED and not value.args and not value.kwargs:
        return value.name
    return None


Report = Callable[..., None]
"""`report(pos, message, expected=None, code=...)`: where the checker wants problems."""


def match_fields(where: A.Expr, report: Report | None = None) -> list[tuple[str, A.Expr]]:
    """`event.a == x and event.b == y` -> [("a", x), ("b", y)]: what the event must carry.

    The engine matches an event by equality of its data's fields, so that is all a `where`
    clause can say; anything else is reported (when `report` is given) and skipped.
    """
    terms = where.values if isinstance(where, A.BoolOp) and where.op == "and" else (where,)
    found: list[tuple[str, A.Expr]] = []
    for term in terms:
        pair = _match_term(term)
        if pair is None:
            if report is not None:
                report(
                    term.pos,
                    "a `where` clause compares fields of the event with `==`, joined by `and`",
                    'like `where event.order_id == order.id and event.status == "ok"`',
                    code="bad-where",
                )
            continue
        if report is not None and _mentions_event(pair[1]):
            report(pair[1].pos, "compare the event's field with a value of this run")
        found.append(pair)
    return found


def _match_term(term: A.Expr) -> tuple[str, A.Expr] | None:
    if not (isinstance(term, A.Compare) and term.ops == ("==",)):
        return None
    left, right = term.left, term.comparators[0]
    for side, other in ((left, right), (right, left)):
        field_name = _event_field(side)
        if field_name is not None:
            return field_name, other
    return None


def _event_field(e: A.Expr) -> str | None:
    if isinstance(e, A.Attr) and isinstance(e.value, A.Name) and e.value.id == "event":
        return e.name
    if (
        isinstance(e, A.Index)
        and isinstance(e.value, A.Name)
        and e.value.id == "event"
        and isinstance(e.index, A.Str)
        and e.index.literal is not None
    ):
        return e.index.literal
    return None


def _mentions_event(e: A.Expr) -> bool:
    return any(isinstance(n, A.Name) and n.id == "event" for n in A.walk(e))


def is_literal(e: A.Expr) -> bool:
    if isinstance(e, A.Const | A.Duration):
        return True
    if isinstance(e, A.Str):
        return e.literal is not None
    if isinstance(e, A.UnaryOp) and e.op in ("-", "+"):
        return isinstance(e.operand, A.Const)
    if isinstance(e, A.ListLit):
        return all(is_literal(i) for i in e.items)
    if isinstance(e, A.DictLit):
        return all(is_literal(v) for _, v in e.items)
    return False


_LITERAL = (A.Str, A.Const, A.ListLit, A.DictLit, A.Duration)
_NAMED = {"approver": "the approver's name", "type": "the approval type"}


def approval_value_problem(name: str, value: A.Expr) -> tuple[str, str] | None:
    """(message, expected) when an approval field's literal value cannot work, else None.

    The engine would refuse these at run time, after the run had come this far; the text
    already shows them: nobody to approve, an empty name, a deadline not in the future.
    """
    if name == "approvers" and isinstance(value, A.ListLit):
        if not value.items:
            return "`approvers: []` names nobody", 'list who decides: ["manager", "vp"]'
        for item in value.items:
            if isinstance(item, A.Str) and item.literal == "":
                return "an approver's name is empty", 'give a name, like "manager"'
            if isinstance(item, _LITERAL) and not isinstance(item, A.Str):
                return "each approver is a name (text)", 'like ["manager", "vp"]'
        return None
    if name in ("approvers", "approver", "type"):
        if isinstance(value, A.Str):
            if value.literal == "":
                what = _NAMED.get(name, "an approver's name")
                return f"{what} is empty", 'give a name, like "manager"'
            return None
        if isinstance(value, _LITERAL):
            expected = {
                "approvers": 'a list of names, like ["manager", "vp"]',
                "approver": 'one name, like "manager"',
                "type": 'text, like "purchase"',
            }[name]
            return f"`{name}` takes {expected.split(',')[0]}", expected
        return None
    if name == "deadline":
        duration = value.operand if isinstance(value, A.UnaryOp) else value
        negative = isinstance(value, A.UnaryOp) and value.op == "-"
        if isinstance(duration, A.Duration) and (negative or duration.seconds <= 0):
            return "a deadline must be in the future", "give a positive duration, like 7d"
    if name == "extra" and isinstance(value, _LITERAL) and not isinstance(value, A.DictLit):
        return "`extra` is a dict of more fields", "like extra: {cost_center: 42}"
    return None
