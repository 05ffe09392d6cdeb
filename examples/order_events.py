"""The seed's event-driven handlers: placing an order sends `Order.placed` (written in the
same transaction as the run's checkpoint), `@on.Order.placed` sends the confirmation, and
`@on["*"].failed` logs every failure, whoever sent it. Each handler starts exactly once per
event, as a workflow of its own (run id `Class.handler:event_id`), so it can use steps.

    python examples/order_events.py [DB]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dotdo import DO, Engine, EventRecord, on, step, workflow


class Order(BaseModel):
    id: str
    email: str
    total: float
    card_ok: bool = True


class Shop(DO):
    @step
    async def charge(self, order: Order) -> bool:
        print(f"  charging {order.id} ${order.total:.2f}: {'ok' if order.card_ok else 'declined'}")
        return order.card_ok

    @step
    async def send_confirmation(self, data: dict) -> str:
        print(f"  emailing {data['email']}: order {data['id']} confirmed")
        return f"confirmation sent to {data['email']}"

    @step
    async def log_failure(self, name: str, data: Any) -> str:
        print(f"  FAILURE LOG: {name} {data}")
        return name

    @workflow
    async def place_order(self, order: Order) -> str:
        if await self.charge(order):
            self.send("Order.placed", {"id": order.id, "email": order.email})
            return "placed"
        self.send("Payment.failed", {"id": order.id, "reason": "card declined"})
        return "payment failed"

    @on.Order.placed
    async def confirm(self, event: EventRecord) -> str:
        return await self.send_confirmation(event.data)

    @on["*"].failed
    async def failures(self, event: EventRecord) -> str:
        return await self.log_failure(event.name, event.data)


async def _handlers_done(engine: Engine, count: int) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        runs = [r for r in await engine.runs(limit=100) if ":" in r.run_id]
        if len(runs) >= count and all(r.finished for r in runs):
            return sorted(runs, key=lambda r: r.run_id)
        if time.monotonic() > deadline:
            raise TimeoutError(f"handlers did not finish: {runs}")
        await asyncio.sleep(0.02)


async def main(db: str | Path | None = None) -> dict[str, Any]:
    db = Path(db) if db else Path(tempfile.mkdtemp(prefix="dotdo-events-")) / "events.db"
    print(f"database: {db}")
    async with Engine(db, poll_seconds=0.05).register(Shop) as engine:
        orders = [
            Order(id="o-1", email="ada@example.com", total=42.0),
            Order(id="o-2", email="bob@example.com", total=99.0, card_ok=False),
        ]
        for order in orders:
            result = await (await engine.start(Shop.place_order, order, run_id=order.id)).result()
            print(f"{order.id}: {result}")
        # an event from outside any run (a webhook, `dotdo send`) reaches the same handlers
        await engine.send("Shipment.failed", {"id": "o-1", "carrier": "down"})
        handlers = await _handlers_done(engine, 3)
        print("handler runs:")
        for r in handlers:
            print(f"  {r.run_id:<24} {r.status:<10} {r.result}")
        outbox = await engine.outbox()
    # a restart does not start any handler again
    async with Engine(db, poll_seconds=0.05).register(Shop) as engine:
        await asyncio.sleep(0.3)
        again = [r for r in await engine.runs(limit=100) if ":" in r.run_id]
        print(f"after a restart: still {len(again)} handler runs")
    return {
        "handlers": {r.run_id: r.result for r in handlers},
        "outbox": outbox,
        "after_restart": len(again),
    }


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
