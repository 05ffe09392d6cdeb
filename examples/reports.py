"""The seed's scheduled workflows: a weekly report every Monday at 9am and a daily summary
at 6pm. On a virtual clock a whole week passes in a moment; each fire time starts exactly one
run, whose id says which schedule and which time (so a restart cannot double it).

    python examples/reports.py [DB]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dotdo import DO, Engine, every, step
from dotdo.testing import VirtualClock


class Reports(DO):
    @step
    async def build(self, kind: str, at: datetime) -> str:
        text = f"{kind} for {at:%a %Y-%m-%d %H:%M} UTC"
        print(f"  built {text}")
        return text

    @every.monday.at("9am")
    async def weekly_report(self) -> str:
        return await self.build("weekly report", self.now())

    @every.day.at("6pm")
    async def daily_summary(self) -> str:
        return await self.build("daily summary", self.now())


async def main(db: str | Path | None = None) -> dict[str, Any]:
    db = Path(db) if db else Path(tempfile.mkdtemp(prefix="dotdo-reports-")) / "reports.db"
    start = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)  # a Monday morning
    clock = VirtualClock(start)
    print(f"database: {db}\nvirtual clock starts {start:%a %Y-%m-%d %H:%M} UTC")
    async with Engine(db, clock=clock).register(Reports) as engine:
        await asyncio.sleep(0.05)  # the engine stores each schedule's next fire time
        await clock.run_for(timedelta(days=3), step=3600)
        # a restart mid-week: nothing fires twice
    print("  (engine restarted)")
    async with Engine(db, clock=clock).register(Reports) as engine:
        await clock.run_for(timedelta(days=4), step=3600)
        await asyncio.sleep(0.1)
        runs = sorted(
            (r for r in await engine.runs(limit=100) if r.workflow.startswith("Reports.")),
            key=lambda r: r.run_id,
        )
        print(f"one week later ({clock.now() - start.timestamp():.0f}s of virtual time):")
        for r in runs:
            print(f"  {r.run_id:<48} {r.status:<10} {r.result}")
    return {
        "weekly": [r.run_id for r in runs if r.workflow == "Reports.weekly_report"],
        "daily": [r.run_id for r in runs if r.workflow == "Reports.daily_summary"],
        "statuses": {r.status for r in runs},
    }


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
