"""The .flow grammar: every construct parses into the tree the checker and compiler expect."""

from __future__ import annotations

from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.parser import parse_expression, parse_source

N = A.Name


def body(text: str) -> tuple[A.Stmt, ...]:
    lines = "".join(f"    {line}\n" for line in text.strip("\n").split("\n"))
    (wf,) = parse_source(f"workflow w():\n{lines}").items
    assert isinstance(wf, A.Workflow)
    return wf.body


def one(text: str) -> A.Stmt:
    (stmt,) = body(text)
    return stmt


def test_top_level_items() -> None:
    module = parse_source(
        """
use examples.flow_steps
import examples.orders: Order, Receipt
step validate_order
step charge retries 3 backoff 2.0 delay 500ms max_delay 1m timeout 30s compensate with refund
step refund = examples.flow_steps:refund_payment

workflow process(order: Order, note: str | null = null, tags: list[str] = []) -> Receipt:
    pass

every monday at 9am run process
every day at 6:30pm timezone "Europe/Paris" run process
every 15 minutes run process
on Order.placed run process
on *.failed run process
on "Order.*" run process
"""
    )
    use, imp, s1, s2, s3, wf, e1, e2, e3, o1, o2, o3 = module.items
    assert use == A.Use("examples.flow_steps")
    assert imp == A.Import("examples.orders", ("Order", "Receipt"))
    assert s1 == A.StepDecl("validate_order")
    assert s2 == A.StepDecl(
        "charge",
        options=A.Options(
            retries=A.Const(3),
            backoff=A.Const(2.0),
            delay=A.Duration(500, "ms"),
            max_delay=A.Duration(1, "m"),
            timeout=A.Duration(30, "s"),
            compensate="refund",
        ),
    )
    assert s3 == A.StepDecl("refund", "examples.flow_steps", "refund_payment")
    assert wf == A.Workflow(
        "process",
        (
            A.Param("order", A.TypeName("Order")),
            A.Param("note", A.TypeUnion((A.TypeName("str"), A.TypeName("null"))), A.Const(None)),
            A.Param("tags", A.TypeName("list", (A.TypeName("str"),)), A.ListLit()),
        ),
        (A.Pass(),),
        A.TypeName("Receipt"),
    )
    assert e1 == A.Every("monday", "process", at="9am")
    assert e2 == A.Every("day", "process", at="6:30pm", timezone="Europe/Paris")
    assert e3 == A.Every("minutes", "process", count=15)
    assert [o.pattern for o in (o1, o2, o3)] == ["Order.placed", "*.failed", "Order.*"]


def test_durable_statements() -> None:
    stmts = body(
        """
v = do validate(order) as "validate"
p = do charge(v, amount=5) retries 2 compensate with refund
try send_email(order.email) timeout 5s
do reserve(item)
send "Order.placed" {order_id: order.id}
send "Ping"
sleep 1h
sleep until deadline
t = now()
e = wait for "Payment.confirmed" where event.order_id == order.id timeout 1d as "paid"
"""
    )
    v, p, t, r, s1, s2, sl1, sl2, rec, wait = stmts
    assert v == A.Do("do", A.Call(N("validate"), (N("order"),)), "v", A.Options(step_id="validate"))
    assert p == A.Do(
        "do",
        A.Call(N("charge"), (N("v"),), (A.Keyword("amount", A.Const(5)),)),
        "p",
        A.Options(retries=A.Const(2), compensate="refund"),
    )
    assert t == A.Do(
        "try",
        A.Call(N("send_email"), (A.Attr(N("order"), "email"),)),
        None,
        A.Options(timeout=A.Duration(5, "s")),
    )
    assert r == A.Do("do", A.Call(N("reserve"), (N("item"),)))
    assert s1 == A.Send(
        A.Str(("Order.placed",)), A.DictLit((("order_id", A.Attr(N("order"), "id")),))
    )
    assert s2 == A.Send(A.Str(("Ping",)))
    assert sl1 == A.Sleep(A.Duration(1, "h"))
    assert sl2 == A.Sleep(N("deadline"), until=True)
    assert rec == A.Assign("t", A.Call(N("now")))
    assert wait == A.WaitFor(
        A.Str(("Payment.confirmed",)),
        A.Compare(A.Attr(N("event"), "order_id"), ("==",), (A.Attr(N("order"), "id"),)),
        A.Duration(1, "d"),
        "e",
        "paid",
    )


def test_approval_and_cascade_blocks() -> None:
    approval, cascade = body(
        """
decision = approval "po":
    title: "PO {po.id}"
    approvers: ["manager", "director"]
    deadline: 7d
cat = cascade "categorize" threshold 0.9:
    code: rule_based(e)
    human: review(e)
"""
    )
    assert approval == A.Approval(
        "po",
        (
            A.Field("title", A.Str(("PO ", A.Attr(N("po"), "id")))),
            A.Field("approvers", A.ListLit((A.Str(("manager",)), A.Str(("director",))))),
            A.Field("deadline", A.Duration(7, "d")),
        ),
        "decision",
    )
    assert cascade == A.Cascade(
        "categorize",
        (
            A.Tier("code", A.Call(N("rule_based"), (N("e"),))),
            A.Tier("human", A.Call(N("review"), (N("e"),))),
        ),
        A.Const(0.9),
        "cat",
    )


def test_control_flow() -> None:
    stmt = one(
        """
if a:
    pass
elif b:
    break
else:
    continue
"""
    )
    assert stmt == A.If(N("a"), (A.Pass(),), (A.If(N("b"), (A.Break(),), (A.Continue(),)),))
    loop, wloop, attempt = body(
        """
for item in items:
    return item
while n < 3:
    fail "no"
try:
    x = 1
except StepTimeout, PermanentError as e:
    fail
except:
    pass
finally:
    y = 2
"""
    )
    assert loop == A.For("item", N("items"), (A.Return(N("item")),))
    assert wloop == A.While(A.Compare(N("n"), ("<",), (A.Const(3),)), (A.Fail(A.Str(("no",))),))
    assert attempt == A.Try(
        (A.Assign("x", A.Const(1)),),
        (
            A.Handler(("StepTimeout", "PermanentError"), "e", (A.Fail(),)),
            A.Handler((), None, (A.Pass(),)),
        ),
        (A.Assign("y", A.Const(2)),),
    )


def test_expression_precedence() -> None:
    e = parse_expression("not a and b or c == d + e * -f")
    assert e == A.BoolOp(
        "or",
        (
            A.BoolOp("and", (A.UnaryOp("not", N("a")), N("b"))),
            A.Compare(
                N("c"),
                ("==",),
                (A.BinOp("+", N("d"), A.BinOp("*", N("e"), A.UnaryOp("-", N("f")))),),
            ),
        ),
    )
    assert parse_expression("a - b - c") == A.BinOp("-", A.BinOp("-", N("a"), N("b")), N("c"))
    assert parse_expression("x not in y") == A.Compare(N("x"), ("not in",), (N("y"),))
    assert parse_expression("1 < x <= 2") == A.Compare(
        A.Const(1), ("<", "<="), (N("x"), A.Const(2))
    )
    assert parse_expression('"a" if ok else "b"') == A.IfExp(A.Str(("a",)), N("ok"), A.Str(("b",)))
    assert parse_expression("order.items[0].price") == A.Attr(
        A.Index(A.Attr(N("order"), "items"), A.Const(0)), "price"
    )


def test_literals() -> None:
    assert parse_expression("[1, 2.5, true, false, null, 30s, 1.5h]") == A.ListLit(
        (
            A.Const(1),
            A.Const(2.5),
            A.Const(True),
            A.Const(False),
            A.Const(None),
            A.Duration(30, "s"),
            A.Duration(1.5, "h"),
        )
    )
    assert parse_expression("{status: 'ok', \"the key\": 1,}") == A.DictLit(
        (("status", A.Str(("ok",))), ("the key", A.Const(1)))
    )


def test_strings_escape_and_interpolate() -> None:
    assert parse_expression(r'"tab\there \"q\" {{braces}} \\"') == A.Str(
        ('tab\there "q" {braces} \\',)
    )
    assert parse_expression("\"Total: {round(x * 1.2, 2)} for {o['id']}\"") == A.Str(
        (
            "Total: ",
            A.Call(N("round"), (A.BinOp("*", N("x"), A.Const(1.2)), A.Const(2))),
            " for ",
            A.Index(N("o"), A.Str(("id",))),
        )
    )


def test_positions_point_into_the_source_even_inside_strings() -> None:
    (wf,) = parse_source('workflow w():\n    x = "id: {order.id}"\n').items
    assert isinstance(wf, A.Workflow)
    (stmt,) = wf.body
    assert isinstance(stmt, A.Assign) and isinstance(stmt.value, A.Str)
    assert stmt.pos == A.Pos(2, 5, 2, 25)
    inner = stmt.value.parts[1]
    assert isinstance(inner, A.Attr)
    assert (inner.pos.line, inner.pos.col, inner.pos.end_col) == (2, 15, 23)


def test_keywords_stay_usable_where_they_cannot_be_keywords() -> None:
    stmt = one("x = {run: order.timeout, type: step.for, at: 1}")
    assert stmt == A.Assign(
        "x",
        A.DictLit(
            (
                ("run", A.Attr(N("order"), "timeout")),
                ("type", A.Attr(N("step"), "for")),
                ("at", A.Const(1)),
            )
        ),
    )
    assert one("timeout = 5") == A.Assign("timeout", A.Const(5))


def test_comments_blank_lines_and_brackets_across_lines() -> None:
    module = parse_source(
        """# leading

workflow w():  # trailing
    # inside
    x = [
        1,  # one
        2,
    ]

    return x
# end"""
    )
    (wf,) = module.items
    assert isinstance(wf, A.Workflow)
    assert wf.body == (A.Assign("x", A.ListLit((A.Const(1), A.Const(2)))), A.Return(N("x")))
    assert [c.text for c in module.comments] == [
        "# leading",
        "# trailing",
        "# inside",
        "# one",
        "# end",
    ]
