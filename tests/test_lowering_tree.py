"""The one lowering (`dotdo.compiler.lower`) read from a hand-built tree, and the places where
the two front ends used to lower differently.

The tree is what both front ends produce; these tests build it directly, so they pin what the
lowering does (ids, step names, loop else, re-raise) apart from either front end. The twin
tests at the end check that a `.flow` file and its Python twin now re-raise the same way.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dotdo import DO, step, workflow  # noqa: E402
from dotdo.compiler import tree as T  # noqa: E402
from dotdo.compiler.ir import (  # noqa: E402
    BlockNode,
    ChoiceNode,
    Graph,
    Policy,
    StepNode,
)
from dotdo.compiler.lower import lower_tree  # noqa: E402
from dotdo.dsl.flow.loader import load_source  # noqa: E402
from dotdo.errors import CompileError  # noqa: E402


def plain(src: str, line: int = 1) -> T.Plain:
    stmt = ast.parse(src).body[0]
    for node in ast.walk(stmt):
        if "lineno" in node._attributes:
            node.lineno = line  # type: ignore[attr-defined]
    return T.Plain(ast.fix_missing_locations(stmt))


def call(name: str, line: int = 1, *, step_id: str = "") -> T.Op:
    node = StepNode(id="", line=line, name=step_id, call=f"self.{name}", policy=Policy())
    return T.Op(node, base=name)


def workflow_of(body: list[T.Stmt], bound: dict[str, int] | None = None) -> Graph:
    wf = T.Workflow(
        name="t.run", file="t.py", line=1, end_line=99, params=[], body=body, bound=bound or {}
    )
    return lower_tree(wf)


def steps(graph: Graph) -> list[StepNode]:
    return [n for n in graph.nodes.values() if isinstance(n, StepNode)]


def code(graph: Graph) -> list[str]:
    return [s.src for n in graph.nodes.values() if isinstance(n, BlockNode) for s in n.code]


def test_step_names_skip_explicit_ids_and_count_on() -> None:
    graph = workflow_of(
        [call("charge"), call("charge"), call("x", step_id="charge_3"), call("charge")]
    )
    assert [s.name for s in steps(graph)] == ["charge", "charge_2", "charge_3", "charge_4"]
    assert len({n.id for n in graph.nodes.values()}) == len(graph.nodes)


def test_steps_inside_loops_carry_the_loop_counters() -> None:
    inner = T.For(line=3, target="y", iter="ys", body=[call("b", 4)])
    outer = T.While(line=1, test="n < 3", body=[plain("n += 1", 2), inner])
    graph = workflow_of([plain("n = 0"), outer], {"n": 1, "y": 3})
    (b,) = steps(graph)
    assert len(b.loops) == 2 and b.loops[0].startswith("__n") and b.loops[1].startswith("__i")
    assert set(b.loops) <= set(graph.locals)


def test_loop_else_continues_the_graph() -> None:
    """A loop's `else` is lowered and wired on, not dropped (the .flow copy had no else)."""
    loop = T.For(line=1, target="x", iter="xs", body=[call("a", 2)], orelse=[call("b", 3)])
    graph = workflow_of([loop, call("c", 4)], {"x": 1})
    _a, b, c = steps(graph)
    head = next(n for n in graph.nodes.values() if isinstance(n, ChoiceNode))
    assert head.orelse == b.id and b.next == c.id


def test_try_else_runs_outside_the_handlers() -> None:
    """`else` of a try is lowered once, in the scope of the try's outer handlers."""
    handler = T.Handler(line=3, test="isinstance(__exc, KeyError)", name=None, body=[call("h")])
    graph = workflow_of([T.Try(line=1, body=[call("a")], handlers=[handler], orelse=[call("e")])])
    a, e, _h = sorted(steps(graph), key=lambda s: s.call)
    assert a.catch is not None and e.catch is None


def test_a_bare_raise_in_a_lowered_handler_re_raises_the_saved_error() -> None:
    nested = plain("try:\n    x = 1 / d\nexcept ZeroDivisionError:\n    raise", 4)
    handler = T.Handler(line=2, test=None, name=None, body=[call("log"), nested, plain("raise")])
    graph = workflow_of([T.Try(line=1, body=[call("a")], handlers=[handler])], {"x": 4})
    lines = "\n".join(code(graph))
    saved = next(n for n in graph.locals if n.startswith("__exc") and n != "__exc")
    assert f"raise {saved}" in lines
    # the nested plain handler's bare raise keeps re-raising its own error, natively
    assert "except ZeroDivisionError:\n    raise\n" in lines + "\n"


def test_an_invalid_tree_is_an_internal_compile_error() -> None:
    dangling = T.Op(StepNode(id="", line=2, name="", call="self.a", catch="nowhere"), base="a")
    with pytest.raises(CompileError, match="internal lowering error"):
        workflow_of([dangling, plain("return 1", 3)])


# ------------------------------------------------------------------ twins
class Reraise(DO):
    @step
    async def a(self, x: Any) -> Any:
        return x

    @workflow
    async def run(self, x: int) -> int:
        try:
            await self.a(x)
        except Exception:
            await self.a(0)
            try:
                y = 1 // x
            except Exception:
                raise
            if y > 0:
                raise
        return 0


RERAISE = """
step a = examples.flow_steps:echo

workflow run(x: int) -> int:
    try:
        do a(x)
    except Error:
        do a(0)
        try:
            y = 1 // x
        except Error:
            fail
        if y > 0:
            fail
    return 0
"""


def _raises(graph: Graph) -> list[str]:
    return [line.strip() for src in code(graph) for line in src.split("\n") if "raise" in line]


def test_flow_and_python_re_raise_the_same_way() -> None:
    flow = load_source(RERAISE, "reraise.flow")["run"].graph
    python = Reraise.run.graph
    assert _raises(flow) == _raises(python)
    assert [r for r in _raises(flow) if r != "raise"], "the lowered handler names its error"
    assert "raise" in _raises(flow), "the nested plain handler re-raises natively"
