"""Cascades: tiers tried in order until one is confident enough; the human tier hibernates
as an approval of type "cascade"."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dotdo import DO, CascadeResult, Engine, RunFailed, workflow
from dotdo.testing import VirtualClock

calls: Counter[str] = Counter()
answers: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    answers.clear()


def tier(name: str) -> Any:
    calls[name] += 1
    answer = answers[name]
    if isinstance(answer, Exception):
        raise answer
    return answer


async def agent(name: str) -> Any:
    calls[name] += 1
    return answers[name]


class Categorize(DO):
    @workflow
    async def automatic(self, threshold: float) -> CascadeResult:
        return await self.cascade(
            task="categorize-expense",
            tiers={
                "code": lambda: tier("code"),
                "generative": lambda: tier("generative"),
                "agentic": lambda: agent("agentic"),
            },
            confidence_threshold=threshold,
        )

    @workflow
    async def with_human(self, description: str) -> dict:
        result = await self.cascade(
            task=f"categorize {description}",
            tiers={
                "code": lambda: tier("code"),
                "generative": lambda: tier("generative"),
                "human": lambda: None,
            },
            confidence_threshold=0.9,
        )
        return {"result": result, "description": description}


def _engine(tmp_path: Path) -> Engine:
    return Engine(tmp_path / "app.db", clock=VirtualClock()).register(Categorize)


async def test_first_tier_at_threshold_wins(tmp_path: Path) -> None:
    answers.update(code=("travel", 0.5), generative=("meals", 0.9), agentic=("x", 0.99))
    async with _engine(tmp_path) as engine:
        result = await (await engine.start(Categorize.automatic, 0.9, run_id="c")).result(timeout=5)
        assert isinstance(result, CascadeResult)
        assert (result.tier, result.value, result.confidence, result.accepted) == (
            "generative",
            "meals",
            0.9,
            True,
        )
        assert result.confidences == {"code": 0.5, "generative": 0.9}
        assert result.task == "categorize-expense"
        assert calls == Counter(code=1, generative=1)  # agentic never ran
        keys = [s.key for s in await engine.journal("c")]
        assert keys == ["cascade:code", "cascade:generative"]


async def test_first_tier_confident_stops_at_once(tmp_path: Path) -> None:
    answers.update(code={"value": "office", "confidence": 0.97})
    async with _engine(tmp_path) as engine:
        result = await (await engine.start(Categorize.automatic, 0.9)).result(timeout=5)
        assert (result.tier, result.value, result.confidences) == ("code", "office", {"code": 0.97})
        assert calls == Counter(code=1)


async def test_failing_tier_is_skipped(tmp_path: Path) -> None:
    answers.update(code=RuntimeError("rules engine down"), generative=("b", 0.6))
    answers.update(agentic=("c", 0.95))
    async with _engine(tmp_path) as engine:
        result = await (await engine.start(Categorize.automatic, 0.9, run_id="c")).result(timeout=5)
        assert (result.tier, result.value, result.accepted) == ("agentic", "c", True)
        assert result.confidences == {"generative": 0.6, "agentic": 0.95}
        assert calls == Counter(code=1, generative=1, agentic=1)  # no retry of a tier
        journal = {s.key: s.status for s in await engine.journal("c")}
        assert journal["cascade:code"] == "failed"


async def test_no_tier_reaches_threshold(tmp_path: Path) -> None:
    answers.update(code=("a", 0.3), generative=("b", 0.7), agentic=("c", 0.6))
    async with _engine(tmp_path) as engine:
        result = await (await engine.start(Categorize.automatic, 0.9)).result(timeout=5)
        assert (result.tier, result.value, result.confidence, result.accepted) == (
            "generative",
            "b",
            0.7,
            False,
        )
        assert result.confidences == {"code": 0.3, "generative": 0.7, "agentic": 0.6}


async def test_every_tier_fails(tmp_path: Path) -> None:
    answers.update(code=RuntimeError("x"), generative=RuntimeError("y"))
    answers.update(agentic=("c", 0.2))
    async with _engine(tmp_path) as engine:
        result = await (await engine.start(Categorize.automatic, 0.9)).result(timeout=5)
        assert (result.tier, result.accepted) == ("agentic", False)


async def test_malformed_tier_answer_fails_the_run_clearly(tmp_path: Path) -> None:
    answers.update(code="just a string")
    async with _engine(tmp_path) as engine:
        handle = await engine.start(Categorize.automatic, 0.9)
        with pytest.raises(RunFailed) as err:
            await handle.result(timeout=5)
        assert "confidence" in str(err.value.error)


async def test_human_tier_hibernates_as_a_cascade_approval(tmp_path: Path) -> None:
    answers.update(code=("travel", 0.4), generative=("meals", 0.8))
    async with _engine(tmp_path) as engine:
        handle = await engine.start(Categorize.with_human, "Uber to client", run_id="h")
        info = await engine.idle("h", timeout=5)
        assert info.status == "waiting" and "h" not in engine._active
        (a,) = await engine.approvals(approver="human")
        assert a.id == "h/cascade:human"
        assert (a.type, a.title, a.status) == ("cascade", "categorize Uber to client", "pending")
        assert a.extra["candidates"] == [["code", "travel", 0.4], ["generative", "meals", 0.8]]
        await engine.approve(a.id, by="human", value="client-travel", comment="billable")
        out = await handle.result(timeout=5)
        result = out["result"]
        assert (result.tier, result.value, result.confidence, result.accepted) == (
            "human",
            "client-travel",
            1.0,
            True,
        )
        assert result.confidences == {"code": 0.4, "generative": 0.8, "human": 1.0}
        stored = await engine.get_approval(a.id)
        assert stored.decisions[0].value == "client-travel"
        assert stored.decisions[0].comment == "billable"
        assert calls == Counter(code=1, generative=1)


async def test_human_approves_without_a_value_takes_the_best_candidate(tmp_path: Path) -> None:
    answers.update(code=("travel", 0.4), generative=("meals", 0.8))
    async with _engine(tmp_path) as engine:
        handle = await engine.start(Categorize.with_human, "lunch", run_id="h")
        await engine.idle("h", timeout=5)
        await engine.approve("h/cascade:human", by="human")
        result = (await handle.result(timeout=5))["result"]
        assert (result.tier, result.value, result.accepted) == ("human", "meals", True)


async def test_human_rejects(tmp_path: Path) -> None:
    answers.update(code=("travel", 0.4), generative=("meals", 0.8))
    async with _engine(tmp_path) as engine:
        handle = await engine.start(Categorize.with_human, "???", run_id="h")
        await engine.idle("h", timeout=5)
        await engine.reject("h/cascade:human", by="human", reason="cannot tell")
        result = (await handle.result(timeout=5))["result"]
        assert result.accepted is False
        assert result.confidences["human"] == 0.0
        assert (result.tier, result.value) == ("generative", "meals")


async def test_confident_tier_skips_the_human(tmp_path: Path) -> None:
    answers.update(code=("travel", 0.95))
    async with _engine(tmp_path) as engine:
        out = await (await engine.start(Categorize.with_human, "taxi")).result(timeout=5)
        assert out["result"].tier == "code"
        assert await engine.approvals(status=None) == []


async def test_plain_python_cascade_skips_the_human() -> None:
    answers.update(code=("travel", 0.4), generative=("meals", 0.8))
    out = await Categorize("x").with_human("plain")
    assert (out["result"].tier, out["result"].accepted) == ("generative", False)
