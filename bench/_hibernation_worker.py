"""The workflow of the hibernation bench, and a worker process that serves it.

`Hib.hold(n)` asks one approver ("boss") and hibernates; once approved its `mark` step runs,
and the first thing `mark` does is take a timestamp. In the bench process the timestamp goes
into `MARKS` (and wakes whoever waits on it); in a worker process it is appended to a file,
so another process can see when the resumed run's next step started.

    python bench/_hibernation_worker.py DB --marks FILE [--poll 0.05]

opens `Engine(DB, poll_seconds=POLL)`, registers `Hib`, prints READY and serves until it is
killed (SIGTERM or SIGINT stop it cleanly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dotdo import DO, Engine, current_step, step, workflow

MARKS: dict[str, float] = {}
"""run id -> time.time() at the start of its `mark` step (bench process)."""
WAITERS: dict[str, asyncio.Future[float]] = {}
SINK: Callable[[str, float], None] | None = None
"""Set in a worker process: where `mark` writes its timestamp."""


def _record(run_id: str, at: float) -> None:
    MARKS[run_id] = at
    future = WAITERS.pop(run_id, None)
    if future is not None and not future.done():
        future.set_result(at)


class Hib(DO):
    @step
    async def mark(self, n: int) -> int:
        at = time.time()  # first line: the resumed run's next step has started
        run_id = current_step().run_id
        (SINK or _record)(run_id, at)
        return n

    @workflow
    async def hold(self, n: int) -> int:
        decision = await self.approval_flow.request_approval(
            type="bench", title=f"hold {n}", approvers=["boss"]
        )
        if decision.status != "approved":
            return -1
        return await self.mark(n)


def _file_sink(path: Path) -> Callable[[str, float], None]:
    def write(run_id: str, at: float) -> None:
        with path.open("a") as f:
            f.write(f"{run_id} {at:.6f}\n")

    return write


async def serve(db: Path, poll: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with Engine(db, poll_seconds=poll).register(Hib):
        print("READY", flush=True)
        await stop.wait()


def main() -> None:
    global SINK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--marks", type=Path, required=True)
    parser.add_argument("--poll", type=float, default=0.05, help="Engine(poll_seconds=...)")
    args = parser.parse_args()
    SINK = _file_sink(args.marks)
    asyncio.run(serve(args.db, args.poll))
    sys.exit(0)


if __name__ == "__main__":
    main()
