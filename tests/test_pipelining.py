"""Promise pipelining: a chain of hops, and chains passed as arguments, travel in one
request; an error at any hop rejects everything that depends on it, in that request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_entities_support import (
    APPLIED,
    TOKEN,
    Counter,
    Flows,
    Person,
    Profile,
    User,
    served,
)

from dotdo import Engine, RunFailed
from dotdo.entities import connect, entities_of, remote, reset_plain
from dotdo.testing import VirtualClock


@pytest.fixture(autouse=True)
def _clean() -> None:
    APPLIED.clear()
    reset_plain()


def caller(tmp_path: Path, url: str, **kwargs: Any) -> Engine:
    engine = Engine(tmp_path / "caller.db", **kwargs).register(Flows)
    remote(engine, "Counter", url, token=TOKEN)
    remote(engine, "User", url, token=TOKEN)
    return engine


async def test_a_six_hop_chain_is_one_request(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, _, server):
        async with connect(url, token=TOKEN) as client:
            # org() -> .teams -> ["core"] -> .members -> [0] -> .email: after the call, data.
            email = await client.User("u").org().teams["core"].members[0].email
            assert email == "g@x.io"
            assert client.requests == 1 and server.requests == 1
            name = await client.User("u").org().teams["core"].members[-1].name
            assert name == "grace"
            assert client.requests == 2


async def test_a_workflow_step_sends_the_whole_chain_at_once(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, _, server):
        async with caller(tmp_path, url) as calling:
            handle = await calling.start(Flows.lead_email, "u", "core", run_id="le")
            assert await handle.result(timeout=5) == "g@x.io"
            (record,) = await calling.journal("le")
        assert record.key == "User.org.teams.members.email"
        assert server.requests == 1


async def test_hop_by_hop_costs_a_request_per_await(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, _, server):
        async with caller(tmp_path, url) as calling:
            slow = await calling.start(Flows.email_hop_by_hop, "u")
            assert await slow.result(timeout=5) == "ada@example.com"
            assert server.requests == 3
            fast = await calling.start(Flows.email, "u")
            assert await fast.result(timeout=5) == "ada@example.com"
            assert server.requests == 4


async def test_values_keep_their_types_across_the_wire(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, _, _server):
        async with connect(url, token=TOKEN) as client:
            assert await client.User("u").profile == Profile()
            lead = await client.User("u").org().teams["core"].members[0]
            assert isinstance(lead, Person) and lead.name == "grace"
            value = {"t": (1, 2), 3: {4.5}, "b": b"\x00"}
            assert await client.Counter("k").echo(value) == value
            state = await client.User("u")  # the bare instance: its state
            assert state.profile.email == "ada@example.com"


async def test_an_error_at_a_middle_hop_rejects_the_chain(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, _, server):
        async with connect(url, token=TOKEN) as client:
            with pytest.raises(KeyError, match="nope"):
                await client.User("u").org().teams["nope"].members[0].email
            assert server.requests == 1


async def test_an_error_rejects_every_dependent_in_the_same_request(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, engine, server):
        async with connect(url, token=TOKEN) as client:
            failing = client.User("u").org().teams["nope"].members[0].email
            dependent = client.Counter("k").add(client.Counter("k").echo(failing))
            with pytest.raises(KeyError, match="nope"):
                await dependent
            assert server.requests == 1  # three chains, one request
        assert await entities_of(engine).state("Counter", "k") == Counter.State()  # type: ignore[misc]


async def test_a_chain_passed_as_an_argument_travels_in_the_same_request(
    tmp_path: Path,
) -> None:
    async with served(tmp_path / "server.db") as (url, engine, server):
        async with caller(tmp_path, url) as calling:
            handle = await calling.start(Flows.pipelined_arg, "k", "u", run_id="pa")
            assert await handle.result(timeout=5) == 1  # notify returned the inbox size
            db = await entities_of(calling).db_id()  # the caller database's identity
        assert server.requests == 1
        calls = [r["call_id"] for r in await engine.store.fetch("SELECT call_id FROM entity_calls")]
        assert sorted(calls) == [f"{db}:pa:Counter.add", f"{db}:pa:Counter.add#1"]
        assert (await entities_of(engine).state("User", "u")).inbox == ["counted"]


async def test_a_repeated_pipelined_batch_applies_nothing_twice(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, engine, _server):
        async with connect(url, token=TOKEN) as client:
            for _ in range(3):
                stub = client.Counter("k").add(client.User("u").notify("once"))
                assert await client.call(stub, call_id="same") == 1
        assert (await entities_of(engine).state("User", "u")).inbox == ["once"]
        assert (await entities_of(engine).state("Counter", "k")).n == 1


async def test_pipelining_works_in_process_too(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "db.sqlite").register(Flows, Counter, User)
    async with engine:
        assert await (await engine.start(Flows.lead_email, "u", "core")).result(timeout=5) == (
            "g@x.io"
        )
        assert await (await engine.start(Flows.pipelined_arg, "k", "u")).result(timeout=5) == 1
        entities = entities_of(engine)
        with pytest.raises(KeyError):
            await entities.Counter("k").add(entities.User("u").org().teams["x"].members[0].email)
        assert (await entities.state("Counter", "k")).n == 1


async def test_a_middle_hop_error_fails_the_workflow_after_its_retries(tmp_path: Path) -> None:
    async with served(tmp_path / "server.db") as (url, _, server):
        clock = VirtualClock()
        async with caller(tmp_path, url, clock=clock) as calling:
            handle = await calling.start(Flows.lead_email, "u", "nope", run_id="bad")
            await clock.run_for(20, step=1)
            with pytest.raises(RunFailed) as failed:
                await handle.result(timeout=5)
        assert isinstance(failed.value.error, KeyError)
        assert server.requests == 4  # one request per attempt, whatever the chain's length


async def test_plain_mode_pipelines_through_the_same_rules() -> None:
    flows = Flows("plain")
    assert await flows.lead_email("u", "core") == "g@x.io"
    assert await flows.pipelined_arg("k", "u") == 1
    with pytest.raises(KeyError):
        await flows.lead_email("u", "nope")
