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

Decoding is where trust matters: stored rows and network messages are data written by
someone else (docs/security.md). So decoding never imports a module and never rebuilds a
function, a class or a module. A stored class name resolves only to a *data class* (a
pydantic model, a dataclass, an enum or an exception) that this process already knows:
one it encoded itself, one an annotation of the registered app names (`register_types`),
dotdo's own, or (for rows, not for network messages) one defined in an already-imported
module of a package the app registered (`trust_package`). An exception that is not an
`Exception` (KeyboardInterrupt, SystemExit, CancelledError) or whose class is unknown comes
back as `RemoteError`, keeping its type name and message.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import inspect
import json
import sys
import threading
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, TypeAlias

from pydantic import BaseModel, TypeAdapter

from dotdo import errors
from dotdo.errors import RemoteError, SerializationError

__all__ = [
    "JSONValue",
    "class_path",
    "coerce",
    "decode",
    "dumps",
    "encode",
    "loads",
    "register_types",
    "resolve_class",
    "trust_package",
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


_TRUSTED_PACKAGES: set[str] = {"dotdo"}
"""Top-level packages whose already-imported data classes a stored row may name."""


def _is_data_class(obj: object) -> bool:
    """The kinds a decode may rebuild: values, never behaviour."""
    if not isinstance(obj, type):
        return False
    if issubclass(obj, BaseException):
        return issubclass(obj, Exception)
    return issubclass(obj, BaseModel | Enum) or dataclasses.is_dataclass(obj)


def _register(cls: type) -> None:
    _CLASSES[class_path(cls)] = cls


def register_types(*annotations: object) -> None:
    """Make the data classes that these annotations name (through generics, model fields and
    dataclass fields) decodable here, from rows and from the network alike.

    The engine calls this for every class it registers, so a fresh process can rebuild the
    models its workflows take and return without importing anything a row names.
    """
    seen: set[int] = set()
    todo: list[object] = list(annotations)
    while todo:
        item = todo.pop()
        if id(item) in seen or item is None or isinstance(item, str):
            continue
        seen.add(id(item))
        todo.extend(typing.get_args(item))
        if not _is_data_class(item):
            continue
        assert isinstance(item, type)
        _register(item)
        if issubclass(item, BaseModel):
            todo.extend(f.annotation for f in item.model_fields.values())
        elif dataclasses.is_dataclass(item):
            try:
                todo.extend(typing.get_type_hints(item).values())
            except Exception:  # unresolvable forward references: take what is concrete
                todo.extend(f.type for f in dataclasses.fields(item))


def trust_package(module_name: str) -> None:
    """Let stored rows name data classes of `module_name`'s top-level package (the app's own
    code), once that code has been imported by the app; decoding still imports nothing."""
    top = module_name.partition(".")[0]
    if top:
        _TRUSTED_PACKAGES.add(top)


def resolve_class(path: str, *, wire: bool = False) -> type | None:
    """The data class stored under `path`, or None when it is not one this process may
    rebuild (see the module docstring). Never imports a module."""
    found = _CLASSES.get(path)
    if found is not None:
        return found
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname or "<locals>" in qualname:
        return None
    if module_name == "builtins":
        obj = getattr(builtins, qualname, None)
        if isinstance(obj, type) and issubclass(obj, Exception):
            _register(obj)
            return obj
        return None
    if wire or module_name.partition(".")[0] not in _TRUSTED_PACKAGES:
        return None
    module = sys.modules.get(module_name)
    if module is None:
        return None
    target: object = module
    for name in qualname.split("."):
        if name.startswith("_"):
            return None
        target = getattr(target, name, None)
    if not _is_data_class(target):
        return None
    assert isinstance(target, type)
    if target.__module__.partition(".")[0] not in _TRUSTED_PACKAGES:
        return None  # a class another package defines, imported into a trusted module
    _register(target)
    return target


def encode(value: object) -> JSONValue:
    """`value` as JSON-compatible data; raises SerializationError naming where a bad value sits."""
    try:
        return _enc(value)
    except _Unstorable as exc:
        path = "$" + "".join(reversed(exc.parts))
        raise SerializationError(exc.message, path=path) from exc.__cause__
    except RecursionError:
        raise SerializationError("value is nested too deeply or contains a cycle") from None


def decode(data: JSONValue, *, wire: bool = False) -> object:
    """The value that `encode` turned into `data`.

    `wire=True` for what arrived over the network: only classes registered here decode.
    """
    try:
        return _dec(data, wire)
    except RecursionError:
        raise SerializationError("stored value is nested too deeply") from None


_json_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode
_json_decode = json.JSONDecoder().decode


def dumps(value: object) -> str:
    """`value` as compact JSON text."""
    return _json_encode(encode(value))  # encode leaves no nan/inf for allow_nan to trip on


def loads(text: str, *, wire: bool = False) -> object:
    """The value that `dumps` turned into `text`."""
    try:
        data = _json_decode(text)
    except ValueError as exc:
        raise SerializationError(f"stored text is not valid JSON: {exc}") from exc
    except RecursionError:
        raise SerializationError("stored text is nested too deeply") from None
    return decode(data, wire=wire)


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
    if _is_data_class(t):
        _CLASSES[path] = t  # the app uses it: its rows and answers may name it
    if issubclass(t, Enum):
        return lambda v: {"$t": "enum", "cls": path, "v": _enc(v.value)}
    if issubclass(t, BaseException):
        return lambda v: _enc_exc(path, v)
    if issubclass(t, BaseModel):
        return lambda v: _enc_model(path, v)
    if dataclasses.is_dataclass(t):
        names = tuple(f.name for f in dataclasses.fields(t) if f.init)
        return lambda v: {"$t": "dataclass", "cls": path, "v": _enc_fields(v, names)}
    if issubclass(t, type) or t in _BEHAVIOUR:
        what = "a module" if t is types.ModuleType else "a class" if issubclass(t, type) else None

        def behaviour(v: Any) -> JSONValue:
            kind = what or "a function"
            raise _Unstorable(
                f"cannot store {kind} ({getattr(v, '__qualname__', v)!r}): stored values are "
                "data, never code; keep its name and look it up instead"
            )

        return behaviour

    def unsupported(v: Any) -> JSONValue:
        raise _Unstorable(f"cannot store a value of type {t.__qualname__}")

    return unsupported


_BEHAVIOUR = frozenset(
    {
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.BuiltinMethodType,
        types.ModuleType,
        types.LambdaType,
        types.CodeType,
        types.MethodWrapperType,
        types.WrapperDescriptorType,
    }
)


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
}


# --- decoding -------------------------------------------------------------------------------


def _dec(d: Any, wire: bool) -> object:
    t = type(d)
    if t is dict:
        if "$t" not in d:
            return {k: _dec(x, wire) for k, x in d.items()}
        kind = d["$t"]
        decoder = _DECODERS.get(kind) if type(kind) is str else None
        if decoder is None:
            raise SerializationError(f"unknown stored kind {kind!r}")
        try:
            return decoder(d, wire)
        except (SerializationError, RecursionError):
            raise
        except Exception as exc:  # stored data that no longer fits the code (or was edited)
            where = f" {d['cls']}" if isinstance(d.get("cls"), str) else ""
            raise SerializationError(f"cannot rebuild a stored {kind}{where}: {exc}") from exc
    if t is list:
        return [_dec(x, wire) for x in d]
    return d


def _need(d: dict[str, Any], base: type | None, wire: bool) -> Any:
    """The class a stored enum, model or dataclass names (base None means any dataclass)."""
    path = d["cls"]
    cls = resolve_class(path, wire=wire) if isinstance(path, str) else None
    if cls is None or not (
        dataclasses.is_dataclass(cls) if base is None else issubclass(cls, base)
    ):
        raise SerializationError(
            f"cannot rebuild a stored {d['$t']} of class {path!r}: it is not a data class "
            "this app registered"
        )
    return cls


def _dec_exc(d: dict[str, Any], wire: bool) -> object:
    path, msg, args = d["cls"], d["msg"], d["args"]
    if not isinstance(path, str):
        raise SerializationError("a stored exception has no class name")
    msg = msg if isinstance(msg, str) else repr(msg)
    cls = None if args is None else resolve_class(path, wire=wire)
    if cls is not None and issubclass(cls, Exception):
        try:
            decoded = _dec(args, wire)
            if isinstance(decoded, list):
                return cls(*decoded)
        except Exception:  # unknown classes inside the args, or a constructor that disagrees
            pass
    return RemoteError(path, msg)


def _dec_dataclass(d: dict[str, Any], wire: bool) -> object:
    cls = _need(d, None, wire)
    fields = d["v"]
    if not isinstance(fields, dict):
        raise SerializationError(f"a stored dataclass {d['cls']} has no fields object")
    return cls(**{k: _dec(x, wire) for k, x in fields.items()})


_PURE_PATHS: dict[str, type[PurePath]] = {
    "PurePosixPath": PurePosixPath,
    "PureWindowsPath": PureWindowsPath,
}
_DECODERS: dict[str, Callable[[dict[str, Any], bool], object]] = {
    "tuple": lambda d, w: tuple([_dec(x, w) for x in d["v"]]),
    "set": lambda d, w: {_dec(x, w) for x in d["v"]},
    "frozenset": lambda d, w: frozenset([_dec(x, w) for x in d["v"]]),
    "dict": lambda d, w: {_dec(k, w): _dec(x, w) for k, x in d["v"]},
    "float": lambda d, w: float(d["v"]),
    "bytes": lambda d, w: base64.b64decode(d["v"], validate=True),
    "datetime": lambda d, w: datetime.fromisoformat(d["v"]),
    "date": lambda d, w: date.fromisoformat(d["v"]),
    "time": lambda d, w: time.fromisoformat(d["v"]),
    "timedelta": lambda d, w: timedelta(*d["v"]),
    "decimal": lambda d, w: Decimal(d["v"]),
    "uuid": lambda d, w: uuid.UUID(d["v"]),
    "path": lambda d, w: _PURE_PATHS.get(d.get("cls", ""), Path)(d["v"]),
    "enum": lambda d, w: _need(d, Enum, w)(_dec(d["v"], w)),
    "model": lambda d, w: _need(d, BaseModel, w).model_validate(_dec(d["v"], w)),
    "dataclass": _dec_dataclass,
    "exc": _dec_exc,
    "range": lambda d, w: range(*d["v"]),
}


# dotdo's own errors decode wherever they were raised (their names are their public homes,
# `dotdo:RunNotFound`, `dotdo.entities:UnknownMethod`), whichever modules are imported here.
register_types(*(getattr(errors, name) for name in errors.__all__))
