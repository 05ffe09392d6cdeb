"""Parse `.flow` text into the typed tree of `flow_ast`.

Lark does the parsing (LALR, contextual lexer, an Indenter for Python-like blocks,
positions on every rule); `flow_transform` turns its tree into frozen dataclasses. Any
failure becomes a `FlowSyntaxError` carrying a positioned, explained `Diagnostic`, whatever
the input: too deep, badly indented, or something the catalogue of mistakes never saw.
"""

from __future__ import annotations

from collections.abc import Iterator

from lark.exceptions import UnexpectedInput

from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowSyntaxError
from dotdo.dsl.flow.grammar import (
    KEYWORDS,
    BadIndent,
    lark_parser,
    normalise,
    source_line,
    too_deep,
)
from dotdo.dsl.flow.syntax import check_layout, explain, scan_line
from dotdo.dsl.flow.transform import Builder

__all__ = [
    "KEYWORDS",
    "comments",
    "normalise",
    "parse_expression",
    "parse_source",
    "source_line",
    "too_deep",
]


def parse_source(text: str, path: str = "<flow>") -> A.Module:
    """Parse a whole file. Raises FlowSyntaxError (one diagnostic) when it does not parse."""
    text = normalise(text)
    problem = check_layout(text, path)
    if problem is not None:
        raise FlowSyntaxError([problem])
    try:
        tree = lark_parser().parse(text, start="start")
        builder = Builder(text, path)
        module = builder._build(tree)
    except (UnexpectedInput, BadIndent) as exc:
        raise FlowSyntaxError([_explained(exc, text, path)]) from None
    except RecursionError:
        raise FlowSyntaxError([too_deep(text, path)]) from None
    if builder.problems:
        raise FlowSyntaxError(builder.problems)
    return A.Module(module.items, comments=tuple(comments(text)), pos=module.pos)


def _explained(exc: UnexpectedInput | BadIndent, text: str, path: str) -> Diagnostic:
    """The catalogue's explanation; Lark's own words should explaining itself ever fail."""
    try:
        return explain(exc, text, path)
    except Exception:
        line = getattr(exc, "line", 1)
        line = line if isinstance(line, int) and line > 0 else 1
        col = getattr(exc, "column", 1)
        col = col if isinstance(col, int) and col > 0 else 1
        first = str(exc).strip().split("\n")[0]
        return Diagnostic(path, line, col, first, None, source_line(text, line), code="unexplained")


def parse_expression(text: str, path: str = "<flow>") -> A.Expr:
    """Parse one expression (used for string interpolation and by tests)."""
    return Builder(text, path)._expression(text, line=1, col=1)


def comments(text: str) -> Iterator[A.Comment]:
    """Every `# comment` outside strings, so the formatter can keep them."""
    for number, line in enumerate(text.split("\n"), start=1):
        hash_at = scan_line(line)[1]
        if hash_at is not None:
            yield A.Comment(number, hash_at + 1, line[hash_at:].rstrip())
