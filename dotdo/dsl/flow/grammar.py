"""The Lark side of `.flow`: the grammar file, the indentation postlexer, one shared parser.

Building the LALR tables takes about a tenth of a second, so the parser is built once per
process and shared by parsing, string interpolation and error explanation (whose examples
must be parsed by the very same tables to be comparable).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from lark import Lark, Token
from lark.exceptions import LarkError
from lark.indenter import Indenter

from dotdo.dsl.flow.diagnostics import Diagnostic

__all__ = [
    "KEYWORDS",
    "BadIndent",
    "lark_parser",
    "normalise",
    "source_line",
    "too_deep",
]

KEYWORDS = frozenset(
    """use import step workflow every on run retries backoff delay max_delay timeout
    compensate with as at timezone do try send sleep until wait for where approval cascade
    threshold if elif else while in except finally return fail break continue pass and or
    not true false null""".split()
)
"""Words the grammar gives a meaning somewhere. Most stay usable as names elsewhere (the
lexer is contextual); the formatter quotes dict keys that collide with them, to be safe."""

_GRAMMAR = Path(__file__).with_name("flow.lark")


class BadIndent(LarkError):
    """An unindent to a column no enclosing block started at."""

    def __init__(self, token: Token, message: str) -> None:
        super().__init__(message)
        self.token = token
        self.message = message


class _FlowIndenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB", "LBRACE"]
    CLOSE_PAREN_types = ["RPAR", "RSQB", "RBRACE"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 4

    def handle_NL(self, token: Token) -> Iterator[Token]:
        if self.paren_level > 0:
            return
        yield token
        indent = len(token.rsplit("\n", 1)[1])
        if indent > self.indent_level[-1]:
            self.indent_level.append(indent)
            yield Token.new_borrow_pos(self.INDENT_type, "", token)
            return
        while indent < self.indent_level[-1]:
            self.indent_level.pop()
            yield Token.new_borrow_pos(self.DEDENT_type, "", token)
        if indent != self.indent_level[-1]:
            where = Token("_NL", "", line=token.end_line, column=indent + 1)
            raise BadIndent(where, "this line's indentation matches no enclosing block")

    def _process(self, stream: Iterator[Token]) -> Iterator[Token]:
        # Lark's own version asserts on a stray closing bracket; the parser reports it better.
        token = None
        for token in stream:
            if token.type == self.NL_type:
                yield from self.handle_NL(token)
            else:
                yield token
            if token.type in self.OPEN_PAREN_types:
                self.paren_level += 1
            elif token.type in self.CLOSE_PAREN_types:
                self.paren_level = max(self.paren_level - 1, 0)
        while len(self.indent_level) > 1:
            self.indent_level.pop()
            if token is not None:
                yield Token.new_borrow_pos(self.DEDENT_type, "", token)
            else:
                yield Token(self.DEDENT_type, "")


@functools.cache
def lark_parser() -> Lark:
    """The one Lark instance (building the LALR tables takes ~0.1 s, so it is shared)."""
    return Lark(
        _GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=_FlowIndenter(),
        start=["start", "expr"],
        propagate_positions=True,
        maybe_placeholders=True,
    )


def source_line(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1] if 1 <= line <= len(lines) else ""


def normalise(text: str) -> str:
    """Unix newlines and a final newline: the grammar ends every line with one."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def too_deep(text: str, path: str) -> Diagnostic:
    """For input nested beyond what the recursive passes can walk (hundreds of levels)."""
    return Diagnostic(
        path,
        1,
        1,
        "this file nests brackets or blocks too deeply to read",
        "split deep expressions into several lines with intermediate names",
        source_line(text, 1),
        code="too-deep",
    )
