"""What a running step can learn about itself: its run, its id, its attempt, its key.

The idempotency key is stable across attempts and across crashes (`run_id:step_id`), so a
step can hand it to a payment API or any system that deduplicates, turning at-least-once
execution into an exactly-once effect.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StepContext", "current_step"]


@dataclass(frozen=True)
class StepContext:
    run_id: str
    step_id: str
    attempt: int
    engine: Any = field(default=None, repr=False, compare=False)
    """The engine running the step: how a cross-DO call made inside it finds its way (the
    engine is not handed to the instances it creates, and nothing inspects frames)."""
    epoch: int | None = field(default=None, repr=False, compare=False)
    """The lease epoch the engine runs the step under: what the step queues for other
    entities is fenced by it, as the run's own writes are."""

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step_id}"


_current: ContextVar[StepContext | None] = ContextVar("dotdo_step", default=None)


def current_step() -> StepContext:
    """The step being executed; raises outside of one."""
    ctx = _current.get()
    if ctx is None:
        raise LookupError("current_step() is only available while the engine runs a step")
    return ctx


def enter_step(ctx: StepContext) -> object:
    return _current.set(ctx)


def leave_step(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
