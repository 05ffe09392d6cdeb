"""The IR graph the compiler produces: JSON round trip, hashing, validation, networkx view."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dotdo import DO, Graph, Policy, compensate, step, workflow
from dotdo.compiler.codegen import build_program
from dotdo.compiler.ir import (
    END,
    BlockNode,
    ChoiceNode,
    EndNode,
    Region,
    StartNode,
    StepNode,
)


def fn(*args: Any, **kwargs: Any) -> int:
    return 1


class Sample(DO):
    """Workflows covering every node kind the lowering emits."""

    @step(retries=5, backoff=3.0, initial_delay=0.5, timeout=9)
    async def charge(self, amount: int) -> int:
        return amount

    @compensate(charge)
    async def refund(self, amount: int) -> None:
        return None

    @workflow
    async def small(self, x: int) -> int:
        if await self.charge(x) > 1:
            y = x + 1
        else:
            y = x
        return y

    @workflow
    async def loops(self, items: list[int]) -> int:
        total = 0
        for i in items:
            for j in range(i):
                total += await self.do(fn, i, j)
            if total > 100:
                break
        n = 0
        while n < 3:
            n = await self.do(fn, n, step_id="tick") + n
        else:
            total += 1
        return total

    @workflow
    async def errors(self, x: int) -> Any:
        try:
            v = await self.try_(fn, x, timeout=2)
        except ValueError as e:
            v = str(e)
        except (KeyError, TypeError):
            raise
        else:
            v = await self.do(fn, v, retries=0, initial_delay=0.1)
        finally:
            await self.do(fn, "cleanup")
        for k in range(2):
            try:
                if k:
                    continue
                await self.sleep(0)
            finally:
                await self.do(fn, k)
        return v

    @workflow
    async def recorded(self) -> Any:
        t = self.now()
        u = self.uuid()
        r = self.random()
        self.send("Sample.recorded", {"t": t, "u": u, "r": r})
        await self.sleep(1)
        return t, u, r


ALL = ["small", "loops", "errors", "recorded"]


def graph_of(name: str) -> Graph:
    graph: Graph = getattr(Sample, name).graph
    return graph


# ---------------------------------------------------------------------- JSON and hash


@pytest.mark.parametrize("name", ALL)
def test_json_round_trip(name: str) -> None:
    graph = graph_of(name)
    text = graph.to_json()
    again = Graph.from_json(text)
    assert again == graph
    assert again.hash == graph.hash
    assert again.to_json() == text
    assert len(graph.hash) == 20


@pytest.mark.parametrize("name", ALL)
def test_round_tripped_graph_builds_a_program(name: str) -> None:
    wf = getattr(Sample, name)
    again = Graph.from_json(wf.graph.to_json())
    program = build_program(again, wf.fn.__globals__, wf.cells())
    assert program.hash == wf.graph.hash
    code_kinds = {"block", "choice", "step", "send", "sleep", "fail"}
    assert set(program.code) == {n.id for n in again.nodes.values() if n.kind in code_kinds}


def test_graph_records_policies_and_compensation() -> None:
    small = graph_of("small")
    (charge,) = [n for n in small.nodes.values() if isinstance(n, StepNode)]
    assert charge.name == "charge"
    assert charge.mode == "do"
    assert charge.policy == Policy(retries=5, backoff=3.0, initial_delay=0.5, timeout=9)
    assert charge.compensate == "refund"
    errors = graph_of("errors")
    steps = [n for n in errors.nodes.values() if isinstance(n, StepNode)]
    tried = [s for s in steps if s.mode == "try"]
    assert len(tried) == 1
    assert tried[0].policy.retries == 0 and tried[0].policy.timeout == 2
    overridden = [s for s in steps if s.policy.retries == 0 and s.mode == "do"]
    assert len(overridden) == 1 and overridden[0].policy.initial_delay == 0.1


def test_step_nodes_in_loops_carry_their_loop_counters() -> None:
    loops = graph_of("loops")
    steps = {n.name: n for n in loops.nodes.values() if isinstance(n, StepNode)}
    inner = [s for name, s in steps.items() if name != "tick"]
    assert len(inner) == 1 and len(inner[0].loops) == 2
    assert len(steps["tick"].loops) == 1
    assert steps["tick"].loops[0] not in inner[0].loops
    assert all(c in loops.locals for c in inner[0].loops)


def test_graph_locals_include_params_assigned_names_and_hidden_state() -> None:
    errors = graph_of("errors")
    assert errors.locals[:1] == ["x"]
    for name in ("v", "e", "k"):
        assert name in errors.locals
    assert "self" not in errors.locals
    assert all(name in errors.local_lines for name in errors.locals)
    assert errors.params[0].name == "x" and errors.params[0].annotation == "int"
    assert errors.returns == "Any"
    assert errors.regions, "try/finally makes a region"


def _write_module(directory: Path, name: str, source: str) -> Any:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return _import(path, name)


_counter = itertools.count()


def _import(path: Path, name: str | None = None) -> Any:
    name = f"{name or path.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


_HASH_SOURCE = """
from dotdo import DO, step, workflow


def f(*args):
    return 1


class W(DO):
    @step
    async def st(self, x):
        return x

    @workflow
    async def wf(self, xs):
        out = []
        for x in xs:
            try:
                out.append(await self.st(x))
                if x > LIMIT:
                    break
            finally:
                await self.do(f, x)
        while len(out) < 3:
            out.append(await self.st(0))
        self.send("W.done", out)
        return out
"""


def test_hash_is_stable_across_compilations_and_changes_with_the_source(tmp_path: Path) -> None:
    path = tmp_path / "flows.py"
    path.write_text(_HASH_SOURCE.replace("LIMIT", "10"))
    first = _import(path).W.wf.graph
    second = _import(path).W.wf.graph
    assert first is not second
    assert first == second
    assert first.hash == second.hash
    assert first.to_json() == second.to_json()

    path.write_text(_HASH_SOURCE.replace("LIMIT", "11"))
    changed = _import(path).W.wf.graph
    assert changed.hash != first.hash

    path.write_text(_HASH_SOURCE.replace("LIMIT", "10").replace("await self.st(0)", "0"))
    restructured = _import(path).W.wf.graph
    assert restructured.hash not in (first.hash, changed.hash)


_HASH_SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("flows", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["flows"] = module
spec.loader.exec_module(module)
print(module.W.wf.graph.hash)
"""


def test_hash_is_the_same_in_other_processes(tmp_path: Path) -> None:
    """Set iteration order (PYTHONHASHSEED) must not leak into the graph."""
    path = tmp_path / "flows.py"
    path.write_text(_HASH_SOURCE.replace("LIMIT", "10"))
    here = _import(path).W.wf.graph.hash
    seen = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT, str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        seen.add(out.stdout.strip())
    assert seen == {here}


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", ALL)
def test_compiled_workflows_validate_without_errors(name: str) -> None:
    findings = graph_of(name).validate_graph()
    assert [f for f in findings if f.severity == "error"] == []


@pytest.mark.parametrize("name", ALL)
def test_compiled_workflows_have_no_dangling_or_unreachable_nodes(name: str) -> None:
    graph = graph_of(name)
    ids = set(graph.nodes)
    assert graph.start in ids and END in ids
    for src, dst, kind in graph.edges():
        assert src in ids and dst in ids, (src, dst, kind)
    for region in graph.regions.values():
        assert region.entry in ids
        assert set(region.members) <= ids
        assert region.parent is None or region.parent in graph.regions
    messages = {f.message for f in graph.validate_graph()}
    assert "unreachable code" not in messages


def test_hand_built_graph_with_dangling_edge_is_an_error() -> None:
    graph = Graph(
        name="broken",
        nodes={
            "start": StartNode(id="start", next="b1"),
            "b1": BlockNode(id="b1", line=3, code=[], next="nowhere"),
            END: EndNode(id=END),
        },
    )
    findings = graph.validate_graph()
    errors = [f for f in findings if f.severity == "error"]
    assert len(errors) == 1
    assert errors[0].node == "b1"
    assert errors[0].line == 3
    assert "nowhere" in errors[0].message


def test_hand_built_graph_with_dangling_choice_branch_is_an_error() -> None:
    graph = Graph(
        name="broken",
        nodes={
            "start": StartNode(id="start", next="c1"),
            "c1": ChoiceNode(id="c1", line=4, cond="x", then=END, orelse="gone"),
            END: EndNode(id=END),
        },
    )
    errors = [f for f in graph.validate_graph() if f.severity == "error"]
    assert [(f.node, "gone" in f.message) for f in errors] == [("c1", True)]


def test_hand_built_graph_with_unreachable_node_is_an_error() -> None:
    graph = Graph(
        name="island",
        nodes={
            "start": StartNode(id="start", next=END),
            "b9": BlockNode(id="b9", line=7, code=[], next=END),
            END: EndNode(id=END),
        },
    )
    errors = [f for f in graph.validate_graph() if f.severity == "error"]
    assert [(f.node, f.message) for f in errors] == [("b9", "unreachable code")]


def test_hand_built_graph_with_a_dead_end_is_a_warning() -> None:
    graph = Graph(
        name="stuck",
        nodes={
            "start": StartNode(id="start", next="c1"),
            "c1": ChoiceNode(id="c1", line=2, cond="x", then=END, orelse="b2"),
            "b2": BlockNode(id="b2", line=3, code=[], next="b3"),
            "b3": BlockNode(id="b3", line=4, code=[], next="b2"),
            END: EndNode(id=END),
        },
    )
    findings = graph.validate_graph()
    assert not [f for f in findings if f.severity == "error"]
    dead = {f.node for f in findings if "reaches the end" in f.message}
    assert dead == {"b2", "b3"}
    assert any("no durable operation" in f.message for f in findings)


def test_hand_built_graph_round_trips_with_regions() -> None:
    graph = Graph(
        name="hand",
        regions={"R1": Region(entry="b1", members=["start"])},
        nodes={
            "start": StartNode(id="start", next="b1"),
            "b1": BlockNode(id="b1", line=1, code=[], next=END, fin="R1"),
            END: EndNode(id=END),
        },
    )
    assert Graph.from_json(graph.to_json()) == graph


class Busy(DO):
    @step
    async def st(self, x: int) -> int:
        return x

    @workflow
    async def one_path_without_durable_op(self) -> int:
        n = 0
        while n < 10:
            if n % 2 == 0:
                await self.st(n)
            n += 1
        return n

    @workflow
    async def every_path_durable(self) -> int:
        n = 0
        while n < 3:
            n = await self.st(n) + 1
        for i in range(3):
            if i:
                await self.st(i)
            else:
                await self.sleep(0)
        return n

    @workflow
    async def continue_skips_the_step(self, xs: list[int]) -> int:
        total = 0
        for x in xs:
            if x < 0:
                continue
            total += await self.st(x)
        return total


def _busy(name: str) -> list[Any]:
    graph: Graph = getattr(Busy, name).graph
    return [f for f in graph.validate_graph() if "no durable operation" in f.message]


def test_while_loop_with_a_path_without_durable_op_warns() -> None:
    warnings = _busy("one_path_without_durable_op")
    assert len(warnings) == 1
    (warning,) = warnings
    assert warning.severity == "warning"
    graph = Busy.one_path_without_durable_op.graph
    assert warning.node in graph.nodes
    assert warning.line >= Busy.one_path_without_durable_op.fn.__code__.co_firstlineno


# Regression: a `for` loop over a finite list whose `continue` skips the step is reported as a
# busy loop
def test_for_loop_with_continue_past_the_step_is_not_a_busy_loop() -> None:
    assert _busy("continue_skips_the_step") == []


class Jumps(DO):
    @step
    async def st(self, x: int) -> int:
        return x

    @workflow
    async def continue_through_finally(self, xs: list[int]) -> int:
        n = 0
        while n < len(xs):
            n += 1
            try:
                if xs[n - 1] < 0:
                    continue
                await self.st(n)
            finally:
                await self.st(-n)
        return n


# Regression: graph.edges() draws break/continue out of a try/finally straight to the loop,
# bypassing the finally (runtime goes through it): wrong diagram, false warning
def test_jump_out_of_try_finally_goes_through_the_finally_in_the_graph() -> None:
    graph = Jumps.continue_through_finally.graph
    (jumper,) = [n for n in graph.nodes.values() if isinstance(n, BlockNode) and n.continues_to]
    assert jumper.fin is not None
    entry = graph.regions[jumper.fin].entry
    jump_targets = {dst for src, dst, kind in graph.edges() if src == jumper.id and kind == "jump"}
    assert jump_targets == {entry}
    busy = [f for f in graph.validate_graph() if "no durable operation" in f.message]
    assert busy == []


def test_loops_with_a_durable_op_on_every_path_do_not_warn() -> None:
    assert _busy("every_path_durable") == []


# -------------------------------------------------------------------------- networkx


def test_to_networkx_node_kinds_of_a_small_workflow() -> None:
    graph = graph_of("small")
    nxg = graph.to_networkx()
    kinds = {data["kind"] for _, data in nxg.nodes(data=True)}
    assert kinds == {"start", "step", "choice", "block", "end"}
    assert set(nxg.nodes) == set(graph.nodes)
    assert nxg.graph["name"] == graph.name == "Sample.small"
    for node_id, data in nxg.nodes(data=True):
        assert data["line"] == graph.nodes[node_id].line
    edges = sorted((u, v, d["kind"]) for u, v, d in nxg.edges(data=True))
    assert edges == sorted(graph.edges())
    edge_kinds = {d["kind"] for _, _, d in nxg.edges(data=True)}
    assert {"next", "true", "false"} <= edge_kinds
    # start -> step -> ... -> end, and the choice's two branches.
    (start,) = [n for n, d in nxg.nodes(data=True) if d["kind"] == "start"]
    assert [d["kind"] for _, d in nxg.nodes(data=True) if _ in nxg.successors(start)] == ["step"]
    (choice,) = [n for n, d in nxg.nodes(data=True) if d["kind"] == "choice"]
    assert sorted(d["kind"] for _, _, d in nxg.out_edges(choice, data=True)) == ["false", "true"]


def test_to_networkx_is_a_connected_graph_from_start() -> None:
    import networkx as nx

    for name in ALL:
        graph = graph_of(name)
        nxg = graph.to_networkx()
        assert nx.descendants(nxg, graph.start) | {graph.start} == set(nxg.nodes)


def test_nodes_keep_source_order_and_lines() -> None:
    graph = graph_of("loops")
    first = Sample.loops.fn.__code__.co_firstlineno
    lines = [n.line for n in graph.nodes.values() if n.kind not in ("start", "end")]
    assert all(line > first for line in lines)
    steps = [n for n in graph.nodes.values() if isinstance(n, StepNode)]
    assert [s.line for s in steps] == sorted(s.line for s in steps)
