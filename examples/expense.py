"""The seed's expense approval: auto-approved under $100, otherwise the submitter's manager
decides. While it waits, the run is only rows in SQLite: the engine can even be closed and a
fresh one (another process, the CLI) can record the decision.

    python examples/expense.py            # a temp database
    python examples/expense.py out/x.db   # or your own

From the CLI, with the same database:
    dotdo run examples.expense:Expenses.submit_expense --input '{"expense": {...}}'
    dotdo approvals --db ...;  dotdo approve RUN/approval --as dana --db ...
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dotdo import DO, Engine, step, workflow

AUTO_APPROVE_BELOW = 100.0


class Expense(BaseModel):
    id: str
    description: str
    amount: float
    submitter: str
    manager: str


class Expenses(DO):
    @step
    async def process_approval(self, expense: Expense) -> dict:
        """Reimburse: in real life a payment API call keyed by the step's idempotency key."""
        print(f"  reimbursing {expense.submitter} ${expense.amount:.2f} for {expense.description}")
        return {"status": "reimbursed", "expense": expense.id, "amount": expense.amount}

    @workflow
    async def submit_expense(self, expense: Expense) -> dict:
        if expense.amount < AUTO_APPROVE_BELOW:
            return await self.process_approval(expense)
        # the run hibernates here until the manager decides
        approval = await self.approval_flow.request_approval(
            type="expense",
            title=f"Expense: {expense.description}",
            amount=expense.amount,
            requested_by=expense.submitter,
            approvers=[expense.manager],
        )
        if approval.status == "approved":
            return await self.process_approval(expense)
        return {"status": "rejected", "reason": approval.rejection_reason}


SAMPLES = [
    Expense(id="e1", description="Taxi", amount=42.0, submitter="sam", manager="dana"),
    Expense(id="e2", description="Hotel, 2 nights", amount=380.0, submitter="sam", manager="dana"),
    Expense(id="e3", description="Espresso machine", amount=900.0, submitter="lee", manager="kim"),
]


async def main(db: str | Path | None = None) -> dict[str, Any]:
    db = Path(db) if db else Path(tempfile.mkdtemp(prefix="dotdo-expense-")) / "expense.db"
    print(f"database: {db}")
    results: dict[str, Any] = {}
    async with Engine(db).register(Expenses) as engine:
        for expense in SAMPLES:
            await engine.start(Expenses.submit_expense, expense, run_id=expense.id)
        results["e1"] = await engine.handle("e1").result(timeout=10)
        print(f"e1 ${SAMPLES[0].amount:.0f}: {results['e1']['status']} (auto-approved)")
        for run_id in ("e2", "e3"):
            info = await engine.idle(run_id, timeout=10)
            print(f"{run_id}: {info.status}, holding no task: {run_id not in engine._active}")
        for approval in await engine.approvals():
            print(
                f"  pending {approval.id}: {approval.title} ${approval.amount:.2f} "
                f"from {approval.requested_by}, waiting on {approval.waiting_on}"
            )
    print("engine closed; the two runs are rows in SQLite")

    # A fresh engine, as a restarted worker (or `dotdo approve`) would be.
    async with Engine(db).register(Expenses) as engine:
        await engine.approve("e2/approval", by="dana", comment="within policy")
        await engine.reject("e3/approval", by="kim", reason="buy it through IT")
        for run_id in ("e2", "e3"):
            results[run_id] = await engine.handle(run_id).result(timeout=10)
            print(f"{run_id}: {results[run_id]}")
        trail = await engine.get_approval("e2/approval")
        for d in trail.decisions:
            print(f"  audit e2: {d.decision} by {d.by} at {d.at:%Y-%m-%d %H:%M} ({d.comment})")
        results["audit"] = [(d.by, d.decision, d.comment) for d in trail.decisions]
    return results


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
