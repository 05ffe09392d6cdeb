"""Every mistake in a .flow file is reported where it is, explained in words.

Syntax mistakes are recognised by example (`match_examples`); each recognised kind is
tested with its own code, position and wording, at different nesting depths. Semantic
mistakes are all collected, not only the first, and none ever escapes as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dotdo.dsl.flow.checker import check_file, check_files, check_source  # noqa: E402
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowError, FlowSyntaxError  # noqa: E402
from dotdo.dsl.flow.loader import load_source  # noqa: E402
from dotdo.dsl.flow.parser import parse_source  # noqa: E402
from dotdo.errors import CompileError, DotdoError  # noqa: E402

W = "workflow w(x):\n"
DEEP = "workflow w(x):\n    for i in x:\n        while true:\n"


def syntax(text: str) -> Diagnostic:
    with pytest.raises(FlowSyntaxError) as info:
        parse_source(text, "t.flow")
    assert len(info.value.diagnostics) == 1
    return info.value.diagnostics[0]


SYNTAX_CASES = [
    # (id, text, code, line, col, words in the message)
    ("colon-if", W + "    if x > 1\n        pass\n", "missing-colon", 2, 13, "`if` line"),
    (
        "colon-deep",
        DEEP + "            if x.y\n                pass\n",
        "missing-colon",
        4,
        19,
        "`if`",
    ),
    ("colon-for", W + "    for i in x\n        pass\n", "missing-colon", 2, 15, "`for`"),
    ("colon-while", W + "    while x\n        pass\n", "missing-colon", 2, 12, "`while`"),
    ("colon-workflow", "workflow w(o: T) -> R\n    pass\n", "missing-colon", 1, 22, "`workflow`"),
    (
        "colon-else",
        W + "    if x:\n        pass\n    else\n        pass\n",
        "missing-colon",
        4,
        9,
        "",
    ),
    ("block", W + "    if x:\n    pass\n", "missing-block", 3, 5, "indented block after the `if`"),
    ("block-eof", W + "    while x:\n", "missing-block", 2, 13, "indented block"),
    ("block-workflow", "workflow w():\nuse x\n", "missing-block", 2, 1, "`workflow`"),
    ("indent", W + "    x = 1\n        y = 2\n", "unexpected-indent", 3, 9, "unexpected indent"),
    ("string", W + '    y = "abc\n', "unterminated-string", 2, 9, "never closed"),
    ("string-single", W + "    send 'A.b\n", "unterminated-string", 2, 10, "never closed"),
    ("bracket-open", W + "    y = [1, 2\n    z = 3\n", "unbalanced-bracket", 2, 9, "'[' is never"),
    ("bracket-close", W + "    y = 1)\n", "unbalanced-bracket", 2, 10, "no matching"),
    ("bracket-mismatch", W + "    y = (1, 2]\n", "unbalanced-bracket", 2, 14, "does not match"),
    ("assign-if", W + "    if x = 1:\n        pass\n", "assign-in-condition", 2, 10, "'=='"),
    (
        "assign-deep",
        DEEP + "            if x.y = 1:\n                pass\n",
        "assign-in-condition",
        4,
        20,
        "==",
    ),
    ("assign-while", W + "    while x = 1:\n        pass\n", "assign-in-condition", 2, 13, "=="),
    ("unknown-stmt", W + "    call foo(x)\n", "unknown-statement", 2, 5, "`call` does not start"),
    ("unknown-deep", DEEP + '            print "x"\n', "unknown-statement", 4, 13, "`print`"),
    ("do-no-call", W + "    y = do validate\n", "do-without-call", 2, 20, "`do` needs a step call"),
    ("try-no-call", W + "    try send_email\n", "do-without-call", 2, 19, "`try` needs"),
    ("do-alone", W + "    do\n", "do-without-call", 2, 7, "`do` needs"),
    ("else-alone", W + "    x = 1\n    else:\n        pass\n", "else-without-if", 3, 5, "`else`"),
    ("elif-alone", W + "    x = 1\n    elif x:\n        pass\n", "else-without-if", 3, 5, "`elif`"),
    ("except-alone", W + "    x = 1\n    except:\n        pass\n", "except-without-try", 3, 5, ""),
    ("retries", "step charge retries\n", "option-without-value", 1, 20, "`retries` needs a value"),
    ("timeout", "step charge timeout\n", "option-without-value", 1, 20, "`timeout`"),
    ("retries-word", "step charge retries three\n", "option-without-value", 1, 21, "`retries`"),
    ("call-option", W + "    do f(x) backoff\n", "option-without-value", 2, 20, "`backoff`"),
    ("every-run", "every day at 9am report\n", "missing-run", 1, 18, "missing `run`"),
    ("every-interval", "every 15 minutes check\n", "missing-run", 1, 18, "missing `run`"),
    ("on-run", "on Order.placed confirm\n", "missing-run", 1, 17, "missing `run`"),
    ("duration", W + "    sleep 5 parsecs\n", "bad-duration", 2, 13, "`parsecs`"),
    ("duration-glued", W + "    sleep 5parsecs\n", "bad-duration", 2, 12, "`parsecs`"),
    ("duration-step", "step s timeout 5 parsecs\n", "bad-duration", 1, 18, "`parsecs`"),
    ("tab", W + "\tx = 1\n", "tab-indent", 2, 1, "tab"),
    ("dedent", W + "    if x:\n        y = 1\n      z = 2\n", "bad-dedent", 4, 7, "indentation"),
    (
        "no-workflow",
        "process(order: Order) -> Receipt:\n    pass\n",
        "unknown-top-level",
        1,
        1,
        "workflow",
    ),
    ("top-level", "foo bar\n", "unknown-top-level", 1, 1, "`foo`"),
    ("bad-time", "every day at 9 oclock run report\n", "bad-time", 1, 14, "time of day"),
    ("params", "workflow w:\n    pass\n", "missing-params", 1, 11, "parentheses"),
    ("return-type", "workflow w() -> :\n    pass\n", "missing-type", 1, 17, "a type after `->`"),
    ("send-name", W + "    send Order.placed\n", "event-needs-string", 2, 10, "quotes"),
    ("wait-for", W + '    wait "Payment.confirmed"\n', "missing-for", 2, 10, "`wait for`"),
    ("try-handler", W + "    try:\n        pass\n    x = 1\n", "try-without-handler", 4, 5, ""),
    ("expression", W + "    y =\n", "missing-expression", 2, 8, "a value after `=`"),
    (
        "approval-field",
        W + '    a = approval "x":\n        title "t"\n',
        "approval-field",
        3,
        15,
        "",
    ),
    ("cascade-tier", W + '    c = cascade "x":\n        code f(x)\n', "cascade-tier", 3, 14, ""),
    ("bad-char", W + "    y = a ? b : c\n", "bad-character", 2, 11, "'?'"),
    ("event-chars", "on Order-placed run x\n", "bad-event", 1, 9, "`-`"),
    ("dict-equals", W + '    send "a" {a = 1}\n', "dict-equals", 2, 17, "':'"),
    ("plus-equals", W + "    x += 1\n", "augmented-assign", 2, 8, "`+=`"),
    ("do-inside", W + "    return do f(x)\n", "do-in-expression", 2, 15, "own"),
    ("do-then-more", W + "    y = do f(x) + 1\n", "do-in-expression", 2, 17, "one step"),
    ("if-do", W + "    if do f(x):\n        pass\n", "do-in-expression", 2, 11, "`do`"),
]


@pytest.mark.parametrize(
    ("text", "code", "line", "col", "words"),
    [case[1:] for case in SYNTAX_CASES],
    ids=[case[0] for case in SYNTAX_CASES],
)
def test_syntax_mistakes_are_recognised(
    text: str, code: str, line: int, col: int, words: str
) -> None:
    diag = syntax(text)
    assert (diag.code, diag.line, diag.col) == (code, line, col), diag.render()
    assert words in diag.message
    assert diag.expected  # what was expected, in words


def test_at_least_twelve_kinds_of_syntax_mistake_are_recognised() -> None:
    kinds = {case[2] for case in SYNTAX_CASES} - {"syntax"}
    assert len(kinds) >= 25


def test_a_diagnostic_renders_place_line_caret_and_expectation() -> None:
    diag = syntax(W + "    if x > 1\n        pass\n")
    lines = diag.render().split("\n")
    assert lines[0] == "t.flow:2:13: missing ':' at the end of the `if` line"
    assert lines[1] == "        if x > 1"
    assert lines[2] == "    " + " " * 12 + "^"
    assert lines[3] == "    expected ':' and then an indented block below it"


def test_long_lines_show_the_parsers_context_around_the_column() -> None:
    long = W + "    y = " + " + ".join(["order.amount"] * 12) + " parsecs\n"
    diag = syntax(long)
    shown, caret = diag.render().split("\n")[1:3]
    assert len(shown) < len(diag.source)  # clipped by UnexpectedInput.get_context
    assert shown[caret.index("^") :].startswith("parsecs")


def test_errors_inside_string_braces_point_into_the_string() -> None:
    diag = syntax(W + '    y = "hello {order.}"\n')
    assert (diag.line, diag.col) == (2, 23)
    assert "braces" in diag.message
    assert "closing brace" in diag.message


def test_other_string_mistakes() -> None:
    assert "'}}'" in (syntax(W + '    y = "a } b"\n').expected or "")
    assert "escape" in syntax(W + '    y = "a \\q"\n').message
    assert "empty" in syntax(W + '    y = "a {} b"\n').message


def test_an_unknown_mistake_still_names_what_was_expected() -> None:
    diag = syntax(W + "    y = 1 2\n")
    assert diag.code == "syntax"
    assert diag.message == "unexpected '2'"
    assert diag.expected == "expected an operator or the end of the line"


def test_nesting_beyond_reason_is_a_diagnostic_not_a_crash() -> None:
    deep = W + "    y = " + "[" * 3000 + "1" + "]" * 3000 + "\n"
    assert syntax(deep).code == "too-deep"
    long = W + "    y = 1" + " + 1" * 3000 + "\n"
    assert [d.code for d in check_source(long)] == ["too-deep"]


def test_flow_errors_belong_to_the_projects_error_family() -> None:
    with pytest.raises(FlowError) as info:
        parse_source(W + "    if x\n")
    assert isinstance(info.value, CompileError)
    assert isinstance(info.value, DotdoError)
    assert str(info.value).startswith("1 error in <flow>\n<flow>:2:9: missing ':'")


# ------------------------------------------------------------------ semantic errors
HEAD = """use examples.flow_steps
import examples.orders: Order, Receipt

step validate_order
step charge_payment retries 3 compensate with refund_payment
step refund_payment
step send_email
"""


def errors(text: str) -> list[Diagnostic]:
    return [d for d in check_source(text, "s.flow") if d.is_error]


def codes(text: str) -> list[str]:
    return [d.code for d in errors(text)]


def only(text: str, code: str) -> Diagnostic:
    found = [d for d in check_source(text, "s.flow") if d.is_error]
    assert [d.code for d in found] == [code], [d.render() for d in found]
    return found[0]


def wf(body: str, params: str = "order: Order") -> str:
    lines = "".join(f"    {line}\n" for line in body.strip("\n").split("\n"))
    return f"{HEAD}\nworkflow w({params}):\n{lines}"


def test_a_clean_file_has_no_diagnostics() -> None:
    text = wf("v = do validate_order(order)\np = do charge_payment(v)\nreturn p")
    assert errors(text) == []


def test_undefined_name_is_pointed_at_with_a_suggestion() -> None:
    diag = only(wf("v = do validate_order(ordr)"), "undefined-name")
    assert (diag.line, diag.col) == (10, 27)
    assert diag.expected == "did you mean `order`?"


def test_step_used_but_not_declared() -> None:
    diag = only(wf("do fulfil_order(order)"), "unknown-step")
    assert "unknown step `fulfil_order`" in diag.message
    assert "step fulfil_order" in (diag.expected or "")


def test_step_declared_but_not_in_the_bound_module() -> None:
    diag = only(HEAD + "step no_such_function\n", "unknown-step")
    assert diag.line == 8
    assert "examples.flow_steps" in diag.message


def test_step_bound_to_a_missing_function_or_module() -> None:
    assert only("step s = examples.flow_steps:nope\n", "unknown-step").line == 1
    assert only("step s = examples.nowhere:f\n", "bad-module").line == 1


def test_wrong_arity_compares_with_the_bound_function() -> None:
    diag = only(wf("v = do validate_order(order, 2)"), "arity")
    assert "it takes (order)" in diag.message
    diag = only(wf("v = do validate_order(order=order, x=1)"), "arity")
    assert "unexpected keyword argument 'x'" in diag.message


def test_duplicate_step_ids() -> None:
    text = wf('a = do validate_order(order) as "v"\nb = do validate_order(order) as "v"')
    diag = only(text, "dup-step-id")
    assert diag.line == 11
    assert "line 10" in (diag.expected or "")


def test_code_after_return_or_fail() -> None:
    assert only(wf("return 1\nx = 2"), "dead-code").line == 11
    assert "`fail`" in only(wf('fail "no"\nx = 2'), "dead-code").message


def test_unknown_types_in_imports_and_annotations() -> None:
    assert only("import examples.orders: Ordr\n", "unknown-type").expected == (
        "did you mean `Order`?"
    )
    assert only("import examples.orders: SAMPLE\n", "not-a-type").line == 1
    assert only(wf("return 1", params="order: Ordr"), "unknown-type").col == 19


def test_dunder_names_and_attributes_are_rejected() -> None:
    assert only(wf("x = order.__class__"), "dunder").col == 9
    assert only(wf("__x = 1"), "dunder").line == 10
    assert set(codes(wf("x = len(order, __y=1)"))) == {"dunder", "arity"}
    assert "dunder" in codes(HEAD + "step __s = examples.flow_steps:echo\n")


def test_calling_a_non_step_non_builtin() -> None:
    diag = only(wf("x = open(order)"), "bad-call")
    assert "unknown function `open`" in diag.message
    assert only(wf("x = order.email.lower()"), "bad-call").expected == "use the builtin: lower(x)"
    assert only(wf("x = validate_order(order)"), "step-without-do").line == 10
    assert only(wf("validate_order(order)"), "step-without-do").expected == (
        "write `do validate_order(...)`"
    )


def test_builtins_have_their_arity_checked() -> None:
    assert "round takes from 1 to 2" in (only(wf("x = round()"), "arity").expected or "")
    assert errors(wf("x = round(1.5, ndigits=1)\ny = max(1, 2, 3)")) == []


def test_recorded_values_stand_alone() -> None:
    assert errors(wf("t = now()\nu = uuid()\nr = random()")) == []
    assert only(wf("t = now() + 1"), "bad-record").line == 10


def test_break_continue_and_bare_fail_need_their_context() -> None:
    assert "outside a loop" in only(wf("break"), "semantic").message
    assert "belongs in `except`" in only(wf("fail"), "semantic").message
    text = wf("try:\n    do validate_order(order)\nexcept Error:\n    fail")
    assert errors(text) == []


def test_options_are_validated() -> None:
    assert only(wf("try send_email(order.email, 's') retries 2"), "bad-option").line == 10
    assert "at least 1" in only(HEAD + "step echo backoff 0.5\n", "bad-option").message
    assert only(HEAD + 'step echo as "x"\n', "bad-option").line == 8
    assert (
        "not a declared step"
        in only(HEAD + "step echo compensate with x\n", "unknown-step").message
    )


def test_approval_cascade_and_wait_shapes() -> None:
    body = 'a = approval "po":\n    title: "t"\n    colour: "red"\n    approver: "m"'
    assert only(wf(body), "approval-field").line == 12
    assert (
        "needs `approver"
        in only(wf('a = approval "po":\n    title: "t"'), "approval-field").message
    )
    tiers = "    code: validate_order(order)\n    robot: validate_order(order)"
    body = f'c = cascade "t" threshold 0.9:\n{tiers}'
    assert only(wf(body), "cascade-tier").expected == "tiers: code, generative, agentic, human"
    body = 'e = wait for "Payment.ok" where event.total > 1 timeout 1d'
    assert only(wf(body), "bad-where").col == 37
    assert only(wf("sleep 5"), "bad-duration").message.startswith("a sleep needs a unit")
    assert only(wf('send "Order placed!"'), "bad-event").col == 10


def test_schedules_and_handlers_are_validated() -> None:
    text = HEAD + "\nworkflow report():\n    pass\n\nworkflow confirm(event):\n    pass\n\n"
    assert errors(text + "every monday at 9am run report\non Order.* run confirm\n") == []
    assert "at least 1" in only(text + "every 0 minutes run report\n", "bad-schedule").message
    assert only(text + "every mondey at 9am run report\n", "bad-schedule").expected == (
        "did you mean `monday`?"
    )
    assert only(text + "every day at 25:00 run report\n", "bad-time").line == 15
    assert (
        "timezone"
        in only(text + 'every day at 9am timezone "Mars/Base" run report\n', "bad-schedule").message
    )
    assert only(text + "every 15 seconds run report\n", "bad-schedule").expected == (
        "the shortest schedule is `every minute`"
    )
    assert only(text + "every day run nothing\n", "unknown-workflow").line == 15
    assert only(text + "every day run confirm\n", "schedule-params").line == 15
    assert only(text + 'on "Order placed" run confirm\n', "bad-event").line == 15
    assert only(text + "on Order.placed run report\n", "handler-params").line == 15


def test_every_semantic_error_of_a_file_is_reported() -> None:
    text = wf(
        """
v = do validate_order(order, 1)
p = do charge_paymnt(v)
q = unknown + 1
z = order.__dict__
if v:
    return v
    w = 1
"""
    )
    assert codes(text) == ["arity", "unknown-step", "undefined-name", "dunder", "dead-code"]


def test_unused_steps_are_warnings() -> None:
    found = check_source(HEAD + "step echo\n", "s.flow")
    assert {d.severity for d in found} == {"warning"}
    assert all(d.code == "unused-step" for d in found)


def test_check_files_reports_every_file_and_unreadable_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.flow"
    good.write_text(wf("v = do validate_order(order)\nx = do charge_payment(v)"))
    bad = tmp_path / "bad.flow"
    bad.write_text(wf("v = do nope(order)\nx = y"))
    broken = tmp_path / "broken.flow"
    broken.write_text(W + "    if x\n")
    # The files live outside this project, so the module they use must be allowed by name.
    files = [good, bad, broken, tmp_path / "missing.flow"]
    found = [d for d in check_files(files, flow_modules=["examples"]) if d.is_error]
    assert [(Path(d.path).name, d.code) for d in found] == [
        ("bad.flow", "unknown-step"),
        ("bad.flow", "undefined-name"),
        ("broken.flow", "missing-colon"),
        ("missing.flow", "unreadable"),
    ]
    assert {d.severity for d in check_file(good, flow_modules=["examples"])} <= {"warning"}
    assert [d.code for d in check_file(good) if d.is_error][:2] == ["not-allowed"] * 2


def test_loading_a_broken_file_raises_one_error_listing_everything() -> None:
    with pytest.raises(FlowError) as info:
        load_source(wf("v = do nope(order)\nx = y"), "x.flow")
    assert [d.code for d in info.value.diagnostics] == ["unknown-step", "undefined-name"]
    assert str(info.value).startswith("2 errors in x.flow\nx.flow:10:12: unknown step `nope`")
