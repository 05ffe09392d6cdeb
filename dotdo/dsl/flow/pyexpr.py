"""Flow expressions as Python expressions, built through Python's own `ast`.

Generating trees, not text, means precedence and quoting are Python's business: the code
stored in the graph is `ast.unparse` of exactly the constructs the flow tree allows.
"""

from __future__ import annotations

import ast

from dotdo.dsl.flow import nodes as A

__all__ = ["py_expr", "src", "type_text"]

_BINOPS: dict[str, type[ast.operator]] = {
    "+": ast.Add,
    "-": ast.Sub,
    "*": ast.Mult,
    "/": ast.Div,
    "//": ast.FloorDiv,
    "%": ast.Mod,
}
_CMPOPS: dict[str, type[ast.cmpop]] = {
    "==": ast.Eq,
    "!=": ast.NotEq,
    "<": ast.Lt,
    "<=": ast.LtE,
    ">": ast.Gt,
    ">=": ast.GtE,
    "in": ast.In,
    "not in": ast.NotIn,
}
_UNITS = {
    "ms": "milliseconds",
    "s": "seconds",
    "m": "minutes",
    "h": "hours",
    "d": "days",
    "w": "weeks",
}


def py_expr(e: A.Expr) -> ast.expr:
    """A flow expression as a Python expression tree (the checker has vetted every name)."""
    if isinstance(e, A.Const):
        return ast.Constant(e.value)
    if isinstance(e, A.Str):
        literal = e.literal
        if literal is not None:
            return ast.Constant(literal)
        values: list[ast.expr] = [
            ast.Constant(p) if isinstance(p, str) else ast.FormattedValue(py_expr(p), -1, None)
            for p in e.parts
            if p != ""
        ]
        return ast.JoinedStr(values)
    if isinstance(e, A.Duration):
        return ast.Call(
            ast.Name("timedelta", ast.Load()),
            [],
            [ast.keyword(_UNITS[e.unit], ast.Constant(e.amount))],
        )
    if isinstance(e, A.Name):
        return ast.Name(e.id, ast.Load())
    if isinstance(e, A.Attr):
        return ast.Attribute(py_expr(e.value), e.name, ast.Load())
    if isinstance(e, A.Index):
        return ast.Subscript(py_expr(e.value), py_expr(e.index), ast.Load())
    if isinstance(e, A.Call):
        return ast.Call(
            py_expr(e.func),
            [py_expr(a) for a in e.args],
            [ast.keyword(k.name, py_expr(k.value)) for k in e.kwargs],
        )
    if isinstance(e, A.BinOp):
        return ast.BinOp(py_expr(e.left), _BINOPS[e.op](), py_expr(e.right))
    if isinstance(e, A.UnaryOp):
        op: ast.unaryop = {"-": ast.USub, "+": ast.UAdd, "not": ast.Not}[e.op]()
        return ast.UnaryOp(op, py_expr(e.operand))
    if isinstance(e, A.Compare):
        return ast.Compare(
            py_expr(e.left), [_CMPOPS[o]() for o in e.ops], [py_expr(c) for c in e.comparators]
        )
    if isinstance(e, A.BoolOp):
        boolop = ast.And() if e.op == "and" else ast.Or()
        return ast.BoolOp(boolop, [py_expr(v) for v in e.values])
    if isinstance(e, A.IfExp):
        return ast.IfExp(py_expr(e.test), py_expr(e.body), py_expr(e.orelse))
    if isinstance(e, A.ListLit):
        return ast.List([py_expr(i) for i in e.items], ast.Load())
    if isinstance(e, A.DictLit):
        return ast.Dict([ast.Constant(k) for k, _ in e.items], [py_expr(v) for _, v in e.items])
    raise TypeError(f"not an expression: {e!r}")


def src(e: A.Expr) -> str:
    return ast.unparse(ast.fix_missing_locations(py_expr(e)))


def type_text(ref: A.TypeRef) -> str:
    """A type as Python spells it (`null` is None), for Param.annotation and Graph.returns."""
    if isinstance(ref, A.TypeUnion):
        return " | ".join(type_text(t) for t in ref.options)
    if ref.name == "null":
        return "None"
    if ref.args:
        return f"{ref.name}[{', '.join(type_text(a) for a in ref.args)}]"
    return ref.name
