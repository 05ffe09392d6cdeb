"""OpenTelemetry traces for an engine (`pip install 'dotdo[otel]'`).

    from dotdo.engine.otel import OpenTelemetryTracing
    engine.observe(OpenTelemetryTracing())          # the global tracer provider, or pass one

- A span per run *stretch* (`dotdo.run Orders.process_order`): one stay of the run in
  memory. A run that hibernates for days is still one trace: its first stretch's W3C
  `traceparent` is stored with the run (`runs.trace`) and every later stretch, in whichever
  process, is a child of it (and links to it).
- A span per step attempt (`dotdo.step charge`) with the run id, workflow, step id, attempt
  and outcome (an error is recorded on it); it is the current span while the step runs, so
  the user's own spans nest under it.
- Waits and decisions are events on the stretch span (`dotdo.wait`, `dotdo.decision`).
- Cross-DO calls carry the trace: in-process calls run inside the step's context, and HTTP
  calls send `traceparent` (dotdo.engine.telemetry.trace_headers) which `dotdo serve`
  continues in a `dotdo.call` server span, so a chain of calls is one trace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dotdo.engine.telemetry import Observer, set_propagation

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = ["OpenTelemetryTracing"]

_W3C = TraceContextTextMapPropagator()
_FAILED = ("failed", "compensated")


class OpenTelemetryTracing(Observer):
    """Spans for run stretches and step attempts; W3C trace context across processes."""

    def __init__(
        self, tracer_provider: trace.TracerProvider | None = None, *, propagate: bool = True
    ) -> None:
        self.tracer = trace.get_tracer("dotdo", tracer_provider=tracer_provider)
        self.propagate = propagate
        self._engine: Shell | None = None
        self._roots: dict[str, str] = {}
        """run id -> traceparent of its first stretch (this process's copy of runs.trace)."""
        self._open: dict[str, trace.Span] = {}
        self._decided: dict[str, list[str]] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def bind(self, engine: Shell) -> None:
        self._engine = engine
        if self.propagate:
            set_propagation(self)

    # ------------------------------------------------------------------ stretches
    def stretch_start(self, run_id: str, workflow: str, trace_text: str | None) -> Any:
        root = trace_text or self._roots.get(run_id)
        parent = _W3C.extract({"traceparent": root}) if root else None
        links = []
        if parent is not None:
            linked = trace.get_current_span(parent).get_span_context()
            links = [Link(linked)] if linked.is_valid else []
            if not links:
                parent = None  # a stored value that is not a trace context: start afresh
        span = self.tracer.start_span(
            f"dotdo.run {workflow}",
            context=parent,
            links=links,
            attributes={"dotdo.run_id": run_id, "dotdo.workflow": workflow},
        )
        if parent is None:
            carrier: dict[str, str] = {}
            _W3C.inject(carrier, trace.set_span_in_context(span))
            if "traceparent" in carrier:
                self._roots[run_id] = carrier["traceparent"]
                self._store_root(run_id, carrier["traceparent"])
        for key in self._decided.pop(run_id, []):
            span.add_event("dotdo.decision", {"dotdo.step_id": key})
        self._open[run_id] = span
        return run_id, span, context.attach(trace.set_span_in_context(span))

    def _store_root(self, run_id: str, traceparent: str) -> None:
        engine = self._engine
        if engine is None or engine._store is None:
            return
        # Written in the background (on SQLite a thread job joining the next group commit):
        # the stretch never waits for it.
        write = engine.store.set_trace(run_id, traceparent)
        task = asyncio.get_running_loop().create_task(_quietly(write))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def stretch_end(self, token: Any, outcome: str) -> None:
        run_id, span, attached = token
        span.set_attribute("dotdo.outcome", outcome)
        if outcome in _FAILED:
            span.set_status(Status(StatusCode.ERROR, f"run {outcome}"))
        self._open.pop(run_id, None)
        if outcome != "running" and outcome != "waiting":
            self._roots.pop(run_id, None)
        with contextlib.suppress(ValueError):  # detached in another context: nothing to undo
            context.detach(attached)
        span.end()

    # ---------------------------------------------------------------------- steps
    def step_start(self, run_id: str, workflow: str, key: str, attempt: int) -> Any:
        span = self.tracer.start_span(
            f"dotdo.step {key}",
            attributes={
                "dotdo.run_id": run_id,
                "dotdo.workflow": workflow,
                "dotdo.step_id": key,
                "dotdo.attempt": attempt,
            },
        )
        return span, context.attach(trace.set_span_in_context(span))

    def step_end(self, token: Any, error: BaseException | None, seconds: float) -> None:
        span, attached = token
        if span.is_recording():
            span.set_attribute("dotdo.outcome", "error" if error else "ok")
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        with contextlib.suppress(ValueError):
            context.detach(attached)
        span.end()

    # ------------------------------------------------------------- waits, decisions
    def waiting(self, run_id: str, workflow: str, kind: str, key: str) -> None:
        span = self._open.get(run_id)
        if span is not None:
            span.add_event("dotdo.wait", {"dotdo.wait_kind": kind, "dotdo.step_id": key})

    def decided(self, run_id: str, workflow: str, key: str) -> None:
        span = self._open.get(run_id)
        if span is not None:
            span.add_event("dotdo.decision", {"dotdo.step_id": key})
        else:  # resolved before its stretch began: an event of the stretch it starts
            self._decided.setdefault(run_id, []).append(key)

    # ------------------------------------------------------------------ propagation
    def inject(self, carrier: dict[str, str]) -> None:
        _W3C.inject(carrier)

    def enter(self, carrier: Mapping[str, str]) -> Any:
        parent = _W3C.extract(dict(carrier))
        span = self.tracer.start_span("dotdo.call", context=parent, kind=SpanKind.SERVER)
        return span, context.attach(trace.set_span_in_context(span))

    def leave(self, token: Any, error: BaseException | None) -> None:
        span, attached = token
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        with contextlib.suppress(ValueError):
            context.detach(attached)
        span.end()


async def _quietly(write: Any) -> None:
    """Storing the trace is best effort: a run never fails for its telemetry."""
    with contextlib.suppress(Exception):
        await write
