"""A run woken while the task that parked it is still ending must still be driven.

The window: a run's task commits its hibernation, then awaits a little more (its own poke for
an event that matched meanwhile) before it ends. A wake in that window (an event delivered, a
decision) claims the run for this engine, but resuming it is refused while its task is alive.
Without the deferred resume the run stayed `running`, leased by a live engine and driven by
nothing, until the process restarted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dotdo import DO, Engine, step, workflow


class Waiter(DO):
    @step
    async def double(self, n: int) -> int:
        return n * 2

    @workflow
    async def wf(self) -> int:
        got = await self.wait_for_event("go")
        assert got is not None
        return await self.double(got.data["n"])


async def test_event_delivered_while_the_parking_task_ends(tmp_path: Path) -> None:
    async with Engine(tmp_path / "race.db") as engine:
        engine.register(Waiter)
        poke = engine.waits._poke
        raced: list[str] = []

        async def racing_poke(run_id: str, key: str) -> None:
            # The run is parked (committed as waiting); its task has not ended yet.
            assert run_id in engine._active
            raced.append(run_id)
            await engine.send("go", {"n": 21})
            await engine.waits.dispatch()  # delivers to the wait and wakes the run, right now
            await poke(run_id, key)

        engine.waits._poke = racing_poke  # type: ignore[method-assign]
        handle = await engine.start(Waiter.wf, run_id="r")
        result: Any = await handle.result(timeout=10)
    assert raced == ["r"]
    assert result == 42
