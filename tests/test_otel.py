"""OpenTelemetry traces, checked with the SDK's in-memory exporter: a span per run stretch
and per step attempt, user spans nested under the step, a hibernating run kept in one trace
across processes, waits and decisions as events, and one trace along cross-DO calls, local
and over HTTP."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dotdo import DO, Engine, PermanentError, RunFailed, approval, step, workflow
from dotdo.engine.otel import OpenTelemetryTracing
from dotdo.engine.telemetry import set_propagation, trace_headers
from dotdo.entities import create_app, remote, running

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
APP = trace.get_tracer("app", tracer_provider=PROVIDER)
TOKEN = "t" * 32


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    EXPORTER.clear()
    yield
    set_propagation(None)


class Ledger(DO):
    async def book(self, amount: int) -> int:
        with APP.start_as_current_span("user.book"):
            return amount * 2


class Shop(DO):
    @step(retries=0)
    async def price(self, n: int) -> int:
        with APP.start_as_current_span("user.pricing") as span:
            span.set_attribute("n", n)
        return n * 10

    @step(retries=0)
    async def boom(self) -> None:
        raise PermanentError("out of stock")

    @approval(approvers=["boss"])
    def ok(self, n: int) -> dict[str, Any]:
        return {"title": f"n={n}"}

    @workflow
    async def buy(self, n: int) -> int:
        return await self.price(n)

    @workflow
    async def broken(self) -> None:
        await self.boom()

    @workflow
    async def asks(self, n: int) -> int:
        decision = await self.ok(n)
        if decision.status != "approved":
            return 0
        return await self.price(n)

    @workflow
    async def books(self, n: int) -> int:
        return await self.Ledger("l1").book(n)


def spans(name: str | None = None) -> list[ReadableSpan]:
    found = list(EXPORTER.get_finished_spans())
    return [s for s in found if name is None or s.name == name]


def one(name: str) -> ReadableSpan:
    found = spans(name)
    assert len(found) == 1, [s.name for s in spans()]
    return found[0]


def tracing() -> OpenTelemetryTracing:
    return OpenTelemetryTracing(PROVIDER)


async def test_a_run_is_a_span_with_its_steps_and_the_users_spans_inside(tmp_path: Path) -> None:
    async with Engine(tmp_path / "t.db").register(Shop).observe(tracing()) as engine:
        assert await (await engine.start(Shop.buy, 2, run_id="b1")).result(timeout=10) == 20
    run, step_span, user = one("dotdo.run Shop.buy"), one("dotdo.step price"), one("user.pricing")
    assert run.attributes is not None and run.attributes["dotdo.run_id"] == "b1"
    assert run.attributes["dotdo.outcome"] == "completed"
    assert step_span.attributes is not None
    assert step_span.attributes["dotdo.step_id"] == "price"
    assert step_span.attributes["dotdo.attempt"] == 1
    assert step_span.attributes["dotdo.outcome"] == "ok"
    assert step_span.parent is not None and step_span.parent.span_id == run.context.span_id
    assert user.parent is not None and user.parent.span_id == step_span.context.span_id
    assert len({s.context.trace_id for s in (run, step_span, user)}) == 1


async def test_a_failed_step_records_its_error(tmp_path: Path) -> None:
    async with Engine(tmp_path / "t.db").register(Shop).observe(tracing()) as engine:
        with pytest.raises(RunFailed):
            await (await engine.start(Shop.broken)).result(timeout=10)
    failed = one("dotdo.step boom")
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert any(e.name == "exception" for e in failed.events)
    assert one("dotdo.run Shop.broken").status.status_code == trace.StatusCode.ERROR


async def test_a_hibernating_run_stays_one_trace_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    async with Engine(db).register(Shop).observe(tracing()) as engine:
        await engine.start(Shop.asks, 3, run_id="a1")
        await engine.idle("a1", timeout=10)
    first = one("dotdo.run Shop.asks")
    assert first.attributes is not None and first.attributes["dotdo.outcome"] == "waiting"
    assert [e.name for e in first.events] == ["dotdo.wait"]
    assert first.events[0].attributes == {"dotdo.wait_kind": "approval", "dotdo.step_id": "ok"}
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT trace FROM runs WHERE run_id = 'a1'").fetchone()[0]
    conn.close()
    assert stored.split("-")[1] == format(first.context.trace_id, "032x")
    EXPORTER.clear()
    # Another process (a new engine and a new observer: nothing in memory) decides it.
    async with Engine(db).register(Shop).observe(tracing()) as engine:
        approval_id = (await engine.approvals())[0].id
        await engine.approve(approval_id, by="boss")
        assert await engine.handle("a1").result(timeout=10) == 30
    second = one("dotdo.run Shop.asks")
    assert second.context.trace_id == first.context.trace_id
    assert second.parent is not None and second.parent.span_id == first.context.span_id
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    assert "dotdo.decision" in [e.name for e in second.events]
    assert one("dotdo.step price").context.trace_id == first.context.trace_id


async def test_a_local_cross_do_call_is_in_the_callers_trace(tmp_path: Path) -> None:
    async with Engine(tmp_path / "t.db").register(Shop, Ledger).observe(tracing()) as engine:
        assert await (await engine.start(Shop.books, 4)).result(timeout=10) == 8
    run, booked = one("dotdo.run Shop.books"), one("user.book")
    assert booked.context.trace_id == run.context.trace_id


async def test_an_http_cross_do_call_carries_traceparent(tmp_path: Path) -> None:
    server = Engine(tmp_path / "server.db").register(Ledger).observe(tracing())
    async with server:
        async with running(create_app(server, token=TOKEN)) as url:
            client = Engine(tmp_path / "client.db").register(Shop).observe(tracing())
            remote(client, "Ledger", url, token=TOKEN)
            async with client:
                assert await (await client.start(Shop.books, 5)).result(timeout=10) == 10
    run, call, booked = one("dotdo.run Shop.books"), one("dotdo.call"), one("user.book")
    assert call.kind == trace.SpanKind.SERVER
    assert call.context.trace_id == run.context.trace_id == booked.context.trace_id
    assert booked.parent is not None and booked.parent.span_id == call.context.span_id
    step_span = next(s for s in spans() if s.name.startswith("dotdo.step"))
    assert call.parent is not None and call.parent.span_id == step_span.context.span_id


async def test_bad_traceparent_headers_start_a_fresh_trace(tmp_path: Path) -> None:
    from dotdo.engine.telemetry import incoming_trace

    observer = tracing()
    async with Engine(tmp_path / "t.db").observe(observer):
        for bad in ("garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "x" * 5000):
            with incoming_trace({"traceparent": bad}):
                current = trace.get_current_span().get_span_context()
            assert current.is_valid  # the server span of a new trace, not the bad one
            assert format(current.trace_id, "032x") not in bad
        assert trace_headers() == {}  # no span current here: nothing to send
