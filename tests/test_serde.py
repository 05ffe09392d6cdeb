"""Round-trip and failure behaviour of dotdo.engine.serde, the JSON codec for stored values."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum, StrEnum
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from dotdo.engine.serde import (
    JSONValue,
    class_path,
    coerce,
    decode,
    dumps,
    encode,
    loads,
    register_types,
    resolve_class,
)
from dotdo.errors import RemoteError, SerializationError


class Color(Enum):
    RED = "red"
    BLUE = (0, 0, 255)


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Mode(StrEnum):
    FAST = "fast"


class Point(BaseModel):
    x: int
    y: int


class Inventory(BaseModel):
    bins: dict[str, list[tuple[int, str]]]
    when: datetime
    where: Point | None = None


@dataclass
class Item:
    name: str
    price: Decimal
    tags: tuple[str, ...] = ()


@dataclass
class Order:
    items: list[Item]
    inventory: Inventory | None = None
    total: int = field(init=False, default=0)


class PairError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class FormattedError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")


def same(a: object, b: object) -> bool:
    """Deep equality that also demands equal types everywhere and treats nan as equal to nan."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and str(a) == str(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return a == b


def roundtrip(value: object) -> object:
    return loads(dumps(value))


# --- every kind ------------------------------------------------------------------------------

KINDS: list[object] = [
    None,
    True,
    0,
    -(2**80),
    1.5,
    -0.0,
    "héllo ✓",
    [1, "a", None],
    {"a": {"b": [1.25]}},
    (1, "a", (2, 3)),
    (),
    {3, 1, 2},
    {1, "a", (2, 3)},
    frozenset({"b", "a"}),
    frozenset(),
    {1: "one", (2, 3): "pair", None: "none"},
    {"$t": "tuple", "v": [1]},
    {True: 1, "x": 2},
    math.inf,
    -math.inf,
    b"\x00\xffbytes",
    b"",
    datetime(2024, 2, 29, 12, 30, 15, 123456),
    datetime(2024, 2, 29, 12, 30, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    date(1999, 12, 31),
    time(23, 59, 59, 999999),
    time(8, 0, tzinfo=timezone(timedelta(hours=2))),
    timedelta(days=-3, seconds=5, microseconds=7),
    Decimal("3.140"),
    Decimal("-1E+30"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Path("/tmp/x y/z.txt"),
    PurePosixPath("a/b"),
    PureWindowsPath(r"C:\data\file.txt"),
    Color.RED,
    Color.BLUE,
    Level.HIGH,
    Mode.FAST,
    Point(x=1, y=2),
    Item("pen", Decimal("1.50"), ("blue", "cheap")),
]


@pytest.mark.parametrize("value", KINDS, ids=lambda v: type(v).__name__)
def test_every_kind_round_trips_with_its_type(value: object) -> None:
    result = roundtrip(value)
    assert same(result, value), (result, value)
    assert decode(encode(value)) == value


def test_nan_round_trips() -> None:
    assert encode(math.nan) == {"$t": "float", "v": "nan"}
    result = roundtrip(math.nan)
    assert type(result) is float and math.isnan(result)


def test_plain_json_passes_through_unchanged() -> None:
    value = {"a": [1, 2.5, "s", None, True, {"b": []}]}
    assert encode(value) == value
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_tagged_shapes() -> None:
    assert encode((1, 2)) == {"$t": "tuple", "v": [1, 2]}
    assert encode({3, 1, 2}) == {"$t": "set", "v": [1, 2, 3]}
    assert encode({1: "a"}) == {"$t": "dict", "v": [[1, "a"]]}
    assert encode({"$t": 1}) == {"$t": "dict", "v": [["$t", 1]]}
    assert encode(timedelta(days=1, seconds=2, microseconds=3)) == {
        "$t": "timedelta",
        "v": [1, 2, 3],
    }
    assert encode(Color.RED) == {"$t": "enum", "cls": f"{__name__}:Color", "v": "red"}
    assert encode(Point(x=1, y=2)) == {
        "$t": "model",
        "cls": f"{__name__}:Point",
        "v": {"x": 1, "y": 2},
    }
    dc = encode(Item("pen", Decimal("1"), ()))
    assert dc == {
        "$t": "dataclass",
        "cls": f"{__name__}:Item",
        "v": {
            "name": "pen",
            "price": {"$t": "decimal", "v": "1"},
            "tags": {"$t": "tuple", "v": []},
        },
    }


def test_unsortable_set_keeps_members() -> None:
    value = {1, "a", None}
    assert roundtrip(value) == value


def test_nested_model_in_dataclass_in_dict() -> None:
    inventory = Inventory(
        bins={"left": [(1, "bolt"), (2, "nut")], "right": []},
        when=datetime(2024, 1, 1, 9, tzinfo=UTC),
        where=Point(x=3, y=4),
    )
    order = Order(items=[Item("bolt", Decimal("0.10"))], inventory=inventory)
    value = {"order": order, 7: [inventory, (inventory,)]}
    result = roundtrip(value)
    assert result == value
    assert isinstance(result, dict)
    got = result["order"].inventory
    assert isinstance(got, Inventory)
    assert type(got.bins["left"][0]) is tuple
    assert got.when.tzinfo is not None
    assert isinstance(got.where, Point)


def test_model_with_nan_and_dollar_t_keys() -> None:
    class Odd(BaseModel):
        ratio: float
        meta: dict[str, Any]

    value = Odd(ratio=math.nan, meta={"$t": "tuple", "v": [1]})
    result = roundtrip(value)
    assert isinstance(result, Odd)
    assert math.isnan(result.ratio)
    assert result.meta == {"$t": "tuple", "v": [1]}


def test_classes_defined_in_functions_decode_through_the_registry() -> None:
    class LocalModel(BaseModel):
        pairs: list[tuple[int, int]]

    @dataclass(frozen=True)
    class LocalData:
        n: int

    class LocalEnum(Enum):
        A = 1

    assert "<locals>" in class_path(LocalModel)
    value = [LocalModel(pairs=[(1, 2)]), LocalData(3), LocalEnum.A]
    text = dumps(value)
    assert resolve_class(class_path(LocalModel)) is LocalModel
    assert loads(text) == value


def test_missing_classes_raise_serialization_error_naming_them() -> None:
    for kind in ("model", "dataclass", "enum"):
        data: JSONValue = {"$t": kind, "cls": "no_such_module:Gone", "v": {}}
        with pytest.raises(SerializationError, match="no_such_module:Gone"):
            decode(data)


def test_stored_data_that_no_longer_fits_the_code() -> None:
    register_types(Color, Point, Item)  # what an engine does for the classes an app registers
    gone_member: JSONValue = {"$t": "enum", "cls": f"{__name__}:Color", "v": "green"}
    with pytest.raises(SerializationError, match="Color"):
        decode(gone_member)
    bad_model: JSONValue = {"$t": "model", "cls": f"{__name__}:Point", "v": {"x": "nope"}}
    with pytest.raises(SerializationError, match="Point") as info:
        decode(bad_model)
    assert isinstance(info.value.__cause__, ValidationError)
    bad_fields: JSONValue = {"$t": "dataclass", "cls": f"{__name__}:Item", "v": {"nme": "x"}}
    with pytest.raises(SerializationError, match="Item"):
        decode(bad_fields)


def test_unknown_kind_and_bad_text() -> None:
    with pytest.raises(SerializationError, match="unknown stored kind"):
        decode({"$t": "pickle", "v": ""})
    with pytest.raises(SerializationError, match="not valid JSON"):
        loads("{nope")


def test_class_path_and_resolve_class() -> None:
    assert class_path(ValueError) == "builtins:ValueError"
    assert class_path(Point) == f"{__name__}:Point"
    assert class_path(RemoteError) == "dotdo:RemoteError"  # its public home
    assert resolve_class("dotdo:RemoteError") is RemoteError
    assert resolve_class("dotdo.errors:RemoteError") is RemoteError  # where it is defined
    assert resolve_class("collections:OrderedDict.fromkeys") is None
    assert resolve_class("no_such_module:X") is None
    assert resolve_class("builtins:NoSuchThing") is None
    assert resolve_class("nonsense") is None


# --- exceptions ------------------------------------------------------------------------------


def test_builtin_exception_round_trips() -> None:
    result = roundtrip(ValueError("x", 3))
    assert type(result) is ValueError
    assert result.args == ("x", 3)


def test_custom_exception_with_two_required_args() -> None:
    result = roundtrip(PairError(404, "missing"))
    assert type(result) is PairError
    assert (result.code, result.reason) == (404, "missing")


def test_exception_whose_constructor_does_not_take_its_args() -> None:
    result = roundtrip(FormattedError(500, "down"))
    assert isinstance(result, RemoteError)
    assert result.type_name == f"{__name__}:FormattedError"
    assert result.message == "500: down"


def test_exception_with_unstorable_args_still_encodes() -> None:
    data = encode(ValueError("bad thing", object()))
    assert isinstance(data, dict) and data["args"] is None
    result = loads(dumps(ValueError("bad thing", object())))
    assert isinstance(result, RemoteError)
    assert result.type_name == "builtins:ValueError"
    assert "bad thing" in str(result)


def test_exception_with_cyclic_args_still_encodes() -> None:
    exc = RuntimeError("loop")
    exc.args = ("loop", [exc])
    data = encode(exc)
    assert isinstance(data, dict) and data["args"] is None
    result = roundtrip(exc)
    assert isinstance(result, RemoteError) and "loop" in str(result)


def test_exception_class_not_importable_gives_remote_error() -> None:
    data: JSONValue = {
        "$t": "exc",
        "cls": "gone.module:Boom",
        "msg": "it broke",
        "args": ["it broke"],
    }
    result = decode(data)
    assert isinstance(result, RemoteError)
    assert result.type_name == "gone.module:Boom"
    assert result.message == "it broke"
    assert str(result) == "gone.module:Boom: it broke"


def test_remote_error_round_trips_without_nesting() -> None:
    result = roundtrip(RemoteError("gone.module:Boom", "it broke"))
    assert isinstance(result, RemoteError)
    assert (result.type_name, result.message) == ("gone.module:Boom", "it broke")


def test_local_exception_class_and_exceptions_inside_values() -> None:
    class LocalError(Exception):
        pass

    value = {"errors": [LocalError("a"), KeyError("k")]}
    result = roundtrip(value)
    assert isinstance(result, dict)
    first, second = result["errors"]
    assert type(first) is LocalError and first.args == ("a",)
    assert type(second) is KeyError and str(second) == "'k'"


# --- failures --------------------------------------------------------------------------------


def test_serialization_error_names_the_path() -> None:
    with pytest.raises(SerializationError) as info:
        encode({"a": [1, object()]})
    assert info.value.path == "$.a[1]"
    assert "cannot store a value of type object" in str(info.value)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (object(), "$"),
        ({"items": [Item("x", Decimal(1)), {"price": {1j}}]}, "$.items[1].price[0]"),
        ({"bad key": (1, 2, object())}, '$["bad key"][2]'),
        ({5: [object()]}, "$[5][0]"),
        (Order(items=[Item("x", object())]), "$.items[0].price"),  # type: ignore[arg-type]
    ],
)
def test_serialization_error_paths(value: object, path: str) -> None:
    with pytest.raises(SerializationError) as info:
        dumps(value)
    assert info.value.path == path


def test_unsupported_subclasses_of_plain_types_are_rejected() -> None:
    class Tag(str):
        pass

    with pytest.raises(SerializationError, match="Tag"):
        encode([Tag("x")])


def test_cycles_raise_serialization_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="cycle"):
        encode(loop)


def test_dumps_is_compact_plain_json() -> None:
    value = {"name": "café", "when": date(2024, 5, 1), "ids": (1, 2), "n": math.inf}
    text = dumps(value)
    assert "café" in text and " " not in text
    plain = json.loads(text)
    assert plain == {
        "name": "café",
        "when": {"$t": "date", "v": "2024-05-01"},
        "ids": {"$t": "tuple", "v": [1, 2]},
        "n": {"$t": "float", "v": "inf"},
    }


# --- property ----------------------------------------------------------------------------------

_timezones = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=45))])
_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=_timezones)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.uuids()
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5) | st.just("$t"), inner, max_size=4)
        | st.dictionaries(st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_property_round_trip(value: object) -> None:
    result = loads(dumps(value))
    assert type(result) is type(value)
    assert same(result, value)


# --- coerce ----------------------------------------------------------------------------------


def test_coerce_dict_to_model() -> None:
    result = coerce({"x": "1", "y": 2}, Point)
    assert result == Point(x=1, y=2)


def test_coerce_list_and_datetime() -> None:
    assert coerce(["1", 2], list[int]) == [1, 2]
    assert coerce("2024-01-02T03:04:05+00:00", datetime) == datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert coerce([[1, "a"]], list[tuple[int, str]]) == [(1, "a")]


def test_coerce_passthrough() -> None:
    import inspect

    marker = object()
    assert coerce(marker, Any) is marker
    assert coerce(marker, object) is marker
    assert coerce(marker, inspect.Parameter.empty) is marker
    assert coerce(marker, None) is marker
    point = Point(x=1, y=1)
    assert coerce(point, Point) is point


class Address(TypedDict):
    city: str
    zip: int


def test_coerce_typed_dict_and_enum() -> None:
    assert coerce({"city": "Oslo", "zip": "150"}, Address) == {"city": "Oslo", "zip": 150}
    assert coerce(2, Level) is Level.HIGH
    assert coerce(1, float) == 1.0 and type(coerce(1, float)) is float


def test_coerce_validation_error_propagates() -> None:
    with pytest.raises(ValidationError):
        coerce("not a number", int)
    with pytest.raises(ValidationError):
        coerce({"x": 1}, Point)
