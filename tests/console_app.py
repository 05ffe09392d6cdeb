"""Workflows the console tests drive: a two-level purchase-order chain, a group approval,
a cascade with a human tier, a run that fails, and an `@on` handler that mails a signed
link for every approval request (into MAILBOX, the test's outbox)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dotdo import DO, approval, current_step, on, step, workflow

MAILBOX: list[dict[str, Any]] = []


class Purchases(DO):
    @step
    async def place(self, amount: float) -> str:
        return f"placed {amount}"

    @step
    async def explode(self, amount: float) -> str:
        raise ValueError(f"cannot place {amount}")

    @approval(approvers=["manager", "director"], deadline=timedelta(days=2))
    def po_chain(self, amount: float, title: str) -> dict[str, Any]:
        return {"title": title, "amount": amount, "requested_by": "requester", "priority": "high"}

    @approval(approvers=["finance"])
    def finance_ok(self, amount: float) -> dict[str, Any]:
        return {"title": f"budget {amount}", "amount": amount, "priority": "low"}

    @approval(approvers=["manager"], deadline=timedelta(seconds=1))
    def quick(self, amount: float) -> dict[str, Any]:
        return {"title": f"quick {amount}", "amount": amount}

    @workflow
    async def order(self, amount: float, title: str = "PO") -> str:
        decision = await self.po_chain(amount, title)
        if decision.status != "approved":
            return f"rejected: {decision.rejection_reason}"
        return await self.place(amount)

    @workflow
    async def budget(self, amount: float) -> str:
        decision = await self.finance_ok(amount)
        return decision.status

    @workflow
    async def hurried(self, amount: float) -> str:
        decision = await self.quick(amount)
        return decision.status

    @workflow
    async def broken(self, amount: float) -> str:
        return await self.explode(amount)

    @workflow
    async def categorize(self, text: str) -> Any:
        result = await self.cascade(
            task=f"categorize {text}",
            tiers={
                "code": lambda: {"value": "misc", "confidence": 0.3},
                "human": lambda: None,
            },
            confidence_threshold=0.9,
        )
        return result.value

    @workflow
    async def triage(self, text: str) -> Any:
        result = await self.cascade(
            task=f"triage {text}",
            tiers={
                "code": lambda: {"value": "unsure", "confidence": 0.1},
                "human": ["finance"],  # the human tier names its reviewer (a group here)
            },
            confidence_threshold=0.9,
        )
        return result.value


class Mailer(DO):
    @step
    async def mail_link(self, event: Any) -> str:
        data = event.data
        engine = current_step().engine
        turn = data["waiting_on"]
        url = await engine.approval_link(data["approval_id"], turn, base_url="http://console")
        MAILBOX.append({"to": turn, "approval_id": data["approval_id"], "url": url})
        return url

    @on.Approval.requested
    async def on_requested(self, event: Any) -> str:
        return await self.mail_link(event)
