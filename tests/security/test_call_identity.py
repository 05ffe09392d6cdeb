"""A call id names one request of one caller (finding 3).

`entity_calls` used to be keyed by the call id alone, and call ids derived from run id and
step: two caller databases that both had a run `order-1` got the first caller's answer and
the second call was never applied, and an id reused for another method was answered with the
other call's result. Now every database has an identity that starts the ids it sends, the
callee records each call's target, chain and argument digest, and a reused id with another
request is refused (409, `CallIdReused`), while a genuine repeat is still answered from the
record and applied once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from dotdo import DO, Engine, PermanentError, step, workflow
from dotdo.engine.store.sqlite import _MIGRATIONS
from dotdo.entities import CallIdReused, connect, create_app, entities_of, remote, running
from dotdo.entities.transport import RPC_PATH

TOKEN = "identity-token-0123456789"
BODIES: list[str] = []


class TallyState(BaseModel):
    n: int = 0


class Tally(DO):
    State = TallyState

    async def add(self, n: int) -> int:
        BODIES.append(f"add:{self.entity_id}")
        self.state.n += n
        return self.state.n  # type: ignore[no-any-return]

    async def sub(self, n: int) -> int:
        BODIES.append(f"sub:{self.entity_id}")
        self.state.n -= n
        return self.state.n  # type: ignore[no-any-return]

    async def slow_add(self, n: int) -> int:
        await asyncio.sleep(0.05)
        return await self.add(n)

    def snapshot(self) -> TallyState:
        return self.state  # type: ignore[no-any-return]


class Other(DO):
    State = TallyState

    async def add(self, n: int) -> int:
        BODIES.append(f"other:{self.entity_id}")
        return n


class Relay(DO):
    async def forward(self, n: int) -> int:
        return await self.Tally("t").add(n)  # type: ignore[no-any-return]


class Orderer(DO):
    @workflow
    async def place(self) -> int:
        return await self.Tally("t").add(1)  # type: ignore[no-any-return]

    @workflow
    async def announce(self) -> str:
        self.Tally("t").add(10)
        return "sent"

    @step
    async def from_a_step(self) -> int:
        return await self.Tally("t").add(100)  # type: ignore[no-any-return]

    @workflow
    async def stepped(self) -> int:
        return await self.from_a_step()


@pytest.fixture(autouse=True)
def _clean() -> None:
    BODIES.clear()


@asynccontextmanager
async def host(db: Path, *classes: type[DO]) -> AsyncIterator[tuple[str, Engine]]:
    engine = Engine(db).register(*(classes or (Tally, Other)))
    async with engine, running(create_app(engine, token=TOKEN)) as url:
        yield url, engine


def caller(db: Path, url: str) -> Engine:
    engine = Engine(db).register(Orderer)
    remote(engine, Tally, url, token=TOKEN)
    return engine


async def recorded(engine: Engine) -> list[str]:
    rows = await engine.store.fetch("SELECT call_id FROM entity_calls ORDER BY created_at")
    return [r["call_id"] for r in rows]


# ======================================================================= two callers
async def test_two_caller_databases_with_the_same_run_id_both_apply(tmp_path: Path) -> None:
    async with host(tmp_path / "callee.db") as (url, callee):
        answers = []
        ids = []
        for name in ("a", "b"):
            async with caller(tmp_path / f"{name}.db", url) as calling:
                handle = await calling.start(Orderer.place, run_id="order-1")
                answers.append(await handle.result(timeout=5))
                ids.append(await entities_of(calling).db_id())
        assert sorted(answers) == [1, 2]  # the second call was applied, not answered as the first
        assert (await entities_of(callee).state("Tally", "t")).n == 2
        assert sorted(await recorded(callee)) == sorted(f"{i}:order-1:Tally.add" for i in ids)
    assert BODIES == ["add:t", "add:t"]


async def test_two_callers_sends_and_step_calls_are_all_applied(tmp_path: Path) -> None:
    async with host(tmp_path / "callee.db") as (url, callee):
        for name in ("a", "b"):
            async with caller(tmp_path / f"{name}.db", url) as calling:
                for flow in (Orderer.announce, Orderer.stepped):
                    await (await calling.start(flow, run_id=f"run-{flow.name}")).result(timeout=5)
                entities = entities_of(calling)
                for _ in range(200):
                    if all(r["outcome"] == "ok" for r in await entities.outbox()):
                        break
                    await asyncio.sleep(0.02)
                assert [r["outcome"] for r in await entities.outbox()] == ["ok"]
        assert (await entities_of(callee).state("Tally", "t")).n == 2 * (10 + 100)
        assert len(set(await recorded(callee))) == 4


async def test_nested_calls_of_two_hosts_under_one_parent_id_both_apply(tmp_path: Path) -> None:
    # Two relays (their own databases) get a call with the same id from id-less clients; the
    # calls their method makes derive from that id, and from their database's identity.
    async with host(tmp_path / "tally.db", Tally) as (tally_url, tally):
        relays = []
        for name in ("r1", "r2"):
            engine = Engine(tmp_path / f"{name}.db").register(Relay)
            remote(engine, Tally, tally_url, token=TOKEN)
            relays.append(engine)
        async with relays[0], relays[1]:
            async with (
                running(create_app(relays[0], token=TOKEN)) as url1,
                running(create_app(relays[1], token=TOKEN)) as url2,
            ):
                for url in (url1, url2):
                    async with connect(url, token=TOKEN) as client:
                        stub = client.Relay("x").forward(5)
                        await client.call(stub, call_id="same-parent")
            db_ids = [await entities_of(r).db_id() for r in relays]
        assert (await entities_of(tally).state("Tally", "t")).n == 10
        ids = await recorded(tally)
        assert sorted(i.split(":", 1)[0] for i in ids) == sorted(db_ids)


async def test_a_database_keeps_its_identity(tmp_path: Path) -> None:
    seen = []
    for db in ("one.db", "one.db", "two.db"):
        async with Engine(tmp_path / db) as engine:
            seen.append(await entities_of(engine).db_id())
    assert seen[0] == seen[1] != seen[2]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in seen)


# ======================================================================== reuse
def body(
    call: str, target: tuple[str, str], method: str, args: list[Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    ops = [["get", method], ["call", args, kwargs]]
    return {
        "v": 1,
        "push": [{"id": 1, "call": call, "target": list(target), "ops": ops}],
        "pull": [1],
    }


REUSES: list[tuple[str, dict[str, Any]]] = [
    ("other-instance", body("X", ("Tally", "u"), "add", [1], {})),
    ("other-class", body("X", ("Other", "t"), "add", [1], {})),
    ("other-method", body("X", ("Tally", "t"), "sub", [1], {})),
    ("other-arguments", body("X", ("Tally", "t"), "add", [2], {})),
    ("other-argument-form", body("X", ("Tally", "t"), "add", [], {"n": 1})),
    ("other-argument-type", body("X", ("Tally", "t"), "add", ["1"], {})),
    (
        "longer-chain",
        {
            "v": 1,
            "push": [
                {
                    "id": 1,
                    "call": "X",
                    "target": ["Tally", "t"],
                    "ops": [["get", "snapshot"], ["call", [], {}], ["get", "n"]],
                }
            ],
            "pull": [1],
        },
    ),
]


@pytest.mark.parametrize(("case", "reuse"), REUSES, ids=[c for c, _ in REUSES])
async def test_a_reused_id_with_another_request_is_refused(
    tmp_path: Path, case: str, reuse: dict[str, Any]
) -> None:
    async with host(tmp_path / "callee.db") as (url, callee):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            first = await http.post(RPC_PATH, json=body("X", ("Tally", "t"), "add", [1], {}))
            assert first.json()["results"][0]["ok"] == 1
            before = [tuple(r) for r in await callee.store.fetch("SELECT * FROM entities")]
            response = await http.post(RPC_PATH, json=reuse)
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["type"] == "CallIdReused" and "'X'" in error["message"]
            assert [tuple(r) for r in await callee.store.fetch("SELECT * FROM entities")] == before
        assert BODIES == ["add:t"]  # the reuse ran nothing


async def test_a_repeat_of_the_same_request_is_answered_from_the_record(tmp_path: Path) -> None:
    async with host(tmp_path / "callee.db") as (url, callee):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            same = body("X", ("Tally", "t"), "add", [3], {})
            answers = [(await http.post(RPC_PATH, json=same)).json() for _ in range(3)]
            # the same request as other bytes (key order, spacing) is the same request
            text = json.dumps(same, indent=2, sort_keys=True)
            answers.append((await http.post(RPC_PATH, content=text.encode())).json())
        assert all(a["results"][0]["ok"] == 3 for a in answers)
        assert (await entities_of(callee).state("Tally", "t")).n == 3
    assert BODIES == ["add:t"]


async def test_clients_and_workflows_see_a_permanent_call_id_reused(tmp_path: Path) -> None:
    async with host(tmp_path / "callee.db") as (url, _):
        async with connect(url, token=TOKEN) as client:
            assert await client.call(client.Tally("t").add(1), call_id="mine") == 1
            with pytest.raises(CallIdReused, match="409") as refused:
                await client.call(client.Tally("t").sub(1), call_id="mine")
            assert isinstance(refused.value, PermanentError)
            assert await client.call(client.Tally("t").add(1), call_id="mine") == 1


async def test_in_process_calls_follow_the_same_rule(tmp_path: Path) -> None:
    async with Engine(tmp_path / "db").register(Tally, Other) as engine:
        entities = entities_of(engine)
        assert await entities.call(entities.Tally("t").add(1), call_id="mine") == 1
        for build in (  # (a stub built ahead and not awaited would go out on its own)
            lambda: entities.Tally("u").add(1),
            lambda: entities.Other("t").add(1),
            lambda: entities.Tally("t").sub(1),
            lambda: entities.Tally("t").add(5),
        ):
            with pytest.raises(CallIdReused):
                await entities.call(build(), call_id="mine")
        assert await entities.call(entities.Tally("t").add(1), call_id="mine") == 1
        assert (await entities.state("Tally", "t")).n == 1
    assert BODIES == ["add:t"]


async def test_two_chains_of_one_message_cannot_share_an_id(tmp_path: Path) -> None:
    async with host(tmp_path / "callee.db") as (url, callee):
        a = body("D", ("Tally", "a"), "add", [1], {})["push"][0]
        b = {**body("D", ("Tally", "b"), "add", [1], {})["push"][0], "id": 2}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            response = await http.post(RPC_PATH, json={"v": 1, "push": [a, b], "pull": [1, 2]})
        assert response.status_code == 400 and "share a call id" in response.text
        assert await recorded(callee) == [] and BODIES == []


async def test_a_race_on_one_id_applies_one_call(tmp_path: Path) -> None:
    # Two requests with one id for two instances: both pass the check before running (nothing
    # is recorded yet) and run side by side; the commit of the second sees the first's record.
    async with Engine(tmp_path / "db").register(Tally) as engine:
        entities = entities_of(engine)
        results = await asyncio.gather(
            entities.send_call(entities.Tally("a").slow_add(1), "race"),
            entities.send_call(entities.Tally("b").slow_add(1), "race"),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["CallIdReused", "int"]
        states = [(await entities.state("Tally", k)).n for k in ("a", "b")]
        assert sorted(states) == [0, 1]
        assert await recorded(engine) == ["race"]


# ===================================================================== migration
async def test_an_older_database_gets_an_identity_and_keeps_its_records(tmp_path: Path) -> None:
    db = tmp_path / "v3.db"
    with sqlite3.connect(db) as conn:
        for script in _MIGRATIONS[:3]:
            conn.executescript(script)
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '3')")
        conn.execute(
            "INSERT INTO entity_calls(call_id, cls, id, result, created_at) "
            "VALUES ('old', 'Tally', 't', '5', 0)"
        )
        conn.execute(
            "INSERT INTO entities(cls, id, state, version, updated_at) "
            "VALUES ('Tally', 't', '{\"n\": 5}', 1, 0)"
        )
    async with Engine(db).register(Tally) as engine:
        entities = entities_of(engine)
        assert len(await entities.db_id()) == 32
        # recorded before call identity: a repeat to the same target is answered from it
        assert await entities.send_call(entities.Tally("t").add(5), "old") == 5
        with pytest.raises(CallIdReused):
            await entities.send_call(entities.Tally("u").add(5), "old")
        assert (await entities.state("Tally", "t")).n == 5
    assert BODIES == []
