"""The engine's observation points, for metrics and traces (docs/operations.md).

The engine calls these hooks at the moments an operator wants to see: a run starting, a
*stretch* (one stay of a run in memory, from being resumed or started until it parks or
ends), each step attempt, a wait beginning, a decision or event resolving a wait, each group
commit (its size and latency) and leases taken over from dead owners. `Observer` does
nothing; an implementation overrides what it watches (dotdo.engine.prometheus,
dotdo.engine.otel). `Telemetry` fans the calls out to the observers an engine was given
with `engine.observe(...)`; with none it returns at once, so an unobserved engine pays a
method call per hook.

Hooks run inline on the engine's path and must not raise or block; a hook that raises is
logged once and dropped from the fan-out, never allowed to fail a run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dotdo.engine.interpreter import Suspend, Transition

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = [
    "Observer",
    "Propagation",
    "Telemetry",
    "incoming_trace",
    "set_propagation",
    "trace_headers",
    "wait_kind",
]

log = logging.getLogger("dotdo.engine")


class Observer:
    """Every hook the engine calls, each a no-op. Tokens returned by the `*_start` hooks
    come back to the matching `*_end` hook."""

    def bind(self, engine: Shell) -> None:
        """Called once by `engine.observe(...)`."""

    def run_started(self, run_id: str, workflow: str) -> None:
        """A new run was stored (a start, a retry, a schedule's fire, an event handler)."""

    def stretch_start(self, run_id: str, workflow: str, trace: str | None) -> Any:
        """The engine begins advancing a run. `trace` is what `trace_of` stored for it on an
        earlier stretch (None on its first)."""
        return None

    def stretch_end(self, token: Any, outcome: str) -> None:
        """It stopped: `outcome` is the run's status now (waiting, completed, failed,
        compensated, cancelled), or `running` when this process let go of it."""

    def step_start(self, run_id: str, workflow: str, key: str, attempt: int) -> Any:
        """An attempt of a step begins; it runs in the caller's context (so a span made
        current here is the parent of the user's own spans)."""
        return None

    def step_end(self, token: Any, error: BaseException | None, seconds: float) -> None:
        """The attempt ended, `error` None when it succeeded."""

    def waiting(self, run_id: str, workflow: str, kind: str, key: str) -> None:
        """The run parks: `kind` is timer, retry, approval or event."""

    def decided(self, run_id: str, workflow: str, key: str) -> None:
        """What a run waited on at `key` resolved (a decision, an event, a timeout)."""

    def committed(self, size: int, seconds: float) -> None:
        """A group commit wrote `size` runs' checkpoints in `seconds`."""

    def took_over(self, count: int) -> None:
        """This engine claimed `count` runs whose owners had died."""


def wait_kind(t: Transition) -> str:
    """What a parking run waits on: approval, event, retry (a step's backoff) or timer."""
    if isinstance(t.command, Suspend):
        return t.command.kind
    return "retry" if t.state.attempt > 0 else "timer"


class Telemetry(Observer):
    """Fans each hook out to observers; tokens are lists, one per observer."""

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self.observers = list(observers or [])

    def _failed(self, observer: Observer, exc: Exception) -> None:
        log.warning("telemetry observer %r failed (%s); it is disabled", observer, exc)
        if observer in self.observers:
            self.observers.remove(observer)

    def run_started(self, run_id: str, workflow: str) -> None:
        for o in list(self.observers):
            try:
                o.run_started(run_id, workflow)
            except Exception as exc:
                self._failed(o, exc)

    def stretch_start(self, run_id: str, workflow: str, trace: str | None) -> Any:
        if not self.observers:
            return None
        tokens = []
        for o in list(self.observers):
            try:
                tokens.append((o, o.stretch_start(run_id, workflow, trace)))
            except Exception as exc:
                self._failed(o, exc)
        return tokens

    def stretch_end(self, token: Any, outcome: str) -> None:
        for o, inner in reversed(token or []):
            try:
                o.stretch_end(inner, outcome)
            except Exception as exc:
                self._failed(o, exc)

    def step_start(self, run_id: str, workflow: str, key: str, attempt: int) -> Any:
        if not self.observers:
            return None
        tokens = []
        for o in list(self.observers):
            try:
                tokens.append((o, o.step_start(run_id, workflow, key, attempt)))
            except Exception as exc:
                self._failed(o, exc)
        return tokens

    def step_end(self, token: Any, error: BaseException | None, seconds: float) -> None:
        for o, inner in reversed(token or []):
            try:
                o.step_end(inner, error, seconds)
            except Exception as exc:
                self._failed(o, exc)

    def waiting(self, run_id: str, workflow: str, kind: str, key: str) -> None:
        for o in list(self.observers):
            try:
                o.waiting(run_id, workflow, kind, key)
            except Exception as exc:
                self._failed(o, exc)

    def decided(self, run_id: str, workflow: str, key: str) -> None:
        for o in list(self.observers):
            try:
                o.decided(run_id, workflow, key)
            except Exception as exc:
                self._failed(o, exc)

    def committed(self, size: int, seconds: float) -> None:
        for o in list(self.observers):
            try:
                o.committed(size, seconds)
            except Exception as exc:
                self._failed(o, exc)

    _commit_began: float | None = None

    def commit_point(self, point: str, run_ids: Sequence[str]) -> None:
        """The store's commit hook (`StoreOptions.commit_hook`): a group commit's size and
        latency, from just before its COMMIT ("before_commit", on the writer) until the
        writer has it back ("after_commit")."""
        if point == "before_commit":
            self._commit_began = time.perf_counter()
        elif point == "after_commit" and self._commit_began is not None:
            began, self._commit_began = self._commit_began, None
            if self.observers:
                self.committed(len(run_ids), time.perf_counter() - began)

    def claimed(self, leases: Sequence[object]) -> None:
        """Report runs taken over from dead owners (if any)."""
        if leases and self.observers:
            self.took_over(len(leases))

    def took_over(self, count: int) -> None:
        for o in list(self.observers):
            try:
                o.took_over(count)
            except Exception as exc:
                self._failed(o, exc)


# ------------------------------------------------------------- cross-DO trace context
class Propagation(Protocol):
    """How a trace crosses an HTTP entity call (dotdo.engine.otel implements it, W3C)."""

    def inject(self, carrier: dict[str, str]) -> None:
        """Add the current trace's headers (`traceparent`, `tracestate`) to `carrier`."""

    def enter(self, carrier: Mapping[str, str]) -> Any:
        """A server begins handling a call with these headers: continue their trace."""

    def leave(self, token: Any, error: BaseException | None) -> None:
        """The call was answered (or failed with `error`)."""


_propagation: list[Propagation] = []


def set_propagation(propagation: Propagation | None) -> None:
    """Install (or, with None, remove) the process's trace propagation."""
    _propagation[:] = [propagation] if propagation is not None else []


def trace_headers() -> dict[str, str]:
    """Headers carrying the current trace to another process (empty without tracing)."""
    carrier: dict[str, str] = {}
    for propagation in _propagation:
        propagation.inject(carrier)
    return carrier


@contextlib.contextmanager
def incoming_trace(headers: Mapping[str, str]) -> Iterator[None]:
    """Handle an incoming call inside the trace its headers name (a no-op without tracing
    or without a `traceparent`); the header is parsed by the W3C propagator, never trusted
    for anything but the trace it names."""
    if not _propagation or "traceparent" not in headers:
        yield
        return
    propagation = _propagation[0]
    carrier = {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}
    token = propagation.enter(carrier)
    try:
        yield
    except BaseException as exc:
        propagation.leave(token, exc)
        raise
    propagation.leave(token, None)
