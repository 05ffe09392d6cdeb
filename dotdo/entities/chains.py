"""Checking and running a chain of hops on the callee's side.

The caller chooses the hops, and over HTTP the caller is another machine that may only call
what the class offers (surface.py) and read data. So a chain has one form:

    <member> [<call>] <data hop>*

- it starts with a `get` of a member of the class's remote surface: a declared method, which
  the very next hop must call (a method is never handed out uncalled), a declared property,
  or `state`;
- after that it only reads data: `get` of a *field* of a pydantic model or a dataclass (not
  its methods, properties, `model_config` or class attributes), `item` of a dict by a plain
  key (text, number, bool, None, or a tuple of those) or of a list or tuple by an int. A call
  on a result (`model_config.get`, `state.stock.clear`, `"...".format`, a model's own method)
  is refused: only the methods the entity class declares ever run, and state changes only
  inside them.

`check_chain` refuses a bad chain before anything runs, from its form and from the
annotations of the members and fields it walks (UnknownMethod, ArgumentError or
ProtocolError, naming the member). `run_chain` checks every hop again on the live value, by
type, for what the annotations could not tell (an `Any` field, a missing annotation).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from pydantic import BaseModel

from dotdo.entities.messages import MAX_OPS, ImportRef
from dotdo.entities.stubs import Op, Stub
from dotdo.entities.surface import UNKNOWN, Method, Surface, shape, surface_of
from dotdo.errors import ProtocolError, UnknownMethod

__all__ = ["Plan", "check_chain", "plain_key", "read_data", "run_chain"]


@dataclass(frozen=True)
class Plan:
    """A checked chain: the hops as they will run and the declared method they call."""

    surface: Surface
    ops: list[Op]
    method: Method | None = None
    coerced: bool = True
    """The call's arguments already have the declared types (False: coerce when running,
    after pipelined results and stubs among them are resolved)."""

    def with_call(self, args: list[Any], kwargs: dict[str, Any]) -> Plan:
        ops = [self.ops[0], ("call", args, kwargs), *self.ops[2:]]
        return Plan(self.surface, ops, self.method, coerced=False)


def check_chain(cls: type[Any], ops: Sequence[Op], *, coerce: bool = True) -> Plan:
    """Refuse a chain before anything runs; with `coerce`, convert its call's arguments to
    the declared types now (unless some are placeholders resolved later)."""
    _check_form(ops)
    surface = surface_of(cls)
    if not ops:
        return Plan(surface, [])
    steps = list(ops)
    if steps[0][0] != "get":
        raise UnknownMethod(
            f"a chain on {surface.name} starts with one of its members (offers: {surface.offers()})"
        )
    name = steps[0][1]
    where = f"{surface.name}.{name}"
    method = surface.methods.get(name)
    if method is not None:
        if len(steps) < 2 or steps[1][0] != "call":
            raise UnknownMethod(f"{where} is a method: a chain calls it, it cannot read it")
        args, kwargs = list(steps[1][1]), dict(steps[1][2])
        coerced = coerce and not _placeholders(args) and not _placeholders(kwargs)
        if coerced:
            args, kwargs = method.coerce(args, kwargs)
        else:
            method.bind(args, kwargs)
        steps[1] = ("call", args, kwargs)
        _walk(f"{where}()", method.returns, steps[2:])
        return Plan(surface, steps, method, coerced)
    if name == "state":
        _walk(where, surface.cls.State or type(None), steps[1:])
    elif name in surface.properties:
        _walk(where, surface.properties[name][1], steps[1:])
    else:
        raise UnknownMethod(
            f"{surface.name} offers no member {name!r} (offers: {surface.offers()})"
        )
    return Plan(surface, steps)


async def run_chain(instance: Any, plan: Plan, *, resolve: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run a checked chain on `instance`; an empty chain reads its state.

    `resolve` turns an argument into the value the method receives (a stub to await, a
    value to copy); the member's result is awaited if it is awaitable (a stub, a coroutine).
    """
    ops = plan.ops
    if not ops:
        return instance.state
    name = ops[0][1]
    where = f"{plan.surface.name}.{name}"
    if plan.method is not None:
        args = [await resolve(a) for a in ops[1][1]]
        kwargs = {k: await resolve(v) for k, v in ops[1][2].items()}
        if not plan.coerced:
            args, kwargs = plan.method.coerce(args, kwargs)
        value = plan.method.function(instance, *args, **kwargs)
        rest, where = ops[2:], f"{where}()"
    elif name == "state":
        value, rest = instance.state, ops[1:]
    else:
        value, rest = plan.surface.properties[name][0](instance), ops[1:]
    if inspect.isawaitable(value):
        value = await value
    return read_data(value, rest, where)


def read_data(value: Any, ops: Sequence[Op], where: str) -> Any:
    """Apply data hops to a value, checking each on the live value's type."""
    for op in ops:
        value = _hop(value, op, where)
        where = _label(where, op)
    return value


def plain_key(key: Any) -> bool:
    """Keys an `item` hop may use: text, numbers, bool, None, or a tuple of those."""
    if key is None or type(key) in (str, int, float, bool):
        return True
    return type(key) is tuple and all(k is None or type(k) in (str, int, float, bool) for k in key)


# ------------------------------------------------------------------------ internals
def _check_form(ops: Sequence[Op]) -> None:
    if len(ops) > MAX_OPS:
        raise ProtocolError(f"a chain has at most {MAX_OPS} hops, this one has {len(ops)}")
    for i, op in enumerate(ops):
        kind = op[0] if op else None
        if kind == "get":
            name = op[1] if len(op) == 2 else None
            if not isinstance(name, str) or not name.isidentifier():
                raise ProtocolError(f"hop {i}: an attribute name must be an identifier")
            if name.startswith("_"):
                raise UnknownMethod(f"hop {i}: private name {name!r} cannot be reached")
        elif kind == "item":
            if len(op) != 2:
                raise ProtocolError(f"hop {i}: an item hop takes one key")
            if not plain_key(op[1]):
                raise ProtocolError(
                    f"hop {i}: an item key is text, a number, a bool, None or a tuple of "
                    f"those, not {type(op[1]).__name__}"
                )
        elif kind == "call":
            if len(op) != 3 or not isinstance(op[1], list | tuple) or not isinstance(op[2], dict):
                raise ProtocolError(f"hop {i}: a call hop takes a list of args and a dict")
            if not all(isinstance(k, str) and k.isidentifier() for k in op[2]):
                raise ProtocolError(f"hop {i}: keyword argument names must be identifiers")
        else:
            raise ProtocolError(f"hop {i}: unknown hop kind {kind!r} (get, item or call)")


def _walk(where: str, ann: Any, ops: Sequence[Op]) -> None:
    """Refuse, from annotations alone, the data hops that cannot apply to what they reach."""
    for op in ops:
        if op[0] == "call":
            raise UnknownMethod(_result_call(where))
        found = shape(ann)
        if found.kind == "unknown":
            ann = UNKNOWN
        elif op[0] == "get":
            if found.kind != "record" or op[1] not in found.fields:
                raise UnknownMethod(_no_field(where, op[1], found.label, list(found.fields)))
            ann = found.fields[op[1]]
        else:
            if found.kind not in ("mapping", "sequence"):
                raise UnknownMethod(f"{where} is a {found.label}: it cannot be indexed")
            if found.kind == "sequence" and type(op[1]) is not int:
                raise UnknownMethod(f"{where} is a {found.label}: index it with an int")
            ann = found.item
        where = _label(where, op)


def _hop(value: Any, op: Op, where: str) -> Any:
    kind = op[0]
    if kind == "get":
        name = op[1]
        if isinstance(value, BaseModel):
            names = list(type(value).model_fields)
        elif is_dataclass(value) and not isinstance(value, type):
            names = [f.name for f in fields(value)]
        else:
            names = []
        if not isinstance(name, str) or name not in names:
            raise UnknownMethod(_no_field(where, name, type(value).__qualname__, names))
        return getattr(value, name)
    if kind == "item":
        key = op[1]
        if type(value) is dict and plain_key(key):
            return value[key]
        if type(value) in (list, tuple) and type(key) is int:
            return value[key]
        raise UnknownMethod(
            f"{where} is a {type(value).__qualname__}: only dicts (by a plain key) and lists "
            "or tuples (by an int) can be indexed"
        )
    raise UnknownMethod(_result_call(where))


def _no_field(where: str, name: object, label: str, names: list[str]) -> str:
    if names:
        return f"{where} is a {label} without a field {name!r} (fields: {', '.join(names)})"
    return f"{where} is a {label or 'value'}: it has no fields, so {name!r} cannot be read"


def _result_call(where: str) -> str:
    return (
        f"{where}(...) is refused: only the methods the entity class declares can be called, "
        "as the chain's first hop; what a member returns is data (read its fields and items)"
    )


def _label(where: str, op: Op) -> str:
    if op[0] == "get":
        return f"{where}.{op[1]}"
    if op[0] == "item":
        return f"{where}[{op[1]!r}]"
    return f"{where}()"


def _placeholders(value: Any) -> bool:
    """Whether a value holds something resolved only when the chain runs (a stub, or a
    reference to the result of an earlier chain of the same batch)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, Stub | ImportRef):
            return True
        if isinstance(item, list | tuple | set | frozenset):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item.values())
    return False
