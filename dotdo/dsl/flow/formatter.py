"""Print a `.flow` tree back as canonical text: what `dotdo fmt` writes.

Canonical means: 4-space indents, single spaces around operators, double quotes, minimal
parentheses, options in one fixed order, one blank line between groups of top-level lines
and around workflows. The author's comments and blank lines between statements are kept
(they carry meaning the tree does not), and a statement longer than 100 columns has its
outermost call, list or dict split one item per line. Formatting is a fixed point:
formatting the output again changes nothing, and parsing it gives back the same tree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowError, FlowSyntaxError
from dotdo.dsl.flow.grammar import KEYWORDS, normalise, too_deep
from dotdo.dsl.flow.parser import parse_source
from dotdo.engine.triggers import EVENT_PATTERN

__all__ = ["format_expr", "format_file", "format_module", "format_source"]

WIDTH = 100
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PREC_BIN = {"+": 6, "-": 6, "*": 7, "/": 7, "//": 7, "%": 7}


def format_source(text: str, path: str = "<flow>") -> str:
    """Canonical text of `text`. Raises FlowSyntaxError when it does not parse."""
    text = normalise(text)
    module = parse_source(text, path)
    try:
        return format_module(module, text)
    except RecursionError:
        raise FlowSyntaxError([too_deep(text, path)]) from None


def format_file(path: str | os.PathLike[str]) -> str:
    """Canonical text of a file (the caller decides whether to write it back)."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FlowError(
            [Diagnostic(name, 1, 1, f"cannot read the file: {reason}", code="unreadable")]
        ) from None
    return format_source(text, name)


def format_module(module: A.Module, text: str = "") -> str:
    """Canonical text of a tree; `text` (its source) lets comments and blank lines survive."""
    printer = _Printer(module.comments, text.split("\n") if text else [])
    printer.module(module)
    return printer.result()


def format_expr(e: A.Expr) -> str:
    return _expr(e, 0, 0)


# ----------------------------------------------------------------- expressions
def _prec(e: A.Expr) -> int:
    if isinstance(e, A.IfExp):
        return 1
    if isinstance(e, A.BoolOp):
        return 2 if e.op == "or" else 3
    if isinstance(e, A.UnaryOp):
        return 4 if e.op == "not" else 8
    if isinstance(e, A.Compare):
        return 5
    if isinstance(e, A.BinOp):
        return _PREC_BIN[e.op]
    if isinstance(e, A.Attr | A.Index | A.Call):
        return 9
    return 10


def _expr(e: A.Expr, need: int, depth: int) -> str:
    """`e` printed; parenthesised when it binds less tightly than `need`. `depth` counts
    enclosing string interpolations (strings inside braces use single quotes)."""
    text = _bare(e, depth)
    return f"({text})" if _prec(e) < need else text


def _bare(e: A.Expr, depth: int) -> str:
    if isinstance(e, A.Const):
        return _const(e.value)
    if isinstance(e, A.Str):
        return _string(e, depth)
    if isinstance(e, A.Duration):
        return f"{_number(e.amount)}{e.unit}"
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Attr):
        return f"{_expr(e.value, 9, depth)}.{e.name}"
    if isinstance(e, A.Index):
        return f"{_expr(e.value, 9, depth)}[{_expr(e.index, 0, depth)}]"
    if isinstance(e, A.Call):
        return f"{_expr(e.func, 9, depth)}({', '.join(_args(e, depth))})"
    if isinstance(e, A.BinOp):
        p = _PREC_BIN[e.op]
        return f"{_expr(e.left, p, depth)} {e.op} {_expr(e.right, p + 1, depth)}"
    if isinstance(e, A.UnaryOp):
        if e.op == "not":
            return f"not {_expr(e.operand, 4, depth)}"
        return f"{e.op}{_expr(e.operand, 8, depth)}"
    if isinstance(e, A.Compare):
        parts = [_expr(e.left, 6, depth)]
        for op, right in zip(e.ops, e.comparators, strict=True):
            parts.append(f"{op} {_expr(right, 6, depth)}")
        return " ".join(parts)
    if isinstance(e, A.BoolOp):
        need = 3 if e.op == "or" else 4
        return f" {e.op} ".join(_expr(v, need, depth) for v in e.values)
    if isinstance(e, A.IfExp):
        return (
            f"{_expr(e.body, 2, depth)} if {_expr(e.test, 2, depth)} "
            f"else {_expr(e.orelse, 1, depth)}"
        )
    if isinstance(e, A.ListLit):
        return f"[{', '.join(_expr(i, 0, depth) for i in e.items)}]"
    if isinstance(e, A.DictLit):
        return "{" + ", ".join(_pairs(e, depth)) + "}"
    raise TypeError(f"not an expression: {e!r}")


def _args(e: A.Call, depth: int) -> list[str]:
    return [_expr(a, 0, depth) for a in e.args] + [
        f"{k.name}={_expr(k.value, 0, depth)}" for k in e.kwargs
    ]


def _pairs(e: A.DictLit, depth: int) -> list[str]:
    return [f"{_key(k, depth)}: {_expr(v, 0, depth)}" for k, v in e.items]


def _key(key: str, depth: int) -> str:
    if _IDENT.fullmatch(key) and key not in KEYWORDS:
        return key
    return _quote(key, depth)


def _const(value: bool | int | float | None) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _number(value)


def _number(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _escape(text: str, depth: int) -> str:
    """Literal text inside quotes: escapes, and braces doubled (they start interpolation)."""
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    out = out.replace('"', '\\"')
    if depth:
        out = out.replace("'", "\\'")
    return out.replace("{", "{{").replace("}", "}}")


def _quote(text: str, depth: int = 0) -> str:
    quote = "'" if depth else '"'
    return f"{quote}{_escape(text, depth)}{quote}"


def _string(e: A.Str, depth: int) -> str:
    quote = "'" if depth else '"'
    parts = []
    for part in e.parts:
        if isinstance(part, str):
            parts.append(_escape(part, depth))
        else:
            inner = _expr(part, 0, depth + 1)
            if inner.startswith("{") or inner.endswith("}"):
                inner = f" {inner} "  # `{{` and `}}` would read as literal braces
            parts.append("{" + inner + "}")
    return quote + "".join(parts) + quote


def _type(ref: A.TypeRef) -> str:
    if isinstance(ref, A.TypeUnion):
        return " | ".join(_type(t) for t in ref.options)
    if ref.args:
        return f"{ref.name}[{', '.join(_type(a) for a in ref.args)}]"
    return ref.name


def _options(options: A.Options) -> str:
    out = []
    if options.step_id is not None:
        out.append(f"as {_quote(options.step_id)}")
    for word in ("retries", "backoff", "delay", "max_delay", "timeout"):
        value = getattr(options, word)
        if value is not None:
            out.append(f"{word} {_expr(value, 0, 0)}")
    if options.compensate is not None:
        out.append(f"compensate with {options.compensate}")
    return "".join(f" {o}" for o in out)


def _split(e: A.Expr) -> list[str] | None:
    """A call, list or dict one item per line (with a trailing comma), or None."""
    if isinstance(e, A.Call) and (e.args or e.kwargs):
        head, items, tail = f"{_expr(e.func, 9, 0)}(", _args(e, 0), ")"
    elif isinstance(e, A.ListLit) and e.items:
        head, items, tail = "[", [_expr(i, 0, 0) for i in e.items], "]"
    elif isinstance(e, A.DictLit) and e.items:
        head, items, tail = "{", _pairs(e, 0), "}"
    else:
        return None
    return [head, *(f"    {item}," for item in items), tail]


# ------------------------------------------------------------------- printer
class _Printer:
    def __init__(self, comments: Sequence[A.Comment], source: list[str]) -> None:
        self.out: list[str] = []
        self.comments = sorted(comments, key=lambda c: (c.line, c.col))
        self.next_comment = 0
        self.source = source
        self.after_header = False

    def result(self) -> str:
        self.after_header = False
        for comment in self.comments[self.next_comment :]:
            if self.source_blank(comment.line - 1):
                self.blank()
            self.out.append(comment.text)
        while self.out and not self.out[-1]:
            self.out.pop()
        return "\n".join(self.out) + "\n"

    # -- low level
    def source_blank(self, line: int) -> bool:
        return 1 <= line <= len(self.source) and not self.source[line - 1].strip()

    def blank(self) -> None:
        if self.out and self.out[-1] != "" and not self.after_header:
            self.out.append("")

    def emit(
        self,
        indent: int,
        line: int,
        text: str | list[str],
        suffix: str = "",
        *,
        header: bool = False,
    ) -> None:
        """One statement's lines (several when split), with the source's comments and blank
        lines before it; a header is a line that opens a block (no blank line after it)."""
        lines = [text] if isinstance(text, str) else list(text)
        lines[-1] += suffix
        if line:
            while self.next_comment < len(self.comments):
                comment = self.comments[self.next_comment]
                if comment.line >= line:
                    break
                if self.source_blank(comment.line - 1):
                    self.blank()
                self.out.append(" " * indent + comment.text)
                self.after_header = False
                self.next_comment += 1
            if self.source_blank(line - 1):
                self.blank()
            while self.next_comment < len(self.comments):
                comment = self.comments[self.next_comment]
                if comment.line != line:
                    break
                lines[0] += "  " + comment.text
                self.next_comment += 1
        pad = " " * indent
        self.out.extend(pad + ln for ln in lines)
        self.after_header = header

    def fitted(self, indent: int, prefix: str, e: A.Expr, suffix: str = "") -> list[str]:
        flat = f"{prefix}{_expr(e, 0, 0)}{suffix}"
        if indent + len(flat) <= WIDTH:
            return [flat]
        split = _split(e)
        if split is None:
            return [flat]
        return [prefix + split[0], *split[1:-1], split[-1] + suffix]

    # -- top level
    def module(self, module: A.Module) -> None:
        previous: A.Item | None = None
        for item in module.items:
            if previous is not None and self.separate(previous, item):
                self.blank()
            self.item(item)
            previous = item

    def separate(self, previous: A.Item, item: A.Item) -> bool:
        if isinstance(previous, A.Workflow) or isinstance(item, A.Workflow):
            return True
        return type(previous) is not type(item) and not (
            isinstance(previous, A.Use | A.Import) and isinstance(item, A.Use | A.Import)
        )

    def item(self, item: A.Item) -> None:
        line = item.pos.line
        if isinstance(item, A.Use):
            self.emit(0, line, f"use {item.module}")
        elif isinstance(item, A.Import):
            self.emit(0, line, f"import {item.module}: {', '.join(item.names)}")
        elif isinstance(item, A.StepDecl):
            binding = f" = {item.module}:{item.function}" if item.module else ""
            self.emit(0, line, f"step {item.name}{binding}{_options(item.options)}")
        elif isinstance(item, A.Workflow):
            params = ", ".join(self.param(p) for p in item.params)
            returns = f" -> {_type(item.returns)}" if item.returns is not None else ""
            self.emit(0, line, f"workflow {item.name}({params}){returns}:", header=True)
            self.block(item.body, 4)
        elif isinstance(item, A.Every):
            count = f" {_number(item.count)}" if item.count is not None else ""
            at = f" at {item.at}" if item.at is not None else ""
            tz = f" timezone {_quote(item.timezone)}" if item.timezone is not None else ""
            self.emit(0, line, f"every{count} {item.unit}{at}{tz} run {item.target}")
        elif isinstance(item, A.On):
            pattern = (
                item.pattern if EVENT_PATTERN.fullmatch(item.pattern) else _quote(item.pattern)
            )
            self.emit(0, line, f"on {pattern} run {item.target}")

    @staticmethod
    def param(p: A.Param) -> str:
        text = p.name
        if p.type is not None:
            text += f": {_type(p.type)}"
        if p.default is not None:
            text += f" = {_expr(p.default, 0, 0)}"
        return text

    # -- statements
    def block(self, body: tuple[A.Stmt, ...], indent: int) -> None:
        for stmt in body:
            self.stmt(stmt, indent)

    def stmt(self, s: A.Stmt, indent: int) -> None:
        line = s.pos.line
        bound: str | None = None if isinstance(s, A.Assign) else getattr(s, "target", None)
        target = f"{bound} = " if bound else ""
        if isinstance(s, A.Assign):
            self.emit(indent, line, self.fitted(indent, f"{s.target} = ", s.value))
        elif isinstance(s, A.ExprStmt):
            self.emit(indent, line, self.fitted(indent, "", s.value))
        elif isinstance(s, A.Do):
            lines = self.fitted(indent, f"{target}{s.mode} ", s.call, _options(s.options))
            self.emit(indent, line, lines)
        elif isinstance(s, A.Send):
            head = f"send {_string(s.event, 0)}"
            if s.data is None:
                self.emit(indent, line, head)
            else:
                self.emit(indent, line, self.fitted(indent, head + " ", s.data))
        elif isinstance(s, A.Sleep):
            word = "sleep until " if s.until else "sleep "
            self.emit(indent, line, self.fitted(indent, word, s.value))
        elif isinstance(s, A.Approval):
            self.emit(indent, line, f"{target}approval {_quote(s.name)}:", header=True)
            for f in s.fields:
                self.emit(indent + 4, f.pos.line, self.fitted(indent + 4, f"{f.name}: ", f.value))
        elif isinstance(s, A.WaitFor):
            text = f"{target}wait for {_string(s.event, 0)}"
            if s.where is not None:
                text += f" where {_expr(s.where, 0, 0)}"
            if s.timeout is not None:
                text += f" timeout {_expr(s.timeout, 0, 0)}"
            if s.step_id is not None:
                text += f" as {_quote(s.step_id)}"
            self.emit(indent, line, text)
        elif isinstance(s, A.Cascade):
            text = f"{target}cascade {_quote(s.task)}"
            if s.threshold is not None:
                text += f" threshold {_expr(s.threshold, 0, 0)}"
            if s.step_id is not None:
                text += f" as {_quote(s.step_id)}"
            self.emit(indent, line, text + ":", header=True)
            for tier in s.tiers:
                self.emit(
                    indent + 4, tier.pos.line, self.fitted(indent + 4, f"{tier.name}: ", tier.call)
                )
        elif isinstance(s, A.If):
            self.if_(s, indent, "if")
        elif isinstance(s, A.For):
            self.emit(indent, line, f"for {s.var} in {_expr(s.iter, 0, 0)}:", header=True)
            self.block(s.body, indent + 4)
        elif isinstance(s, A.While):
            self.emit(indent, line, f"while {_expr(s.test, 0, 0)}:", header=True)
            self.block(s.body, indent + 4)
        elif isinstance(s, A.Try):
            self.emit(indent, line, "try:", header=True)
            self.block(s.body, indent + 4)
            for h in s.handlers:
                types = f" {', '.join(h.types)}" if h.types else ""
                name = f" as {h.name}" if h.name else ""
                self.emit(indent, h.pos.line, f"except{types}{name}:", header=True)
                self.block(h.body, indent + 4)
            if s.finalbody:
                self.emit(indent, 0, "finally:", header=True)
                self.block(s.finalbody, indent + 4)
        elif isinstance(s, A.Return):
            if s.value is None:
                self.emit(indent, line, "return")
            else:
                self.emit(indent, line, self.fitted(indent, "return ", s.value))
        elif isinstance(s, A.Fail):
            if s.value is None:
                self.emit(indent, line, "fail")
            else:
                self.emit(indent, line, self.fitted(indent, "fail ", s.value))
        elif isinstance(s, A.Break):
            self.emit(indent, line, "break")
        elif isinstance(s, A.Continue):
            self.emit(indent, line, "continue")
        elif isinstance(s, A.Pass):
            self.emit(indent, line, "pass")

    def if_(self, s: A.If, indent: int, word: str) -> None:
        self.emit(indent, s.pos.line, f"{word} {_expr(s.test, 0, 0)}:", header=True)
        self.block(s.body, indent + 4)
        if len(s.orelse) == 1 and isinstance(s.orelse[0], A.If):
            self.if_(s.orelse[0], indent, "elif")
        elif s.orelse:
            self.emit(indent, 0, "else:", header=True)
            self.block(s.orelse, indent + 4)
