"""@every schedules on a virtual clock: fire times, timezones, exactly one run per fire time
(across restarts and two engines), one catch-up run after downtime, and input errors."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dotdo import DO, Engine, ScheduleError, every
from dotdo.testing import VirtualClock

fired: Counter[str] = Counter()

# 2030-01-01 is a Tuesday.
TUESDAY = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _reset() -> None:
    fired.clear()


class Reports(DO):
    @every.monday.at("9am")
    async def weekly(self) -> None:
        fired["weekly"] += 1

    @every.day.at("6pm")
    async def daily(self) -> None:
        fired["daily"] += 1

    @every(15).minutes
    async def health(self) -> None:
        fired["health"] += 1

    @every(2).hours
    async def sync(self) -> None:
        fired["sync"] += 1

    @every.day.at("6pm", tz="Europe/Paris")
    async def paris(self) -> None:
        fired["paris"] += 1


class Nightly(DO):
    @every.day.at("2:30am", tz="Europe/Paris")
    async def backup(self) -> None:
        fired["backup"] += 1


def _engine(tmp_path: Path, clock: VirtualClock, *classes: type[DO]) -> Engine:
    return Engine(tmp_path / "app.db", clock=clock, poll_seconds=0.02).register(
        *(classes or (Reports,))
    )


async def _registered(engine: Engine, count: int) -> None:
    """Wait until the engine has stored every schedule's next fire time."""
    deadline = time.monotonic() + 5
    while True:
        rows = await engine.store.fetch("SELECT COUNT(*) AS n FROM schedules")
        if rows[0]["n"] >= count:
            return
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


async def _quiet(engine: Engine) -> None:
    """Wait until the timer loop has caught up with the clock: every schedule's next fire is
    in the future and no run is running (bounded; under load the loop may lag the clock)."""
    deadline = time.monotonic() + 20
    settled = 0
    while settled < 3:
        await asyncio.sleep(0.02)
        rows = await engine.store.fetch(
            "SELECT (SELECT COUNT(*) FROM schedules WHERE next_fire <= ?) AS due, "
            "(SELECT COUNT(*) FROM runs WHERE status = 'running') AS busy",
            (engine.clock.now(),),
        )
        idle = rows[0]["due"] == 0 and rows[0]["busy"] == 0 and not engine._active
        settled = settled + 1 if idle else 0
        assert time.monotonic() < deadline, "the engine did not catch up with the clock"


async def _advance(
    clock: VirtualClock, engines: list[Engine], total: timedelta, step: timedelta
) -> None:
    """Advance in hops, after each waiting until every due schedule has fired."""
    end = clock.now() + total.total_seconds()
    while clock.now() < end:
        clock.advance(min(step.total_seconds(), end - clock.now()))
        deadline = time.monotonic() + 5
        while True:
            rows = await engines[0].store.fetch("SELECT MIN(next_fire) AS f FROM schedules")
            if rows[0]["f"] > clock.now() and not any(e._active for e in engines):
                break
            assert time.monotonic() < deadline, "schedules did not fire"
            await asyncio.sleep(0.002)


async def _runs(engine: Engine, name: str) -> list[str]:
    runs = await engine.runs(workflow=name, limit=10_000)
    assert all(r.status == "completed" for r in runs), runs
    return sorted(r.run_id for r in runs)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_every_monday_at_9am(tmp_path: Path) -> None:
    clock = VirtualClock(TUESDAY)
    async with _engine(tmp_path, clock) as engine:
        await _registered(engine, 5)
        clock.set(datetime(2030, 1, 7, 8, 59, tzinfo=UTC))
        await _quiet(engine)
        assert await _runs(engine, "Reports.weekly") == []
        clock.set(datetime(2030, 1, 7, 9, 0, tzinfo=UTC))
        await _quiet(engine)
        assert await _runs(engine, "Reports.weekly") == ["Reports.weekly@2030-01-07T09:00:00Z"]
        await clock.run_for(timedelta(days=7), step=6 * 3600)
        await _quiet(engine)
        assert await _runs(engine, "Reports.weekly") == [
            "Reports.weekly@2030-01-07T09:00:00Z",
            "Reports.weekly@2030-01-14T09:00:00Z",
        ]
        assert fired["weekly"] == 2


async def test_every_day_at_6pm_and_intervals(tmp_path: Path) -> None:
    clock = VirtualClock(TUESDAY)
    async with _engine(tmp_path, clock) as engine:
        await _registered(engine, 5)
        await _advance(clock, [engine], timedelta(hours=24), timedelta(minutes=5))
        await _quiet(engine)
        assert await _runs(engine, "Reports.daily") == ["Reports.daily@2030-01-01T18:00:00Z"]
        health = await _runs(engine, "Reports.health")
        assert len(health) == 24 * 4
        assert health[0] == "Reports.health@2030-01-01T00:15:00Z"
        assert health[-1] == "Reports.health@2030-01-02T00:00:00Z"
        sync = await _runs(engine, "Reports.sync")
        assert sync == [
            f"Reports.sync@{_stamp(TUESDAY + timedelta(hours=h))}" for h in range(2, 25, 2)
        ]
        assert fired == Counter(daily=1, health=96, sync=12, paris=1)


@pytest.mark.parametrize(
    ("start", "utc_hour"),
    [(datetime(2030, 1, 10, tzinfo=UTC), 17), (datetime(2030, 7, 10, tzinfo=UTC), 16)],
)
async def test_timezone(tmp_path: Path, start: datetime, utc_hour: int) -> None:
    clock = VirtualClock(start)
    async with _engine(tmp_path, clock) as engine:
        await _registered(engine, 5)
        await clock.run_for(timedelta(hours=24), step=1800)
        await _quiet(engine)
        fire = start.replace(hour=utc_hour)
        assert await _runs(engine, "Reports.paris") == [f"Reports.paris@{_stamp(fire)}"]
        assert await _runs(engine, "Reports.daily") == [
            f"Reports.daily@{_stamp(start.replace(hour=18))}"
        ]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # spring forward (2030-03-31): 02:30 does not exist in Paris that day
        (
            datetime(2030, 3, 29, 12, tzinfo=UTC),
            ["2030-03-30T01:30:00Z", "2030-03-31T01:30:00Z", "2030-04-01T00:30:00Z"],
        ),
        # fall back (2030-10-27): 02:30 happens twice; it fires once
        (
            datetime(2030, 10, 25, 12, tzinfo=UTC),
            ["2030-10-26T00:30:00Z", "2030-10-27T00:30:00Z", "2030-10-28T01:30:00Z"],
        ),
    ],
)
async def test_daylight_saving_fires_once_a_day(
    tmp_path: Path, start: datetime, expected: list[str]
) -> None:
    clock = VirtualClock(start)
    async with _engine(tmp_path, clock, Nightly) as engine:
        await _registered(engine, 1)
        await clock.run_for(timedelta(days=3), step=900)
        await _quiet(engine)
        assert await _runs(engine, "Nightly.backup") == [f"Nightly.backup@{e}" for e in expected]


async def test_restart_does_not_double_a_fire(tmp_path: Path) -> None:
    clock = VirtualClock(TUESDAY)
    async with _engine(tmp_path, clock) as engine:
        await _registered(engine, 5)
        clock.set(datetime(2030, 1, 1, 18, 0, tzinfo=UTC))
        await _quiet(engine)
        first = await _runs(engine, "Reports.daily")
        assert first == ["Reports.daily@2030-01-01T18:00:00Z"]
    for minutes in (0, 1, 30):
        clock.set(datetime(2030, 1, 1, 18, minutes, tzinfo=UTC))
        async with _engine(tmp_path, clock) as engine:
            await _quiet(engine)
            assert await _runs(engine, "Reports.daily") == first
    assert fired["daily"] == 1


async def test_two_engines_do_not_double_a_fire(tmp_path: Path) -> None:
    clock = VirtualClock(TUESDAY)
    async with _engine(tmp_path, clock) as one, _engine(tmp_path, clock) as two:
        await _registered(one, 5)
        await _registered(two, 5)
        await _advance(clock, [one, two], timedelta(hours=20), timedelta(minutes=15))
        await _quiet(one)
        await _quiet(two)
        health = await _runs(one, "Reports.health")
        assert len(health) == 20 * 4
        assert await _runs(two, "Reports.daily") == ["Reports.daily@2030-01-01T18:00:00Z"]
        assert fired == Counter(health=80, sync=10, daily=1, paris=1)
        rows = await one.store.fetch("SELECT COUNT(*) AS n FROM steps")
        assert rows[0]["n"] == 0


async def test_gap_gives_one_catch_up_run_for_the_latest_missed_time(tmp_path: Path) -> None:
    clock = VirtualClock(TUESDAY)
    async with _engine(tmp_path, clock) as engine:
        await _registered(engine, 5)
        clock.set(datetime(2030, 1, 1, 12, 5, tzinfo=UTC))
        await _quiet(engine)
        fired.clear()
        before = {name: await _runs(engine, f"Reports.{name}") for name in ("health", "sync")}
    # nothing runs for three days and a bit
    clock.set(datetime(2030, 1, 4, 19, 7, tzinfo=UTC))
    async with _engine(tmp_path, clock) as engine:
        await _quiet(engine)
        assert await _runs(engine, "Reports.daily") == ["Reports.daily@2030-01-04T18:00:00Z"]
        assert await _runs(engine, "Reports.paris") == ["Reports.paris@2030-01-04T17:00:00Z"]
        assert await _runs(engine, "Reports.health") == sorted(
            [*before["health"], "Reports.health@2030-01-04T19:00:00Z"]
        )
        assert await _runs(engine, "Reports.sync") == sorted(
            [*before["sync"], "Reports.sync@2030-01-04T18:00:00Z"]
        )
        assert await _runs(engine, "Reports.weekly") == []  # no Monday in the gap
        assert fired == Counter(daily=1, paris=1, health=1, sync=1)
        # and then it carries on normally
        fired.clear()
        await clock.run_for(timedelta(minutes=60), step=60)
        await _quiet(engine)
        assert fired == Counter(health=4, sync=1)


async def test_gap_over_a_monday(tmp_path: Path) -> None:
    clock = VirtualClock(TUESDAY)
    async with _engine(tmp_path, clock) as engine:
        await _registered(engine, 5)
    clock.advance(timedelta(days=20, hours=10))  # Mondays 7th, 14th and 21st (9am) missed
    async with _engine(tmp_path, clock) as engine:
        await _quiet(engine)
        assert await _runs(engine, "Reports.weekly") == ["Reports.weekly@2030-01-21T09:00:00Z"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: every(0).minutes,
        lambda: every(-1),
        lambda: every(1.5),
        lambda: every("15"),
        lambda: every(True),
        lambda: every.day.at("9 oclock"),
        lambda: every.day.at("25:00"),
        lambda: every.day.at("24:00"),
        lambda: every.day.at("12:60"),
        lambda: every.day.at("13pm"),
        lambda: every.day.at("0am"),
        lambda: every.day.at(""),
        lambda: every.monday.at("9am", tz="Mars/Olympus_Mons"),
        lambda: every.day.at("6pm", tz=""),
        lambda: every.day.at("6pm", tz="../../etc/passwd"),
    ],
)
def test_bad_schedules_fail_at_decoration(make: Any) -> None:
    with pytest.raises(ScheduleError):
        make()


def test_unknown_weekday_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="funday"):
        every.funday  # noqa: B018


def test_none_timezone_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError):
        every.day.at("6pm", tz=None)  # type: ignore[arg-type]


def test_good_spellings() -> None:
    assert every.Monday.at("9am") == every.monday.at("09:00")
    assert every.day.at("12am").at.hour == 0  # type: ignore[union-attr]
    assert every.day.at("12pm").at.hour == 12  # type: ignore[union-attr]
    assert every.day.at(" 6:30 PM ").at.minute == 30  # type: ignore[union-attr]
    assert every.day.at("6pm", tz="Europe/Paris").spec == "every day at 18:00 Europe/Paris"
    assert every(15).minutes.spec == "every 15 minutes"


def test_scheduled_workflow_with_parameters_is_rejected() -> None:
    # The engine starts a scheduled run with no arguments: a required one is refused at
    # class creation, instead of failing (or stopping timers) when the schedule fires.
    with pytest.raises(ScheduleError, match="must take no arguments"):

        class NeedsArg(DO):
            @every.day.at("6pm")
            async def report(self, region: str) -> None:
                pass
