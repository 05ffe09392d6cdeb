"""Decoding is a trust boundary: stored rows and network messages are data, never code.

Each test here is an attack a hostile row or peer could try against `dotdo.engine.serde`:
naming a module, a function or a class to rebuild; naming a data class in a module nobody
imported (so that decoding would import it and run its top-level code); rebuilding a
behaviour-carrying class of an imported module; smuggling a BaseException that would stop
the engine; nesting deep enough to blow the stack.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from dotdo.engine import serde
from dotdo.engine.serde import JSONValue, decode, dumps, encode, loads, resolve_class
from dotdo.errors import RemoteError, SerializationError

# ---------------------------------------------------------------- a module with a trap


@pytest.fixture
def trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module on sys.path whose import writes a marker file (it must never be imported)."""
    name = f"dotdo_trap_{tmp_path.name.replace('-', '_')}"
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

            class Boom(Exception):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def test_a_row_naming_an_unimported_module_imports_nothing(trap: tuple[str, Path]) -> None:
    name, marker = trap
    attempts: list[JSONValue] = [
        {"$t": "dataclass", "cls": f"{name}:Data", "v": {"x": 1}},
        {"$t": "model", "cls": f"{name}:Model", "v": {"x": 1}},
        {"$t": "enum", "cls": f"{name}:Color", "v": 1},
        [1, {"k": {"$t": "model", "cls": f"{name}:Model", "v": {}}}],
        {"$t": "tuple", "v": [{"$t": "dataclass", "cls": f"{name}:Data", "v": {}}]},
    ]
    for data in attempts:
        for wire in (False, True):
            with pytest.raises(SerializationError, match="not a data class this app registered"):
                decode(data, wire=wire)
    # An exception naming the module degrades to RemoteError, again without importing it.
    exc = decode({"$t": "exc", "cls": f"{name}:Boom", "msg": "m", "args": ["m"]})
    assert isinstance(exc, RemoteError) and exc.type_name == f"{name}:Boom"
    assert name not in sys.modules
    assert not marker.exists()


@pytest.mark.parametrize(
    "data",
    [
        {"$t": "module", "v": "os"},
        {"$t": "module", "v": "subprocess"},
        {"$t": "func", "cls": "os:system"},
        {"$t": "func", "cls": "builtins:exec"},
        {"$t": "func", "cls": "builtins:eval"},
        {"$t": "class", "cls": "subprocess:Popen"},
        {"$t": "class", "cls": "builtins:type"},
        {"$t": "pickle", "v": "gASVAAAAAAAAAACMAm9zlIwGc3lzdGVtlJOULg=="},
        {"$t": ["list"], "v": 1},
        {"$t": None, "v": 1},
        [{"a": {"$t": "func", "cls": "os:system"}}],
        {"$t": "dict", "v": [["k", {"$t": "module", "v": "shutil"}]]},
    ],
    ids=lambda d: json.dumps(d)[:50],
)
def test_code_kinds_are_refused(data: JSONValue) -> None:
    before = set(sys.modules)
    with pytest.raises(SerializationError, match="unknown stored kind"):
        decode(data)
    with pytest.raises(SerializationError, match="unknown stored kind"):
        decode(data, wire=True)
    assert set(sys.modules) == before


@pytest.mark.parametrize(
    "path, kind",
    [
        ("subprocess:Popen", "dataclass"),
        ("subprocess:CompletedProcess", "dataclass"),
        ("collections:OrderedDict", "model"),
        ("pathlib:Path", "dataclass"),
        ("os:_wrap_close", "dataclass"),
        ("functools:partial", "dataclass"),
        ("pydantic:BaseModel", "model"),
        ("pydantic_settings:BaseSettings", "model"),
        ("enum:Enum", "enum"),
        ("http:HTTPStatus", "enum"),
        ("dotdo.engine.serde:_Unstorable", "dataclass"),
        ("builtins:object", "dataclass"),
    ],
)
def test_classes_of_imported_modules_outside_the_app_are_refused(path: str, kind: str) -> None:
    data: JSONValue = {"$t": kind, "cls": path, "v": {}}
    for wire in (False, True):
        with pytest.raises(SerializationError):
            decode(data, wire=wire)


@pytest.mark.parametrize(
    "path",
    [
        "builtins:KeyboardInterrupt",
        "builtins:SystemExit",
        "builtins:GeneratorExit",
        "builtins:BaseException",
        "asyncio.exceptions:CancelledError",
        "asyncio:CancelledError",
        "dotdo.testing:SimulatedCrash",
        "builtins:BaseExceptionGroup",
    ],
)
def test_exceptions_outside_exception_never_come_back_as_themselves(path: str) -> None:
    for wire in (False, True):
        value = decode({"$t": "exc", "cls": path, "msg": "stop", "args": ["stop"]}, wire=wire)
        assert type(value) is RemoteError
        assert value.type_name == path
        assert isinstance(value, Exception)


def test_a_real_base_exception_round_trips_as_remote_error() -> None:
    for error in (KeyboardInterrupt("k"), SystemExit(3), GeneratorExit()):
        value = loads(dumps(error))
        assert type(value) is RemoteError
        assert value.type_name == f"builtins:{type(error).__name__}"


def test_builtin_and_dotdo_errors_still_rebuild() -> None:
    assert type(decode({"$t": "exc", "cls": "builtins:ValueError", "msg": "x", "args": ["x"]})) is (
        ValueError
    )
    value = decode({"$t": "exc", "cls": "dotdo.errors:RunNotFound", "msg": "x", "args": ["x"]})
    from dotdo.errors import RunNotFound

    assert type(value) is RunNotFound


def test_a_row_with_a_non_string_class_or_fields_is_a_clear_error() -> None:
    for data in (
        {"$t": "model", "cls": 3, "v": {}},
        {"$t": "dataclass", "cls": ["a"], "v": {}},
        {"$t": "exc", "cls": None, "msg": "m", "args": []},
        {"$t": "dataclass", "cls": "dotdo.engine.models:Approval", "v": []},
        {"$t": "tuple"},
        {"$t": "timedelta", "v": "soon"},
        {"$t": "bytes", "v": "!!!"},
    ):
        with pytest.raises(SerializationError):
            decode(data)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- encoding side


def _module_function() -> None:
    return None


@pytest.mark.parametrize(
    "value",
    [json, json.dumps, _module_function, len, print, "x".upper, Path, int, type, lambda: 1],
    ids=lambda v: getattr(v, "__qualname__", type(v).__name__),
)
def test_code_cannot_be_stored(value: object) -> None:
    with pytest.raises(SerializationError, match="cannot store"):
        encode(value)
    with pytest.raises(SerializationError, match=r"at \$\[1\]"):
        encode([1, value])


# ------------------------------------------------------------------ trust by package


@dataclass
class Shipment:
    weight: Decimal


class Tier(Enum):
    GOLD = "gold"


class Receipt(BaseModel):
    total: Decimal
    tier: Tier
    shipments: list[Shipment]


def test_register_types_walks_annotations_into_fields() -> None:
    serde.register_types(dict[str, list[Receipt]] | None)
    for cls in (Receipt, Tier, Shipment):
        assert resolve_class(serde.class_path(cls), wire=True) is cls


def test_trusted_package_classes_decode_from_rows_but_not_from_the_wire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"dotdo_app_{tmp_path.name.replace('-', '_')}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "models.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass\nclass Parcel:\n    n: int = 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module(f"{package}.models")
    try:
        data: JSONValue = {"$t": "dataclass", "cls": f"{package}.models:Parcel", "v": {"n": 2}}
        with pytest.raises(SerializationError):
            decode(data)  # not trusted yet
        serde.trust_package(f"{package}.workflows")
        parcel = decode(data)
        assert type(parcel) is module.Parcel and parcel.n == 2
        with pytest.raises(SerializationError):
            decode({"$t": "dataclass", "cls": f"{package}.models:Parcel2", "v": {}})
        # a private name inside a trusted package is still refused
        with pytest.raises(SerializationError):
            decode({"$t": "dataclass", "cls": f"{package}.models:_Hidden", "v": {}})
        serde._CLASSES.pop(f"{package}.models:Parcel", None)
        with pytest.raises(SerializationError):
            decode(data, wire=True)
    finally:
        serde._TRUSTED_PACKAGES.discard(package)
        serde._CLASSES.pop(f"{package}.models:Parcel", None)
        for name in [m for m in sys.modules if m.startswith(package)]:
            del sys.modules[name]


# ------------------------------------------------------------------------ deep nesting


@pytest.mark.parametrize("depth", [2_000, 30_000, 100_000])
def test_deeply_nested_text_is_a_serialization_error(depth: int) -> None:
    for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        with pytest.raises(SerializationError, match="nested too deeply"):
            loads(text)


def test_deeply_nested_data_is_a_serialization_error() -> None:
    data: Any = 1
    for _ in range(50_000):
        data = {"$t": "tuple", "v": [data]}
    with pytest.raises(SerializationError, match="nested too deeply"):
        decode(data)


# ---------------------------------------------------------------------------- fuzzing

_DANGEROUS = [
    "os:system",
    "subprocess:Popen",
    "builtins:eval",
    "builtins:KeyboardInterrupt",
    "asyncio:CancelledError",
    "importlib:import_module",
    "dotdo_never_imported_module:Thing",
    "pathlib:Path",
    "dotdo.engine.serde:_Unstorable",
    f"{__name__}:Shipment",
    "builtins:ValueError",
]
_KINDS = ["model", "dataclass", "enum", "exc", "func", "class", "module", "tuple", "set", "dict"]
_ALLOWED_TYPES = (
    type(None),
    bool,
    int,
    float,
    str,
    list,
    dict,
    tuple,
    set,
    frozenset,
    bytes,
    Decimal,
    Shipment,
    ValueError,
    RemoteError,
)

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
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
    max_leaves=12,
)


def _only_data(value: object) -> bool:
    if isinstance(value, list | tuple | set | frozenset):
        return all(_only_data(v) for v in value)
    if isinstance(value, dict):
        return all(_only_data(k) and _only_data(v) for k, v in value.items())
    return isinstance(value, _ALLOWED_TYPES)


@settings(max_examples=300, deadline=None)
@given(_json, st.booleans())
def test_fuzzed_tagged_values_decode_only_to_data(data: JSONValue, wire: bool) -> None:
    serde.register_types(Shipment)
    before = set(sys.modules)
    try:
        value = decode(data, wire=wire)
    except SerializationError:
        pass
    else:
        assert _only_data(value), value
        assert not callable(value) or isinstance(value, type(None))
    assert set(sys.modules) == before
