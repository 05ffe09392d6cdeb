"""Operating dotdo: a run fails, the code is fixed, `retry` continues it reusing what was
already done; its history is exported for the audit; old finished runs are pruned; and the
whole time Prometheus metrics (and, with dotdo[otel], traces) watch.

    python examples/operations.py [DB]

The same from a shell: `dotdo retry RUN --app MODULE [--from STEP]`, `dotdo export RUN`,
`dotdo prune --older-than 30d`, `dotdo worker --app MODULE --metrics-port 9464 --retain 30d`
(docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from dotdo import DO, Engine, PermanentError, RunFailed, step, workflow
from dotdo.engine.metrics import PrometheusMetrics

BROKEN = {"printer": True}
CALLS: list[str] = []


class Invoices(DO):
    @step(retries=0)
    async def compute(self, customer: str) -> float:
        CALLS.append("compute")
        return 123.45

    @step(retries=0)
    async def render(self, customer: str, total: float) -> str:
        CALLS.append("render")
        if BROKEN["printer"]:
            raise PermanentError("the PDF renderer is down")
        return f"invoice-{customer}.pdf ({total})"

    @workflow
    async def invoice(self, customer: str) -> str:
        total = await self.compute(customer)
        return await self.render(customer, total)


async def main(db: Path) -> None:
    metrics = PrometheusMetrics()
    async with Engine(db).register(Invoices).observe(metrics) as engine:
        handle = await engine.start(Invoices.invoice, "acme", run_id="inv-1")
        try:
            await handle.result(timeout=10)
        except RunFailed as failed:
            print(f"run inv-1 {failed.status}: {failed.error}")

        BROKEN["printer"] = False  # the fix is deployed
        retry = await engine.retry("inv-1")
        print(f"retry {retry.run_id}: {await retry.result(timeout=10)}")
        print(f"steps executed: {CALLS}  (compute ran once: its result was reused)")

        export = await engine.export("inv-1")
        print(
            f"export of inv-1: {len(export['steps'])} journal rows, "
            f"history {[h['kind'] for h in export['history']]}, retries {export['retries']}"
        )

        removed = await engine.prune(older_than=0, statuses=["failed"])
        print(f"pruned: {removed}")

        from prometheus_client import generate_latest

        text = generate_latest(metrics.registry).decode()
        shown = [s for s in text.splitlines() if s.startswith("dotdo_runs_") and "_total" in s]
        print("metrics:\n  " + "\n  ".join(shown))
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(Path(tmp) / "ops.db"))
