"""The Python functions the example `.flow` files bind as steps.

A `.flow` file describes the process; the work itself is done by ordinary functions like
these (sync or async, no `self`). `use examples.flow_steps` in a flow makes every
`step name` line resolve to the function of that name here. The order and trip functions
behave exactly like their Python twins in orders.py and trip.py, so both front ends give
the same results.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from dotdo import PermanentError, current_step
from examples.orders import Order, Payment, Shipment
from examples.trip import Booking, Trip


class Expense(BaseModel):
    description: str
    amount: float
    submitter: str
    manager: str


class PurchaseOrder(BaseModel):
    item: str
    amount: float
    requester: str


CANCELLED: list[str] = []
"""Bookings undone by the trip saga, in the order they were cancelled."""
OUTBOX: list[tuple[str, str]] = []
"""Emails 'sent' by send_email: (address, subject)."""
REPORTS: list[str] = []
"""Reports and summaries produced by the scheduled workflows."""


# ------------------------------------------------------------------ orders
async def validate_order(order: Order) -> Order:
    if not order.items:
        raise PermanentError(f"order {order.id} has no items")
    if any(item.quantity <= 0 for item in order.items):
        raise PermanentError(f"order {order.id} has an item with no quantity")
    return order


async def charge_payment(order: Order) -> Payment:
    # Stable across retries and crashes: a payment API deduplicates on it.
    key = current_step().idempotency_key
    amount = round(sum(i.price * i.quantity for i in order.items), 2)
    return Payment(id=f"pay_{order.id}", amount=amount, idempotency_key=key)


async def refund_payment(payment: Payment) -> None:
    print(f"  refunded {payment.amount:.2f} for {payment.id}")


async def fulfill_order(order: Order, payment: Payment) -> Shipment:
    return Shipment(tracking=f"trk_{order.id}", items=sum(i.quantity for i in order.items))


async def send_email(email: str, subject: str) -> None:
    OUTBOX.append((email, subject))


def reserve_item(sku: str, quantity: int) -> dict[str, Any]:
    return {"sku": sku, "reserved": quantity}


# -------------------------------------------------------------------- trip
async def book_flight(trip: Trip) -> Booking:
    return Booking(kind="flight", id=f"FL-{trip.destination[:3].upper()}-1")


async def cancel_flight(booking: Booking) -> None:
    CANCELLED.append(booking.id)


async def book_hotel(trip: Trip) -> Booking:
    return Booking(kind="hotel", id=f"HT-{trip.nights}N")


async def cancel_hotel(booking: Booking) -> None:
    CANCELLED.append(booking.id)


async def book_car(trip: Trip) -> Booking:
    raise PermanentError(f"no cars available in {trip.destination}")


async def cancel_car(booking: Booking) -> None:
    CANCELLED.append(booking.id)


# ----------------------------------------------------------------- expenses
def process_expense(expense: Expense) -> dict[str, Any]:
    return {"status": "paid", "amount": expense.amount, "to": expense.submitter}


def notify(person: str, message: str) -> None:
    OUTBOX.append((person, message))


def place_order(po: PurchaseOrder) -> dict[str, Any]:
    return {"status": "ordered", "item": po.item, "amount": po.amount}


# ----------------------------------------------------------- cascade tiers
def rule_based_category(expense: Expense) -> tuple[str, float]:
    """Instant and cheap; confident only for descriptions it knows."""
    text = expense.description.lower()
    for word, category in (("taxi", "travel"), ("hotel", "travel"), ("lunch", "meals")):
        if word in text:
            return category, 0.95
    return "other", 0.3


async def ai_category(expense: Expense) -> dict[str, Any]:
    """A stand-in for a model call: a guess with a middling confidence."""
    text = expense.description.lower()
    guess = "software" if "licen" in text else "office"
    return {"value": guess, "confidence": 0.8}


async def agent_category(expense: Expense) -> dict[str, Any]:
    return {"value": "office", "confidence": 0.85}


def queue_for_review(expense: Expense) -> dict[str, Any]:
    return {"value": None, "confidence": 0.0}


# ----------------------------------------------------------------- reports
def weekly_report() -> str:
    line = f"weekly report at {datetime.now(UTC):%Y-%m-%d %H:%M}"
    REPORTS.append(line)
    return line


def daily_summary() -> str:
    line = f"daily summary at {datetime.now(UTC):%Y-%m-%d %H:%M}"
    REPORTS.append(line)
    return line


def health_check() -> dict[str, Any]:
    return {"ok": True}


def log_event(name: str, data: Any) -> None:
    REPORTS.append(f"{name}: {data!r}")


def retry_charge(data: Any) -> dict[str, Any]:
    return {"retried": True, "data": data}


def ship_order(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "shipped": True}


# ------------------------------------------------------------------- misc
def echo(value: Any) -> Any:
    """Returns its argument: a do-nothing step for benchmarks and tests."""
    return value
