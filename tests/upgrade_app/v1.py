"""Release 1: reserve, approval, charge (undone by refund), an hour's wait, ship."""

from __future__ import annotations

from typing import Any

from dotdo import DO, approval, compensate, step, workflow


class Billing(DO):
    @step(retries=0)
    async def reserve(self, order: str) -> str:
        return f"reserved {order}"

    @approval(approvers=["boss"])
    def sign(self, order: str) -> dict[str, Any]:
        return {"title": f"bill {order}"}

    @step(retries=0)
    async def charge(self, order: str) -> int:
        return 10

    @compensate(charge)
    async def refund(self, amount: int) -> None:
        return None

    @step(retries=0)
    async def ship(self, order: str) -> str:
        return f"shipped {order}"

    @workflow
    async def bill(self, order: str) -> str:
        reserved = await self.reserve(order)
        decision = await self.sign(order)
        if decision.status != "approved":
            return "refused"
        amount = await self.charge(order)
        await self.sleep(3600)
        shipped = await self.ship(order)
        return f"{reserved}, {amount}, {shipped}"
