"""What starts a run without anyone calling `start`: schedules and event names.

The engine fires `@every` schedules and dispatches events to `@on` handlers itself, so the
data it needs lives here, below the front ends that build it: a schedule is data (unit,
interval, weekday, time of day, timezone) so it can be stored and compared, and its fire
times are computed, never counted, so a restart cannot double or skip one. Event names are
dotted identifiers; handler patterns may use `*` for a segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotdo.errors import DotdoError, ScheduleError

__all__ = [
    "EVENT_NAME",
    "EVENT_PATTERN",
    "MAX_EVENT_NAME",
    "WEEKDAYS",
    "Schedule",
    "check_event_name",
    "matches",
    "parse_time",
]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SEGMENT = r"[A-Za-z_][A-Za-z0-9_]*"
EVENT_NAME = re.compile(rf"^{_SEGMENT}(\.{_SEGMENT})*$")
"""An event name: `Order.placed`."""
EVENT_PATTERN = re.compile(rf"^({_SEGMENT}|\*)(\.({_SEGMENT}|\*))*$")
"""What an `@on` handler listens to: `Order.placed`, `Order.*`, `*.failed`."""
MAX_EVENT_NAME = 200
_TIME = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?\s*(am|pm)?\s*$", re.IGNORECASE)


def check_event_name(name: object) -> str:
    if isinstance(name, str) and len(name) > MAX_EVENT_NAME:
        raise DotdoError(f"bad event name {name[:40]!r}…: at most {MAX_EVENT_NAME} characters")
    if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
        raise DotdoError(
            f"bad event name {name!r}: use dotted names of letters, digits and _, "
            "like 'Order.placed'"
        )
    return name


def matches(pattern: str, name: str) -> bool:
    """`Order.*` matches `Order.placed`; `*.failed` matches `Payment.failed`."""
    want, have = pattern.split("."), name.split(".")
    return len(want) == len(have) and all(w in ("*", h) for w, h in zip(want, have, strict=True))


def parse_time(text: str) -> time:
    found = _TIME.match(text)
    if not found:
        raise ScheduleError(f"cannot read the time {text!r}: use '9am', '6:30pm' or '18:30'")
    hour, minute, half = int(found[1]), int(found[2] or 0), (found[3] or "").lower()
    if half:
        if not 1 <= hour <= 12:
            raise ScheduleError(f"bad hour in {text!r}: with am/pm use 1 to 12")
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour > 23 or minute > 59:
        raise ScheduleError(f"bad time {text!r}")
    return time(hour, minute)


@dataclass(frozen=True)
class Schedule:
    """When a scheduled workflow fires: data (so it can be stored and compared), with its fire
    times computed, never counted."""

    unit: str
    interval: int = 1
    weekday: int | None = None
    at: time | None = None
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.tz, str):
            raise ScheduleError(f"the timezone must be a name like 'Europe/Paris', not {self.tz!r}")
        if self.interval < 1:
            raise ScheduleError(f"every({self.interval}): the interval must be at least 1")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"unknown timezone {self.tz!r}") from None

    @property
    def spec(self) -> str:
        if self.unit in ("minutes", "hours"):
            return f"every {self.interval} {self.unit}"
        when = self.at.strftime("%H:%M") if self.at else "00:00"
        day = WEEKDAYS[self.weekday] if self.weekday is not None else "day"
        return f"every {day} at {when} {self.tz}"

    def next_after(self, moment: float) -> float:
        """The first fire time strictly after `moment` (epoch seconds)."""
        if self.unit in ("minutes", "hours"):
            step = self.interval * (60 if self.unit == "minutes" else 3600)
            return float((int(moment) // step + 1) * step)
        zone = ZoneInfo(self.tz)
        local = datetime.fromtimestamp(moment, zone)
        at = self.at or time(0, 0)
        candidate = datetime.combine(local.date(), at, tzinfo=zone)
        for _ in range(9):
            if candidate.timestamp() > moment and (
                self.weekday is None or candidate.weekday() == self.weekday
            ):
                return candidate.timestamp()
            candidate = datetime.combine(candidate.date() + timedelta(days=1), at, tzinfo=zone)
        raise AssertionError("unreachable: a weekly schedule fires within 8 days")

    def latest_at_or_before(self, moment: float, since: float) -> float | None:
        """The last fire time in (since, moment], for one catch-up run after downtime."""
        fire = self.next_after(since)
        if fire > moment:
            return None
        latest = fire
        while True:
            nxt = self.next_after(latest)
            if nxt > moment:
                return latest
            latest = nxt
