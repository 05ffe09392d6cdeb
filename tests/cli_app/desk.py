"""Workflows for the CLI hardening tests (tests/test_cli_hardening.py): a short deadline, a
workflow that takes any JSON, an event wait and an event handler."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from dotdo import DO, EventRecord, approval, on, step, workflow


class Desk(DO):
    @approval(approvers=["boss"], deadline=timedelta(seconds=1))
    def quick(self, n: int) -> dict[str, Any]:
        return {"title": f"quick {n}", "amount": n}

    @workflow
    async def ask(self, n: int) -> str:
        decision = await self.quick(n)
        return str(decision.status)

    @workflow
    async def echo(self, data: Any) -> Any:
        return data

    @workflow
    async def listen(self) -> Any:
        event = await self.wait_for_event("Desk.pinged")
        return event.data

    @step
    async def first(self) -> int:
        return 1

    @step
    async def slow(self) -> int:
        await asyncio.sleep(1.0)
        return 2

    @workflow
    async def two(self) -> int:
        a = await self.first()
        b = await self.slow()
        return a + b

    @step
    async def note(self, data: Any) -> str:
        return f"noted {data}"

    @on.Desk.pinged
    async def on_ping(self, event: EventRecord) -> str:
        return await self.note(event.data)
