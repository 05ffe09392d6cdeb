"""Release 3, breaking: `charge` renamed to `invoice`, `refund` gone, `ship` needs a
carrier, and `reserve` has an annotation that no longer loads (no parked run reaches it)."""

from __future__ import annotations

from typing import Any

from dotdo import DO, approval, step, workflow


class Billing(DO):
    @step(retries=0)
    async def reserve(self, order: Missing) -> str:  # type: ignore[name-defined]  # noqa: F821
        return f"reserved {order}"

    @approval(approvers=["boss"])
    def sign(self, order: str) -> dict[str, Any]:
        return {"title": f"bill {order}"}

    @step(retries=0)
    async def invoice(self, order: str) -> int:
        return 30

    @step(retries=0)
    async def ship(self, order: str, carrier: str) -> str:
        return f"shipped {order} by {carrier}"

    @workflow
    async def bill(self, order: str) -> str:
        decision = await self.sign(order)
        if decision.status != "approved":
            return "refused"
        amount = await self.invoice(order)
        await self.sleep(3600)
        shipped = await self.ship(order, "post")
        return f"{amount}, {shipped}"
