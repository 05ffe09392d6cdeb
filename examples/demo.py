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

from dotdo import Engine, RunFailed  # noqa: E402
from dotdo.compiler.render import Overlay, render  # noqa: E402
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
        handle = await engine.start(orders.Orders.process_order, orders.SAMPLE, run_id="po-42")
        receipt = await handle.result()
        console.print(f"status: [green]{await handle.status()}[/]  result: {receipt!r}")
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

        graph = orders.Orders.process_order.graph
        done = {n.id for n in graph.nodes.values()}
        render(graph, OUT / "orders.mmd")
        render(graph, OUT / "orders.dot", Overlay(done=done, current="end"))
        if shutil.which("dot"):
            render(graph, OUT / "orders.svg", Overlay(done=done, current="end"))
            render(trip.Trips.book_trip.graph, OUT / "trip.svg")
            console.print(f"diagrams: {OUT / 'orders.svg'}, {OUT / 'trip.svg'}")
        else:
            console.print(f"diagrams: {OUT / 'orders.dot'} and .mmd (install Graphviz for SVG)")


if __name__ == "__main__":
    asyncio.run(main())
