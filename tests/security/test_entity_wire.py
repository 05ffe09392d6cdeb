"""What crosses the entity boundary is data, both ways (findings 1, 2 and 8).

Requests: an argument tagged as a function, a class, a module or an instance of a class this
server never registered is refused (400) without importing or running anything; import
references must be well-formed; hostile bodies (100k-deep JSON, huge numbers, non-UTF-8,
wrong types everywhere) answer 4xx with a JSON message, never 500. Answers: an error record
naming KeyboardInterrupt, SystemExit, CancelledError, GeneratorExit, a simulated crash or an
unknown class comes back as `RemoteError`, so the caller's run fails or retries under its
step policy: the engine does not crash and the run is not stranded `running` with its lease.
A callee method that raises such a BaseException itself is answered the same way.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _wire_support import ECHOED, RAISABLE, RAN, TOKEN, SecVault, post, request, rows, vault_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dotdo import DO, Engine, PermanentError, RunFailed, workflow
from dotdo.engine import serde
from dotdo.entities import EntityError, ProtocolError, create_app, entities_of, remote, running
from dotdo.entities.runtime import _answer
from dotdo.entities.server import check_bind
from dotdo.entities.transport import RPC_PATH
from dotdo.errors import RemoteError
from dotdo.testing import SimulatedCrash, VirtualClock


@pytest.fixture(autouse=True)
def _clean() -> None:
    RAN.clear()
    ECHOED.clear()


@pytest.fixture
def trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module on sys.path whose import writes a marker file (it must never be imported)."""
    name = f"dotdo_wire_trap_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported.marker"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from dataclasses import dataclass
            from pydantic import BaseModel
            open({str(marker)!r}, "w").write("imported")

            @dataclass
            class Data:
                x: int = 0

            class Model(BaseModel):
                x: int = 0
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def echo(value: Any) -> list[Any]:
    return [["get", "echo"], ["call", [value], {}]]


# ====================================================================== requests
CODE_TAGS: list[Any] = [
    {"$t": "func", "cls": "os:system"},
    {"$t": "func", "cls": "builtins:exec"},
    {"$t": "class", "cls": "subprocess:Popen"},
    {"$t": "class", "cls": "builtins:type"},
    {"$t": "module", "v": "os"},
    {"$t": "module", "v": "subprocess"},
    {"$t": "pickle", "v": "gASVAAAAAAAAAACMAm9zlIwGc3lzdGVtlJOULg=="},
    {"$t": "dataclass", "cls": "subprocess:CompletedProcess", "v": {"args": "ls", "returncode": 0}},
    {"$t": "dataclass", "cls": "functools:partial", "v": {}},
    {"$t": "model", "cls": "pydantic:BaseModel", "v": {}},
    {"$t": "enum", "cls": "http:HTTPStatus", "v": 200},
    {"$t": "dataclass", "cls": "dotdo.entities.messages:Item", "v": {}},
    {"$t": "dataclass", "cls": "pathlib:Path", "v": {}},
    [1, {"k": {"$t": "func", "cls": "os:system"}}],
    {"$t": "tuple", "v": [{"$t": "module", "v": "shutil"}]},
    {"$t": "dict", "v": [[{"$t": "class", "cls": "builtins:type"}, 1]]},
]


@pytest.mark.parametrize("value", CODE_TAGS, ids=lambda v: json.dumps(v)[:60])
async def test_arguments_naming_code_or_foreign_classes_are_refused(
    tmp_path: Path, value: Any
) -> None:
    before = set(sys.modules)
    async with vault_server(tmp_path / "db") as (http, engine, _):
        for ops in (
            echo(value),
            [["get", "echo"], ["call", [], {"value": value}]],
            [["get", "state"], ["get", "stock"], ["item", value]],
        ):
            response = await post(http, request(ops))
            assert response.status_code == 400, response.text
            assert response.json()["error"]["type"] == "ProtocolError"
        assert RAN == [] and await rows(engine) == ([], [])
    assert set(sys.modules) - before <= {"dotdo.testing"}  # decoding imported nothing


async def test_classes_of_an_unimported_module_are_refused_without_importing_it(
    tmp_path: Path, trap: tuple[str, Path]
) -> None:
    name, marker = trap
    async with vault_server(tmp_path / "db") as (http, _, _server):
        for value in (
            {"$t": "dataclass", "cls": f"{name}:Data", "v": {"x": 1}},
            {"$t": "model", "cls": f"{name}:Model", "v": {"x": 1}},
            {"$t": "enum", "cls": f"{name}:Color", "v": 1},
            {"$t": "module", "v": name},
        ):
            response = await post(http, request(echo(value)))
            assert response.status_code == 400, response.text
        # An exception naming it is a value: it degrades to RemoteError, still not imported.
        response = await post(
            http, request(echo({"$t": "exc", "cls": f"{name}:Boom", "msg": "m", "args": ["m"]}))
        )
        assert response.status_code == 200
    assert name not in sys.modules and not marker.exists()
    assert [type(v) for v in ECHOED] == [RemoteError]


@pytest.mark.parametrize(
    "path",
    [
        "builtins:KeyboardInterrupt",
        "builtins:SystemExit",
        "builtins:GeneratorExit",
        "asyncio.exceptions:CancelledError",
        "dotdo.testing:SimulatedCrash",
        "builtins:BaseException",
        "os:system",
    ],
)
async def test_exception_arguments_arrive_as_plain_errors(tmp_path: Path, path: str) -> None:
    async with vault_server(tmp_path / "db") as (http, _, _server):
        value = {"$t": "exc", "cls": path, "msg": "stop", "args": ["stop"]}
        response = await post(http, request(echo(value)))
        assert response.status_code == 200
        (received,) = ECHOED
        assert type(received) is RemoteError and received.type_name == path


IMPORT = "dotdo.entities.messages:ImportRef"


def ref(fields: Any) -> dict[str, Any]:
    return {"$t": "dataclass", "cls": IMPORT, "v": fields}


def two(second_ops: list[Any]) -> dict[str, Any]:
    first = {"id": 1, "call": "c1", "target": ["SecVault", "a"], "ops": [["get", "size"]]}
    second = {"id": 2, "call": "c2", "target": ["SecVault", "b"], "ops": second_ops}
    return {"v": 1, "push": [first, second], "pull": [2]}


MALFORMED_REFS: list[tuple[str, dict[str, Any]]] = [
    ("string-id", two(echo(ref({"id": "1"})))),
    ("list-id", two(echo(ref({"id": [1]})))),
    ("float-id", two(echo(ref({"id": 1.0})))),
    ("bool-id", two(echo(ref({"id": True})))),
    ("null-id", two(echo(ref({"id": None})))),
    ("no-id", two(echo(ref({})))),
    ("extra-field", two(echo(ref({"id": 1, "x": 2})))),
    ("fields-not-object", two(echo(ref([1])))),
    ("later-import", two(echo(ref({"id": 3})))),
    ("itself", two(echo(ref({"id": 2})))),
    ("in-a-set", two(echo({"$t": "set", "v": [ref({"id": 1})]}))),
    ("as-item-key", two([["get", "state"], ["get", "stock"], ["item", ref({"id": 1})]])),
    ("as-dict-key", two(echo({"$t": "dict", "v": [[ref({"id": 1}), 1]]}))),
    ("nested-in-kwargs", two([["get", "echo"], ["call", [], {"value": [ref({"id": 9})]}]])),
]


@pytest.mark.parametrize(("case", "body"), MALFORMED_REFS, ids=[c for c, _ in MALFORMED_REFS])
async def test_malformed_import_references_are_refused(
    tmp_path: Path, case: str, body: dict[str, Any]
) -> None:
    async with vault_server(tmp_path / "db") as (http, engine, _):
        response = await post(http, body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] in ("ProtocolError", "ArgumentError")
        assert RAN == [] and await rows(engine) == ([], [])


async def test_a_well_formed_import_reference_still_pipelines(tmp_path: Path) -> None:
    async with vault_server(tmp_path / "db") as (http, _, _server):
        response = await post(http, two(echo(ref({"id": 1}))))
        assert response.json()["results"] == [{"id": 2, "ok": 1}]


def _deep(depth: int, *, obj: bool = False) -> bytes:
    if obj:
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


def _with_value(raw: str) -> bytes:
    return (
        '{"v":1,"push":[{"id":1,"call":"c","target":["SecVault","v"],'
        '"ops":[["get","echo"],["call",[' + raw + '],{}]]}],"pull":[1]}'
    ).encode()


HOSTILE: list[tuple[str, bytes | Any]] = [
    ("100k-deep-list", _deep(100_000)),
    ("100k-deep-object", _deep(100_000, obj=True)),
    ("5k-deep-list", _deep(5_000)),
    ("deep-argument", _with_value("[" * 500 + "]" * 500)),
    ("huge-int", _with_value("9" * 5000)),
    (
        "huge-int-id",
        b'{"v":1,"push":[{"id":'
        + b"9" * 5000
        + b',"call":"c","target":["SecVault","v"],"ops":[]}],"pull":[]}',
    ),
    (
        "non-utf8",
        b'{"v":1,"push":[{"id":1,"call":"\xff\xfe","target":["SecVault","v"],"ops":[]}],"pull":[1]}',
    ),
    (
        "latin1",
        _with_value('"caf\xe9"'.encode("latin-1").decode("latin-1")).replace(b"\xc3\xa9", b"\xe9"),
    ),
    ("lone-surrogate-arg", _with_value('"\\ud800"')),
    (
        "lone-surrogate-call-id",
        b'{"v":1,"push":[{"id":1,"call":"\\udfff","target":["SecVault","v"],"ops":[]}],"pull":[1]}',
    ),
    ("lone-surrogate-key", _with_value('{"\\udc00":1}')),
    ("empty", b""),
    ("null", b"null"),
    ("string", b'"hello"'),
    ("nan", b"NaN"),
    ("version-string", {"v": "1", "push": [], "pull": []}),
    ("version-true", {"v": True, "push": [], "pull": []}),
    ("push-object", {"v": 1, "push": {}, "pull": []}),
    ("pull-bool", {**request([["get", "size"]]), "pull": [True]}),
    (
        "id-bool",
        {
            "v": 1,
            "push": [{"id": True, "call": "c", "target": ["SecVault", "v"], "ops": []}],
            "pull": [1],
        },
    ),
    (
        "id-float",
        {
            "v": 1,
            "push": [{"id": 1.0, "call": "c", "target": ["SecVault", "v"], "ops": []}],
            "pull": [1],
        },
    ),
    (
        "target-ints",
        {"v": 1, "push": [{"id": 1, "call": "c", "target": [1, 2], "ops": []}], "pull": [1]},
    ),
    ("target-class-not-identifier", request([], target=("Sec Vault", "v"))),
    ("target-huge-key", request([], target=("SecVault", "k" * 5000))),
    ("call-id-huge", request([], call="c" * 5000)),
    (
        "call-id-number",
        {
            "v": 1,
            "push": [{"id": 1, "call": 7, "target": ["SecVault", "v"], "ops": []}],
            "pull": [1],
        },
    ),
    (
        "ops-string",
        {
            "v": 1,
            "push": [{"id": 1, "call": "c", "target": ["SecVault", "v"], "ops": "get"}],
            "pull": [1],
        },
    ),
    ("op-empty", request([[]])),
    ("op-number-kind", request([[1, 2]])),
    ("op-object-kind", request([[{"a": [1] * 1000}, 2]])),
    ("get-number", request([["get", 5]])),
    ("get-three", request([["get", "size", "x"]])),
    ("get-not-identifier", request([["get", "a-b"]])),
    ("call-args-object", request([["get", "echo"], ["call", {"a": 1}, {}]])),
    ("call-kwargs-list", request([["get", "echo"], ["call", [], [1]]])),
    ("call-kwargs-bad-name", request([["get", "echo"], ["call", [], {"a b": 1}]])),
    (
        "call-kwargs-tagged-keys",
        request([["get", "echo"], ["call", [], {"$t": "dict", "v": [[1, 2]]}]]),
    ),
    ("item-list-key", request([["get", "state"], ["get", "stock"], ["item", [1]]])),
    (
        "item-set-key",
        request([["get", "state"], ["get", "stock"], ["item", {"$t": "frozenset", "v": [1]}]]),
    ),
    ("too-many-hops", request([["get", "state"]] + [["get", "stock"]] * 70)),
    (
        "too-many-chains",
        {
            "v": 1,
            "push": [
                {"id": i, "call": f"c{i}", "target": ["SecVault", "v"], "ops": []}
                for i in range(1001)
            ],
            "pull": [],
        },
    ),
    ("unknown-tag", request(echo({"$t": "martian"}))),
    ("tag-not-string", request(echo({"$t": ["list"], "v": 1}))),
    ("timedelta-overflow", request(echo({"$t": "timedelta", "v": [10**18, 0, 0]}))),
    ("timedelta-text", request(echo({"$t": "timedelta", "v": "soon"}))),
    ("range-text", request(echo({"$t": "range", "v": ["a"]}))),
    ("decimal-garbage", request(echo({"$t": "decimal", "v": "nanx"}))),
    ("datetime-number", request(echo({"$t": "datetime", "v": 5}))),
    ("bytes-garbage", request(echo({"$t": "bytes", "v": "!!!"}))),
    ("set-of-lists", request(echo({"$t": "set", "v": [[1]]}))),
    ("dict-list-keys", request(echo({"$t": "dict", "v": [[[1], 2]]}))),
    ("float-text", request(echo({"$t": "float", "v": "lots"}))),
    ("path-number", request(echo({"$t": "path", "v": 5}))),
    ("exc-no-class", request(echo({"$t": "exc", "cls": None, "msg": "m", "args": []}))),
    ("model-no-fields", request(echo({"$t": "model", "cls": 5, "v": {}}))),
    ("huge-float-for-int", request([["get", "deposit"], ["call", ["a", 1e308], {}]])),
    (
        "infinity-for-int",
        _with_value("1e999").replace(b'"echo"', b'"deposit"').replace(b"[1e999]", b'["a", 1e999]'),
    ),
]


@pytest.mark.parametrize(("case", "body"), HOSTILE, ids=[c for c, _ in HOSTILE])
async def test_hostile_bodies_are_4xx_with_a_json_message(
    tmp_path: Path, case: str, body: bytes | Any
) -> None:
    async with vault_server(tmp_path / "db") as (http, engine, server):
        response = await post(http, body)
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
        error = response.json()["error"]
        assert isinstance(error["type"], str) and isinstance(error["message"], str)
        assert len(error["message"]) < 3000 and "Traceback" not in response.text
        assert RAN == [] and await rows(engine) == ([], [])
        assert server.rejected == 1
        # and the server still answers
        ok = await post(http, request([["get", "size"]], call="after"))
        assert ok.json()["results"][0]["ok"] == 1


async def test_wrong_paths_and_methods_answer_json(tmp_path: Path) -> None:
    async with vault_server(tmp_path / "db") as (http, _, _server):
        for method, path, status in (
            ("GET", RPC_PATH, 405),
            ("PUT", RPC_PATH, 405),
            ("POST", "/dotdo/elsewhere", 404),
            ("GET", "/", 404),
        ):
            response = await http.request(method, path)
            assert response.status_code == status
            assert isinstance(response.json()["error"]["message"], str)


# ------------------------------------------------------------------------ fuzzing
_DANGEROUS = [
    "os:system",
    "subprocess:Popen",
    "builtins:eval",
    "builtins:KeyboardInterrupt",
    "builtins:ValueError",
    "asyncio:CancelledError",
    "importlib:import_module",
    "dotdo_never_imported_module:Thing",
    "pathlib:Path",
    IMPORT,
    f"{SecVault.__module__}:Info",
    f"{SecVault.__module__}:VaultState",
]
_KINDS = [
    "model",
    "dataclass",
    "enum",
    "exc",
    "func",
    "class",
    "module",
    "tuple",
    "set",
    "frozenset",
    "dict",
    "bytes",
    "float",
    "decimal",
    "uuid",
    "datetime",
    "range",
]
_WIRE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.builds(
            lambda kind, cls, v, msg: {"$t": kind, "cls": cls, "v": v, "msg": msg, "args": v},
            st.sampled_from(_KINDS),
            st.sampled_from(_DANGEROUS),
            inner,
            st.text(max_size=3),
        )
    ),
    max_leaves=10,
)


def _only_data(value: object) -> bool:
    from dataclasses import is_dataclass
    from datetime import date, datetime, time, timedelta
    from decimal import Decimal
    from enum import Enum
    from uuid import UUID

    from pydantic import BaseModel

    if isinstance(value, list | tuple | set | frozenset):
        return all(_only_data(v) for v in value)
    if isinstance(value, dict):
        return all(_only_data(k) and _only_data(v) for k, v in value.items())
    if isinstance(value, BaseModel | Enum) or (is_dataclass(value) and not isinstance(value, type)):
        return type(value).__module__ in (SecVault.__module__, "dotdo.entities.messages")
    if isinstance(value, BaseException):
        return isinstance(value, Exception) and type(value).__module__ in (
            "builtins",
            "dotdo",  # dotdo's errors name their public homes
            "dotdo.entities",
        )
    return isinstance(
        value,
        type(None)
        | bool
        | int
        | float
        | str
        | bytes
        | Decimal
        | UUID
        | datetime
        | date
        | time
        | timedelta
        | range,
    )


def test_fuzzed_wire_values_decode_only_to_data(tmp_path: Path) -> None:
    """Random tagged values as arguments, through the real ASGI app: never a 500, nothing
    imported, and what the method receives is only data of allowed types."""
    loop = asyncio.new_event_loop()
    engine = Engine(tmp_path / "fuzz.db").register(SecVault)
    loop.run_until_complete(engine.open())
    app = create_app(engine, token=TOKEN)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://vault",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    loop.run_until_complete(post(http, request([["get", "size"]])))  # warm up
    before = set(sys.modules)
    seen = {200: 0, 400: 0}

    async def probe(value: Any, keyword: bool) -> None:
        ECHOED.clear()
        RAN.clear()
        call = ["call", [], {"value": value}] if keyword else ["call", [value], {}]
        response = await post(
            http, request([["get", "echo"], call], call=f"v{id(value)}-{len(str(value))}")
        )
        assert response.status_code in (200, 400, 409), response.text
        seen[200 if response.status_code == 200 else 400] += 1
        for got in ECHOED:
            assert _only_data(got), got
            assert not callable(got)
        if response.status_code != 200:
            assert RAN == []

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(_WIRE, st.booleans())
    def check(value: Any, keyword: bool) -> None:
        loop.run_until_complete(probe(value, keyword))

    try:
        check()
    finally:
        loop.run_until_complete(http.aclose())
        loop.run_until_complete(engine.close())
        loop.close()
    assert {m for m in set(sys.modules) - before if not m.startswith("hypothesis")} == set()
    assert seen[200] and seen[400]


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _either(good: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(good), _ANY_JSON)


_ENVELOPE = st.builds(
    lambda v, ident, call, target, ops, pull, drop: {
        key: value
        for key, value in (
            ("v", v),
            ("push", [{"id": ident, "call": call, "target": target, "ops": ops}]),
            ("pull", pull),
        )
        if key != drop
    },
    _either(1),
    _either(1),
    _either("c"),
    _either(["SecVault", "v"]),
    _either([["get", "deposit"], ["call", ["a", 1], {}]]) | st.lists(_ANY_JSON, max_size=3),
    _either([1]),
    st.sampled_from(["", "v", "push", "pull"]),
)


def test_fuzzed_envelopes_are_answered_or_refused_never_500(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    engine = Engine(tmp_path / "fuzz.db").register(SecVault)
    loop.run_until_complete(engine.open())
    app = create_app(engine, token=TOKEN)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://vault",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    async def probe(body: Any) -> None:
        RAN.clear()
        response = await post(http, body)
        assert response.status_code in (200, 400, 409), (response.status_code, response.text)
        if response.status_code != 200:
            error = response.json()["error"]
            assert isinstance(error["type"], str) and isinstance(error["message"], str)
            assert RAN == []
        assert set(RAN) <= {"deposit"}

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(_ENVELOPE | _ANY_JSON | st.binary(max_size=40))
    def check(body: Any) -> None:
        loop.run_until_complete(probe(body))

    try:
        check()
    finally:
        loop.run_until_complete(http.aclose())
        loop.run_until_complete(engine.close())
        loop.close()


# ======================================================================= answers
@pytest.mark.parametrize(
    "record",
    [
        {"$t": "exc", "cls": "builtins:KeyboardInterrupt", "msg": "k", "args": ["k"]},
        {"$t": "exc", "cls": "builtins:SystemExit", "msg": "3", "args": [3]},
        {"$t": "exc", "cls": "builtins:GeneratorExit", "msg": "", "args": []},
        {"$t": "exc", "cls": "asyncio.exceptions:CancelledError", "msg": "", "args": []},
        {"$t": "exc", "cls": "dotdo.testing:SimulatedCrash", "msg": "die", "args": ["die"]},
        {"$t": "exc", "cls": "builtins:BaseException", "msg": "b", "args": ["b"]},
        {"$t": "exc", "cls": "builtins:BaseExceptionGroup", "msg": "g", "args": ["g", []]},
        {"$t": "exc", "cls": "never_imported_module:Boom", "msg": "b", "args": ["b"]},
        {"$t": "exc", "cls": "os:system", "msg": "b", "args": ["b"]},
        {"$t": "module", "v": "os"},
        {"$t": "func", "cls": "os:system"},
        {"$t": "martian"},
        {"$t": "model", "cls": "pydantic:BaseModel", "v": {}},
        5,
        None,
        "just text",
        [1, 2],
    ],
    ids=lambda r: json.dumps(r)[:50],
)
def test_an_error_answer_never_raises_a_base_exception(record: Any) -> None:
    before = set(sys.modules)
    with pytest.raises(Exception) as raised:
        _answer({1: (False, record)}, 1)
    assert isinstance(raised.value, Exception)
    assert type(raised.value) is RemoteError
    assert set(sys.modules) == before


@pytest.mark.parametrize(
    "value",
    [
        {"$t": "module", "v": "os"},
        {"$t": "func", "cls": "builtins:exec"},
        {"$t": "class", "cls": "subprocess:Popen"},
        {"$t": "model", "cls": "never_imported_module:Model", "v": {}},
        {"$t": "dataclass", "cls": "subprocess:CompletedProcess", "v": {}},
    ],
    ids=lambda r: json.dumps(r)[:50],
)
def test_an_ok_answer_with_code_is_a_protocol_error(value: Any) -> None:
    with pytest.raises(ProtocolError, match="cannot be decoded"):
        _answer({1: (True, value)}, 1)


def test_registered_errors_come_back_as_themselves() -> None:
    with pytest.raises(ValueError, match="v"):
        _answer(
            {1: (False, {"$t": "exc", "cls": "builtins:ValueError", "msg": "v", "args": ["v"]})}, 1
        )
    from dotdo.entities import UnknownMethod

    record = serde.encode(UnknownMethod("gone"))
    with pytest.raises(UnknownMethod, match="gone"):
        _answer({1: (False, record)}, 1)


class FakeCallee:
    """A `dotdo serve` look-alike that answers whatever the test sets."""

    def __init__(self) -> None:
        self.answer: dict[str, Any] = {"ok": 1}
        self.requests = 0

    def app(self) -> Starlette:
        async def rpc(request: Request) -> Response:
            body = await request.json()
            self.requests += 1
            if "raw" in self.answer:
                return Response(self.answer["raw"], media_type="application/json")
            return JSONResponse({"v": 1, "results": [{"id": body["pull"][0], **self.answer}]})

        return Starlette(routes=[Route(RPC_PATH, rpc, methods=["POST"])])


class Asker(DO):
    @workflow
    async def ask(self, key: str) -> Any:
        return await self.FarAway(key).go()

    @workflow
    async def local(self, kind: str) -> Any:
        return await self.SecVault("v").fail(kind)

    @workflow
    async def size(self) -> int:
        return await self.SecVault("v").size  # type: ignore[no-any-return]


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[FakeCallee, Engine, VirtualClock]]:
    callee = FakeCallee()
    clock = VirtualClock()
    async with running(callee.app()) as url:
        engine = Engine(tmp_path / "caller.db", clock=clock).register(Asker, SecVault)
        remote(engine, "FarAway", url, token=TOKEN)
        async with engine:
            yield callee, engine, clock


async def _settled(engine: Engine, clock: VirtualClock, run_id: str) -> Any:
    """Drive virtual time until the run has finished; returns its runs row."""
    for _ in range(400):
        row = await engine.store.fetch_one(
            "SELECT status, lease_owner FROM runs WHERE run_id = ?", (run_id,)
        )
        if row is not None and row["status"] in ("completed", "failed"):
            return row
        clock.advance(1.0)
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} did not finish: {dict(row) if row else None}")


async def _engine_still_works(engine: Engine) -> None:
    assert engine._crashed is None
    handle = await engine.start(Asker.size)
    assert await handle.result(timeout=5) == 1


HOSTILE_ERRORS = [
    "builtins:KeyboardInterrupt",
    "builtins:SystemExit",
    "builtins:GeneratorExit",
    "asyncio.exceptions:CancelledError",
    "asyncio:CancelledError",
    "dotdo.testing:SimulatedCrash",
    "builtins:BaseException",
    "never_imported_module:Boom",
]


@pytest.mark.parametrize("path", HOSTILE_ERRORS)
async def test_a_callee_cannot_crash_or_strand_its_caller(
    fake: tuple[FakeCallee, Engine, VirtualClock], path: str
) -> None:
    callee, engine, clock = fake
    callee.answer = {"error": {"$t": "exc", "cls": path, "msg": "stop", "args": ["stop"]}}
    handle = await engine.start(Asker.ask, "x", run_id="victim")
    row = await _settled(engine, clock, "victim")
    assert row["status"] == "failed" and row["lease_owner"] is None
    with pytest.raises(RunFailed) as failed:
        await handle.result(timeout=5)
    assert type(failed.value.error) is RemoteError and failed.value.error.type_name == path
    (record,) = await engine.journal("victim")
    assert record.attempts == 4 and callee.requests == 4  # retried under the default policy
    await _engine_still_works(engine)


async def test_an_unknown_permanent_error_still_fails_at_once(
    fake: tuple[FakeCallee, Engine, VirtualClock],
) -> None:
    from dotdo.entities import PermanentRemoteError
    from dotdo.entities.messages import encode_error

    class OutOfStock(PermanentError):
        pass

    record = encode_error(OutOfStock("none left"))
    assert isinstance(record, dict) and record["permanent"] is True
    callee, engine, clock = fake
    # The caller does not have the callee's class: RemoteError, marked permanent.
    callee.answer = {"error": {**record, "cls": "never_imported_module:OutOfStock"}}
    await engine.start(Asker.ask, "x", run_id="victim")
    row = await _settled(engine, clock, "victim")
    assert row["status"] == "failed" and row["lease_owner"] is None
    (journal,) = await engine.journal("victim")
    assert journal.attempts == 1 and callee.requests == 1
    with pytest.raises(RunFailed) as failed:
        await engine.handle("victim").result(timeout=5)
    error = failed.value.error
    assert type(error) is PermanentRemoteError and error.type_name.endswith(":OutOfStock")
    assert str(error) == "never_imported_module:OutOfStock: none left"


@pytest.mark.parametrize(
    ("answer", "permanent"),
    [
        ({"ok": {"$t": "module", "v": "os"}}, True),
        ({"ok": {"$t": "func", "cls": "os:system"}}, True),
        ({"ok": {"$t": "model", "cls": "never_imported_module:M", "v": {}}}, True),
        ({"error": {"$t": "module", "v": "subprocess"}}, False),
        ({"error": 5}, False),
        ({"raw": b"[" * 100_000 + b"]" * 100_000}, False),
        ({"raw": b"\xff\xfe"}, False),
        ({"raw": b'{"v": 1, "results": [{"id": 1}]}'}, True),
    ],
    ids=lambda a: str(a)[:40],
)
async def test_unreadable_answers_fail_the_step_cleanly(
    fake: tuple[FakeCallee, Engine, VirtualClock], answer: dict[str, Any], permanent: bool
) -> None:
    before = set(sys.modules)
    callee, engine, clock = fake
    callee.answer = answer
    await engine.start(Asker.ask, "x", run_id="victim")
    row = await _settled(engine, clock, "victim")
    assert row["status"] == "failed" and row["lease_owner"] is None
    (record,) = await engine.journal("victim")
    assert record.attempts == (1 if permanent else 4)
    assert set(sys.modules) == before
    await _engine_still_works(engine)


@pytest.mark.parametrize(
    "error",
    [
        KeyboardInterrupt("k"),
        SystemExit(3),
        GeneratorExit(),
        asyncio.CancelledError(),
        SimulatedCrash("die"),
        BaseException("b"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_method_raising_a_base_exception_fails_only_its_call(
    fake: tuple[FakeCallee, Engine, VirtualClock], error: BaseException
) -> None:
    _, engine, clock = fake
    RAISABLE["boom"] = error
    await engine.start(Asker.local, "boom", run_id="victim")
    row = await _settled(engine, clock, "victim")
    assert row["status"] == "failed" and row["lease_owner"] is None
    with pytest.raises(RunFailed) as failed:
        await engine.handle("victim").result(timeout=5)
    assert type(failed.value.error) is RemoteError
    assert failed.value.error.type_name.endswith(type(error).__name__)
    state = await entities_of(engine).state("SecVault", "v")
    assert state.secret == "s3cret"  # the failing call saved nothing
    await _engine_still_works(engine)


async def test_a_served_method_raising_system_exit_leaves_the_server_up(tmp_path: Path) -> None:
    RAISABLE["exit"] = SystemExit(1)
    async with vault_server(tmp_path / "db") as (http, _, _server):
        response = await post(http, request([["get", "fail"], ["call", ["exit"], {}]]))
        assert response.status_code == 200
        assert response.json()["results"][0]["error"]["cls"] == "builtins:SystemExit"
        again = await post(http, request([["get", "size"]], call="again"))
        assert again.json()["results"][0]["ok"] == 1


# ===================================================================== serving
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"])
def test_loopback_needs_only_a_token(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOTDO_TOKEN", raising=False)
    assert check_bind(host, "short") == "short"
    with pytest.raises(EntityError, match="DOTDO_TOKEN"):
        check_bind(host, None)
    with pytest.raises(EntityError, match="DOTDO_TOKEN"):
        check_bind(host, "   ")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "10.0.0.1"])
def test_a_public_address_needs_a_long_token(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOTDO_TOKEN", raising=False)
    for token in (None, "", "short", " " * 20):
        with pytest.raises(EntityError, match="not a loopback address"):
            check_bind(host, token)
    assert check_bind(host, "x" * 16) == "x" * 16
    monkeypatch.setenv("DOTDO_TOKEN", "y" * 32)
    assert check_bind(host, None) == "y" * 32


def test_dotdo_serve_on_a_public_address_without_a_token_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    import dotdo.cli

    monkeypatch.delenv("DOTDO_TOKEN", raising=False)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    runner = CliRunner()
    for args in (
        ["serve", "--app", "_wire_support", "--host", "0.0.0.0"],
        ["serve", "--app", "_wire_support", "--host", "0.0.0.0", "--token", "short"],
    ):
        result = runner.invoke(dotdo.cli.cli, args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output
        assert "Traceback" not in result.output


def test_serve_refuses_before_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    from dotdo.entities import serve

    monkeypatch.delenv("DOTDO_TOKEN", raising=False)
    with pytest.raises(EntityError, match="not a loopback address"):
        serve(["_wire_support"], host="0.0.0.0", port=1, token="short")
