"""A .flow workflow compiles to the same graph as its Python twin, and to nothing more.

Isomorphism (by node kind) with the Python front end is checked on the orders and trip
examples, on a workflow using every control-flow construct, and on approvals, event waits
and cascades. The generated code can only name what the flow namespace holds, and that
namespace's builtins are the documented list and nothing else.
"""

from __future__ import annotations

import ast
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dotdo import DO, step, workflow  # noqa: E402
from dotdo.compiler.codegen import build_program  # noqa: E402
from dotdo.compiler.ir import (  # noqa: E402
    ApprovalNode,
    BlockNode,
    CascadeNode,
    ChoiceNode,
    Graph,
    SendNode,
    SleepNode,
    StepNode,
    WaitEventNode,
)
from dotdo.dsl.flow.builtins import BUILTINS, EXCEPTIONS, runtime_namespace  # noqa: E402
from dotdo.dsl.flow.loader import load_flow, load_source  # noqa: E402
from examples.orders import Orders  # noqa: E402
from examples.trip import Trips  # noqa: E402

EXAMPLES = sorted((ROOT / "examples").glob("*.flow"))


def same_shape(a: Graph, b: Graph) -> bool:
    return nx.is_isomorphic(
        a.to_networkx(),
        b.to_networkx(),
        node_match=lambda x, y: x["kind"] == y["kind"],
        edge_match=lambda x, y: (
            sorted(e["kind"] for e in x.values()) == sorted(e["kind"] for e in y.values())
        ),
    )


def _content(value: Any) -> Any:
    """A node dump without positions (the two files differ in layout, not in meaning)."""
    if isinstance(value, dict):
        return {k: _content(v) for k, v in value.items() if k != "line"}
    if isinstance(value, list):
        return [_content(v) for v in value]
    return value


def kinds(graph: Graph) -> list[str]:
    return [n.kind for n in graph.nodes.values()]


def test_every_example_parses_checks_and_compiles() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "order.flow",
        "trip.flow",
        "expense.flow",
        "purchase.flow",
        "cascade.flow",
        "schedules.flow",
        "events.flow",
    }
    for path in EXAMPLES:
        module = load_flow(path)
        assert module.workflows, path
        for wf in module.workflows.values():
            assert [f for f in wf.graph.validate_graph() if f.severity == "error"] == []
            wf.program()  # the code of every node compiles


def test_order_flow_is_the_python_twin() -> None:
    flow = load_flow(ROOT / "examples" / "order.flow")["process_order"].graph
    python = Orders.process_order.graph
    assert nx.is_isomorphic(
        flow.to_networkx(), python.to_networkx(), node_match=lambda a, b: a["kind"] == b["kind"]
    )
    assert same_shape(flow, python)
    assert [_content(n.model_dump()) for n in flow.nodes.values()] == [
        _content(n.model_dump()) for n in python.nodes.values()
    ]
    assert flow.locals == python.locals
    assert flow.params == python.params
    assert flow.returns == python.returns


def test_trip_flow_is_the_python_twin() -> None:
    flow = load_flow(ROOT / "examples" / "trip.flow")["book_trip"].graph
    python = Trips.book_trip.graph
    assert same_shape(flow, python)
    steps = [n for n in flow.nodes.values() if isinstance(n, StepNode)]
    twins = [n for n in python.nodes.values() if isinstance(n, StepNode)]
    assert [(s.name, s.call, s.compensate, s.policy) for s in steps] == [
        (s.name, s.call, s.compensate, s.policy) for s in twins
    ]


# ------------------------------------------------------------- control flow
async def _echo(x: Any) -> Any:
    return x


class Control(DO):
    @step
    async def a(self, x: Any) -> Any:
        return x

    @step(retries=5)
    async def b(self, x: Any) -> Any:
        return x

    @workflow
    async def run(self, items: list[int], limit: int) -> int:
        total = 0
        for item in items:
            if item < 0:
                continue
            if item > limit:
                break
            v = await self.a(item)
            total = total + v
        n = 0
        while n < 3:
            n = n + 1
            await self.b(n)
        try:
            w = await self.a(total)
            if w > 100:
                raise ValueError("too big")
        except ValueError as e:  # noqa: F841 - the twin of `except ValueError as e`
            w = 0
            if total > 1000:
                raise
        except Exception:
            w = -1
        finally:
            await self.sleep(timedelta(seconds=1))
        if w > 10:
            self.send("Total.big", {"w": w})
        elif w > 5:
            await self.b(w)
        else:
            w = 1
        checked = 0
        for x in items:
            checked = checked + x
        return w + checked


CONTROL_FLOW = """
step a = examples.flow_steps:echo
step b = examples.flow_steps:echo retries 5

workflow run(items: list[int], limit: int) -> int:
    total = 0
    for item in items:
        if item < 0:
            continue
        if item > limit:
            break
        v = do a(item)
        total = total + v
    n = 0
    while n < 3:
        n = n + 1
        do b(n)
    try:
        w = do a(total)
        if w > 100:
            fail ValueError("too big")
    except ValueError as e:
        w = 0
        if total > 1000:
            fail
    except Error:
        w = -1
    finally:
        sleep 1s
    if w > 10:
        send "Total.big" {w: w}
    elif w > 5:
        do b(w)
    else:
        w = 1
    checked = 0
    for x in items:
        checked = checked + x
    return w + checked
"""


def control_flow() -> Graph:
    # ValueError is not a flow builtin, and a flow never reaches the standard library: bring
    # in an error class of the project instead (the Python twin's ValueError has the same shape).
    body = CONTROL_FLOW.replace("ValueError", "OutOfStock")
    text = "import examples.cross_do: OutOfStock\n" + body
    return load_source(text, "control.flow")["run"].graph


def test_control_flow_lowers_like_python() -> None:
    flow, python = control_flow(), Control.run.graph
    assert same_shape(flow, python)
    assert sorted(kinds(flow)) == sorted(kinds(python))
    assert sorted(flow.locals) == sorted(python.locals)
    assert len(flow.regions) == len(python.regions) == 1
    region = next(iter(flow.regions.values()))
    assert len(region.members) == len(next(iter(python.regions.values())).members)


def test_hidden_loop_counters_and_step_names_follow_python() -> None:
    flow, python = control_flow(), Control.run.graph

    def hidden(g: Graph) -> list[str]:
        return sorted("".join(c for c in n if not c.isdigit()) for n in g.locals if n[:2] == "__")

    assert hidden(flow) == hidden(python)
    names = [(n.name, n.loops != []) for n in flow.nodes.values() if isinstance(n, StepNode)]
    assert names == [
        (n.name, n.loops != []) for n in python.nodes.values() if isinstance(n, StepNode)
    ]


def test_plain_compound_statements_stay_in_one_block() -> None:
    flow = control_flow()
    last_block = [n for n in flow.nodes.values() if isinstance(n, BlockNode)][-1]
    assert [s.src.split("\n")[0] for s in last_block.code] == [
        "checked = 0",
        "for x in items:",
        "return w + checked",
    ]


class Waits(DO):
    async def rule(self, x: Any) -> Any:
        return x

    async def review(self, x: Any) -> Any:
        return x

    @workflow
    async def run(self, order: dict[str, Any]) -> Any:
        decision = await self.approval_flow.request_approval(
            type="po", title="PO", approvers=["manager", "director"]
        )
        paid = await self.wait_for_event(
            "Payment.confirmed", match={"order_id": order["id"]}, timeout=3600
        )
        category = await self.cascade(
            task="categorize",
            tiers={"code": lambda: self.rule(order), "human": lambda: self.review(order)},
            confidence_threshold=0.8,
        )
        return [decision, paid, category]


WAITS = """
step rule = examples.flow_steps:echo
step review = examples.flow_steps:echo

workflow run(order: dict) -> Any:
    decision = approval "po":
        title: "PO"
        approvers: ["manager", "director"]
        deadline: 7d
        priority: "high" if order["total"] > 100 else "normal"
    paid = wait for "Payment.confirmed" where event.order_id == order["id"] timeout 1h
    category = cascade "categorize" threshold 0.8:
        code: rule(order)
        human: review(order)
    return [decision, paid, category]
"""


def test_approval_wait_and_cascade_nodes() -> None:
    flow = load_source(WAITS, "waits.flow")["run"].graph
    assert same_shape(flow, Waits.run.graph)
    approval, wait, cascade = (
        n for n in flow.nodes.values() if isinstance(n, ApprovalNode | WaitEventNode | CascadeNode)
    )
    assert isinstance(approval, ApprovalNode)
    assert approval.name == "po" and approval.result == "decision"
    request = ast.literal_eval(
        approval.request.replace("timedelta(days=7)", "None").split(", 'priority'")[0] + "}"
    )
    assert request == {
        "type": "po",
        "title": "PO",
        "approvers": ["manager", "director"],
        "deadline": None,
    }
    assert isinstance(wait, WaitEventNode)
    assert (wait.event, wait.match, wait.timeout) == (
        "'Payment.confirmed'",
        "{'order_id': order['id']}",
        "timedelta(hours=1)",
    )
    assert isinstance(cascade, CascadeNode)
    assert cascade.task == "'categorize'" and cascade.threshold == "0.8"
    assert cascade.tiers == [
        ("code", "lambda: self.rule(order)"),
        ("human", "lambda: self.review(order)"),
    ]


def test_durable_nodes_carry_policies_and_durations() -> None:
    text = """
step charge = examples.flow_steps:echo retries 7 backoff 3.0 delay 500ms max_delay 1m timeout 30s
step refund = examples.flow_steps:echo retries 1
step notify = examples.flow_steps:echo

workflow w(x: int):
    p = do charge(x) compensate with refund
    q = do charge(x) retries 2 timeout 1m as "second"
    try notify(x) timeout 5s
    sleep 1h
    when = now()
    sleep until when
    send "A.b"
"""
    graph = load_source(text, "p.flow")["w"].graph
    first, second, third = (n for n in graph.nodes.values() if isinstance(n, StepNode))
    assert first.call == "self.charge"
    assert first.policy.model_dump() == {
        "retries": 7,
        "backoff": 3.0,
        "initial_delay": 0.5,
        "max_delay": 60.0,
        "timeout": 30.0,
    }
    assert first.compensate == "refund"
    assert (second.name, second.policy.retries, second.policy.timeout) == ("second", 2, 60.0)
    assert second.policy.backoff == 3.0
    assert (third.mode, third.policy.retries, third.policy.timeout) == ("try", 0, 5.0)
    sleeps = [n for n in graph.nodes.values() if isinstance(n, SleepNode)]
    assert [(s.name, s.duration, s.until) for s in sleeps] == [
        ("sleep", "timedelta(hours=1)", None),
        ("sleep_until", None, "when"),
    ]
    assert [n.kind for n in graph.nodes.values()].count("record") == 1
    send = next(n for n in graph.nodes.values() if isinstance(n, SendNode))
    assert (send.event, send.data) == ("'A.b'", "None")


def test_steps_in_loops_are_qualified_by_iteration() -> None:
    text = """
step s = examples.flow_steps:echo

workflow w(xs: list):
    for x in xs:
        for y in xs:
            do s(y)
"""
    graph = load_source(text, "l.flow")["w"].graph
    inner = next(n for n in graph.nodes.values() if isinstance(n, StepNode))
    assert len(inner.loops) == 2
    choices = [n for n in graph.nodes.values() if isinstance(n, ChoiceNode)]
    assert [c.cond.split(" <")[0] for c in choices] == inner.loops


# ---------------------------------------------------------------- sandbox
def test_the_runtime_builtins_are_exactly_the_documented_list() -> None:
    namespace = runtime_namespace({})
    assert set(namespace["__builtins__"]) == set(BUILTINS)
    assert set(BUILTINS) == {
        "abs", "all", "any", "bool", "dict", "float", "int", "len", "list", "lower",
        "max", "min", "range", "round", "sorted", "str", "sum", "upper",
    }  # fmt: skip
    assert "open" not in namespace and "__import__" not in namespace["__builtins__"]


def test_compiled_code_cannot_reach_other_builtins() -> None:
    wf = load_flow(ROOT / "examples" / "order.flow")["process_order"]
    for source, name in (
        ("return __import__('os').getcwd()", "__import__"),
        ("return open('x')", "open"),
    ):
        graph = Graph.model_validate(wf.graph.model_dump())
        block = next(n for n in graph.nodes.values() if isinstance(n, BlockNode))
        block.code[0].src = source
        program = build_program(graph, wf.namespace)
        with pytest.raises(NameError, match=name):
            program.code[block.id](None, {}, {})


def _names(graph: Graph) -> set[str]:
    sources: list[str] = []
    for node in graph.nodes.values():
        if isinstance(node, BlockNode):
            sources += [s.src for s in node.code]
        for attr in ("cond", "request", "event", "data", "match", "timeout", "duration", "until"):
            value = getattr(node, attr, None)
            if isinstance(value, str):
                sources.append(value)
        if isinstance(node, StepNode):
            sources += [node.call, *node.args, *(v for _, v in node.kwargs)]
        if isinstance(node, CascadeNode):
            sources += [src for _, src in node.tiers]
    found: set[str] = set()
    for source in sources:
        for sub in ast.walk(ast.parse(source)):
            if isinstance(sub, ast.Name):
                found.add(sub.id)
            if isinstance(sub, ast.Attribute):
                assert "__" not in sub.attr
    return found - set(graph.locals)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_generated_code_names_only_the_namespace(path: Path) -> None:
    module = load_flow(path)
    for wf in module.workflows.values():
        allowed = set(wf.namespace) | set(BUILTINS) | {"self"}
        assert _names(wf.graph) <= allowed, wf.qualname
        assert set(EXCEPTIONS) <= set(wf.namespace)
