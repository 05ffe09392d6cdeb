"""A network peer may call only what an entity class offers, then read data (finding 1).

An authenticated `dotdo serve` request used to walk a chain through attributes of a result
(`state.model_config.get`, `state.stock.clear`, `"...".format`) and reach members the class
never offered. Each test here is a family of such attempts: all are refused with a 400 that
names the member, before anything runs (`RAN` stays empty, no row changes), over HTTP and
in-process alike. The Hypothesis fuzz at the end throws random chains at the real ASGI app
and checks that only declared methods ever run and that state changes only through them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from _wire_support import (
    DECLARED,
    OUT_OF_REACH,
    RAN,
    TOKEN,
    Info,
    SecVault,
    post,
    request,
    rows,
    vault_server,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dotdo import Engine
from dotdo.entities import ArgumentError, UnknownMethod, create_app, entities_of
from dotdo.entities.stubs import Stub
from dotdo.entities.surface import surface_of


@pytest.fixture(autouse=True)
def _clean() -> None:
    RAN.clear()


def test_the_surface_is_the_classs_own_public_methods_and_properties() -> None:
    surface = surface_of(SecVault)
    assert set(surface.methods) == {
        "deposit",
        "peek",
        "describe",
        "box",
        "echo",
        "register",
        "loose",
        "fail",
    }
    assert set(surface.properties) == {"size", "level"}
    assert set(surface.methods) | set(surface.properties) == DECLARED


CALL: list[Any] = ["call", [], {}]

FIRST_HOPS = [[["get", name]] for name in OUT_OF_REACH] + [
    [["get", name], CALL] for name in OUT_OF_REACH
]

RESULT_WALKS: list[tuple[str, list[Any]]] = [
    # state and its fields are data: their methods are not reachable
    ("state.model_config", [["get", "state"], ["get", "model_config"]]),
    ("model_config.get", [["get", "state"], ["get", "model_config"], ["get", "get"], CALL]),
    ("state.stock.clear", [["get", "state"], ["get", "stock"], ["get", "clear"], CALL]),
    (
        "state.stock.get",
        [["get", "state"], ["get", "stock"], ["get", "get"], ["call", ["apple"], {}]],
    ),
    (
        "state.stock.pop",
        [["get", "state"], ["get", "stock"], ["get", "pop"], ["call", ["apple"], {}]],
    ),
    (
        "state.items.append",
        [["get", "state"], ["get", "items"], ["get", "append"], ["call", ["x"], {}]],
    ),
    ("state.secret.format", [["get", "state"], ["get", "secret"], ["get", "format"], CALL]),
    ("state.secret.upper", [["get", "state"], ["get", "secret"], ["get", "upper"]]),
    ("state.wipe", [["get", "state"], ["get", "wipe"], CALL]),
    ("state.total", [["get", "state"], ["get", "total"]]),
    ("state.__class__", [["get", "state"], ["get", "__class__"]]),
    ("state.__dict__", [["get", "state"], ["get", "__dict__"]]),
    ("state.model_dump", [["get", "state"], ["get", "model_dump"], CALL]),
    ("state.model_fields", [["get", "state"], ["get", "model_fields"]]),
    ("state.copy", [["get", "state"], ["get", "copy"], CALL]),
    ("state[stock]", [["get", "state"], ["item", "stock"]]),
    ("state.info.leak", [["get", "state"], ["get", "info"], ["get", "leak"], CALL]),
    (
        "state.info.tags.clear",
        [["get", "state"], ["get", "info"], ["get", "tags"], ["get", "clear"], CALL],
    ),
    ("state.items.x", [["get", "state"], ["get", "items"], ["get", "x"]]),
    ("state.items['a']", [["get", "state"], ["get", "items"], ["item", "a"]]),
    ("state.secret[0]", [["get", "state"], ["get", "secret"], ["item", 0]]),
    # results of declared methods are data too
    ("peek().wipe", [["get", "peek"], CALL, ["get", "wipe"], CALL]),
    ("peek().total", [["get", "peek"], CALL, ["get", "total"]]),
    ("peek().model_config", [["get", "peek"], CALL, ["get", "model_config"]]),
    ("describe().leak", [["get", "describe"], CALL, ["get", "leak"], CALL]),
    ("describe().loud", [["get", "describe"], CALL, ["get", "loud"]]),
    ("box().open", [["get", "box"], CALL, ["get", "open"], CALL]),
    ("box().__class__", [["get", "box"], CALL, ["get", "__class__"]]),
    ("deposit().real", [["get", "deposit"], ["call", ["a", 1], {}], ["get", "real"]]),
    ("deposit()()", [["get", "deposit"], ["call", ["a", 1], {}], CALL]),
    ("size.bit_length", [["get", "size"], ["get", "bit_length"], CALL]),
    # members used the wrong way
    ("deposit uncalled", [["get", "deposit"]]),
    ("deposit.__func__", [["get", "deposit"], ["get", "__func__"]]),
    ("deposit.__globals__", [["get", "deposit"], ["get", "__globals__"]]),
    ("size()", [["get", "size"], CALL]),
    ("level() (a property with a setter)", [["get", "level"], ["call", [5], {}]]),
    ("state()", [["get", "state"], CALL]),
    ("a call first", [CALL]),
    ("an item first", [["item", 0]]),
]


async def _refused(http: httpx.AsyncClient, engine: Engine, ops: list[Any]) -> dict[str, Any]:
    before = await rows(engine)
    response = await post(http, request(ops))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] in ("UnknownMethod", "ProtocolError"), error
    assert "Traceback" not in response.text
    assert RAN == [], RAN
    assert await rows(engine) == before
    return dict(error)


async def test_names_outside_the_surface_are_refused_before_anything_runs(tmp_path: Path) -> None:
    async with vault_server(tmp_path / "db") as (http, engine, _):
        for ops in FIRST_HOPS:
            error = await _refused(http, engine, ops)
            name = ops[0][1]
            assert repr(name) in error["message"], error  # the refusal names the member


@pytest.mark.parametrize(("label", "ops"), RESULT_WALKS, ids=[label for label, _ in RESULT_WALKS])
async def test_walks_through_results_are_refused_before_anything_runs(
    tmp_path: Path, label: str, ops: list[Any]
) -> None:
    async with vault_server(tmp_path / "db") as (http, engine, _):
        # One applied call first, so that there is state a walk could change.
        assert (await post(http, request([["get", "deposit"], ["call", ["pear", 2], {}]]))).json()[
            "results"
        ][0]["ok"] == 2
        RAN.clear()
        await _refused(http, engine, ops)
        state = await entities_of(engine).state("SecVault", "v")
        assert state.stock == {"apple": 3, "pear": 2} and state.items == ["first"]


async def test_the_same_refusals_hold_in_process(tmp_path: Path) -> None:
    async with Engine(tmp_path / "db").register(SecVault) as engine:
        entities = entities_of(engine)
        sink = entities.SecVault("v").sink
        for _, ops in RESULT_WALKS + [("", o) for o in FIRST_HOPS]:
            hops = tuple(
                tuple(op) if op[0] != "call" else ("call", tuple(op[1]), op[2]) for op in ops
            )
            with pytest.raises(UnknownMethod):
                await entities.call(Stub(sink, "SecVault", "v", hops))
        assert RAN == []
        assert await engine.store.fetch("SELECT * FROM entities") == []


async def test_the_same_refusals_hold_in_plain_mode() -> None:
    from dotdo.entities import reset_plain

    reset_plain()
    vault = SecVault("caller")
    with pytest.raises(UnknownMethod):
        await vault.SecVault("p").state.stock.clear()
    with pytest.raises(UnknownMethod):
        await vault.SecVault("p").describe().leak()
    with pytest.raises(UnknownMethod):
        await vault.SecVault("p").flow()
    assert await vault.SecVault("p").describe().tags[1] == "b"
    assert RAN == ["describe"]


async def test_data_hops_read_fields_and_items(tmp_path: Path) -> None:
    async with vault_server(tmp_path / "db") as (http, _, _server):
        cases: list[tuple[list[Any], Any]] = [
            ([["get", "state"], ["get", "stock"], ["item", "apple"]], 3),
            ([["get", "state"], ["get", "items"], ["item", -1]], "first"),
            ([["get", "describe"], CALL, ["get", "tags"], ["item", 0]], "a"),
            ([["get", "describe"], CALL, ["get", "meta"], ["item", "k"]], 1),
            ([["get", "box"], CALL, ["get", "words"], ["item", 1]], "y"),
            ([["get", "size"]], 1),
            ([["get", "state"], ["get", "anything"], ["item", "x"], ["item", 0]], 1),
        ]
        for n, (ops, expected) in enumerate(cases):
            response = await post(http, request(ops, call=f"read-{n}"))
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["ok"] == expected, ops


async def test_what_annotations_cannot_tell_is_checked_on_the_live_value(tmp_path: Path) -> None:
    # `loose` has no annotations and `anything` is Any: the hop after them is checked by type
    # when the chain runs. The declared method ran, but nothing it did is saved.
    async with vault_server(tmp_path / "db") as (http, engine, _):
        before = await rows(engine)
        for ops in (
            [["get", "loose"], ["call", ["text"], {}], ["get", "upper"]],
            [["get", "loose"], ["call", [{"a": 1}], {}], ["get", "keys"]],
            [["get", "echo"], ["call", [[1, 2]], {}], ["get", "append"]],
            [["get", "state"], ["get", "anything"], ["get", "clear"]],
            [["get", "state"], ["get", "anything"], ["item", "x"], ["get", "pop"]],
        ):
            RAN.clear()
            response = await post(http, request(ops))
            assert response.status_code == 200
            error = response.json()["results"][0]["error"]
            assert error["cls"] == "dotdo.entities:UnknownMethod", error
            assert set(RAN) <= DECLARED
        assert await rows(engine) == before


# --------------------------------------------------------------------- arguments
async def test_arguments_arrive_as_the_declared_types(tmp_path: Path) -> None:
    async with vault_server(tmp_path / "db") as (http, _, _server):
        response = await post(http, request([["get", "deposit"], ["call", ["kiwi", "4"], {}]]))
        assert response.json()["results"][0]["ok"] == 4  # "4" arrived as the int 4
        info = {"label": "given", "tags": [], "meta": {}}
        response = await post(
            http, request([["get", "register"], ["call", [info], {"times": 2}]], call="r")
        )
        assert response.json()["results"][0]["ok"] == "Info x2"  # a dict arrived as an Info


@pytest.mark.parametrize(
    ("args", "kwargs", "text"),
    [
        (["kiwi", "lots"], {}, "'n'"),
        (["kiwi", [1]], {}, "'n'"),
        ([["not", "text"], 1], {}, "'sku'"),
        (["kiwi"], {}, "missing"),
        (["kiwi", 1, 2], {}, "too many"),
        (["kiwi", 1], {"extra": 1}, "extra"),
        (["kiwi"], {"n": 1, "self": 2}, "self"),
        ([{"$t": "model", "cls": f"{Info.__module__}:Info", "v": {}}, 1], {}, "'sku'"),
    ],
)
async def test_arguments_that_do_not_fit_are_refused_before_anything_runs(
    tmp_path: Path, args: list[Any], kwargs: dict[str, Any], text: str
) -> None:
    async with vault_server(tmp_path / "db") as (http, engine, _):
        before = await rows(engine)
        response = await post(http, request([["get", "deposit"], ["call", args, kwargs]]))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "ArgumentError" and "SecVault.deposit" in error["message"]
        assert text in error["message"]
        assert RAN == [] and await rows(engine) == before


async def test_the_client_raises_the_refusals_class(tmp_path: Path) -> None:
    from dotdo.entities import connect, running

    async with Engine(tmp_path / "db").register(SecVault) as engine:
        async with running(create_app(engine, token=TOKEN)) as url:
            async with connect(url, token=TOKEN) as client:
                with pytest.raises(UnknownMethod, match=r"400.*'clear'"):
                    await client.SecVault("v").state.stock.clear()
                with pytest.raises(ArgumentError, match=r"400.*deposit"):
                    await client.SecVault("v").deposit("kiwi", "lots")
                assert await client.SecVault("v").deposit("kiwi", 1) == 1
    assert RAN == ["deposit"]


# ------------------------------------------------------------------------- fuzzing
_NAMES = [
    *sorted(DECLARED),
    *OUT_OF_REACH,
    "stock",
    "items",
    "secret",
    "info",
    "anything",
    "tags",
    "meta",
    "label",
    "words",
    "n",
    "clear",
    "append",
    "get",
    "pop",
    "update",
    "format",
    "leak",
    "loud",
    "wipe",
    "total",
    "open",
    "x",
    "k",
]
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 5)
    | st.sampled_from(["apple", "x", "k", "first", "", "__class__"])
    | st.just({"label": "l", "tags": [], "meta": {}}),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "k", "x"]), inner, max_size=2)
    ),
    max_leaves=5,
)
_HOP = st.one_of(
    st.tuples(st.just("get"), st.sampled_from(_NAMES)).map(list),
    st.tuples(
        st.just("item"),
        st.one_of(st.integers(-2, 3), st.sampled_from(["apple", "k", "x", "stock"])),
    ).map(list),
    st.tuples(
        st.just("call"),
        st.lists(_VALUES, max_size=3),
        st.dictionaries(
            st.sampled_from(["n", "sku", "times", "value", "info", "kind"]), _VALUES, max_size=2
        ),
    ).map(list),
)
_CHAIN = st.one_of(
    st.lists(_HOP, max_size=6),
    # chains that start well more often, so that the later hops get exercised
    st.tuples(st.sampled_from([*sorted(DECLARED), "state"]), st.lists(_HOP, max_size=5)).map(
        lambda t: [["get", t[0]], *t[1]]
    ),
    st.tuples(
        st.sampled_from(sorted(DECLARED)), st.lists(_VALUES, max_size=2), st.lists(_HOP, max_size=4)
    ).map(lambda t: [["get", t[0]], ["call", t[1], {}], *t[2]]),
)


def test_fuzzed_chains_run_only_declared_members(tmp_path: Path) -> None:
    """Random chains through the real ASGI app: no 500, nothing undeclared runs, and the
    stored state changes only when a declared method ran and the call was recorded."""
    loop = asyncio.new_event_loop()
    engine = Engine(tmp_path / "fuzz.db").register(SecVault)
    loop.run_until_complete(engine.open())
    app = create_app(engine, token=TOKEN)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://vault",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    counter = iter(range(10**9))
    seen = {"refused": 0, "applied": 0, "answered": 0}

    async def probe(chain: list[Any]) -> None:
        RAN.clear()
        before = await rows(engine)
        response = await post(http, request(chain, call=f"fuzz-{next(counter)}"))
        assert response.status_code in (200, 400), (response.status_code, response.text)
        assert "Traceback" not in response.text
        own = [name for name in RAN if "." not in name]
        assert set(own) <= DECLARED, (chain, RAN)
        assert not {
            "VaultState.wipe",
            "VaultState.total",
            "Info.leak",
            "Info.loud",
            "Box.open",
        } & set(RAN), (chain, RAN)
        after = await rows(engine)
        if response.status_code == 400:
            seen["refused"] += 1
            assert RAN == [] and after == before, chain
        elif after != before:  # something was saved: a declared method ran and was recorded
            seen["applied"] += 1
            assert own and len(after[1]) == len(before[1]) + 1, (chain, RAN)
        else:
            seen["answered"] += 1

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(_CHAIN)
    def check(chain: list[Any]) -> None:
        loop.run_until_complete(probe(chain))

    try:
        check()
    finally:
        loop.run_until_complete(http.aclose())
        loop.run_until_complete(engine.close())
        loop.close()
    assert all(seen.values()), seen  # refusals, applied calls and other answers all occurred
