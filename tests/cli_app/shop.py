"""A tiny shop: one workflow per CLI behaviour the tests check.

Steps append a line to the file named by CLI_APP_COUNTER (when set), so a test can count how
often a step really ran, across processes.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from dotdo import DO, PermanentError, approval, step, workflow


class Order(BaseModel):
    id: str
    amount: float
    qty: int = 1


class Receipt(BaseModel):
    order_id: str
    total: float


def _tick(name: str) -> None:
    path = os.environ.get("CLI_APP_COUNTER")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(name + "\n")


class Shop(DO):
    @step
    async def reserve(self, order: Order) -> int:
        _tick("reserve")
        return order.qty

    @step
    async def charge(self, order: Order) -> float:
        _tick("charge")
        return order.amount * order.qty

    @step(retries=3, initial_delay=3600, max_delay=3600)
    async def call_bank(self) -> None:
        _tick("call_bank")
        raise ConnectionError("bank is down")

    @step
    async def decline(self) -> None:
        raise PermanentError("card declined")

    @approval(approvers=["manager"])
    def sign_off(self, amount: float) -> dict[str, Any]:
        return {"title": f"refund of {amount}", "amount": amount}

    @workflow
    async def refund(self, amount: float) -> str:
        decision = await self.sign_off(amount)
        return str(decision.status)

    @workflow
    async def checkout(self, order: Order) -> Receipt:
        await self.reserve(order)
        total = await self.charge(order)
        return Receipt(order_id=order.id, total=total)

    @workflow
    async def summary(self, label: str) -> dict[str, Any]:
        when = self.now()
        ident = self.uuid()
        return {"label": label, "when": when, "id": ident, "price": Decimal("1.50"), "tags": {"x"}}

    @workflow
    async def settle(self) -> None:
        await self.call_bank()

    @workflow
    async def pay(self) -> None:
        await self.decline()


class Plain:
    """Not a DO: a target naming it is not a workflow."""

    def go(self) -> None:
        pass
