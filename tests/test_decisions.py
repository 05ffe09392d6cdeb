"""Business decisions are drawn: a plain `if` whose branches end differently (return, raise,
`fail`) becomes a choice node with true/false edges, and adds no checkpoint.

A choice is walked in memory by the interpreter, so the journal of a run holds exactly the
durable operations it held before; only the diagram gains the decision.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dotdo import DO, Engine, RunFailed, step, workflow  # noqa: E402
from dotdo.compiler.ir import DURABLE_KINDS, BlockNode, ChoiceNode, Graph  # noqa: E402
from dotdo.compiler.render import to_dot  # noqa: E402
from dotdo.dsl.flow.loader import load_flow  # noqa: E402


def choices(graph: Graph) -> list[ChoiceNode]:
    return [n for n in graph.nodes.values() if isinstance(n, ChoiceNode)]


class Orders(DO):
    @step
    async def charge(self, amount: int) -> int:
        return amount

    @step
    async def ship(self, amount: int) -> str:
        return f"shipped {amount}"

    @workflow
    async def guarded(self, amount: int) -> str:
        paid = await self.charge(amount)
        if paid > 100:
            raise ValueError("too big")
        elif paid == 0:
            return "nothing to ship"
        note = "ok"
        return await self.ship(paid) + note

    @workflow
    async def computed(self, amount: int) -> str:
        paid = await self.charge(amount)
        if paid > 100:
            size = "big"
        else:
            size = "small"
        if paid > 50:
            return size + "!"
        else:
            return size

    @workflow
    async def walrus(self, amount: int) -> int:
        paid = await self.charge(amount)
        if (half := paid // 2) > 10:
            return half
        return paid


def test_purchase_flow_draws_its_approval_decision() -> None:
    graph = load_flow(ROOT / "examples" / "purchase.flow")["purchase"].graph
    (decision,) = choices(graph)
    assert decision.cond == "decision.status != 'approved'"
    rejected = graph.nodes[decision.then or ""]
    assert isinstance(rejected, BlockNode) and rejected.code[0].src.startswith("raise ")
    assert graph.nodes[decision.orelse or ""].kind == "step"  # approved: place the order
    dot = to_dot(graph)
    assert f"{decision.id} -> {decision.then} [label=true]" in dot
    assert f"{decision.id} -> {decision.orelse} [label=false]" in dot


def test_if_elif_with_different_endings_is_a_chain_of_decisions() -> None:
    graph = Orders.guarded.graph
    assert [c.cond for c in choices(graph)] == ["paid > 100", "paid == 0"]


def test_branches_that_end_alike_stay_one_block() -> None:
    assert choices(Orders.computed.graph) == []
    assert choices(Orders.walrus.graph) == []  # a test that binds a name keeps its block


def test_decisions_add_no_checkpoint() -> None:
    durable = [n.kind for n in Orders.guarded.graph.nodes.values() if n.kind in DURABLE_KINDS]
    assert durable == ["step", "step"]


@pytest.mark.parametrize(
    ("amount", "result", "keys"),
    [
        (5, "shipped 5ok", ["charge", "ship"]),
        (0, "nothing to ship", ["charge"]),
        (500, None, ["charge"]),
    ],
)
async def test_decisions_run_like_python(
    tmp_path: Path, amount: int, result: str | None, keys: list[str]
) -> None:
    async with Engine(tmp_path / "d.db") as engine:
        engine.register(Orders)
        handle = await engine.start(Orders.guarded, amount)
        if result is None:
            with pytest.raises(RunFailed):
                await handle.result(timeout=10)
        else:
            assert await handle.result(timeout=10) == result
        journal = await engine.journal(handle.run_id)
    assert [r.key for r in journal] == keys
