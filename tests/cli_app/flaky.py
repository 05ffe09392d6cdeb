"""An app whose `pack` step fails while the file named by $FLAKY_BROKEN exists: a run fails,
the file is removed (the fix), and `dotdo retry` continues it."""

from __future__ import annotations

import os
from pathlib import Path

from dotdo import DO, PermanentError, step, workflow


def _count(name: str) -> int:
    log = Path(os.environ["FLAKY_LOG"])
    with log.open("a") as out:
        out.write(name + "\n")
    return log.read_text().splitlines().count(name)


class Depot(DO):
    @step(retries=0)
    async def pick(self, item: str) -> str:
        return f"{item}#{_count('pick')}"

    @step(retries=0)
    async def pack(self, picked: str) -> str:
        _count("pack")
        if Path(os.environ["FLAKY_BROKEN"]).exists():
            raise PermanentError("the packing machine is broken")
        return f"box({picked})"

    @workflow
    async def dispatch(self, item: str) -> str:
        picked = await self.pick(item)
        return await self.pack(picked)
