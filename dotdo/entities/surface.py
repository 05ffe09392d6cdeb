"""What a DO class offers to the callers of its instances: its remote surface.

A peer of `dotdo serve` holds a valid token but is not trusted (docs/security.md): it may
call what the class offers and send data, nothing else. So what a chain may start with is
decided once per class, from the class bodies of the app alone, never by walking `getattr`:

- **methods**: plain functions written in the body of the class, or of a DO subclass it
  inherits from (a function's `__qualname__` says where it was written, so `run = os.system`
  or a helper assigned from elsewhere is not one), public (no leading underscore, not
  capitalised), and not a workflow, step, compensation, approval, schedule or event handler,
  a classmethod or a staticmethod, nor any name the `DO` base class or `object` defines;
- **properties** written the same way (read only: no hop of a chain assigns anything);
- **state**, the instance's `State` model.

Each method keeps its signature and parameter annotations: arguments are bound to the
signature and coerced to the declared types (pydantic, lax mode) before the method runs, so
a method receives what it declared and a mismatch is an `ArgumentError` naming the member.
Return and field annotations give the *shape* of what a chain walks next (`shape`), so most
bad hops are refused before anything runs; chains.py checks every hop again at run time.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter

from dotdo.engine import serde
from dotdo.entities import registry
from dotdo.errors import ArgumentError

__all__ = [
    "UNKNOWN",
    "Method",
    "Shape",
    "Surface",
    "shape",
    "surface_of",
    "trust_answers",
]

UNKNOWN: Final[Any] = object()
"""An annotation that says nothing usable (missing, Any, a TypeVar, an unresolvable name)."""


@dataclass(frozen=True)
class Method:
    """One declared method: its function, signature (without self) and declared types."""

    owner: str
    name: str
    function: Callable[..., Any]
    signature: inspect.Signature
    params: Mapping[str, Callable[[Any], Any]]
    """Parameter name -> validator converting a value to the declared type."""
    returns: Any

    def bind(self, args: list[Any], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        try:
            return self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentError(f"{self.owner}.{self.name}{self.signature}: {exc}") from None

    def coerce(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The arguments bound to the signature and converted to the declared types."""
        bound = self.bind(args, kwargs)
        for name, value in bound.arguments.items():
            check = self.params.get(name)
            if check is None:
                continue
            kind = self.signature.parameters[name].kind
            try:
                if kind is inspect.Parameter.VAR_POSITIONAL:
                    bound.arguments[name] = tuple(check(v) for v in value)
                elif kind is inspect.Parameter.VAR_KEYWORD:
                    bound.arguments[name] = {k: check(v) for k, v in value.items()}
                else:
                    bound.arguments[name] = check(value)
            except Exception as exc:  # pydantic's ValidationError, or the isinstance check
                text = " ".join(str(exc).split())
                raise ArgumentError(
                    f"{self.owner}.{self.name}: argument {name!r} does not fit its declared "
                    f"type: {text[:300]}"
                ) from None
        return list(bound.args), dict(bound.kwargs)


@dataclass(frozen=True)
class Surface:
    """Everything `cls` offers to callers (see the module docstring)."""

    cls: type[Any]
    methods: Mapping[str, Method]
    properties: Mapping[str, tuple[Callable[[Any], Any], Any]]
    """Property name -> (its getter, its return annotation)."""

    @property
    def name(self) -> str:
        return self.cls.__name__

    def offers(self) -> str:
        """The members, for error messages."""
        names = [f"{m}()" for m in self.methods] + [*self.properties, "state"]
        return ", ".join(sorted(names))

    def annotations(self) -> list[Any]:
        found: list[Any] = [self.cls.State]
        for method in self.methods.values():
            found.append(method.returns)
            found.extend(_hints(method.function).values())
        found.extend(ann for _, ann in self.properties.values())
        return [a for a in found if a is not UNKNOWN]


_SURFACES: dict[type, Surface] = {}


def surface_of(cls: type[Any]) -> Surface:
    """The remote surface of `cls` (computed once per class). Registers the data classes
    its annotations use with serde, so they decode from the wire in this process."""
    found = _SURFACES.get(cls)
    if found is None:
        found = _build(cls)
        serde.register_types(*found.annotations())
        _SURFACES[cls] = found
    return found


def trust_answers(target: str | type[Any]) -> None:
    """Let answers from DO class `target` (a class, or the name of one this process
    defined) decode to the data classes its annotations declare."""
    cls = registry.by_name(target) if isinstance(target, str) else target
    if cls is not None:
        surface_of(cls)


def _build(cls: type[Any]) -> Surface:
    methods: dict[str, Method] = {}
    properties: dict[str, tuple[Callable[[Any], Any], Any]] = {}
    seen: set[str] = set()
    machinery = registry.base_names(cls)
    for klass in cls.__mro__:
        if not registry.is_entity_class(klass):
            continue
        for name, value in vars(klass).items():
            if name in seen:
                continue  # a subclass's definition of the name wins, whatever it is
            seen.add(name)
            if name.startswith("_") or name[:1].isupper() or name in machinery:
                continue
            # Workflows, steps, approvals, schedules and handlers are descriptor objects,
            # not functions: the test below leaves them out.
            if inspect.isfunction(value) and _written_in(value, klass, name):
                method = _method(cls, name, value)
                if method is not None:
                    methods[name] = method
            elif (
                isinstance(value, property)
                and inspect.isfunction(value.fget)
                and _written_in(value.fget, klass, name)
            ):
                properties[name] = (value.fget, _hints(value.fget).get("return", UNKNOWN))
    return Surface(cls, methods, properties)


def _written_in(fn: Any, klass: type, name: str) -> bool:
    return getattr(fn, "__qualname__", None) == f"{klass.__qualname__}.{name}"


def _method(cls: type[Any], name: str, fn: Callable[..., Any]) -> Method | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(signature.parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return None  # nothing receives the instance: not a method
    hints = _hints(fn)
    checks: dict[str, Callable[[Any], Any]] = {}
    for param in params[1:]:
        check = _validator(hints.get(param.name, UNKNOWN))
        if check is not None:
            checks[param.name] = check
    return Method(
        owner=cls.__name__,
        name=name,
        function=fn,
        signature=signature.replace(parameters=params[1:], return_annotation=signature.empty),
        params=checks,
        returns=hints.get("return", UNKNOWN),
    )


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations of `fn`; one that cannot be resolved is left out (UNKNOWN)."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    found: dict[str, Any] = {}
    namespace = getattr(fn, "__globals__", {})
    for name, ann in getattr(fn, "__annotations__", {}).items():

        def probe() -> None: ...

        probe.__annotations__ = {"x": ann}
        try:
            found[name] = typing.get_type_hints(probe, globalns=namespace)["x"]
        except Exception:
            continue
    return found


_NO_CHECK = frozenset(map(id, (Any, object, inspect.Parameter.empty)))


def _validator(ann: Any) -> Callable[[Any], Any] | None:
    """What converts a decoded argument to `ann` (None: accept any decoded value)."""
    if ann is UNKNOWN or id(ann) in _NO_CHECK or isinstance(ann, typing.TypeVar):
        return None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(ann)
    except Exception:  # a type pydantic cannot describe: accept instances of it only
        if not isinstance(ann, type):
            return None
        expected: type = ann

        def instance_of(value: Any) -> Any:
            if isinstance(value, expected):
                return value
            raise TypeError(f"expected {expected.__qualname__}, got {type(value).__qualname__}")

        return instance_of
    if isinstance(ann, type):
        plain: type = ann

        def fast(value: Any) -> Any:
            if type(value) is plain:
                return value
            return adapter.validate_python(value)

        return fast
    return adapter.validate_python


# ------------------------------------------------------------------- shapes of values
@dataclass(frozen=True)
class Shape:
    """What a chain may do with a value of some annotation, as far as it can tell.

    kind: "unknown" (checked at run time only), "record" (a model or dataclass: `get` of
    its fields), "mapping" (`item` by key), "sequence" (`item` by index), "scalar" (no hop).
    """

    kind: str
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    item: Any = UNKNOWN
    label: str = ""


_SCALARS = (
    str,
    bytes,
    int,
    float,
    bool,
    Enum,
    Decimal,
    datetime,
    date,
    time,
    timedelta,
    uuid.UUID,
    PurePath,
    type(None),
)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SEQUENCES = (list, collections.abc.Sequence, collections.abc.MutableSequence)


def shape(ann: Any) -> Shape:
    """The shape of values annotated `ann` (Optional[X] is X: None fails at run time)."""
    ann = _strip(ann)
    if ann is UNKNOWN or id(ann) in _NO_CHECK or isinstance(ann, typing.TypeVar):
        return Shape("unknown")
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Literal:
        return Shape("scalar", label="literal")
    if isinstance(ann, type) and origin is None:
        label = ann.__qualname__
        if issubclass(ann, BaseModel):
            fields = {n: f.annotation for n, f in ann.model_fields.items()}
            return Shape("record", fields=fields, label=label)
        if dataclasses.is_dataclass(ann):
            return Shape("record", fields=_dataclass_fields(ann), label=label)
        if issubclass(ann, _SCALARS):
            return Shape("scalar", label=label)
        if issubclass(ann, dict):
            return Shape("mapping", label=label)
        if issubclass(ann, list | tuple):
            return Shape("sequence", label=label)
        return Shape("unknown")
    if origin in _MAPPINGS:
        return Shape("mapping", item=args[1] if len(args) == 2 else UNKNOWN, label="dict")
    if origin in _SEQUENCES:
        return Shape("sequence", item=args[0] if args else UNKNOWN, label="list")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return Shape("sequence", item=args[0], label="tuple")
        return Shape("sequence", label="tuple")
    return Shape("unknown")


def _strip(ann: Any) -> Any:
    """Annotated[X, ...] is X; X | None is X; any other union says nothing usable."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin is typing.Union or origin is types.UnionType:
            rest = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(rest) != 1:
                return UNKNOWN
            ann = rest[0]
        else:
            return ann


def _dataclass_fields(cls: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    return {f.name: hints.get(f.name, UNKNOWN) for f in dataclasses.fields(cls)}
