"""`make demo`: run both examples end to end on the embedded SQLite default, show what
happened (results, journals, the outbox), and draw the order workflow's diagram.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dotdo  # noqa: E402
from dotdo import Engine, RunFailed  # noqa: E402
from examples import orders, trip  # noqa: E402

console = Console()
OUT = ROOT / "out"
DB = OUT / "demo.db"


async def journal_table(engine: Engine, run_id: str) -> Table:
    table = Table(title=f"journal of {run_id}", show_lines=False)
    for column in ("seq", "step", "status", "attempts"):
        table.add_column(column)
    for record in await engine.journal(run_id):
        table.add_row(str(record.seq or "-"), record.key, record.status, str(record.attempts))
    return table


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB}{suffix}").unlink(missing_ok=True)
    async with Engine(DB) as engine:
        engine.register(orders.Orders, trip.Trips)

        console.rule("[bold]orders: validate, charge, fulfil")
        order_run = await engine.start(orders.Orders.process_order, orders.SAMPLE, run_id="po-42")
        receipt = await order_run.result()
        console.print(f"status: [green]{await order_run.status()}[/]  result: {receipt!r}")
        again = await engine.start(orders.Orders.process_order, orders.SAMPLE, run_id="po-42")
        console.print(f"started again with the same run id -> same run: {again.run_id}")
        console.print(await journal_table(engine, "po-42"))
        console.print(f"outbox: {await engine.outbox('po-42')}")

        console.rule("[bold]trip: flight, hotel, car (the car fails)")
        handle = await engine.start(trip.Trips.book_trip, trip.SAMPLE, run_id="trip-1")
        try:
            await handle.result()
        except RunFailed as failed:
            console.print(f"status: [yellow]{failed.status}[/]  original error: {failed.error!r}")
        console.print(await journal_table(engine, "trip-1"))

        # The diagram is the program; with run=, the run's progress (and last edge) is on it.
        process = orders.Orders.process_order
        dotdo.render(process, OUT / "orders.mmd")
        dotdo.render(process, OUT / "orders.dot", run=order_run)
        if shutil.which("dot"):
            dotdo.render(process, OUT / "orders.svg", run=order_run)
            dotdo.render(trip.Trips.book_trip, OUT / "trip.svg", run=handle)
            console.print(f"diagrams: {OUT / 'orders.svg'}, {OUT / 'trip.svg'}")
        else:
            console.print(f"diagrams: {OUT / 'orders.dot'} and .mmd (install Graphviz for SVG)")


if __name__ == "__main__":
    asyncio.run(main())
