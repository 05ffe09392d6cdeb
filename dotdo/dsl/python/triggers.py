"""`@every` schedules and `@on` event handlers: workflows the engine starts by itself.

A schedule is data (unit, interval, weekday, time of day, timezone) so it can be stored and
compared; its fire times are computed, never counted, so a restart cannot double or skip
one. Event patterns are dotted names whose segments may be `*`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotdo.dsl.python.decorators import WorkflowDef
from dotdo.errors import DotdoError, ScheduleError

__all__ = [
    "EVENT_NAME",
    "Schedule",
    "ScheduleError",
    "check_event_name",
    "every",
    "matches",
    "on",
]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SEGMENT = r"[A-Za-z_][A-Za-z0-9_]*"
EVENT_NAME = re.compile(rf"^{_SEGMENT}(\.{_SEGMENT})*$")
_PATTERN = re.compile(rf"^({_SEGMENT}|\*)(\.({_SEGMENT}|\*))*$")
_TIME = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?\s*(am|pm)?\s*$", re.IGNORECASE)


def check_event_name(name: object) -> str:
    if isinstance(name, str) and len(name) > 200:
        raise DotdoError(f"bad event name {name[:40]!r}…: at most 200 characters")
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
    """When a scheduled workflow fires. Use as a decorator: `@every.monday.at("9am")`."""

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

    def __call__(self, fn: Callable[..., Any]) -> WorkflowDef[Any]:
        wf = fn if isinstance(fn, WorkflowDef) else WorkflowDef(fn)
        _require_params(wf.fn, 0, f"a scheduled workflow ({self.spec})")
        wf.schedule = self
        return wf

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


def _require_params(fn: Callable[..., Any], count: int, what: str) -> None:
    """The engine starts these runs itself, with nothing (a schedule) or the event (`@on`)."""
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    if len(required) > count or (len(positional) < count and not varargs):
        wanted = "no arguments" if count == 0 else "one argument, the event"
        raise ScheduleError(f"{what} must take {wanted}: {fn.__qualname__}{inspect.signature(fn)}")


class _Day:
    def __init__(self, weekday: int | None) -> None:
        self.weekday = weekday

    def at(self, when: str, *, tz: str = "UTC") -> Schedule:
        return Schedule(unit="days", weekday=self.weekday, at=parse_time(when), tz=tz)

    def __call__(self, fn: Callable[..., Any]) -> WorkflowDef[Any]:
        return Schedule(unit="days", weekday=self.weekday)(fn)


class _Interval:
    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ScheduleError(f"every({n!r}): the interval must be a whole number >= 1")
        self.n = n

    @property
    def minutes(self) -> Schedule:
        return Schedule(unit="minutes", interval=self.n)

    @property
    def hours(self) -> Schedule:
        return Schedule(unit="hours", interval=self.n)


class _Every:
    """`every.monday.at("9am")`, `every.day.at("6pm", tz=...)`, `every(15).minutes`."""

    def __call__(self, n: int) -> _Interval:
        return _Interval(n)

    @property
    def day(self) -> _Day:
        return _Day(None)

    @property
    def minute(self) -> Schedule:
        return Schedule(unit="minutes")

    @property
    def hour(self) -> Schedule:
        return Schedule(unit="hours")

    def __getattr__(self, name: str) -> _Day:
        if name.lower() in WEEKDAYS:
            return _Day(WEEKDAYS.index(name.lower()))
        if name.startswith("__"):
            raise AttributeError(name)
        raise ScheduleError(f"every.{name}: use a weekday, day, hour, minute or every(n)")


every = _Every()


class _On:
    """`@on.Order.placed`, `@on["*"].failed`, `@on.Order["*"]`: an event handler workflow."""

    def __init__(self, segments: tuple[str, ...] = ()) -> None:
        self._segments = segments

    def __getattr__(self, name: str) -> _On:
        if name.startswith("__"):
            raise AttributeError(name)
        return _On((*self._segments, name))

    def __getitem__(self, name: str) -> _On:
        return _On((*self._segments, name))

    def __call__(self, fn: Callable[..., Any]) -> WorkflowDef[Any]:
        pattern = ".".join(self._segments)
        if not _PATTERN.fullmatch(pattern):
            raise ScheduleError(f"bad event pattern {pattern!r}")
        wf = fn if isinstance(fn, WorkflowDef) else WorkflowDef(fn)
        _require_params(wf.fn, 1, f"an @on.{pattern} handler")
        wf.trigger = pattern
        return wf


on = _On()
