"""The seed's cross-DO order: one workflow orchestrating Inventory, Payment and Shipping DOs.

Each `await self.Noun(id).method(...)` below is a durable step: journalled once, retried
under the default policy, and applied once by the callee (the step's idempotency key is the
call id the callee deduplicates on). Every Inventory, Payment, Shipping and Customer
instance keeps its own state in the same SQLite file, one call at a time per instance.

    python examples/cross_do.py            # everything in one process
    python examples/cross_do.py --remote   # Inventory served over HTTP by a second engine

Served for real:
    DOTDO_TOKEN=s3cret dotdo serve --app examples.cross_do --port 8123 --db stock.db
and in the caller: `dotdo.entities.remote(engine, "Inventory", "http://127.0.0.1:8123")`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from dotdo import DO, Engine, PermanentError, workflow
from dotdo.entities import create_app, entities_of, remote, running


# ----------------------------------------------------------------------------- data
class Item(BaseModel):
    sku: str
    quantity: int
    price: float


class Order(BaseModel):
    id: str
    warehouse_id: str
    customer_id: str
    items: list[Item]
    address: str

    @property
    def total(self) -> float:
        return round(sum(i.price * i.quantity for i in self.items), 2)


class Reservation(BaseModel):
    warehouse: str
    order_id: str
    lines: dict[str, int]


class Charge(BaseModel):
    customer: str
    amount: float
    balance: float


class Shipment(BaseModel):
    order_id: str
    tracking: str
    address: str


class Receipt(BaseModel):
    order_id: str
    reserved: dict[str, int]
    charged: float
    tracking: str


class OutOfStock(PermanentError):
    """Retrying will not make stock appear: fail the step at once."""


# ------------------------------------------------------------------------- entities
class InventoryState(BaseModel):
    stock: dict[str, int] = Field(default_factory=lambda: {"apple": 100, "pear": 50})
    reserved: dict[str, dict[str, int]] = Field(default_factory=dict)


class Inventory(DO):
    """One warehouse's stock."""

    State = InventoryState

    async def reserve(self, items: list[Item], order_id: str = "") -> Reservation:
        stock = self.state.stock
        for item in items:
            if stock.get(item.sku, 0) < item.quantity:
                raise OutOfStock(f"only {stock.get(item.sku, 0)} {item.sku} left")
        for item in items:
            stock[item.sku] -= item.quantity
        lines = {i.sku: i.quantity for i in items}
        self.state.reserved[order_id] = lines
        return Reservation(warehouse=self.entity_id, order_id=order_id, lines=lines)

    async def release(self, order_id: str) -> None:
        for sku, quantity in self.state.reserved.pop(order_id, {}).items():
            self.state.stock[sku] = self.state.stock.get(sku, 0) + quantity

    @property
    def available(self) -> dict[str, int]:
        return dict(self.state.stock)


class PaymentState(BaseModel):
    balance: float = 1000.0
    charges: list[float] = Field(default_factory=list)


class Payment(DO):
    """One customer's wallet."""

    State = PaymentState

    async def charge(self, amount: float) -> Charge:
        if amount > self.state.balance:
            raise PermanentError(f"balance {self.state.balance} is below {amount}")
        self.state.balance = round(self.state.balance - amount, 2)
        self.state.charges.append(amount)
        return Charge(customer=self.entity_id, amount=amount, balance=self.state.balance)


class ShippingState(BaseModel):
    tracking: str | None = None
    address: str | None = None


class Shipping(DO):
    """One order's shipment."""

    State = ShippingState

    async def schedule(self, address: str) -> Shipment:
        if self.state.tracking is None:
            self.state.tracking = f"trk-{self.entity_id}"
            self.state.address = address
        return Shipment(order_id=self.entity_id, tracking=self.state.tracking, address=address)


class CustomerState(BaseModel):
    inbox: list[str] = Field(default_factory=list)


class Customer(DO):
    State = CustomerState

    async def notify(self, message: str) -> None:
        self.state.inbox.append(message)


# ------------------------------------------------------------------------- workflow
class Orders(DO):
    @workflow
    async def process_order(self, order: Order) -> Receipt:
        inventory = await self.Inventory(order.warehouse_id).reserve(order.items, order.id)
        payment = await self.Payment(order.customer_id).charge(order.total)
        shipping = await self.Shipping(order.id).schedule(order.address)
        # Fire-and-forget, still durable: queued with the run's next checkpoint.
        self.Customer(order.customer_id).notify(f"order {order.id} ships as {shipping.tracking}")
        return Receipt(
            order_id=order.id,
            reserved=inventory.lines,
            charged=payment.amount,
            tracking=shipping.tracking,
        )


ORDER = Order(
    id="o-1",
    warehouse_id="w-east",
    customer_id="c-7",
    items=[Item(sku="apple", quantity=3, price=0.5), Item(sku="pear", quantity=2, price=1.25)],
    address="1 Main St",
)


async def main(remote_inventory: bool = False) -> None:
    folder = Path(tempfile.mkdtemp(prefix="dotdo-cross-"))
    engine = Engine(folder / "orders.db")
    engine.register(Orders, Payment, Shipping, Customer)
    if not remote_inventory:
        engine.register(Inventory)
        async with engine:
            await _run(engine, engine)
        return
    os.environ.setdefault("DOTDO_TOKEN", "example-token")
    stock = Engine(folder / "stock.db").register(Inventory)
    async with stock, running(create_app(stock)) as url:
        remote(engine, "Inventory", url)
        print(f"Inventory served at {url}")
        async with engine:
            await _run(engine, stock)


async def _run(engine: Engine, stock: Engine) -> None:
    handle = await engine.start(Orders.process_order, ORDER, run_id="order-o-1")
    receipt = await handle.result()
    print("receipt:", receipt.model_dump())
    for record in await engine.journal(handle.run_id):
        print(f"  step {record.key:<20} {record.status}")
    entities = entities_of(engine)
    print("inventory:", (await entities_of(stock).state("Inventory", "w-east")).stock)
    print("wallet:", (await entities.state("Payment", "c-7")).balance)
    await asyncio.sleep(0.2)  # the notification is delivered by the outbox dispatcher
    print("customer inbox:", (await entities.state("Customer", "c-7")).inbox)


if __name__ == "__main__":
    asyncio.run(main(remote_inventory="--remote" in sys.argv))
