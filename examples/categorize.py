"""The seed's cascade: categorise an expense with rules first, then a (pretend) model, then a
(pretend) agent, and only if none is confident enough ask a human. Each tier is a durable
step; the human tier hibernates as an approval of type "cascade" until someone answers.

    python examples/categorize.py [DB]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dotdo import DO, CascadeResult, Engine, workflow

RULES = {"uber": "travel", "taxi": "travel", "hotel": "lodging", "aws": "cloud"}
MODEL_WORDS = {"dinner": "meals", "lunch": "meals", "coffee": "meals", "laptop": "equipment"}


class Expense(BaseModel):
    id: str
    description: str
    amount: float


class Categorizer(DO):
    def rule_based(self, expense: Expense) -> tuple[str | None, float]:
        """Instant: exact keyword rules."""
        for word, category in RULES.items():
            if word in expense.description.lower():
                return category, 0.99
        return None, 0.0

    async def ai_categorize(self, expense: Expense) -> dict:
        """~1s in real life: a model's guess with its confidence."""
        for word, category in MODEL_WORDS.items():
            if word in expense.description.lower():
                return {"value": category, "confidence": 0.93}
        return {"value": "other", "confidence": 0.4}

    async def agent_categorize(self, expense: Expense) -> dict:
        """~10s in real life: an agent that looks things up; here it gives up on odd items."""
        if expense.amount > 1000:
            raise RuntimeError("agent timed out looking up the vendor")
        return {"value": "office", "confidence": 0.6}

    @workflow
    async def categorize(self, expense: Expense) -> CascadeResult:
        return await self.cascade(
            task=f"categorize {expense.id}: {expense.description}",
            tiers={
                "code": lambda: self.rule_based(expense),
                "generative": lambda: self.ai_categorize(expense),
                "agentic": lambda: self.agent_categorize(expense),
                "human": lambda: None,  # hibernates as an approval until a person answers
            },
            confidence_threshold=0.9,
        )


EXPENSES = [
    Expense(id="x1", description="Uber to the airport", amount=38.0),
    Expense(id="x2", description="Team dinner at Luigi's", amount=240.0),
    Expense(id="x3", description="ACME Corp invoice 7781", amount=4200.0),
]


async def main(db: str | Path | None = None) -> dict[str, Any]:
    db = Path(db) if db else Path(tempfile.mkdtemp(prefix="dotdo-cascade-")) / "cascade.db"
    print(f"database: {db}")
    results: dict[str, CascadeResult] = {}
    async with Engine(db).register(Categorizer) as engine:
        for expense in EXPENSES:
            await engine.start(Categorizer.categorize, expense, run_id=expense.id)
        for expense in EXPENSES:
            info = await engine.idle(expense.id, timeout=10)
            print(f"{expense.id} {expense.description!r}: {info.status}")
        for a in await engine.approvals(approver="human"):
            print(f"  human review {a.id} ({a.type}): {a.title}")
            for tier, value, confidence in a.extra["candidates"]:
                print(f"    {tier:<10} suggested {value!r} at {confidence:.2f}")
            await engine.approve(a.id, by="human", value="professional-services")
        for expense in EXPENSES:
            result = await engine.handle(expense.id).result(timeout=10)
            results[expense.id] = result
            print(
                f"{expense.id}: {result.value!r} from the {result.tier} tier "
                f"(confidence {result.confidence:.2f}; tried {result.confidences})"
            )
    return results


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
