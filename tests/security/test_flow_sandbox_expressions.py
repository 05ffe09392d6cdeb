"""Expressions in a `.flow` file cannot reach Python internals, and approvals must name
someone.

A flow's expressions call only steps (with do/try), imported data types and the builtins of
`flow_builtins`; there are no methods. What remains to guard is reading: names and fields
with `__` or a leading `_`, and the few public fields that lead to frames and code. A
dunder inside a string stays text, because nothing a flow can call turns text into an
attribute (`attrgetter`, `getattr`, `str.format` are all out of reach). The compiled code
runs against a namespace whose builtins are exactly the flow builtins, which the last tests
check directly.
"""

from __future__ import annotations

import pytest

from dotdo.dsl.flow.builtins import BUILTINS, runtime_namespace
from dotdo.dsl.flow.checker import check_source
from dotdo.dsl.flow.diagnostics import Diagnostic
from dotdo.dsl.flow.loader import load_source

HEAD = """\
import examples.orders: Order, Receipt
step s = examples.flow_steps:echo

workflow w(order: Order, data: dict) -> Receipt:
    x = do s(order)
"""
BODY_LINE = 6


def errors(body: str) -> list[Diagnostic]:
    text = HEAD + "".join(f"    {line}\n" for line in body.splitlines())
    found = [d for d in check_source(text, "expr.flow") if d.is_error]
    assert found, f"accepted:\n{text}"
    return found


def test_the_head_alone_is_accepted() -> None:
    text = HEAD + "    return x\n"
    assert [d for d in check_source(text, "expr.flow") if d.is_error] == []


@pytest.mark.parametrize(
    "body",
    [
        "y = order.__class__",
        "y = order.__dict__",
        "y = x.__init__.__globals__",
        "y = order.email.__class__.__mro__",
        'y = "{order.__class__}"',
        "y = \"{x.__init__.__globals__['os']}\"",
        "y = __builtins__",
        "y = __import__",
        "__y = 1",
        "y = Receipt(__x=1)",
        "y = data[0].__class__",
    ],
)
def test_dunders_in_names_fields_and_interpolations_are_refused(body: str) -> None:
    found = errors(body)
    assert found[0].code == "dunder" and found[0].line == BODY_LINE, found


@pytest.mark.parametrize(
    "body",
    [
        "y = order._secret",
        "y = x._private.value",
        'y = "{order._cache}"',
        "_y = 1",
        "y = Receipt(_x=1)",
        "for _ in data:\n    pass",
    ],
)
def test_names_and_fields_starting_with_an_underscore_are_refused(body: str) -> None:
    found = errors(body)
    assert found[0].code == "private-name" and found[0].line == BODY_LINE, found


@pytest.mark.parametrize(
    "body",
    ["y = x.tb_frame", "y = x.gi_frame.f_globals", "y = x.f_back", "y = order.mro", "y = x.f_code"],
)
def test_fields_leading_to_frames_and_code_are_refused(body: str) -> None:
    assert errors(body)[0].code == "internal-field"


@pytest.mark.parametrize(
    "body",
    [
        'y = getattr(order, "__class__")',
        'y = attrgetter("__init__.__globals__")(x)',
        'y = format("{0.__class__}", x)',
        'y = "{0.__class__}".format(x)',
        "y = order.model_dump()",
        "y = vars(order)",
        'y = eval("1 + 1")',
        'y = exec("x = 1")',
        'y = open("/etc/passwd")',
        "y = type(order)",
        'y = compile("1", "f", "eval")',
        "y = globals()",
        "y = data[0](1)",
        "y = (x)(1)",
    ],
)
def test_nothing_but_steps_builtins_and_types_can_be_called(body: str) -> None:
    assert errors(body)[0].code == "bad-call"


def test_a_dunder_inside_plain_text_stays_text() -> None:
    """The string is data: no callable in reach interprets it as an attribute path."""
    text = HEAD + '    y = "__init__.__globals__"\n    return Receipt(order_id=y, status="", '
    text += 'payment_id="", amount=len(y))\n'
    assert [d for d in check_source(text, "expr.flow") if d.is_error] == []
    load_source(text, "expr.flow")  # compiles, and holds nothing that could call it


def test_the_compiled_code_sees_only_the_flow_builtins() -> None:
    namespace = runtime_namespace({})
    assert set(namespace["__builtins__"]) == set(BUILTINS)
    for name in ("getattr", "eval", "exec", "open", "__import__", "type", "vars", "format"):
        assert name not in namespace["__builtins__"]
    assert {"open", "getattr", "__import__"}.isdisjoint(namespace)


# ------------------------------------------------------------------------- approvals
APPROVAL = """\
workflow w(po: dict):
    d = approval "po":
        title: "PO"
        {field}
    return d
"""


@pytest.mark.parametrize(
    "field",
    [
        "approvers: []",
        'approvers: [""]',
        'approvers: ["manager", ""]',
        "approvers: [1, 2]",
        "approvers: [null]",
        'approvers: ""',
        "approvers: null",
        "approvers: 3",
        "approvers: {a: 1}",
        'approver: ""',
        'approver: ["a", "b"]',
        "approver: true",
    ],
)
def test_approvals_must_name_someone(field: str) -> None:
    found = [d for d in check_source(APPROVAL.format(field=field), "approval.flow") if d.is_error]
    assert [(d.code, d.line) for d in found] == [("approval-field", 4)], found


@pytest.mark.parametrize(
    "field",
    [
        'approver: "manager"\n        deadline: -1d',
        'approver: "manager"\n        deadline: 0s',
        'approver: "manager"\n        type: ""',
        'approver: "manager"\n        type: 3',
        'approver: "manager"\n        extra: [1]',
    ],
)
def test_approval_fields_the_engine_would_refuse_are_check_errors(field: str) -> None:
    found = [d for d in check_source(APPROVAL.format(field=field), "approval.flow") if d.is_error]
    assert [(d.code, d.line) for d in found] == [("approval-field", 5)], found


@pytest.mark.parametrize(
    "field",
    [
        'approvers: ["manager", "vp"]',
        'approver: "manager"',
        'approvers: "manager"',
        "approvers: po.chain",
        'approver: "manager"\n        deadline: 7d',
        'approver: "manager"\n        extra: {cost_center: 42}',
    ],
)
def test_good_approvals_still_pass(field: str) -> None:
    found = [d for d in check_source(APPROVAL.format(field=field), "approval.flow") if d.is_error]
    assert found == []
