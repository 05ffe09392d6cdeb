"""assert_crash_safe: it passes on the examples, and it can fail.

A checker that never fails proves nothing, so one workflow here is deliberately
non-deterministic (it branches on outside state, as `random.random()` would) and the checker
must reject it, naming the crash point and the property.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from dotdo import DO, Engine, step, workflow
from dotdo.testing import BOUNDARIES, CrashSafetyError, VirtualClock, assert_crash_safe
from dotdo.testing.crashcheck import CrashSafe

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import orders, trip  # noqa: E402

pytest_plugins = ["dotdo.testing.crashcheck"]


async def test_orders_is_crash_safe(crash_safe: CrashSafe) -> None:
    report = await crash_safe(orders.Orders.process_order, orders.SAMPLE)
    assert report.reference.status == "completed"
    assert report.reference.completed == ["validate", "charge_payment", "fulfill", "send_email"]
    assert report.points_checked == report.total_points
    assert report.boundaries_seen == set(BOUNDARIES)
    # The try_ email is in flight from its 'started' commit to its outcome's commit.
    assert [c.boundary for c in report.interrupted] == [
        "after_commit",
        "before_step",
        "after_step",
        "before_commit",
    ]
    assert all(c.interrupted == ("send_email",) for c in report.interrupted)


async def test_trip_is_crash_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trip.Trips, "cancelled", [])
    report = await assert_crash_safe(trip.Trips.book_trip, trip.SAMPLE)
    assert report.reference.status == "compensated"
    assert report.reference.error == ("PermanentError", "no cars available in lisbon")
    assert report.points_checked == report.total_points > 10
    assert report.interrupted == []


async def test_max_points_samples_first_and_last(crash_safe: CrashSafe) -> None:
    report = await crash_safe(orders.Orders.process_order, orders.SAMPLE, max_points=3)
    assert report.points_checked == 3
    assert report.cases[0].n == 0 and report.cases[-1].n == report.total_points - 1


# --------------------------------------------------------------- a workflow that must fail
_FLIPS = [0]


def coin() -> bool:
    """Outside state read directly, like random.random(): it changes on every evaluation."""
    _FLIPS[0] += 1
    return _FLIPS[0] % 2 == 0


class Flaky(DO):
    @step(retries=0)
    async def left(self, x: int) -> int:
        return x + 1

    @step(retries=0)
    async def right(self, x: int) -> int:
        return x - 1

    @workflow
    async def wf(self, x: int) -> int:
        a = await self.left(x)
        if coin():
            b = await self.left(a)
        else:
            b = await self.right(a)
        return int(b)


async def test_non_deterministic_workflow_fails(crash_safe: CrashSafe) -> None:
    with pytest.raises(CrashSafetyError) as failed:
        await crash_safe(Flaky.wf, 1)
    message = str(failed.value)
    assert "Flaky.wf" in message and "crash point #" in message
    assert any(b in message for b in BOUNDARIES)
    assert "crash equivalence violated" in message or "completed steps differ" in message


# ------------------------------------------------------------------ timers, virtual clock
class Sleepy(DO):
    TRIES: dict[str, int] = {}

    @step(retries=2, initial_delay=3600)
    async def slow(self, x: int) -> int:
        key = f"slow-{x}"
        Sleepy.TRIES[key] = Sleepy.TRIES.get(key, 0) + 1
        if Sleepy.TRIES[key] % 2 == 1:
            raise ConnectionError("transient")
        return x * 2

    @workflow
    async def wf(self, x: int) -> int:
        value = await self.slow(x)
        return int(value)


async def test_virtual_clock_drives_retry_timers(crash_safe: CrashSafe) -> None:
    """An hour of backoff per retry passes instantly: the checker jumps to each timer."""
    Sleepy.TRIES.clear()
    report = await crash_safe(Sleepy.wf, 4, clock=VirtualClock())
    assert report.reference.result == 8
    assert report.points_checked == report.total_points


# -------------------------------------------------------------------- the user example
def test_example_crash_safe_test_runs(tmp_path: Path) -> None:
    """examples/crash_safe_test.py lives outside tests/, so run it here as a pytest file."""
    path = ROOT / "examples" / "crash_safe_test.py"
    spec = importlib.util.spec_from_file_location("examples_crash_safe_test", path)
    assert spec is not None and spec.loader is not None
    assert pytest.main([str(path), "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path}"]) == 0


# ------------------------------------------------------------------ a core bug (Python 3.11)
async def test_close_right_after_a_kick_does_not_hang(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "kick.db")
    await engine.open()
    await asyncio.sleep(0.05)  # the timer loop is now parked in wait_for(kick.wait())
    engine._kick.set()  # what _park or a clock jump does; then close() in the same tick
    closing = asyncio.ensure_future(engine.close())
    done, _ = await asyncio.wait([closing], timeout=2)
    for task in engine._background:  # clean up: a second cancel does get through
        task.cancel()
    await asyncio.wait([closing], timeout=2)
    assert done, "Engine.close() hung: the timer loop ignored its cancellation"
