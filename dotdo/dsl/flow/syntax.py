"""Explain a syntax error in words, at the right place.

Lark reports "unexpected token" with a parser state. `match_examples` compares that state
with the states the catalogue's examples (`flow_errors.SYNTAX_EXAMPLES`) fail in, and the
best match names the mistake. Lark's states also count the nesting depth, which would make
`if x = 1:` inside a loop look different from the same mistake at the top of a workflow;
both sides are keyed on the LALR state alone, so one example covers every depth. What the
examples cannot see (an unclosed bracket swallows the rest of the file, a string left open
stops the lexer, tabs) is found by looking at the text itself.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from dotdo.dsl.flow.diagnostics import SYNTAX_EXAMPLES, Diagnostic, SyntaxKind
from dotdo.dsl.flow.grammar import BadIndent, lark_parser, source_line

__all__ = ["check_layout", "explain"]

_BLOCK_WORDS = (
    "workflow",
    "if",
    "elif",
    "else",
    "for",
    "while",
    "try",
    "except",
    "finally",
    "approval",
    "cascade",
)
_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "DURATION": "a duration like 30s or 1h",
    "TIME": "a time like 9am",
    "STRING": 'a "string"',
    "_NL": "the end of the line",
    "_INDENT": "an indented block",
    "_DEDENT": "the end of the block",
    "$END": "the end of the file",
}
_CHAR_HINTS = {
    "?": "for a choice between two values write `a if condition else b`",
    "!": "write `not x` for negation and `!=` for 'not equal'",
    "&": "write `and`",
    "|": "write `or` (a `|` only joins types, like `str | null`)",
    ";": "put one statement per line",
    "`": 'strings use double quotes: "text"',
    "\t": "indent with spaces only",
}


def _keyed(exc: UnexpectedInput) -> None:
    state = exc.state
    if state is not None and not isinstance(state, int):
        exc.state = state.position


@functools.cache
def _example_error(text: str) -> UnexpectedInput | None:
    """Parsing each example once per process keeps repeated error reports cheap."""
    try:
        lark_parser().parse(text, start="start")
    except UnexpectedInput as exc:
        _keyed(exc)
        _ = getattr(exc, "accepts", None)  # computed now, while its parser state is fresh
        return exc
    return None


def _parse_example(text: str) -> Any:
    exc = _example_error(text)
    if exc is not None:
        raise exc
    return None


def _match(exc: UnexpectedInput) -> SyntaxKind | None:
    saved = exc.state
    _keyed(exc)
    try:
        return exc.match_examples(_parse_example, SYNTAX_EXAMPLES, use_accepts=True)
    finally:
        exc.state = saved


def check_layout(text: str, path: str) -> Diagnostic | None:
    """Tabs in indentation: they make the visible layout differ from the parsed one."""
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.lstrip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        lead = line[: len(line) - len(stripped)]
        if "\t" in lead:
            return Diagnostic(
                path,
                number,
                lead.index("\t") + 1,
                "this line is indented with a tab",
                "indent with spaces only, 4 per level (tabs and spaces look alike but differ)",
                line,
                code="tab-indent",
            )
    return None


def explain(
    exc: UnexpectedInput | BadIndent,
    text: str,
    path: str,
    inside: tuple[str, int, int] | None = None,
) -> Diagnostic:
    """The diagnostic for a parse failure of `text`. `inside` = (file text, line, column)
    when `text` is an expression inside a string's braces at that place of the file."""
    code, message, expected, line, col = _describe(exc, text)
    if inside is not None:
        outer, at_line, at_col = inside
        message = message.replace("end of the file", "closing brace")
        expected = expected.replace("the end of the file", "the closing brace")
        return Diagnostic(
            path,
            at_line,
            at_col + col - 1,
            f"in the braces of a string: {message}",
            expected,
            source_line(outer, at_line),
            code=code,
        )
    context = ""
    if isinstance(exc, UnexpectedInput) and (line, col) == (exc.line, exc.column):
        context = exc.get_context(text, span=80)
    return Diagnostic(
        path, line, col, message, expected, source_line(text, line), code=code, context=context
    )


def _describe(exc: UnexpectedInput | BadIndent, text: str) -> tuple[str, str, str, int, int]:
    if isinstance(exc, BadIndent):
        line = exc.token.line or 1
        return (
            "bad-dedent",
            "this line's indentation matches no block above it",
            "indent it exactly like the line that starts its block (4 spaces per level)",
            line,
            exc.token.column or 1,
        )
    line, col = _where(exc, text)
    if isinstance(exc, UnexpectedCharacters):
        at = exc.pos_in_stream or 0
        char = text[at] if 0 <= at < len(text) else ""
        if char in "\"'":
            return (
                "unterminated-string",
                "this string is never closed",
                f"end it with {char} on the same line (a string cannot span lines)",
                line,
                col,
            )
        bracket = _brackets(text)
        if bracket is not None:
            return bracket
        hint = _CHAR_HINTS.get(char, 'remove it, or put it inside a "string"')
        return ("bad-character", f"unexpected character {char!r}", hint, line, col)
    bracket = _brackets(text)
    if bracket is not None:
        return bracket
    assert isinstance(exc, UnexpectedToken)
    kind = _match(exc) or _fallback(exc) or ("syntax", "", "")
    code, message, expected = _refine(exc, text, line, col, kind)
    if code == "syntax":
        return _generic(exc, line, col)
    opener = _opener(code, text, line, col)
    if code in ("unknown-statement", "unknown-top-level", "else-without-if"):
        if opener in ("else", "elif"):
            code, message, expected = SYNTAX_BY_CODE["else-without-if"]
        elif opener in ("except", "finally"):
            code = "except-without-try"
            message = "`{opener}` without a matching `try` block just above it"
            expected = "`except` and `finally` follow a `try:` block at the same indentation"
    if code in ("unknown-statement", "unknown-top-level", "else-without-if", "except-without-try"):
        current = source_line(text, line)
        col = len(current) - len(current.lstrip()) + 1
    if code == "missing-run" and opener == "on" and exc.token.type not in ("NAME", "_NL"):
        code = "bad-event"
        message = "`{token}` cannot be part of an event name"
        expected = (
            "event names are dotted words (letters, digits, _), like Order.placed; a part may be *"
        )
    if code == "bad-duration" and exc.token.type != "NAME":
        return _generic(exc, line, col)
    if code == "unknown-top-level" and "(" in source_line(text, line):
        message = "this looks like a workflow: start the line with the word `workflow`"
        expected = "write `workflow name(param: Type) -> Result:`"
    values = {"token": str(exc.token), "opener": opener, "word": _word_before(text, exc)}
    return code, message.format(**values), expected.format(**values), line, col


SYNTAX_BY_CODE = {kind[0]: kind for kind, _ in SYNTAX_EXAMPLES}


_DO_LINE = re.compile(r"^\s*([A-Za-z_]\w*\s*=\s*)?(do|try)\s+\w")


def _refine(exc: UnexpectedToken, text: str, line: int, col: int, kind: SyntaxKind) -> SyntaxKind:
    """Corrections where one parser state stands for several different mistakes."""
    code = kind[0]
    token = exc.token
    before = source_line(text, line)[: col - 1]
    word = _WORD.search(before)
    previous = word.group(1) if word else ""
    if token.type == "EQUAL":
        if _innermost_bracket(text, line, col) == "{":
            return (
                "dict-equals",
                "a dict pairs each key with its value using ':'",
                "write {{key: value, other: value}}",
            )
        if previous in ("+", "-", "*", "/", "//", "%"):
            return (
                "augmented-assign",
                f"`{previous}=` is not part of .flow",
                f"write it out: x = x {previous} 1",
            )
    if code == "assign-in-condition" and token.type != "EQUAL":
        kind = ("syntax", "", "")
    if (
        previous in ("do", "try")
        and token.type == "NAME"
        and not _DO_LINE.match(source_line(text, line))
    ):
        return (
            "do-in-expression",
            f"`{previous}` runs a step on a line of its own",
            f"write `result = {previous} step(...)` first, then use `result`",
        )
    if _DO_LINE.match(source_line(text, line)) and token.type not in ("NAME", "_NL", "$END"):
        if code in ("syntax", "do-without-call") and before.rstrip().endswith(")"):
            return (
                "do-in-expression",
                "a `do` or `try` line runs one step and can only keep its result",
                "assign the result (x = do step(...)), then compute with x on the next line",
            )
    return kind


def scan_line(line: str) -> tuple[list[tuple[int, str]], int | None]:
    """A line's characters outside string literals (with their index), and where its
    `#` comment starts, if it has one: what bracket matching and comment keeping look at."""
    code: list[tuple[int, str]] = []
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return code, i
        else:
            code.append((i, ch))
        i += 1
    return code, None


def _innermost_bracket(text: str, line: int, col: int) -> str:
    """The bracket still open at (line, col), ignoring strings and comments; "" if none."""
    lines = text.split("\n")[:line]
    if lines:
        lines[-1] = lines[-1][: col - 1]
    stack: list[str] = []
    for current in lines:
        for _, ch in scan_line(current)[0]:
            if ch in "([{":
                stack.append(ch)
            elif ch in ")]}" and stack:
                stack.pop()
    return stack[-1] if stack else ""


def _fallback(exc: UnexpectedToken) -> SyntaxKind | None:
    """States no example reaches, recognised by the token alone."""
    kind = exc.token.type
    accepts = exc.accepts or exc.expected or set()
    if kind == "_INDENT":
        return SYNTAX_BY_CODE["unexpected-indent"]
    if "_INDENT" in accepts and len(accepts) == 1:
        return SYNTAX_BY_CODE["missing-block"]
    if kind == "_NL" and "COLON" in accepts:
        return SYNTAX_BY_CODE["missing-colon"]
    return None


_OPERATORS = frozenset(
    """PLUS MINUS STAR SLASH PERCENT __ANON_0 __ANON_1 __ANON_2 __ANON_3 __ANON_4 LESSTHAN
    MORETHAN IN NOT AND OR IF DOT LSQB LPAR""".split()
)


def _generic(exc: UnexpectedToken, line: int, col: int) -> tuple[str, str, str, int, int]:
    accepts = set(exc.accepts or exc.expected or ())
    operators = {t for t in accepts if t in _OPERATORS or _terminal_word(t) in _OPERATOR_WORDS}
    words = sorted({_terminal_word(t) for t in accepts - operators})
    if len(operators) >= 3:
        words.insert(0, "an operator")
    else:
        words = sorted({*words, *(_terminal_word(t) for t in operators)})
    if len(words) > 6:
        words = [*words[:6], "…"]
    expected = "expected " + (" or ".join(words) if len(words) <= 2 else ", ".join(words))
    return ("syntax", f"unexpected {_token_text(exc.token)}", expected, line, col)


_OPERATOR_WORDS = frozenset(
    f"'{op}'" for op in "+ - * / // % == != < <= > >= in not and or if . [ (".split()
)


def _terminal_word(name: str) -> str:
    if name in _WORDS:
        return _WORDS[name]
    try:
        pattern = lark_parser().get_terminal(name).pattern
    except KeyError:
        return name.lower()
    if isinstance(pattern, PatternStr):
        return f"'{pattern.value}'"
    return name.lower()


_TOKEN_TEXT = {
    "_NL": "end of the line",
    "$END": "end of the file",
    "_INDENT": "indent",
    "_DEDENT": "end of the block",
}


def _token_text(token: Token) -> str:
    return _TOKEN_TEXT.get(token.type) or f"'{token}'"


def _where(exc: UnexpectedInput, text: str) -> tuple[int, int]:
    line = exc.line if isinstance(exc.line, int) and exc.line > 0 else 0
    col = exc.column if isinstance(exc.column, int) and exc.column > 0 else 1
    if (isinstance(exc, UnexpectedToken) and exc.token.type == "$END") or not line:
        lines = text.rstrip("\n").split("\n")
        line = len(lines)
        col = len(lines[-1]) + 1
    if isinstance(exc, UnexpectedToken) and exc.token.type in ("_INDENT", "_DEDENT"):
        # These carry the position of the newline before them: point at the line itself.
        line = exc.token.end_line or line
        col = exc.token.end_column or col
    lines = text.rstrip("\n").split("\n")
    if line > len(lines) or (line == len(lines) + 1 and col == 1):
        # Past the last line (the file ended inside a block): point at where it ends.
        line = len(lines)
        col = len(lines[-1]) + 1
    if isinstance(exc, UnexpectedToken) and exc.token.type == "_NL":
        # A newline token may start with a comment: point at the end of the code instead.
        code = source_line(text, line)[: col - 1].rstrip()
        col = len(code) + 1
    return line, col


_WORD = re.compile(r"(\w+|->|[^\w\s]+)\s*$")


def _word_before(text: str, exc: UnexpectedInput) -> str:
    line, col = _where(exc, text)
    found = _WORD.search(source_line(text, line)[: col - 1])
    return found.group(1) if found else ""


def _opener(code: str, text: str, line: int, col: int) -> str:
    """The keyword whose line the problem belongs to (the line above, for a missing block)."""
    lines = text.split("\n")
    number = line
    if code == "missing-block":
        number = line - 1
        while number > 1 and (
            not lines[number - 1].strip() or lines[number - 1].lstrip().startswith("#")
        ):
            number -= 1
    current = lines[number - 1] if 1 <= number <= len(lines) else ""
    words: list[str] = [str(w) for w in re.findall(r"[A-Za-z_]\w*|->|\S", current.split("#")[0])]
    if code == "do-without-call":
        for word in words:
            if word in ("do", "try"):
                return word
        return "a cascade tier"
    if code in ("missing-colon", "missing-block"):
        for word in words:
            if word in _BLOCK_WORDS:
                return word
    return words[0] if words else ""


_PAIRS = {"(": ")", "[": "]", "{": "}"}


def _brackets(text: str) -> tuple[str, str, str, int, int] | None:
    """An unmatched bracket outside strings and comments, which derails everything after it."""
    stack: list[tuple[str, int, int]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        for i, ch in scan_line(line)[0]:
            if ch in _PAIRS:
                stack.append((ch, number, i + 1))
            elif ch in ")]}":
                if not stack:
                    return (
                        "unbalanced-bracket",
                        f"'{ch}' has no matching opening bracket",
                        "remove it, or add the opening bracket it closes",
                        number,
                        i + 1,
                    )
                opening, at_line, at_col = stack.pop()
                if _PAIRS[opening] != ch:
                    return (
                        "unbalanced-bracket",
                        f"'{ch}' does not match the '{opening}' opened at line {at_line}, "
                        f"column {at_col}",
                        f"close that '{opening}' with '{_PAIRS[opening]}' first",
                        number,
                        i + 1,
                    )
    if stack:
        opening, at_line, at_col = stack[-1]
        return (
            "unbalanced-bracket",
            f"this '{opening}' is never closed",
            f"add the matching '{_PAIRS[opening]}'",
            at_line,
            at_col,
        )
    return None
