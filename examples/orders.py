"""The seed's processOrder: validate, charge, fulfil; each a durable step.

Run it with `python examples/demo.py`, or from the CLI:
    dotdo run examples.orders:Orders.process_order --input '{"order": {...}}'
"""

from __future__ import annotations

from pydantic import BaseModel

from dotdo import DO, PermanentError, compensate, current_step, step, workflow


class Item(BaseModel):
    sku: str
    quantity: int
    price: float


class Order(BaseModel):
    id: str
    email: str
    items: list[Item]


class Payment(BaseModel):
    id: str
    amount: float
    idempotency_key: str


class Shipment(BaseModel):
    tracking: str
    items: int


class Receipt(BaseModel):
    order_id: str
    status: str
    payment_id: str
    amount: float
    tracking: str | None = None


class Orders(DO):
    """Order processing for one shop. Each call below is recorded once in SQLite."""

    async def validate_order(self, order: Order) -> Order:
        if not order.items:
            raise PermanentError(f"order {order.id} has no items")
        if any(item.quantity <= 0 for item in order.items):
            raise PermanentError(f"order {order.id} has an item with no quantity")
        return order

    @step(retries=3, backoff=2.0, timeout=30)
    async def charge_payment(self, order: Order) -> Payment:
        # The key is stable across retries and crashes: a payment API deduplicates on it.
        key = current_step().idempotency_key
        amount = round(sum(i.price * i.quantity for i in order.items), 2)
        return Payment(id=f"pay_{order.id}", amount=amount, idempotency_key=key)

    @compensate(charge_payment)
    async def refund_payment(self, payment: Payment) -> None:
        print(f"  refunded {payment.amount:.2f} for {payment.id}")

    async def fulfill_order(self, order: Order, payment: Payment) -> Shipment:
        return Shipment(tracking=f"trk_{order.id}", items=sum(i.quantity for i in order.items))

    async def send_email(self, email: str, subject: str) -> None:
        print(f"  email to {email}: {subject}")

    @workflow
    async def process_order(self, order: Order) -> Receipt:
        validated = await self.do(self.validate_order, order, step_id="validate")
        payment = await self.charge_payment(validated)
        shipment = await self.do(self.fulfill_order, validated, payment, step_id="fulfill")
        await self.try_(self.send_email, order.email, f"order {order.id} shipped", timeout=5)
        self.send("Order.placed", {"order_id": order.id, "amount": payment.amount})
        return Receipt(
            order_id=order.id,
            status="fulfilled",
            payment_id=payment.id,
            amount=payment.amount,
            tracking=shipment.tracking,
        )


SAMPLE = Order(
    id="po-42",
    email="ada@example.com",
    items=[Item(sku="book", quantity=2, price=12.5), Item(sku="pen", quantity=3, price=1.2)],
)
