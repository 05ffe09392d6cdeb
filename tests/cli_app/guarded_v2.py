"""The next release of `cli_app.guarded`: the same workflow names, changed code, so runs
started on the old code resume on the graph they pinned, read back from the store."""

from __future__ import annotations

from typing import Any

from cli_app.guarded import mark
from dotdo import DO, approval, compensate, step, workflow


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
        mark("wipe")

    @workflow
    async def guarded(self, n: int) -> str:
        decision = await self.sign(n)
        if decision.status != "approved":
            return "refused (v2)"
        return "v2: " + await self.open_vault(n)
