"""A loop with no durable operation fails its run with a positioned error instead of
spinning forever (issue 10: `while true:` hung the engine).

Plain `.flow` loops compile to Python loops inside one block, which tick a budget each
iteration; loops with a durable step somewhere inside (not necessarily taken) are back edges
of the graph, whose node visits the interpreter counts. The budget is per transition (it
restarts at each durable operation), so long loops that do real work are unaffected.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from dotdo import DO, DotdoError, Engine, LoopBudgetExceeded, RunFailed, workflow
from dotdo.dsl.flow.loader import load_source
from examples import flow_steps

HEAD = """\
step s = examples.flow_steps:echo
step book = examples.flow_steps:book_flight compensate with cancel
step cancel = examples.flow_steps:cancel_flight
import examples.trip: Trip

"""
"""Line 6 is the first line of the workflow under test."""


async def outcome(
    tmp_path: Path, body: str, *args: Any, budget: int | None = 20_000
) -> tuple[Any, float, str, list[Any]]:
    """Run `workflow w(...)` with `body`: (error or result, seconds, status, outbox)."""
    text = HEAD + body
    # The file sits outside this project: the example steps are allowed by name.
    wf = load_source(text, str(tmp_path / "loop.flow"), flow_modules=["examples"])["w"]
    options = {} if budget is None else {"loop_budget": budget}
    started = time.monotonic()
    async with Engine(tmp_path / "loop.db", flow_modules=["examples"], **options) as engine:
        engine.register(wf)
        handle = await engine.start(wf, *args, run_id="r")
        try:
            value: Any = await handle.result(timeout=120)
        except RunFailed as failed:
            value = failed.error
        status = (await engine.get_run("r")).status
        sent = await engine.outbox("r")
    return value, time.monotonic() - started, status, sent


def assert_stopped(error: Any, tmp_path: Path, line: int) -> None:
    assert isinstance(error, LoopBudgetExceeded), error
    assert str(error).startswith(f"{tmp_path / 'loop.flow'}:{line}: this loop ran more than")
    assert error.line == line


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("workflow w(x: int):\n    y = do s(x)\n    while true:\n        y = y + 1\n", 8),
        ("workflow w(x: int):\n    n = 0\n    while n >= 0:\n        n = n + 1\n", 8),
        ("workflow w(x: int):\n    for i in range(1000000000000):\n        x = x + i\n", 7),
        (
            "workflow w(x: int):\n    for i in range(1000000):\n"
            "        for j in range(1000000):\n            x = x + j\n",
            8,
        ),
        (
            "workflow w(x: int):\n    while true:\n        while true:\n            pass\n",
            8,
        ),
        (
            "workflow w(x: int):\n    try:\n        while true:\n            pass\n"
            "    except:\n        x = 0\n    return x\n",
            8,
        ),
        (
            "workflow w(x: int):\n    try:\n        while true:\n            pass\n"
            "    except Error:\n        x = 0\n    finally:\n        while true:\n"
            "            x = x + 1\n    return x\n",
            8,
        ),
    ],
)
async def test_plain_loops_stop_at_the_budget(tmp_path: Path, body: str, line: int) -> None:
    error, seconds, status, _ = await outcome(tmp_path, body, 1)
    assert status == "failed"
    assert_stopped(error, tmp_path, line)
    assert seconds < 60


@pytest.mark.parametrize(
    ("body", "line"),
    [
        # A durable step on a path never taken: the loop is made of graph nodes.
        (
            "workflow w(x: int):\n    while true:\n        if x > 1000000000:\n"
            "            x = do s(x)\n",
            7,
        ),
        (
            "workflow w(x: int):\n    y = do s(x)\n    while y > 0:\n        y = y + 1\n"
            "        if y < 0:\n            sleep 1s\n",
            8,
        ),
        (
            "workflow w(x: int):\n    for i in range(1000000000000):\n        if i < 0:\n"
            "            do s(i)\n",
            7,
        ),
    ],
)
async def test_graph_loops_stop_at_the_budget(tmp_path: Path, body: str, line: int) -> None:
    error, seconds, status, _ = await outcome(tmp_path, body, 1)
    assert status == "failed"
    assert_stopped(error, tmp_path, line)
    assert seconds < 60


async def test_the_sends_of_a_runaway_loop_are_dropped(tmp_path: Path) -> None:
    body = (
        'workflow w(x: int):\n    while true:\n        send "Spin.tick" {x: x}\n'
        "        if x < 0:\n            do s(x)\n"
    )
    error, _, status, sent = await outcome(tmp_path, body, 1, budget=5_000)
    assert status == "failed" and isinstance(error, LoopBudgetExceeded)
    assert sent == []


async def test_completed_steps_are_compensated_when_the_budget_runs_out(
    tmp_path: Path,
) -> None:
    flow_steps.CANCELLED.clear()
    body = "workflow w(trip: Trip):\n    b = do book(trip)\n    while true:\n        pass\n"
    trip = {"traveller": "ann", "destination": "Lisbon", "nights": 2}
    error, _, status, _ = await outcome(tmp_path, body, trip)
    assert status == "compensated"
    assert_stopped(error, tmp_path, 8)
    assert flow_steps.CANCELLED == ["FL-LIS-1"]


async def test_the_default_budget_stops_a_spin_in_bounded_time(tmp_path: Path) -> None:
    body = "workflow w(x: int):\n    while true:\n        x = x + 1\n"
    error, seconds, status, _ = await outcome(tmp_path, body, 1, budget=None)
    assert status == "failed" and "1,000,000 times" in str(error)
    assert seconds < 60


async def test_the_budget_restarts_at_each_durable_operation(tmp_path: Path) -> None:
    """300 iterations of a loop with a step in each, and 80 plain iterations between two
    steps, all under a budget of 100: real work is never stopped."""
    body = (
        "workflow w(x: int):\n    total = 0\n    for i in range(300):\n"
        "        total = do s(total + i)\n        n = 0\n        while n < 80:\n"
        "            n = n + 1\n    return total\n"
    )
    result, _, status, _ = await outcome(tmp_path, body, 1, budget=100)
    assert status == "completed" and result == sum(range(300))


async def test_the_error_is_stored_and_read_back(tmp_path: Path) -> None:
    body = "workflow w(x: int):\n    while true:\n        pass\n"
    await outcome(tmp_path, body, 1, budget=1_000)
    async with Engine(tmp_path / "loop.db") as engine:  # a fresh engine reads the row
        info = await engine.get_run("r")
    assert info.status == "failed"
    assert isinstance(info.error, LoopBudgetExceeded)
    assert str(info.error).startswith(f"{tmp_path / 'loop.flow'}:7:")


class Spinner(DO):
    async def never(self, x: int) -> int:
        return x

    @workflow
    async def spin(self, x: int) -> int:
        while True:
            if x > 10**9:
                x = await self.do(self.never, x)


async def test_python_workflows_get_the_same_budget_on_graph_loops(tmp_path: Path) -> None:
    async with Engine(tmp_path / "py.db", loop_budget=10_000) as engine:
        engine.register(Spinner)
        handle = await engine.start(Spinner.spin, 1, run_id="p")
        with pytest.raises(RunFailed) as info:
            await asyncio.wait_for(handle.result(), 60)
    assert isinstance(info.value.error, LoopBudgetExceeded)
    assert ":" in str(info.value.error) and "test_flow_loop_budget.py" in str(info.value.error)


@pytest.mark.parametrize("budget", [0, -1, 1.5, "many"])
def test_a_budget_must_be_a_positive_whole_number(tmp_path: Path, budget: Any) -> None:
    with pytest.raises(DotdoError, match="loop_budget"):
        Engine(tmp_path / "x.db", loop_budget=budget)
