"""`@every` schedules and `@on` event handlers: workflows the engine starts by itself.

The decorators build the engine's data (`dotdo.engine.triggers.Schedule`, an event
pattern) and attach it to the workflow; the engine fires and dispatches from that data.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dotdo.dsl.python.decorators import WorkflowDef
from dotdo.engine.triggers import EVENT_PATTERN, WEEKDAYS, Schedule, parse_time
from dotdo.errors import ScheduleError

__all__ = ["ScheduleDecorator", "every", "on"]


class ScheduleDecorator(Schedule):
    """A schedule used as a decorator: `@every.monday.at("9am")` over a workflow."""

    def __call__(self, fn: Callable[..., Any]) -> WorkflowDef[Any]:
        wf = fn if isinstance(fn, WorkflowDef) else WorkflowDef(fn)
        _require_params(wf.fn, 0, f"a scheduled workflow ({self.spec})")
        wf.schedule = self
        return wf


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

    def at(self, when: str, *, tz: str = "UTC") -> ScheduleDecorator:
        return ScheduleDecorator(unit="days", weekday=self.weekday, at=parse_time(when), tz=tz)

    def __call__(self, fn: Callable[..., Any]) -> WorkflowDef[Any]:
        return ScheduleDecorator(unit="days", weekday=self.weekday)(fn)


class _Interval:
    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ScheduleError(f"every({n!r}): the interval must be a whole number >= 1")
        self.n = n

    @property
    def minutes(self) -> ScheduleDecorator:
        return ScheduleDecorator(unit="minutes", interval=self.n)

    @property
    def hours(self) -> ScheduleDecorator:
        return ScheduleDecorator(unit="hours", interval=self.n)


class _Every:
    """`every.monday.at("9am")`, `every.day.at("6pm", tz=...)`, `every(15).minutes`."""

    def __call__(self, n: int) -> _Interval:
        return _Interval(n)

    @property
    def day(self) -> _Day:
        return _Day(None)

    @property
    def minute(self) -> ScheduleDecorator:
        return ScheduleDecorator(unit="minutes")

    @property
    def hour(self) -> ScheduleDecorator:
        return ScheduleDecorator(unit="hours")

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
        if not EVENT_PATTERN.fullmatch(pattern):
            raise ScheduleError(f"bad event pattern {pattern!r}")
        wf = fn if isinstance(fn, WorkflowDef) else WorkflowDef(fn)
        _require_params(wf.fn, 1, f"an @on.{pattern} handler")
        wf.trigger = pattern
        return wf


on = _On()
