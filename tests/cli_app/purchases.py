"""A two-level approval for the CLI tests of approvals, approve, reject and send."""

from __future__ import annotations

from datetime import timedelta

from dotdo import DO, approval, step, workflow


class Purchases(DO):
    @approval(approvers=["manager", "director"], deadline=timedelta(days=7))
    def po_approval(self, amount: float) -> dict[str, object]:
        return {"title": f"PO {amount}", "amount": amount}

    @step
    async def pay(self, amount: float) -> float:
        return amount

    @workflow
    async def buy(self, amount: float) -> dict[str, object]:
        decision = await self.po_approval(amount)
        if decision.status != "approved":
            return {"status": decision.status, "reason": decision.rejection_reason}
        await self.pay(amount)
        return {"status": "paid", "by": [d.by for d in decision.decisions]}
