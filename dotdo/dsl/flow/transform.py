"""Lark's parse tree -> the frozen dataclasses of `flow_ast`.

The rest of the compiler never sees a Lark type. String interpolation is parsed here, by the
grammar's `expr` rule, with positions shifted into the string so an error inside braces
points at the right column. Problems that do not stop the tree from being built (an unknown
escape, an option given twice) are collected rather than raised, so the parser can report
them together.
"""

from __future__ import annotations

from typing import Any, cast

from lark import Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError
from lark.tree import Meta

from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowSyntaxError
from dotdo.dsl.flow.grammar import BadIndent, lark_parser, source_line
from dotdo.dsl.flow.syntax import explain

__all__ = ["Builder"]


def _tok_pos(tok: Token, line: int = 0, col: int = 0) -> A.Pos:
    if line:
        return A.Pos(line, col + (tok.column or 1) - 1, line, col + (tok.end_column or 1) - 1)
    return A.Pos(tok.line or 0, tok.column or 0, tok.end_line or 0, tok.end_column or 0)


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


@v_args(meta=True)
class Builder(Transformer[Token, Any]):
    """Parse tree -> flow_ast. `line`/`col` shift positions for interpolated expressions."""

    def __init__(self, text: str, path: str, line: int = 0, col: int = 0) -> None:
        super().__init__()
        self.text = text
        self.path = path
        self.line = line
        self.col = col
        self.problems: list[Diagnostic] = []

    def _build(self, tree: Any) -> A.Module:
        try:
            module = self.transform(tree)
        except VisitError as exc:
            if isinstance(exc.orig_exc, FlowSyntaxError):
                raise exc.orig_exc from None
            raise
        assert isinstance(module, A.Module)
        return module

    def _expression(self, text: str, *, line: int, col: int) -> A.Expr:
        sub = Builder(self.text, self.path, line, col)
        try:
            tree = lark_parser().parse(text, start="expr")
        except (UnexpectedInput, BadIndent) as exc:
            diag = explain(exc, text, self.path, inside=(self.text, line, col))
            raise FlowSyntaxError([diag]) from None
        try:
            result = sub.transform(tree)
        except VisitError as exc:
            if isinstance(exc.orig_exc, FlowSyntaxError):
                raise exc.orig_exc from None
            raise
        self.problems.extend(sub.problems)
        return cast(A.Expr, result)

    # -- helpers
    def _pos(self, meta: Meta) -> A.Pos:
        if meta.empty:
            return A.NOPOS
        if self.line:
            return A.Pos(
                self.line,
                self.col + meta.column - 1,
                self.line,
                self.col + meta.end_column - 1,
            )
        return A.Pos(meta.line, meta.column, meta.end_line, meta.end_column)

    def _problem(self, pos: A.Pos, message: str, expected: str | None = None) -> None:
        self.problems.append(
            Diagnostic(
                self.path,
                pos.line,
                pos.col,
                message,
                expected,
                source_line(self.text, pos.line),
                code="syntax",
            )
        )

    def _text(self, tok: Token) -> str:
        """A string token's text (escapes decoded) when it has no interpolation."""
        value = self._string(tok)
        literal = value.literal
        if literal is None:
            self._problem(value.pos, "this string cannot contain {…} here")
            return ""
        return literal

    def _string(self, tok: Token) -> A.Str:
        raw = str(tok)
        body = raw[1:-1]
        pos = _tok_pos(tok, self.line, self.col)
        base = pos.col + 1  # column of body[0]
        parts: list[str | A.Expr] = []
        buf: list[str] = []
        i = 0
        while i < len(body):
            ch = body[i]
            if ch == "\\":
                nxt = body[i + 1] if i + 1 < len(body) else ""
                if nxt in _ESCAPES:
                    buf.append(_ESCAPES[nxt])
                else:
                    where = A.Pos(pos.line, base + i, pos.line, base + i + 2)
                    self._problem(
                        where,
                        f"unknown escape '\\{nxt}' in a string",
                        "use \\n, \\t, \\\\, \\\" or \\'; write {{ and }} for braces",
                    )
                i += 2
                continue
            if ch == "{" and body[i : i + 2] == "{{":
                buf.append("{")
                i += 2
                continue
            if ch == "}":
                if body[i : i + 2] == "}}":
                    buf.append("}")
                    i += 2
                    continue
                where = A.Pos(pos.line, base + i, pos.line, base + i + 1)
                self._problem(where, "a single '}' in a string", "write '}}' for a literal brace")
                i += 1
                continue
            if ch == "{":
                end = _closing_brace(body, i)
                if end < 0:
                    where = A.Pos(pos.line, base + i, pos.line, base + i + 1)
                    self._problem(
                        where, "this '{' in a string is never closed", "write '{{' for a brace"
                    )
                    break
                inner = body[i + 1 : end]
                if not inner.strip():
                    where = A.Pos(pos.line, base + i, pos.line, base + end + 1)
                    self._problem(where, "empty {} in a string", "put a value inside: {order.id}")
                else:
                    if buf:
                        parts.append("".join(buf))
                        buf = []
                    parts.append(self._expression(inner, line=pos.line, col=base + i + 1))
                i = end + 1
                continue
            buf.append(ch)
            i += 1
        if buf or not parts:
            parts.append("".join(buf))
        return A.Str(tuple(parts), pos=pos)

    def _options(self, items: list[Any], pos: A.Pos) -> A.Options:
        found: dict[str, Any] = {}
        for name, value, where in items:
            if name in found:
                self._problem(where, f"`{_OPTION_WORDS[name]}` is given twice")
            found[name] = value
        return A.Options(pos=pos, **found)

    # -- top level
    def start(self, meta: Meta, items: list[A.Item]) -> A.Module:
        return A.Module(tuple(items), pos=self._pos(meta))

    def use_decl(self, meta: Meta, c: list[Any]) -> A.Use:
        return A.Use(c[0], pos=self._pos(meta))

    def import_decl(self, meta: Meta, c: list[Any]) -> A.Import:
        return A.Import(c[0], tuple(str(t) for t in c[1:]), pos=self._pos(meta))

    def dotted(self, meta: Meta, c: list[Token]) -> str:
        return ".".join(str(t) for t in c)

    def binding(self, meta: Meta, c: list[Any]) -> tuple[str, str]:
        return c[0], str(c[1])

    def step_decl(self, meta: Meta, c: list[Any]) -> A.StepDecl:
        name, binding, *opts = c
        module, function = binding if binding is not None else (None, None)
        pos = self._pos(meta)
        return A.StepDecl(str(name), module, function, self._options(opts, pos), pos=pos)

    def _opt(self, name: str, meta: Meta, c: list[Any]) -> tuple[str, Any, A.Pos]:
        value = c[0]
        if name in ("compensate",):
            value = str(value)
        elif name == "step_id":
            value = self._text(value)
        return name, value, self._pos(meta)

    def opt_retries(self, meta: Meta, c: list[Any]) -> tuple[str, Any, A.Pos]:
        return self._opt("retries", meta, c)

    def opt_backoff(self, meta: Meta, c: list[Any]) -> tuple[str, Any, A.Pos]:
        return self._opt("backoff", meta, c)

    def opt_delay(self, meta: Meta, c: list[Any]) -> tuple[str, Any, A.Pos]:
        return self._opt("delay", meta, c)

    def opt_max_delay(self, meta: Meta, c: list[Any]) -> tuple[str, Any, A.Pos]:
        return self._opt("max_delay", meta, c)

    def opt_timeout(self, meta: Meta, c: list[Any]) -> tuple[str, Any, A.Pos]:
        return self._opt("timeout", meta, c)

    def opt_compensate(self, meta: Meta, c: list[Any]) -> tuple[str, Any, A.Pos]:
        return self._opt("compensate", meta, c)

    def opt_id(self, meta: Meta, c: list[Any]) -> tuple[str, Any, A.Pos]:
        return self._opt("step_id", meta, c)

    def workflow(self, meta: Meta, c: list[Any]) -> A.Workflow:
        name, params, returns, body = c
        return A.Workflow(str(name), params or (), body, returns, pos=self._pos(meta))

    def params(self, meta: Meta, c: list[A.Param]) -> tuple[A.Param, ...]:
        return tuple(c)

    def param(self, meta: Meta, c: list[Any]) -> A.Param:
        return A.Param(str(c[0]), c[1], c[2], pos=self._pos(meta))

    def type_ref(self, meta: Meta, c: list[A.TypeName]) -> A.TypeRef:
        return c[0] if len(c) == 1 else A.TypeUnion(tuple(c), pos=self._pos(meta))

    def type_name(self, meta: Meta, c: list[Any]) -> A.TypeName:
        return A.TypeName(str(c[0]), tuple(c[1:]), pos=self._pos(meta))

    def type_null(self, meta: Meta, c: list[Any]) -> A.TypeName:
        return A.TypeName("null", pos=self._pos(meta))

    def every_decl(self, meta: Meta, c: list[Any]) -> A.Every:
        count, unit, at, tz, target = c
        return A.Every(
            str(unit),
            str(target),
            _number(str(count)) if count is not None else None,
            str(at) if at is not None else None,
            self._text(tz) if tz is not None else None,
            pos=self._pos(meta),
        )

    def on_decl(self, meta: Meta, c: list[Any]) -> A.On:
        return A.On(c[0], str(c[1]), pos=self._pos(meta))

    def pattern(self, meta: Meta, c: list[str]) -> str:
        return ".".join(c)

    def pattern_str(self, meta: Meta, c: list[Token]) -> str:
        return self._text(c[0])

    def pseg(self, meta: Meta, c: list[Token]) -> str:
        return str(c[0])

    # -- statements
    def block(self, meta: Meta, c: list[A.Stmt]) -> tuple[A.Stmt, ...]:
        return tuple(c)

    def target(self, meta: Meta, c: list[Token]) -> str:
        return str(c[0])

    def assign(self, meta: Meta, c: list[Any]) -> A.Assign:
        return A.Assign(str(c[0]), c[1], pos=self._pos(meta))

    def expr_stmt(self, meta: Meta, c: list[Any]) -> A.ExprStmt:
        return A.ExprStmt(c[0], pos=self._pos(meta))

    def _do(self, mode: str, meta: Meta, c: list[Any]) -> A.Do:
        target, call, *opts = c
        pos = self._pos(meta)
        return A.Do(mode, call, target, self._options(opts, pos), pos=pos)  # type: ignore[arg-type]

    def do_stmt(self, meta: Meta, c: list[Any]) -> A.Do:
        return self._do("do", meta, c)

    def try_call(self, meta: Meta, c: list[Any]) -> A.Do:
        return self._do("try", meta, c)

    def send_stmt(self, meta: Meta, c: list[Any]) -> A.Send:
        return A.Send(self._string(c[0]), c[1], pos=self._pos(meta))

    def sleep_for(self, meta: Meta, c: list[Any]) -> A.Sleep:
        return A.Sleep(c[0], False, pos=self._pos(meta))

    def sleep_until(self, meta: Meta, c: list[Any]) -> A.Sleep:
        return A.Sleep(c[0], True, pos=self._pos(meta))

    def wait_stmt(self, meta: Meta, c: list[Any]) -> A.WaitFor:
        target, event, where, timeout, step_id = c
        return A.WaitFor(
            self._string(event),
            where,
            timeout,
            target,
            self._text(step_id) if step_id is not None else None,
            pos=self._pos(meta),
        )

    def return_stmt(self, meta: Meta, c: list[Any]) -> A.Return:
        return A.Return(c[0], pos=self._pos(meta))

    def fail_stmt(self, meta: Meta, c: list[Any]) -> A.Fail:
        return A.Fail(c[0], pos=self._pos(meta))

    def break_stmt(self, meta: Meta, c: list[Any]) -> A.Break:
        return A.Break(pos=self._pos(meta))

    def continue_stmt(self, meta: Meta, c: list[Any]) -> A.Continue:
        return A.Continue(pos=self._pos(meta))

    def pass_stmt(self, meta: Meta, c: list[Any]) -> A.Pass:
        return A.Pass(pos=self._pos(meta))

    def approval_stmt(self, meta: Meta, c: list[Any]) -> A.Approval:
        target, name, *fields = c
        return A.Approval(self._text(name), tuple(fields), target, pos=self._pos(meta))

    def field(self, meta: Meta, c: list[Any]) -> A.Field:
        return A.Field(str(c[0]), c[1], pos=self._pos(meta))

    def cascade_stmt(self, meta: Meta, c: list[Any]) -> A.Cascade:
        target, task, threshold, step_id, *tiers = c
        return A.Cascade(
            self._text(task),
            tuple(tiers),
            threshold,
            target,
            self._text(step_id) if step_id is not None else None,
            pos=self._pos(meta),
        )

    def tier(self, meta: Meta, c: list[Any]) -> A.Tier:
        return A.Tier(str(c[0]), c[1], pos=self._pos(meta))

    def if_stmt(self, meta: Meta, c: list[Any]) -> A.If:
        test, body, *rest = c
        orelse: tuple[A.Stmt, ...] = rest[-1] if rest and rest[-1] is not None else ()
        for elif_test, elif_body, elif_pos in reversed(rest[:-1]):
            orelse = (A.If(elif_test, elif_body, orelse, pos=elif_pos),)
        return A.If(test, body, orelse, pos=self._pos(meta))

    def elif_clause(self, meta: Meta, c: list[Any]) -> tuple[A.Expr, tuple[A.Stmt, ...], A.Pos]:
        return c[0], c[1], self._pos(meta)

    def else_clause(self, meta: Meta, c: list[Any]) -> tuple[A.Stmt, ...]:
        return cast(tuple[A.Stmt, ...], c[0])

    def for_stmt(self, meta: Meta, c: list[Any]) -> A.For:
        return A.For(str(c[0]), c[1], c[2], pos=self._pos(meta))

    def while_stmt(self, meta: Meta, c: list[Any]) -> A.While:
        return A.While(c[0], c[1], pos=self._pos(meta))

    def try_stmt(self, meta: Meta, c: list[Any]) -> A.Try:
        body, *rest = c
        handlers = tuple(h for h in rest if isinstance(h, A.Handler))
        finalbody = rest[-1] if rest and isinstance(rest[-1], tuple) else ()
        return A.Try(body, handlers, finalbody, pos=self._pos(meta))

    def handler(self, meta: Meta, c: list[Any]) -> A.Handler:
        types, name, body = c
        return A.Handler(
            types or (), str(name) if name is not None else None, body, pos=self._pos(meta)
        )

    def exc_types(self, meta: Meta, c: list[Token]) -> tuple[str, ...]:
        return tuple(str(t) for t in c)

    def finally_clause(self, meta: Meta, c: list[Any]) -> tuple[A.Stmt, ...]:
        return cast(tuple[A.Stmt, ...], c[0])

    # -- expressions
    def ifexp(self, meta: Meta, c: list[Any]) -> A.IfExp:
        return A.IfExp(c[0], c[1], c[2], pos=self._pos(meta))

    def or_test(self, meta: Meta, c: list[Any]) -> A.BoolOp:
        return A.BoolOp("or", tuple(c), pos=self._pos(meta))

    def and_test(self, meta: Meta, c: list[Any]) -> A.BoolOp:
        return A.BoolOp("and", tuple(c), pos=self._pos(meta))

    def not_(self, meta: Meta, c: list[Any]) -> A.UnaryOp:
        return A.UnaryOp("not", c[0], pos=self._pos(meta))

    def comparison(self, meta: Meta, c: list[Any]) -> A.Compare:
        return A.Compare(c[0], tuple(c[1::2]), tuple(c[2::2]), pos=self._pos(meta))

    def comp_op(self, meta: Meta, c: list[Token]) -> str:
        return " ".join(str(t) for t in c)

    def _binary(self, meta: Meta, c: list[Any]) -> A.Expr:
        result: A.Expr = c[0]
        for op, right in zip(c[1::2], c[2::2], strict=True):
            pos = A.Pos(result.pos.line, result.pos.col, right.pos.end_line, right.pos.end_col)
            result = A.BinOp(op, result, right, pos=pos)
        return result

    arith = _binary
    term = _binary

    def add_op(self, meta: Meta, c: list[Token]) -> str:
        return str(c[0])

    mul_op = add_op

    def neg(self, meta: Meta, c: list[Any]) -> A.UnaryOp:
        return A.UnaryOp("-", c[0], pos=self._pos(meta))

    def uplus(self, meta: Meta, c: list[Any]) -> A.UnaryOp:
        return A.UnaryOp("+", c[0], pos=self._pos(meta))

    def attr(self, meta: Meta, c: list[Any]) -> A.Attr:
        return A.Attr(c[0], str(c[1]), pos=self._pos(meta))

    def index(self, meta: Meta, c: list[Any]) -> A.Index:
        return A.Index(c[0], c[1], pos=self._pos(meta))

    def call_expr(self, meta: Meta, c: list[Any]) -> A.Call:
        func, arguments = c
        args: list[A.Expr] = []
        kwargs: list[A.Keyword] = []
        for arg in arguments or ():
            if isinstance(arg, A.Keyword):
                kwargs.append(arg)
            elif kwargs:
                self._problem(
                    arg.pos,
                    "an argument without a name cannot follow a named one",
                    "put the unnamed arguments first",
                )
            else:
                args.append(arg)
        return A.Call(func, tuple(args), tuple(kwargs), pos=self._pos(meta))

    def args(self, meta: Meta, c: list[Any]) -> list[Any]:
        return c

    def kwarg(self, meta: Meta, c: list[Any]) -> A.Keyword:
        return A.Keyword(str(c[0]), c[1], pos=self._pos(meta))

    def number(self, meta: Meta, c: list[Token]) -> A.Const:
        return A.Const(_number(str(c[0])), pos=self._pos(meta))

    def duration(self, meta: Meta, c: list[Token]) -> A.Duration:
        text = str(c[0])
        unit = text.lstrip("0123456789.")
        amount_text = text[: len(text) - len(unit)]
        amount: int | float = float(amount_text) if "." in amount_text else int(amount_text)
        return A.Duration(amount, unit, pos=self._pos(meta))  # type: ignore[arg-type]

    def string(self, meta: Meta, c: list[Token]) -> A.Str:
        return self._string(c[0])

    def true(self, meta: Meta, c: list[Any]) -> A.Const:
        return A.Const(True, pos=self._pos(meta))

    def false(self, meta: Meta, c: list[Any]) -> A.Const:
        return A.Const(False, pos=self._pos(meta))

    def null(self, meta: Meta, c: list[Any]) -> A.Const:
        return A.Const(None, pos=self._pos(meta))

    def name(self, meta: Meta, c: list[Token]) -> A.Name:
        return A.Name(str(c[0]), pos=self._pos(meta))

    def list_lit(self, meta: Meta, c: list[Any]) -> A.ListLit:
        return A.ListLit(tuple(c), pos=self._pos(meta))

    def dict_lit(self, meta: Meta, c: list[tuple[str, A.Expr]]) -> A.DictLit:
        seen: set[str] = set()
        for key, value in c:
            if key in seen:
                self._problem(value.pos, f"the key {key!r} appears twice in this dict")
            seen.add(key)
        return A.DictLit(tuple(c), pos=self._pos(meta))

    def pair(self, meta: Meta, c: list[Any]) -> tuple[str, A.Expr]:
        key, value = c
        text = self._text(key) if key.type == "STRING" else str(key)
        return text, value


_OPTION_WORDS = {
    "retries": "retries",
    "backoff": "backoff",
    "delay": "delay",
    "max_delay": "max_delay",
    "timeout": "timeout",
    "compensate": "compensate with",
    "step_id": "as",
}


def _number(text: str) -> int | float:
    return float(text) if any(ch in text for ch in ".eE") else int(text)


def _closing_brace(body: str, start: int) -> int:
    """Index of the `}` closing the `{` at `start`, skipping nested brackets and strings."""
    depth = 0
    quote = ""
    i = start
    while i < len(body):
        ch = body[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
            if depth == 0:
                return i if ch == "}" else -1
        i += 1
    return -1
