"""The literal parts of declarations, validated: retry policies, schedules, event names,
and whether a bound function can take the arguments a flow gives it.

Each check reports into the file's `FlowEnv` and carries on with what it could make of the
value, so one bad option does not hide the problems after it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Literal

from dotdo.compiler.ir import Policy
from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.env import FlowEnv, suggest
from dotdo.engine.triggers import EVENT_NAME, WEEKDAYS, Schedule, parse_time
from dotdo.errors import ScheduleError

__all__ = [
    "arity_problem",
    "check_compensator",
    "check_event_name",
    "policy_from",
    "schedule_from",
    "seconds_of",
]


def check_compensator(env: FlowEnv, name: str, pos: A.Pos) -> None:
    undo = env.steps.get(name)
    if undo is None:
        env.report(
            pos,
            f"`compensate with {name}`: `{name}` is not a declared step",
            suggest(name, env.steps) or f"declare it: step {name}",
            code="unknown-step",
        )
        return
    if undo.signature is not None and (problem := arity_problem(undo.signature, 1, ())) is not None:
        env.report(
            pos,
            f"the undo step `{name}` receives the step's result, one argument: {problem}",
            code="arity",
        )


def arity_problem(
    signature: inspect.Signature, positional: int, keywords: tuple[str, ...]
) -> str | None:
    """Why a function of `signature` cannot take these arguments, or None."""
    try:
        signature.bind(*range(positional), **dict.fromkeys(keywords))
    except TypeError as exc:
        shown = ", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
            for p in signature.parameters.values()
        )
        return f"it takes ({shown}): {exc}"
    return None


# ------------------------------------------------------------------- policies
def seconds_of(value: A.Expr | None) -> float | None:
    if isinstance(value, A.Duration):
        return value.seconds
    if isinstance(value, A.Const) and type(value.value) in (int, float):
        return float(value.value)  # type: ignore[arg-type]
    return None


def policy_from(
    env: FlowEnv,
    options: A.Options,
    base: Policy,
    pos: A.Pos,
    *,
    mode: Literal["decl", "do", "try"],
) -> Policy:
    """The Policy `options` describe over `base`; a bad value is reported, then ignored."""
    update: dict[str, Any] = {}
    if mode == "try":
        for word in ("retries", "backoff", "delay", "max_delay"):
            if getattr(options, word) is not None:
                env.report(
                    pos,
                    f"`try` runs a step once: `{word}` does not apply",
                    "use `do` for a step that is retried",
                    code="bad-option",
                )
    else:
        retries = options.retries
        if retries is not None:
            if isinstance(retries, A.Const) and type(retries.value) is int:
                update["retries"] = retries.value
            else:
                env.report(pos, "`retries` is a whole number, like `retries 3`", code="bad-option")
        backoff = options.backoff
        if backoff is not None:
            if isinstance(backoff, A.Const) and type(backoff.value) in (int, float):
                if float(backoff.value) < 1.0:  # type: ignore[arg-type]
                    env.report(
                        pos,
                        "`backoff` multiplies each wait: it must be at least 1",
                        code="bad-option",
                    )
                else:
                    update["backoff"] = float(backoff.value)  # type: ignore[arg-type]
            else:
                env.report(pos, "`backoff` is a number, like `backoff 2.0`", code="bad-option")
        for word, key in (("delay", "initial_delay"), ("max_delay", "max_delay")):
            value = getattr(options, word)
            if value is None:
                continue
            seconds = seconds_of(value)
            if seconds is None or seconds < 0:
                env.report(pos, f"`{word}` is a duration, like `{word} 5s`", code="bad-option")
            else:
                update[key] = seconds
    if options.timeout is not None:
        seconds = seconds_of(options.timeout)
        if seconds is None or seconds <= 0:
            env.report(
                pos, "`timeout` is a positive duration, like `timeout 30s`", code="bad-option"
            )
        else:
            update["timeout"] = seconds
    if mode == "try":
        return Policy(retries=0, timeout=update.get("timeout", base.timeout))
    return base.model_copy(update=update)


# ------------------------------------------------------------------ schedules
_UNITS = {
    "minute": "minutes",
    "minutes": "minutes",
    "hour": "hours",
    "hours": "hours",
    "day": "days",
    "days": "days",
}


def schedule_from(env: FlowEnv, item: A.Every) -> Schedule | None:
    """The Schedule an `every` line means (the same type `@every` builds), or None."""
    unit = item.unit.lower()
    weekday: int | None = None
    plural = unit[:-1] if unit.endswith("s") else unit
    if plural in WEEKDAYS:
        weekday = WEEKDAYS.index(plural)
        kind = "days"
    elif unit in _UNITS:
        kind = _UNITS[unit]
    else:
        if unit in ("second", "seconds"):
            hint = "the shortest schedule is `every minute`"
        elif unit in ("week", "weeks"):
            hint = "name the day: `every monday at 9am`"
        else:
            hint = suggest(unit, [*WEEKDAYS, "day", "hour", "minute", "minutes", "hours"]) or (
                "use minutes, hours, day or a weekday (monday ... sunday)"
            )
        env.report(item.pos, f"unknown schedule unit `{item.unit}`", hint, code="bad-schedule")
        return None
    count = item.count
    if count is not None:
        if not isinstance(count, int) or count < 1:
            env.report(
                item.pos,
                f"`every {count} {item.unit}`: the count must be a whole number of at least 1",
                code="bad-schedule",
            )
            return None
        if kind == "days" and (weekday is not None or count != 1):
            env.report(
                item.pos,
                f"`every {count} {item.unit}` is not supported",
                "daily and weekly schedules have no count: `every day at 6pm`",
                code="bad-schedule",
            )
            return None
    at = None
    if item.at is not None:
        if kind != "days":
            env.report(
                item.pos,
                f"`at` applies to daily and weekly schedules, not to every {item.unit}",
                code="bad-schedule",
            )
            return None
        try:
            at = parse_time(item.at)
        except ScheduleError as exc:
            env.report(item.pos, str(exc), code="bad-time")
            return None
    if item.timezone is not None and kind != "days":
        env.report(
            item.pos,
            "a timezone applies to daily and weekly schedules only",
            code="bad-schedule",
        )
        return None
    try:
        return Schedule(
            unit=kind,
            interval=count or 1,
            weekday=weekday,
            at=at,
            tz=item.timezone or "UTC",
        )
    except ScheduleError as exc:
        env.report(item.pos, str(exc), code="bad-schedule")
        return None


def check_event_name(env: FlowEnv, event: A.Str) -> None:
    """Event names are dotted identifiers; with interpolation only the text parts are checked."""
    literal = event.literal
    if literal is not None:
        if not EVENT_NAME.fullmatch(literal):
            env.report(
                event.pos,
                f"bad event name {literal!r}",
                'use dotted names of letters, digits and _, like "Order.placed"',
                code="bad-event",
            )
        return
    for part in event.parts:
        if isinstance(part, str) and not re.fullmatch(r"[A-Za-z0-9_.]*", part):
            env.report(
                event.pos,
                f"bad characters in the event name {part!r}",
                'use dotted names of letters, digits and _, like "Order.placed"',
                code="bad-event",
            )
            return
