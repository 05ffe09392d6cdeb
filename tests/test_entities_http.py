"""Entities over HTTP: `dotdo serve`'s app under uvicorn on 127.0.0.1, an ephemeral port.

Auth refusals and malformed messages change nothing; durable calls survive a crash of the
caller and a lost answer of the callee; one instance serialises, many run in parallel;
fire-and-forget sends wait out an absent server."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_entities_support import (
    APPLIED,
    TOKEN,
    Counter,
    Flows,
    Stateless,
    User,
    eventually,
    served,
)

from dotdo import Engine, RunFailed
from dotdo.entities import (
    EntityAuthError,
    EntityError,
    ProtocolError,
    UnknownEntity,
    UnknownMethod,
    connect,
    create_app,
    entities_of,
    remote,
    running,
)
from dotdo.entities.transport import RPC_PATH
from dotdo.testing import CrashAt, SimulatedCrash, VirtualClock


@pytest.fixture(autouse=True)
def _clean() -> None:
    APPLIED.clear()


def caller(tmp_path: Path, url: str, **kwargs: Any) -> Engine:
    engine = Engine(tmp_path / "caller.db", **kwargs).register(Flows)
    for name in ("Counter", "User", "Stateless"):
        remote(engine, name, url, token=TOKEN)
    return engine


async def entity_rows(engine: Engine) -> tuple[list[Any], list[Any]]:
    entities = [tuple(r) for r in await engine.store.fetch("SELECT * FROM entities")]
    calls = [tuple(r) for r in await engine.store.fetch("SELECT * FROM entity_calls")]
    return entities, calls


def increment_request(call_id: str = "c-1") -> dict[str, Any]:
    return {
        "v": 1,
        "push": [
            {
                "id": 1,
                "call": call_id,
                "target": ["Counter", "k"],
                "ops": [["get", "increment"], ["call", [], {}]],
            }
        ],
        "pull": [1],
    }


# ============================================================================ auth
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer wrong-token"}, 403),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403),
    ],
    ids=["missing", "other-scheme", "empty", "wrong", "prefix-of-right"],
)
async def test_a_request_without_the_token_is_refused_and_changes_nothing(
    tmp_path: Path, headers: dict[str, str], status: int
) -> None:
    async with served(tmp_path / "server.db") as (url, engine, server):
        before = await entity_rows(engine)
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post(RPC_PATH, json=increment_request(), headers=headers)
        assert response.status_code == status
        assert response.json()["error"]["type"] == "EntityAuthError"
        assert await entity_rows(engine) == before == ([], [])
        assert APPLIED == {} and server.requests == 0 and server.refused == 1


async def test_the_client_reports_a_refusal(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, engine, _):
        async with connect(url, token="not-it") as client:
            with pytest.raises(EntityAuthError, match="403"):
                await client.Counter("k").increment()
        assert await entity_rows(engine) == ([], [])


async def test_a_caller_with_the_wrong_token_fails_its_step_at_once(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, engine, _):
        calling = Engine(tmp_path / "caller.db").register(Flows)
        remote(calling, "Counter", url, token="wrong")
        async with calling:
            with pytest.raises(RunFailed) as failed:
                await (await calling.start(Flows.bump, "k", run_id="b")).result(timeout=5)
            (record,) = await calling.journal("b")
        assert isinstance(failed.value.error, EntityAuthError) and record.attempts == 1
        assert await entity_rows(engine) == ([], [])


def test_a_token_is_required_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOTDO_TOKEN", raising=False)
    with pytest.raises(EntityError, match="DOTDO_TOKEN"):
        create_app(Engine(":memory:"))
    with pytest.raises(EntityError, match="DOTDO_TOKEN"):
        connect("http://127.0.0.1:1")


# ====================================================================== bad bodies
def push(ops: list[Any], **changes: Any) -> dict[str, Any]:
    item = {"id": 1, "call": "c", "target": ["Counter", "k"], "ops": ops, **changes}
    return {"v": 1, "push": [{k: v for k, v in item.items() if v is not None}], "pull": [1]}


def echo(value: Any) -> list[Any]:
    return [["get", "echo"], ["call", [value], {}]]


IMPORT_7 = {"$t": "dataclass", "cls": "dotdo.entities.messages:ImportRef", "v": {"id": 7}}
BAD_BODIES: list[tuple[str, bytes | dict[str, Any]]] = [
    ("not-json", b"{nope"),
    ("not-an-object", b"[1, 2]"),
    ("wrong-version", {**increment_request(), "v": 99}),
    ("no-push", {"v": 1, "pull": []}),
    ("bad-target", push([], target="Counter")),
    ("no-call-id", push([], call=None)),
    ("unknown-hop", push([["exec", "x"]])),
    ("bad-call-hop", push([["get", "increment"], ["call", 5, {}]])),
    ("dangling-import", push([["get", "add"], ["call", [IMPORT_7], {}]])),
    ("pull-unknown", {**increment_request(), "pull": [2]}),
    ("unloaded-module", push(echo({"$t": "model", "cls": "antigravity:Thing", "v": {}}))),
    ("unknown-tag", push(echo({"$t": "martian"}))),
]


@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[c for c, _ in BAD_BODIES])
async def test_a_malformed_message_is_refused_before_anything_runs(
    tmp_path: Path, case: str, body: bytes | dict[str, Any]
) -> None:
    import sys

    async with served(tmp_path / "server.db") as (url, engine, _):
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            if isinstance(body, bytes):
                response = await http.post(RPC_PATH, content=body)
            else:
                response = await http.post(RPC_PATH, json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "ProtocolError" and error["message"]
        assert await entity_rows(engine) == ([], [])
    assert "antigravity" not in sys.modules  # decoding never imports code


async def test_an_oversized_message_is_refused(tmp_path: Path) -> None:
    from dotdo.entities.messages import MAX_BODY

    async with served(tmp_path / "server.db") as (url, engine, _):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            response = await http.post(RPC_PATH, content=b" " * (MAX_BODY + 1))
        assert response.status_code == 413
        assert await entity_rows(engine) == ([], [])


async def test_an_unknown_class_or_member_is_refused_not_a_crash(tmp_path: Path) -> None:
    # Refused with 400 before anything runs; the client raises the refusal's own class.
    async with served(tmp_path / "server.db") as (url, engine, server):
        async with connect(url, token=TOKEN) as client:
            with pytest.raises(UnknownEntity, match="Nobody"):
                await client.Nobody("x").anything()
            with pytest.raises(UnknownMethod, match="offers: "):
                await client.Counter("k").nothing_here()
            with pytest.raises(UnknownMethod):
                await client.Counter("k").bump_self()  # a workflow is not a callable member
            assert await client.Counter("k").increment() == 1  # the server is fine
        assert server.requests == 4
        entities, calls = await entity_rows(engine)
        assert len(entities) == 1 and len(calls) == 1


# ================================================================ durable calls
async def test_workflow_calls_reach_a_remote_host(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, engine, server):
        async with caller(tmp_path, url) as calling:
            assert await (await calling.start(Flows.bump_twice, "r")).result(timeout=5) == [1, 11]
            assert await (await calling.start(Flows.email, "u")).result(timeout=5) == (
                "ada@example.com"
            )
        assert (await entities_of(engine).state("Counter", "r")).n == 11
        assert server.requests == 3


async def test_a_caller_crash_between_sending_and_recording(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, engine, server):
        crash = CrashAt(0, points=("after_step",), run_id="x")
        async with caller(tmp_path, url, faults=crash) as calling:
            handle = await calling.start(Flows.bump, "once", run_id="x")
            with pytest.raises(SimulatedCrash):
                await handle.result(timeout=5)
        assert crash.fired and entities_of(engine).host.applied == 1
        async with caller(tmp_path, url) as fresh:
            assert await fresh.handle("x").result(timeout=5) == 1  # the recorded answer
            (record,) = await fresh.journal("x")
        assert record.key == "Counter.increment" and record.status == "completed"
        assert entities_of(engine).host.applied == 1  # the retry was not applied again
        assert (await entities_of(engine).state("Counter", "once")).n == 1
        assert server.requests == 2 and APPLIED["increment:once"] == 1


class DropFirstAnswer:
    """A callee that commits the first call, then dies before answering (503)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.dropped = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != RPC_PATH or self.dropped:
            await self.app(scope, receive, send)
            return
        self.dropped += 1

        async def swallow(message: Any) -> None:
            return None

        await self.app(scope, receive, swallow)
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"gone"})


async def test_a_lost_answer_is_retried_and_applied_once(tmp_path: Path) -> None:
    host = Engine(tmp_path / "server.db").register(Counter)
    async with host:
        app = DropFirstAnswer(create_app(host, token=TOKEN))
        async with running(app) as url:
            clock = VirtualClock()
            async with caller(tmp_path, url, clock=clock) as calling:
                handle = await calling.start(Flows.bump, "lost", run_id="l")
                await eventually(lambda: _waiting(calling, "l"), what="the retry timer")
                clock.advance(1.0)
                assert await handle.result(timeout=5) == 1
                (record,) = await calling.journal("l")
    assert app.dropped == 1 and record.attempts == 2
    assert APPLIED["increment:lost"] == 1


async def _waiting(engine: Engine, run_id: str) -> bool:
    return (await engine.get_run(run_id)).status == "waiting"


# ==================================================================== concurrency
async def test_concurrent_remote_calls_to_one_instance_are_exact(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, engine, _):
        async with caller(tmp_path, url) as calling:
            handles = [await calling.start(Flows.bump, "hot") for _ in range(60)]
            results = [await h.result(timeout=30) for h in handles]
        assert sorted(results) == list(range(1, 61))
        assert (await entities_of(engine).state("Counter", "hot")).n == 60


async def test_remote_calls_to_different_instances_run_in_parallel(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, _, _server):
        async with connect(url, token=TOKEN) as client:
            begun = time.monotonic()
            await asyncio.gather(*(client.Counter(f"p{i}").hold(0.3) for i in range(10)))
            parallel = time.monotonic() - begun
            begun = time.monotonic()
            await asyncio.gather(*(client.Counter("same").hold(0.1) for _ in range(5)))
            serial = time.monotonic() - begun
    assert parallel < 1.5  # one after the other would take 3s
    assert serial >= 0.5


# ========================================================================== sends
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_send_waits_for_an_absent_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clock = VirtualClock()
    async with caller(tmp_path, url, clock=clock) as calling:
        handle = await calling.start(Flows.announce, "far", "ping", run_id="a")
        assert await handle.result(timeout=5) == "sent"  # the run does not wait
        entities = entities_of(calling)

        async def tried() -> bool:
            rows = await entities.outbox()
            return bool(rows) and rows[0]["attempts"] >= 1

        await eventually(tried, what="a failed delivery")
        host = Engine(tmp_path / "server.db").register(User)
        async with host, running(create_app(host, token=TOKEN), port=port):
            clock.advance(60)
            entities.kick()

            async def delivered() -> bool:
                return (await entities.outbox())[0]["outcome"] == "ok"

            await eventually(delivered, what="the delivery")
            assert (await entities_of(host).state("User", "far")).inbox == ["ping"]
            clock.advance(600)
            await entities.deliver_pending()
    assert APPLIED["notify:far"] == 1


async def test_an_unknown_remote_class_fails_before_sending(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db", Counter) as (url, _, server):
        calling = Engine(tmp_path / "caller.db").register(Flows)
        remote(calling, "Counter", url, token=TOKEN)
        async with calling:
            with pytest.raises(RunFailed) as failed:
                await (await calling.start(Flows.email, "u")).result(timeout=5)
        assert isinstance(failed.value.error, UnknownEntity)
        assert server.requests == 0


async def test_a_protocol_error_is_permanent_for_the_caller(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db", Counter, Stateless) as (url, _, _server):
        async with connect(url, token=TOKEN) as client:
            from dotdo.entities.stubs import Stub

            stub = Stub(client.Counter("k").sink, "Counter", "k", (("item", 1), ("get", "x")))
            with pytest.raises(UnknownMethod):
                await client.call(stub)
            stub = Stub(client.Counter("k").sink, "Counter", "k", (("get", "value"), ("get", "1x")))
            with pytest.raises(ProtocolError, match="400"):
                await client.call(stub)


# ========================================================================== serving
async def test_build_app_opens_its_own_engine_on_the_database(tmp_path: Path) -> None:
    from dotdo.entities import build_app

    app = build_app(["test_entities_support"], db=tmp_path / "own.db", token=TOKEN)
    async with running(app) as url:
        async with connect(url, token=TOKEN) as client:
            assert await client.Counter("k").increment() == 1
            assert await client.Counter("k").value == 1
    async with Engine(tmp_path / "own.db").register(Counter) as engine:
        assert (await entities_of(engine).state("Counter", "k")).n == 1


def test_serving_a_module_without_dos_is_an_error() -> None:
    from dotdo.entities.server import load_classes

    with pytest.raises(EntityError, match="no DO classes"):
        load_classes(["json"])
