"""The seed's multi-level purchase order: manager -> director -> vp, in order, within 7 days;
priority high over $10,000. Any rejection ends the chain; past the deadline the approval
expires and the workflow escalates. Runs on a virtual clock so a week passes instantly.

    python examples/purchase.py [DB]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dotdo import DO, Approval, ApprovalError, Engine, step, workflow
from dotdo.testing import VirtualClock

CHAIN = ["manager", "director", "vp"]


class PurchaseOrder(BaseModel):
    id: str
    item: str
    amount: float
    requester: str


class Purchasing(DO):
    @step
    async def place_order(self, po: PurchaseOrder) -> str:
        print(f"  ordering {po.item} (${po.amount:,.0f})")
        return f"vendor-order-{po.id}"

    @step
    async def escalate(self, po: PurchaseOrder, approval: Approval) -> str:
        stuck = approval.waiting_on or approval.approvers[approval.level]
        print(f"  escalating {po.id}: nobody decided in time (stuck at {stuck})")
        return f"escalated to procurement (stuck at {stuck})"

    @workflow
    async def request_purchase(self, po: PurchaseOrder) -> dict:
        approval = await self.approval_flow.request_approval(
            type="purchase",
            title=f"PO: {po.item}",
            amount=po.amount,
            requested_by=po.requester,
            approvers=CHAIN,
            deadline=self.now() + timedelta(days=7),
            priority="high" if po.amount > 10_000 else "normal",
        )
        trail = [f"{d.decision} by {d.by}" for d in approval.decisions]
        if approval.status == "approved":
            order = await self.place_order(po)
            return {"status": "ordered", "order": order, "trail": trail}
        if approval.status == "expired":
            note = await self.escalate(po, approval)
            return {"status": "expired", "note": note, "trail": trail}
        return {"status": "rejected", "reason": approval.rejection_reason, "trail": trail}


ORDERS = [
    PurchaseOrder(id="po-1", item="Build servers", amount=25_000, requester="ops"),
    PurchaseOrder(id="po-2", item="Standing desks", amount=3_000, requester="hr"),
    PurchaseOrder(id="po-3", item="Conference booth", amount=8_000, requester="marketing"),
]


async def main(db: str | Path | None = None) -> dict[str, Any]:
    db = Path(db) if db else Path(tempfile.mkdtemp(prefix="dotdo-purchase-")) / "purchase.db"
    clock = VirtualClock(datetime(2030, 3, 4, 9, 0, tzinfo=UTC))
    print(f"database: {db}")
    results: dict[str, Any] = {}
    async with Engine(db, clock=clock).register(Purchasing) as engine:
        for po in ORDERS:
            await engine.start(Purchasing.request_purchase, po, run_id=po.id)
            await engine.idle(po.id, timeout=10)
        for a in await engine.approvals(approver="manager"):
            print(f"  {a.id}: {a.title} ${a.amount:,.0f} priority={a.priority} due {a.deadline}")

        # po-1 goes up the whole chain; a director trying to jump the queue is refused
        try:
            await engine.approve("po-1/approval", by="director")
        except ApprovalError as refused:
            print(f"  refused: {refused}")
        for who in CHAIN:
            clock.advance(timedelta(hours=4))
            a = await engine.approve("po-1/approval", by=who, comment=f"ok ({who})")
            print(f"  po-1 approved by {who}; now {a.status}, waiting on {a.waiting_on}")

        # po-2: the manager approves, the director rejects -> the vp never sees it
        await engine.approve("po-2/approval", by="manager")
        await engine.reject("po-2/approval", by="director", reason="reuse the old desks")

        # po-3: the manager approves, then nobody else for a week
        await engine.approve("po-3/approval", by="manager")
        print("  ... eight days pass ...")
        await clock.run_for(timedelta(days=8), step=6 * 3600)

        for po in ORDERS:
            results[po.id] = await engine.handle(po.id).result(timeout=10)
            print(f"{po.id}: {results[po.id]}")
        results["priorities"] = {
            a.id: a.priority for a in await engine.approvals(status=None, limit=10)
        }
    return results


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
