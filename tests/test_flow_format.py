"""The formatter is a fixed point that loses nothing, and bad input never crashes anything.

Hypothesis builds random flow trees (every statement and expression kind, strings with
escapes and interpolation, nesting), prints them, parses the text back and requires the
same tree; formatting twice changes nothing. A fuzz test feeds random text and mutated
example files to the parser, the checker and the formatter: the only exceptions allowed
are the project's own.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dotdo.dsl.flow import nodes as A  # noqa: E402
from dotdo.dsl.flow.checker import check_source  # noqa: E402
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowError  # noqa: E402
from dotdo.dsl.flow.formatter import format_file, format_module, format_source  # noqa: E402
from dotdo.dsl.flow.parser import parse_source  # noqa: E402

EXAMPLES = sorted((ROOT / "examples").glob("*.flow"))
T = TypeVar("T")
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ strategies
names = st.sampled_from(["a", "b", "order", "total", "item", "x1", "payment", "_tmp", "Data"])
attrs = st.sampled_from(["id", "amount", "status", "type", "run", "for", "timeout", "data"])
text = st.text(
    alphabet=st.sampled_from(list(string.ascii_letters + string.digits + " .,:-_#{}'\"\\\n\t€")),
    max_size=12,
)
numbers = st.one_of(
    st.integers(min_value=0, max_value=10**12),
    st.floats(min_value=0, max_value=1e20, allow_nan=False, allow_infinity=False),
)
durations = st.builds(
    A.Duration,
    st.one_of(st.integers(0, 10**6), st.integers(0, 10**5).map(lambda n: n / 8)),
    st.sampled_from(["ms", "s", "m", "h", "d", "w"]),
)


def normal_parts(parts: list[str | A.Expr]) -> tuple[str | A.Expr, ...]:
    """The parser's shape: adjacent text merged, empty text dropped (but "" stays "")."""
    out: list[str | A.Expr] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += part
                continue
        out.append(part)
    return tuple(out) or ("",)


plain_strings = text.map(lambda t: A.Str(normal_parts([t])))


def expressions(inner: st.SearchStrategy[A.Expr]) -> st.SearchStrategy[A.Expr]:
    """Composite expressions over `inner`."""
    calls = st.builds(
        A.Call,
        st.one_of(names.map(A.Name), st.builds(A.Attr, names.map(A.Name), attrs)),
        st.lists(inner, max_size=3).map(tuple),
        st.lists(st.builds(A.Keyword, names, inner), max_size=2).map(tuple),
    )
    dicts = st.dictionaries(text, inner, max_size=3).map(lambda d: A.DictLit(tuple(d.items())))
    return st.one_of(
        st.builds(A.Attr, inner, attrs),
        st.builds(A.Index, inner, inner),
        calls,
        st.builds(A.BinOp, st.sampled_from(["+", "-", "*", "/", "//", "%"]), inner, inner),
        st.builds(A.UnaryOp, st.sampled_from(["-", "+", "not"]), inner),
        st.lists(
            st.tuples(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]), inner),
            min_size=1,
            max_size=3,
        ).flatmap(
            lambda pairs: inner.map(
                lambda left: A.Compare(left, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
            )
        ),
        st.builds(
            A.BoolOp,
            st.sampled_from(["and", "or"]),
            st.lists(inner, min_size=2, max_size=3).map(tuple),
        ),
        st.builds(A.IfExp, inner, inner, inner),
        st.lists(inner, max_size=3).map(lambda items: A.ListLit(tuple(items))),
        dicts,
    )


def short(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """Hypothesis prints nested strategies eagerly while validating them; `deferred` keeps
    that text (and the time to build it) small."""
    return st.deferred(lambda: strategy)


leaves = st.one_of(
    numbers.map(A.Const),
    st.sampled_from([True, False, None]).map(A.Const),
    plain_strings,
    durations,
    names.map(A.Name),
)
# Inside `{...}` of a string: no further interpolation (a string there is one level deep).
leaves = short(leaves)
interpolated = short(st.recursive(leaves, expressions, max_leaves=4))
strings = short(
    st.lists(st.one_of(text, interpolated), max_size=4).map(
        lambda parts: A.Str(normal_parts(parts))
    )
)
exprs = short(st.recursive(st.one_of(leaves, strings), expressions, max_leaves=8))
option_values = st.one_of(numbers.map(A.Const), durations)
options = st.builds(
    A.Options,
    step_id=st.none() | text,
    retries=st.none() | option_values,
    backoff=st.none() | option_values,
    delay=st.none() | option_values,
    max_delay=st.none() | option_values,
    timeout=st.none() | option_values,
    compensate=st.none() | names,
)
step_calls = st.builds(
    A.Call,
    names.map(A.Name),
    st.lists(exprs, max_size=2).map(tuple),
    st.lists(st.builds(A.Keyword, names, exprs), max_size=2).map(tuple),
)
targets = st.none() | names


def simple_statements() -> st.SearchStrategy[A.Stmt]:
    return st.one_of(
        st.builds(A.Assign, names, exprs),
        st.builds(A.ExprStmt, exprs),
        st.builds(A.Do, st.sampled_from(["do", "try"]), step_calls, targets, options),
        st.builds(A.Send, strings, st.none() | exprs),
        st.builds(A.Sleep, exprs, st.booleans()),
        st.builds(
            A.WaitFor, strings, st.none() | exprs, st.none() | exprs, targets, st.none() | text
        ),
        st.builds(A.Return, st.none() | exprs),
        st.builds(A.Fail, st.none() | exprs),
        st.just(A.Break()),
        st.just(A.Continue()),
        st.just(A.Pass()),
        st.builds(
            A.Approval,
            text,
            st.lists(st.builds(A.Field, names, exprs), min_size=1, max_size=3).map(tuple),
            targets,
        ),
        st.builds(
            A.Cascade,
            text,
            st.lists(st.builds(A.Tier, names, step_calls), min_size=1, max_size=3).map(tuple),
            st.none() | option_values,
            targets,
            st.none() | text,
        ),
    )


def compound(inner: st.SearchStrategy[tuple[A.Stmt, ...]]) -> st.SearchStrategy[A.Stmt]:
    body = short(inner)
    handlers = st.lists(
        st.builds(A.Handler, st.lists(names, max_size=2).map(tuple), st.none() | names, body),
        min_size=1,
        max_size=2,
    ).map(tuple)
    tries = st.one_of(
        st.builds(A.Try, body, handlers, st.one_of(st.just(()), body)),
        st.builds(A.Try, body, st.just(()), body),
    )
    return st.one_of(
        st.builds(A.If, exprs, body, st.one_of(st.just(()), body)),
        st.builds(A.For, names, exprs, body),
        st.builds(A.While, exprs, body),
        tries,
    )


simple = short(simple_statements())
bodies = st.recursive(
    st.lists(simple, min_size=1, max_size=3).map(tuple),
    lambda inner: st.lists(st.one_of(simple, compound(inner)), min_size=1, max_size=3).map(tuple),
    max_leaves=10,
)
bodies = short(bodies)
type_names = st.recursive(
    st.one_of(names.map(A.TypeName), st.just(A.TypeName("null"))),
    lambda inner: st.builds(A.TypeName, names, st.lists(inner, min_size=1, max_size=2).map(tuple)),
    max_leaves=3,
)
type_names = short(type_names)
types = st.one_of(
    type_names,
    st.lists(type_names, min_size=2, max_size=3).map(lambda ts: A.TypeUnion(tuple(ts))),
)
dotted = st.lists(names, min_size=1, max_size=3).map(".".join)
patterns = st.lists(st.one_of(names, st.just("*")), min_size=1, max_size=3).map(".".join)
items = st.one_of(
    st.builds(A.Use, dotted),
    st.builds(A.Import, dotted, st.lists(names, min_size=1, max_size=3).map(tuple)),
    st.builds(A.StepDecl, names, st.none(), st.none(), options),
    st.builds(A.StepDecl, names, dotted, names, options),
    st.builds(
        A.Workflow,
        names,
        st.lists(st.builds(A.Param, names, st.none() | types, st.none() | exprs), max_size=3).map(
            tuple
        ),
        bodies,
        st.none() | types,
    ),
    st.builds(
        A.Every,
        st.sampled_from(["minutes", "hour", "day", "monday", "sunday"]),
        names,
        st.none() | st.integers(0, 500),
        st.none() | st.sampled_from(["9am", "6:30pm", "18:00", "12AM"]),
        st.none() | text,
    ),
    st.builds(A.On, st.one_of(patterns, text), names),
)
workflows = st.builds(
    A.Workflow,
    names,
    st.lists(st.builds(A.Param, names, st.none() | types, st.none() | exprs), max_size=2).map(
        tuple
    ),
    bodies,
    st.none() | types,
)
modules = st.tuples(st.lists(items, max_size=4), workflows, st.lists(items, max_size=2)).map(
    lambda parts: A.Module((*parts[0], parts[1], *parts[2]))
)


# ------------------------------------------------------------------ properties
@SETTINGS
@given(modules)
def test_formatting_then_parsing_gives_the_same_tree(module: A.Module) -> None:
    text = format_module(module)
    assert parse_source(text) == module, text


@SETTINGS
@given(modules)
def test_formatting_is_idempotent(module: A.Module) -> None:
    text = format_module(module)
    assert format_source(text) == text


@SETTINGS
@given(exprs)
def test_expressions_round_trip_with_minimal_parentheses(e: A.Expr) -> None:
    module = A.Module((A.Workflow("w", (), (A.Assign("x", e),)),))
    text = format_module(module)
    assert parse_source(text) == module, text


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_examples_are_canonical(path: Path) -> None:
    assert format_file(path) == path.read_text()


def test_messy_text_is_normalised_and_comments_survive() -> None:
    messy = """# header comment
use   examples.flow_steps
step echo   retries 2    timeout 5s  # fast
workflow   w( x :int=1 )->dict :
    # about y
    y = {'a' : x+1 , "b c": [1,2,]}    # trailing


    z =  ( y )
    if (x==1) :
        return  {status:'ok' , 'if': x}
    else :
        fail 'no {x}'
on Order.placed   run w
"""
    assert (
        format_source(messy)
        == """# header comment
use examples.flow_steps

step echo retries 2 timeout 5s  # fast

workflow w(x: int = 1) -> dict:
    # about y
    y = {a: x + 1, "b c": [1, 2]}  # trailing

    z = y
    if x == 1:
        return {status: "ok", "if": x}
    else:
        fail "no {x}"

on Order.placed run w
"""
    )


def test_long_lines_are_split_one_item_per_line() -> None:
    body = ", ".join(f"field_{i}=value_{i}" for i in range(8))
    text = f"workflow w():\n    r = Record({body})\n"
    out = format_source(text)
    assert out.split("\n")[1:4] == [
        "    r = Record(",
        "        field_0=value_0,",
        "        field_1=value_1,",
    ]
    assert format_source(out) == out
    assert parse_source(out) == parse_source(text)


# ------------------------------------------------------------------ fuzz
def _only_own_errors(text: str) -> None:
    for fn in (parse_source, format_source):
        try:
            fn(text)
        except FlowError as exc:
            assert exc.diagnostics and all(isinstance(d, Diagnostic) for d in exc.diagnostics)
            assert all(d.code != "unexplained" for d in exc.diagnostics), exc
            assert all(d.line >= 1 and d.col >= 1 for d in exc.diagnostics), exc
    found = check_source(text, "fuzz.flow")
    assert all(isinstance(d, Diagnostic) for d in found)


WORDS = "workflow if do step use every on run approval wait_for cascade sleep return"
grammar_text = st.lists(
    st.sampled_from(
        [
            *"abcdefxyz_019 \n\n\n    ()[]{}:=,.\"'#<>+-*/!?\t\\",
            *(word.replace("_", " ") + " " for word in WORDS.split()),
            *("1h", "9am", "try", "except", "else"),
        ]
    ),
    max_size=60,
).map("".join)


@SETTINGS
@given(grammar_text)
def test_random_text_raises_only_flow_errors(text: str) -> None:
    _only_own_errors(text)


MUTATIONS = ("delete", "duplicate", "swap", "insert", "drop-line", "copy-line", "swap-lines")


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(EXAMPLES))
    text = path.read_text()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(MUTATIONS))
        if kind in ("drop-line", "copy-line", "swap-lines"):
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "drop-line":
                del lines[i]
            elif kind == "copy-line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
            continue
        i = draw(st.integers(0, max(len(text) - 2, 0)))
        if kind == "delete":
            text = text[:i] + text[i + 1 :]
        elif kind == "duplicate":
            text = text[:i] + text[i] + text[i:]
        elif kind == "swap":
            text = text[:i] + text[i + 1 : i + 2] + text[i] + text[i + 2 :]
        else:
            text = text[:i] + draw(st.sampled_from(list(":=()[]{}\"'#\t \n.,xq0-"))) + text[i:]
    return text


@SETTINGS
@given(mutated_examples())
def test_mutated_examples_raise_only_flow_errors(text: str) -> None:
    _only_own_errors(text)
