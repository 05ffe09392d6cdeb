"""Approvals that reach people: an `@on Approval.requested` handler mails each approver a
signed link to their decision page in the web console (docs/console.md).

    python examples/console_links.py [DB]
    dotdo ui --app examples.console_links --db DB      # then open the printed link

The link opens the page without a password, once, for three days; the decision itself is a
POST from that page, so a mail client's link preview cannot approve anything.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from dotdo import DO, Engine, EventRecord, approval, current_step, on, step, workflow

OUTBOX: list[str] = []
"""Mails "sent" (a real app would hand them to SMTP or a chat API)."""


class Expenses(DO):
    @step
    async def reimburse(self, who: str, amount: float) -> str:
        return f"paid {who} {amount:.2f}"

    @approval(approvers=["manager", "finance"])
    def expense_ok(self, who: str, amount: float) -> dict[str, Any]:
        return {"title": f"Expense of {who}", "amount": amount, "requested_by": who}

    @workflow
    async def claim(self, who: str, amount: float) -> str:
        decision = await self.expense_ok(who, amount)
        if decision.status != "approved":
            return f"refused: {decision.rejection_reason}"
        return await self.reimburse(who, amount)


class Notifier(DO):
    @step
    async def mail(self, event: EventRecord) -> str:
        data = event.data
        engine = current_step().engine
        url = await engine.approval_link(data["approval_id"], data["waiting_on"])
        text = f"To: {data['waiting_on']}\nSubject: please decide: {data['title']}\n\n{url}\n"
        OUTBOX.append(text)
        return url

    @on.Approval.requested
    async def mail_approver(self, event: EventRecord) -> str:
        return await self.mail(event)

    @on.Approval.decided
    async def mail_next(self, event: EventRecord) -> str | None:
        if event.data["status"] != "pending":
            return None  # settled: nobody else to ask
        return await self.mail(event)  # the chain moved on: ask the next level


async def main(db: str | Path | None = None) -> list[str]:
    db = Path(db) if db else Path(tempfile.mkdtemp(prefix="dotdo-links-")) / "links.db"
    engine = Engine(db).register(Expenses, Notifier)
    async with engine:
        await engine.start(Expenses.claim, "sam", 84.5, run_id="claim-1")
        for _ in range(500):
            if OUTBOX:
                break
            await asyncio.sleep(0.01)
        await engine.approve("claim-1/expense_ok", by="manager", comment="fine")
        for _ in range(500):
            if len(OUTBOX) >= 2:
                break
            await asyncio.sleep(0.01)
    for mail in OUTBOX:
        print(mail)
    print(f"database: {db}")
    print("add people: dotdo users add mia --as manager --db DB; dotdo users add fin --as finance")
    print(f"serve it:   dotdo ui --app examples.console_links --db {db}")
    return list(OUTBOX)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
