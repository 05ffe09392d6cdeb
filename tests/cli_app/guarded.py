"""Workflows the stored-rows tests tamper with (tests/security/test_rows_are_data.py).

Every step appends its name to the file named by $GUARDED_LOG (when set), so a test can tell
which code really ran, in this process or in a `dotdo` subprocess.
"""

from __future__ import annotations

import os
from typing import Any

from dotdo import DO, approval, compensate, step, workflow


def mark(name: str) -> None:
    path = os.environ.get("GUARDED_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(name + "\n")


class Vault(DO):
    @approval(approvers=["boss"])
    def sign(self, n: int) -> dict[str, Any]:
        return {"title": f"open vault {n}", "amount": n}

    @step
    async def open_vault(self, n: int) -> str:
        mark("open_vault")
        return f"opened {n}"

    @compensate(open_vault)
    async def close_vault(self, opened: str) -> None:
        mark("close_vault")

    @step
    async def wipe(self) -> None:
        """No workflow calls this: a tampered row must not make the engine call it."""
        mark("wipe")

    @workflow
    async def guarded(self, n: int) -> str:
        decision = await self.sign(n)
        if decision.status != "approved":
            return "refused"
        return await self.open_vault(n)

    @workflow
    async def waiter(self) -> Any:
        event = await self.wait_for_event("Vault.opened")
        return event.data
