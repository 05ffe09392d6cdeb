"""Turn workflow values into JSON text and back, keeping their Python types.

A run's locals, step results, inputs and errors have to survive a crash and be picked up by a
fresh process, possibly a newer build of the same code. Pickles would tie the store to one
interpreter and one set of class layouts, and nobody could inspect them with the sqlite3 CLI, so
the store holds JSON. Plain JSON cannot say "this was a tuple", "this dict had int keys" or
"this was a `Decimal`", so anything JSON would flatten travels as a small tagged object,
`{"$t": kind, ...}`; a user dict that happens to have a "$t" key is tagged too, so decoding is
never ambiguous. Exceptions must always be storable (a failing step has to be recorded whatever
it raised), so an exception that cannot be rebuilt comes back as `RemoteError` instead of
failing the read. Encoding runs at every checkpoint, so plain JSON data takes a short
exact-type check path and the per-class work for everything else is done once per class.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import inspect
import json
import threading
import types
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, TypeAlias

from pydantic import BaseModel, TypeAdapter

from dotdo.errors import RemoteError, SerializationError

__all__ = [
    "JSONValue",
    "class_path",
    "coerce",
    "decode",
    "dumps",
    "encode",
    "loads",
    "resolve_class",
]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

_Encoder: TypeAlias = Callable[[Any], JSONValue]
_STR_ONLY = frozenset({str})
_CLASSES: dict[str, type] = {}  # "module:Qualname" -> class, filled by encode and resolve_class
_ADAPTERS: dict[object, TypeAdapter[Any]] = {}
_local = threading.local()  # ids of the exceptions being encoded right now, per thread
_NO_TYPE = frozenset(map(id, (inspect.Parameter.empty, None, Any, object)))  # all immortal


class _Unstorable(Exception):
    """Internal: carries the location of a bad value outwards, one path segment per level."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.parts: list[str] = []


def class_path(cls: type) -> str:
    """Where `cls` lives, as "module:Qualname"."""
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_class(path: str) -> type | None:
    """The class stored under `path`, or None when this process cannot find it."""
    found = _CLASSES.get(path)
    if found is not None:
        return found
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname or "<locals>" in qualname:
        return None
    try:
        obj: object = importlib.import_module(module_name)
        for name in qualname.split("."):
            obj = getattr(obj, name)
    except Exception:
        return None
    if not isinstance(obj, type):
        return None
    _CLASSES[path] = obj
    return obj


def encode(value: object) -> JSONValue:
    """`value` as JSON-compatible data; raises SerializationError naming where a bad value sits."""
    try:
        return _enc(value)
    except _Unstorable as exc:
        path = "$" + "".join(reversed(exc.parts))
        raise SerializationError(exc.message, path=path) from exc.__cause__
    except RecursionError:
        raise SerializationError("value is nested too deeply or contains a cycle") from None


def decode(data: JSONValue) -> object:
    """The value that `encode` turned into `data`."""
    return _dec(data)


_json_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode
_json_decode = json.JSONDecoder().decode


def dumps(value: object) -> str:
    """`value` as compact JSON text."""
    return _json_encode(encode(value))  # encode leaves no nan/inf for allow_nan to trip on


def loads(text: str) -> object:
    """The value that `dumps` turned into `text`."""
    try:
        data = _json_decode(text)
    except ValueError as exc:
        raise SerializationError(f"stored text is not valid JSON: {exc}") from exc
    return _dec(data)


def coerce(value: object, annotation: object) -> object:
    """`value` converted to the declared type `annotation` (pydantic lax-mode validation)."""
    if id(annotation) in _NO_TYPE:
        return value
    if isinstance(annotation, type):  # list[int] and friends are not types on 3.11+
        try:
            if isinstance(value, annotation):
                return value
        except TypeError:  # TypedDicts and non-runtime protocols refuse isinstance
            pass
    form: Any = annotation
    try:
        adapter = _ADAPTERS.get(form)
    except TypeError:  # unhashable annotation, e.g. Annotated with a list in its metadata
        return TypeAdapter(form).validate_python(value)
    if adapter is None:
        adapter = _ADAPTERS[form] = TypeAdapter(form)
    return adapter.validate_python(value)


# --- encoding -------------------------------------------------------------------------------


def _enc(v: Any) -> JSONValue:
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return v  # type: ignore[no-any-return]
    if t is float:
        return v if v - v == 0.0 else {"$t": "float", "v": str(v)}  # nan and inf fail the test
    if t is list:
        return _all(v)
    if t is dict:
        if "$t" not in v and _STR_ONLY.issuperset(map(type, v)):
            try:
                return {k: _enc(x) for k, x in v.items()}
            except _Unstorable as exc:
                exc.parts.append(_where(v.items()))
                raise
        try:
            return {"$t": "dict", "v": [[_enc(k), _enc(x)] for k, x in v.items()]}
        except _Unstorable as exc:
            exc.parts.append(_where((k, (k, x)) for k, x in v.items()))
            raise
    encoder = _ENCODERS.get(t)
    if encoder is None:
        encoder = _ENCODERS[t] = _encoder_for(t)
    return encoder(v)


def _all(items: list[Any] | tuple[Any, ...]) -> list[JSONValue]:
    try:
        return [_enc(x) for x in items]
    except _Unstorable as exc:
        exc.parts.append(_where(enumerate(items)))
        raise


def _where(labelled: Iterable[tuple[object, Any]]) -> str:
    """Error path only: the path segment of the first item that does not encode."""
    for label, item in labelled:
        try:
            _enc(item)
        except _Unstorable:
            if type(label) is int:
                return f"[{label}]"
            if isinstance(label, str):
                return f".{label}" if label.isidentifier() else f"[{json.dumps(label)}]"
            return f"[{label!r}]"
    return ""


def _sorted(items: set[Any] | frozenset[Any]) -> list[Any]:
    try:
        return sorted(items)
    except Exception:  # mixed or unorderable members: keep iteration order
        return list(items)


def _encoder_for(t: type) -> _Encoder:
    """Build the encoder for a class outside the fixed table, registering it for decoding."""
    path = class_path(t)
    _CLASSES[path] = t
    if issubclass(t, Enum):
        return lambda v: {"$t": "enum", "cls": path, "v": _enc(v.value)}
    if issubclass(t, BaseException):
        return lambda v: _enc_exc(path, v)
    if issubclass(t, BaseModel):
        return lambda v: _enc_model(path, v)
    if dataclasses.is_dataclass(t):
        names = tuple(f.name for f in dataclasses.fields(t) if f.init)
        return lambda v: {"$t": "dataclass", "cls": path, "v": _enc_fields(v, names)}
    if issubclass(t, type):
        return _enc_class
    if t in (types.FunctionType, types.BuiltinFunctionType):
        return _enc_function

    def unsupported(v: Any) -> JSONValue:
        raise _Unstorable(f"cannot store a value of type {t.__qualname__}")

    return unsupported


def _enc_class(cls: type) -> JSONValue:
    """A class is stored by reference (its import path), like pickle does."""
    path = class_path(cls)
    _CLASSES[path] = cls
    return {"$t": "class", "cls": path}


def _enc_function(fn: Any) -> JSONValue:
    """A module-level function is stored by reference; code defined inline cannot be."""
    qualname = getattr(fn, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise _Unstorable(
            "cannot store a lambda or a function defined inside another function; "
            "define it at module level"
        )
    return {"$t": "func", "cls": f"{fn.__module__}:{qualname}"}


def _dec_ref(path: str) -> object:
    module, _, qualname = path.partition(":")
    found: object = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _enc_fields(obj: object, names: tuple[str, ...]) -> JSONValue:
    try:
        return {name: _enc(getattr(obj, name)) for name in names}
    except _Unstorable as exc:
        exc.parts.append(_where((name, getattr(obj, name)) for name in names))
        raise


def _enc_model(path: str, model: BaseModel) -> JSONValue:
    try:
        dumped = model.model_dump(mode="json", by_alias=True, round_trip=True)
    except Exception as exc:
        raise _Unstorable(f"cannot store {path}: {exc}") from exc
    # The dump is plain JSON apart from possible non-finite floats and "$t" keys, which _enc tags.
    return {"$t": "model", "cls": path, "v": _enc(dumped)}


def _enc_exc(path: str, exc: BaseException) -> JSONValue:
    if type(exc) is RemoteError:  # keep the original type name instead of nesting
        return {"$t": "exc", "cls": exc.type_name, "msg": exc.message, "args": None}
    try:
        msg = str(exc)
    except Exception:
        msg = f"<unprintable {type(exc).__qualname__}>"
    active: set[int] = _local.__dict__.setdefault("active", set())
    if id(exc) in active:  # the exception sits inside its own args: store the outer one bare
        raise _Unstorable("an exception that contains itself")
    active.add(id(exc))
    try:
        args = _enc(list(exc.args))
    except Exception:  # unstorable, cyclic, or a broken __lt__ while sorting a set
        args = None
    finally:
        active.discard(id(exc))
    return {"$t": "exc", "cls": path, "msg": msg, "args": args}


_ENCODERS: dict[type, _Encoder] = {  # exact type -> encoder; _enc adds one per new class
    tuple: lambda v: {"$t": "tuple", "v": _all(v)},
    set: lambda v: {"$t": "set", "v": _all(_sorted(v))},
    frozenset: lambda v: {"$t": "frozenset", "v": _all(_sorted(v))},
    bytes: lambda v: {"$t": "bytes", "v": base64.b64encode(v).decode("ascii")},
    datetime: lambda v: {"$t": "datetime", "v": v.isoformat()},
    date: lambda v: {"$t": "date", "v": v.isoformat()},
    time: lambda v: {"$t": "time", "v": v.isoformat()},
    timedelta: lambda v: {"$t": "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    Decimal: lambda v: {"$t": "decimal", "v": str(v)},
    uuid.UUID: lambda v: {"$t": "uuid", "v": str(v)},
    type(Path()): lambda v: {"$t": "path", "v": str(v)},
    PurePosixPath: lambda v: {"$t": "path", "v": str(v), "cls": "PurePosixPath"},
    PureWindowsPath: lambda v: {"$t": "path", "v": str(v), "cls": "PureWindowsPath"},
    range: lambda v: {"$t": "range", "v": [v.start, v.stop, v.step]},
    types.ModuleType: lambda v: {"$t": "module", "v": v.__name__},
}


# --- decoding -------------------------------------------------------------------------------


def _dec(d: Any) -> object:
    t = type(d)
    if t is dict:
        kind = d.get("$t")
        if kind is None:
            return {k: _dec(x) for k, x in d.items()}
        decoder = _DECODERS.get(kind)
        if decoder is None:
            raise SerializationError(f"unknown stored kind {kind!r}")
        try:
            return decoder(d)
        except SerializationError:
            raise
        except Exception as exc:  # stored data that no longer fits the code (or was edited)
            where = f" {d['cls']}" if "cls" in d else ""
            raise SerializationError(f"cannot rebuild a stored {kind}{where}: {exc}") from exc
    if t is list:
        return [_dec(x) for x in d]
    return d


def _need(d: dict[str, Any], base: type | None) -> Any:
    """The class a stored enum, model or dataclass names (base None means any dataclass)."""
    cls = resolve_class(d["cls"])
    if cls is None or not (
        dataclasses.is_dataclass(cls) if base is None else issubclass(cls, base)
    ):
        raise SerializationError(f"cannot find class {d['cls']!r} to rebuild a stored {d['$t']}")
    return cls


def _dec_exc(d: dict[str, Any]) -> object:
    path, msg, args = d["cls"], d["msg"], d["args"]
    cls = None if args is None else resolve_class(path)
    if cls is not None and issubclass(cls, BaseException):
        try:
            decoded = _dec(args)
            if isinstance(decoded, list):
                return cls(*decoded)
        except Exception:  # missing classes inside the args, or a constructor that disagrees
            pass
    return RemoteError(path, msg)


_PURE_PATHS: dict[str, type[PurePath]] = {
    "PurePosixPath": PurePosixPath,
    "PureWindowsPath": PureWindowsPath,
}
_DECODERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "tuple": lambda d: tuple([_dec(x) for x in d["v"]]),
    "set": lambda d: {_dec(x) for x in d["v"]},
    "frozenset": lambda d: frozenset([_dec(x) for x in d["v"]]),
    "dict": lambda d: {_dec(k): _dec(x) for k, x in d["v"]},
    "float": lambda d: float(d["v"]),
    "bytes": lambda d: base64.b64decode(d["v"]),
    "datetime": lambda d: datetime.fromisoformat(d["v"]),
    "date": lambda d: date.fromisoformat(d["v"]),
    "time": lambda d: time.fromisoformat(d["v"]),
    "timedelta": lambda d: timedelta(*d["v"]),
    "decimal": lambda d: Decimal(d["v"]),
    "uuid": lambda d: uuid.UUID(d["v"]),
    "path": lambda d: _PURE_PATHS.get(d.get("cls", ""), Path)(d["v"]),
    "enum": lambda d: _need(d, Enum)(_dec(d["v"])),
    "model": lambda d: _need(d, BaseModel).model_validate(_dec(d["v"])),
    "dataclass": lambda d: _need(d, None)(**{k: _dec(x) for k, x in d["v"].items()}),
    "exc": _dec_exc,
    "range": lambda d: range(*d["v"]),
    "module": lambda d: importlib.import_module(d["v"]),
    "class": lambda d: _CLASSES.get(d["cls"]) or _dec_ref(d["cls"]),
    "func": lambda d: _dec_ref(d["cls"]),
}
