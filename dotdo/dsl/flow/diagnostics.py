"""Diagnostics for `.flow` files, and the catalogue of syntax mistakes people really make.

A `.flow` author is often not a programmer, so a parser's "unexpected token _NL" is useless
to them. Every problem becomes a `Diagnostic`: the place (`path:line:col`), the source line
with a caret under the column, and what was expected, in words. Syntax errors are
recognised by example (Lark's `match_examples`): each entry of `SYNTAX_EXAMPLES` is a
mistake written out, and an error that leaves the parser in the same state as one of them
gets that entry's explanation. Adding a recognised mistake means adding an example.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from dotdo.errors import FlowError, FlowFailure, FlowSyntaxError

__all__ = [
    "SYNTAX_EXAMPLES",
    "Diagnostic",
    "FlowError",
    "FlowFailure",
    "FlowSyntaxError",
    "SyntaxKind",
    "render_all",
]


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a `.flow` file, positioned and explained."""

    path: str
    line: int
    col: int
    message: str
    expected: str | None = None
    source: str = ""
    code: str = "error"
    """A stable short name for the kind of problem (tests and tools match on it)."""
    severity: Literal["error", "warning"] = "error"
    context: str = ""
    """The parser's own view of the spot (`UnexpectedInput.get_context`): the text around
    the column and a caret, clipped on long lines. Empty: show `source` and a caret."""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    def render(self) -> str:
        """`path:line:col: message`, the line, a caret under the column, what was expected."""
        head = f"{self.location}: {'warning: ' if not self.is_error else ''}{self.message}"
        lines = [head]
        if self.context:
            lines.extend(f"    {ln}" for ln in self.context.rstrip("\n").split("\n"))
        elif self.source:
            shown = self.source.rstrip("\n").expandtabs(4)
            prefix = self.source[: max(self.col - 1, 0)].expandtabs(4)
            lines.append(f"    {shown}")
            lines.append(f"    {' ' * len(prefix)}^")
        if self.expected:
            lines.append(f"    {self.expected}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def render_all(diagnostics: Iterable[Diagnostic]) -> str:
    return "\n".join(d.render() for d in diagnostics)


# ---------------------------------------------------------------- syntax mistakes
SyntaxKind = tuple[str, str, str]
"""(code, message, expected). `{token}` is the offending text, `{opener}` the keyword that
starts the line the problem belongs to, `{word}` the word just before the problem."""

_W = "workflow w(x):\n"
"""Most statement examples sit inside a workflow: statements only exist there."""

SYNTAX_EXAMPLES: list[tuple[SyntaxKind, list[str]]] = [
    (
        (
            "missing-colon",
            "missing ':' at the end of the `{opener}` line",
            "expected ':' and then an indented block below it",
        ),
        [
            "workflow w()\n    pass\n",
            "workflow w(x: T)\n    pass\n",
            "workflow w() -> T\n    pass\n",
            "workflow w() -> list[T]\n    pass\n",
            _W + "    if x\n        pass\n",
            _W + "    if x.y > 1\n        pass\n",
            _W + "    if x:\n        pass\n    elif y\n        pass\n",
            _W + "    if x:\n        pass\n    else\n        pass\n",
            _W + "    for i in x\n        pass\n",
            _W + "    while x\n        pass\n",
            _W + "    try\n        pass\n",
            _W + "    try:\n        pass\n    except\n        pass\n",
            _W + "    try:\n        pass\n    except E\n        pass\n",
            _W + "    try:\n        pass\n    except E as e\n        pass\n",
            _W + "    try:\n        pass\n    finally\n        pass\n",
            _W + '    a = approval "x"\n        title: "t"\n',
            _W + '    a = cascade "x"\n        code: f(x)\n',
            _W + '    a = cascade "x" threshold 0.5\n        code: f(x)\n',
        ],
    ),
    (
        (
            "missing-block",
            "expected an indented block after the `{opener}` line",
            "indent the lines that belong to it by 4 spaces",
        ),
        [
            "workflow w():\npass\n",
            "workflow w():\n",
            _W + "    if x:\n    pass\n",
            _W + '    a = approval "x":\n    title: "t"\n',
            _W + '    a = cascade "x":\n    code: f(x)\n',
        ],
    ),
    (
        (
            "unexpected-indent",
            "unexpected indent",
            "a line is indented only inside a block (after a line ending with ':')",
        ),
        [
            _W + "    x = 1\n        y = 2\n",
            "use a\n    use b\n",
        ],
    ),
    (
        (
            "assign-in-condition",
            "'=' cannot be used here: to compare two values write '=='",
            "'=' only gives a value to a name at the start of a line (x = ...)",
        ),
        [
            _W + "    if x = 1:\n        pass\n",
            _W + "    if x.y = 1:\n        pass\n",
            _W + "    if x[0] = 1:\n        pass\n",
            _W + "    if f(x) = 1:\n        pass\n",
            _W + "    if 1 = x:\n        pass\n",
            _W + '    if "a" = x:\n        pass\n',
            _W + "    if true = x:\n        pass\n",
            _W + "    if null = x:\n        pass\n",
            _W + "    while x = 1:\n        pass\n",
        ],
    ),
    (
        (
            "unknown-statement",
            "`{opener}` does not start a statement",
            "a line starts with a keyword (do, try, send, sleep, wait for, approval, cascade, "
            "if, for, while, return, fail, break, continue, pass) or assigns a name (x = ...)",
        ),
        [
            _W + "    call foo(x)\n",
            _W + '    print "x"\n',
            _W + "    let x = 1\n",
        ],
    ),
    (
        (
            "unknown-top-level",
            "`{opener}` cannot start a line at the top of a file",
            "the top level holds use, import, step, workflow, every and on lines",
        ),
        [
            "process(order: Order) -> Receipt:\n    pass\n",
            "foo bar\n",
            "x = 1\n",
            "-> Receipt\n",
        ],
    ),
    (
        (
            "else-without-if",
            "`{opener}` without a matching `if` just above it",
            "`elif` and `else` follow an `if` block at the same indentation",
        ),
        [
            _W + "    else:\n        pass\n",
            "else:\n    pass\n",
        ],
    ),
    (
        (
            "do-without-call",
            "`{opener}` needs a step call with parentheses",
            "write the step and its arguments, like `do charge_payment(order)`",
        ),
        [
            _W + "    do validate\n",
            _W + "    x = do validate\n",
            _W + "    do 5\n",
            _W + "    do\n",
            _W + "    x = do\n",
            _W + "    try send_email\n",
            _W + '    c = cascade "t":\n        code: rule_based\n',
        ],
    ),
    (
        (
            "option-without-value",
            "`{word}` needs a value",
            "give a number or a duration, like `retries 3`, `backoff 2.0` or `timeout 30s`",
        ),
        [
            "step s retries\n",
            "step s backoff\n",
            "step s delay\n",
            "step s max_delay\n",
            "step s timeout\n",
            "step s retries three\n",
            _W + "    do s(x) retries\n",
            _W + "    do s(x) timeout\n",
            _W + '    c = cascade "t" threshold:\n        code: f(x)\n',
        ],
    ),
    (
        (
            "missing-run",
            "missing `run` before the workflow to start",
            "write `every <when> run <workflow>` or `on <Event.name> run <workflow>`",
        ),
        [
            "every day at 9am report\n",
            "every 15 minutes check\n",
            "every monday report\n",
            'every day at 6pm timezone "UTC" report\n',
            "every day\n",
            "on Order.placed confirm\n",
            "on *.failed log\n",
            "on Order\n",
        ],
    ),
    (
        (
            "bad-duration",
            "`{token}` is not a duration unit",
            "write the number and the unit together: 500ms, 30s, 15m, 1h, 7d or 2w",
        ),
        [
            _W + "    sleep 5 parsecs\n",
            _W + "    x = 5.5 parsecs\n",
            "step s timeout 5 parsecs\n",
            "step s timeout 5.5 parsecs\n",
        ],
    ),
    (
        (
            "bad-time",
            "`{token}` is not a time of day",
            "write a time like 9am, 6:30pm or 18:00",
        ),
        [
            "every day at 9 oclock run report\n",
            "every day at noon run report\n",
            "every day at run report\n",
        ],
    ),
    (
        (
            "missing-params",
            "a workflow needs parentheses after its name, even with no parameters",
            "write `workflow name(param: Type):`",
        ),
        [
            "workflow w:\n    pass\n",
            "workflow w -> T:\n    pass\n",
        ],
    ),
    (
        (
            "missing-type",
            "expected a type after `{word}`",
            "write a type name such as Order, str, int, list[Item] or null",
        ),
        [
            "workflow w() -> :\n    pass\n",
            "workflow w(x:) :\n    pass\n",
            "workflow w(x: ) -> T:\n    pass\n",
        ],
    ),
    (
        (
            "event-needs-string",
            "the event name must be in quotes",
            'write it as a string, like send "Order.placed" {{order_id: order.id}}',
        ),
        [
            _W + "    send Order.placed\n",
            _W + "    send\n",
            _W + "    x = wait for Payment.confirmed\n",
            _W + "    wait for Payment.confirmed\n",
        ],
    ),
    (
        (
            "missing-for",
            "write `wait for` followed by the event name in quotes",
            'like `evt = wait for "Payment.confirmed" timeout 1d`',
        ),
        [
            _W + '    wait "Payment.confirmed"\n',
            _W + '    x = wait "Payment.confirmed"\n',
            _W + "    wait 5m\n",
        ],
    ),
    (
        (
            "try-without-handler",
            "a `try` block needs an `except` or a `finally` after it",
            "add `except:` (or `except SomeError as e:`) or `finally:` at the same indentation",
        ),
        [
            _W + "    try:\n        pass\n    x = 1\n",
            _W + "    try:\n        pass\n",
        ],
    ),
    (
        (
            "missing-expression",
            "expected a value after `{word}`",
            'write a value: a name, a number, a "string", a [list] or a {{dict}}',
        ),
        [
            _W + "    x =\n",
            _W + "    if :\n        pass\n",
            _W + "    x = 1 +\n",
            _W + "    x = a and\n",
            _W + "    x = not\n",
            _W + "    sleep until\n",
            _W + "    while :\n        pass\n",
        ],
    ),
    (
        (
            "approval-field",
            "an approval lists its fields one per line, as `name: value`",
            'like `title: "PO {{po.id}}"` or `approvers: ["manager", "director"]`',
        ),
        [
            _W + '    a = approval "x":\n        title "t"\n',
            _W + '    a = approval "x":\n        title = "t"\n',
            _W + '    a = approval "x":\n        "t"\n',
        ],
    ),
    (
        (
            "cascade-tier",
            "a cascade lists its tiers one per line, as `tier: step(args)`",
            "like `code: rule_based(expense)`; tiers are code, generative, agentic and human",
        ),
        [
            _W + '    c = cascade "x":\n        code rule_based(x)\n',
            _W + '    c = cascade "x":\n        code = rule_based(x)\n',
        ],
    ),
]
