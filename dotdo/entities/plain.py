"""Plain mode: entity calls without an engine, for unit tests of workflows and entities.

A workflow called directly on an instance runs as ordinary Python; its `self.Inventory(w)`
then reaches an in-memory instance of the DO class of that name (the one the calling class's
module sees, else the latest defined in this process), one instance per id, its state kept
in memory. The rules are the
engine's: one call at a time per instance, a chain that raises leaves the state as it was,
arguments and results are copied through the wire encoding (so what could not be sent fails
here too), and only the members a remote caller could reach are reachable.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from typing import Any

from dotdo.engine import serde
from dotdo.entities import registry
from dotdo.entities.chains import check_chain, read_data, run_chain
from dotdo.entities.sinks import EagerSink
from dotdo.entities.stubs import Stub
from dotdo.errors import ArgumentError, SerializationError, UnknownEntity

__all__ = ["plain_entity", "plain_sink", "reset_plain"]

_instances: dict[tuple[type[Any], str], Any] = {}
_locks: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[type[Any], str], asyncio.Lock]
]
_locks = weakref.WeakKeyDictionary()


def _class(name: str, scope: dict[str, Any] | None = None) -> type[Any]:
    found = (scope or {}).get(name)
    if registry.is_entity_class(found):
        assert isinstance(found, type)
        return found
    cls = registry.by_name(name)
    if cls is None:
        raise UnknownEntity(f"no DO class named {name!r} is defined in this process")
    return cls


def plain_entity(name: str | type[Any], entity_id: str | int) -> Any:
    """The in-memory instance plain-mode calls reach (created on first use)."""
    cls = _class(name) if isinstance(name, str) else name
    key = (cls, str(entity_id))
    found = _instances.get(key)
    if found is None:
        found = _instances[key] = cls(str(entity_id))
    return found


def reset_plain() -> None:
    """Forget every in-memory instance (between tests)."""
    _instances.clear()


def _lock(key: tuple[type[Any], str]) -> asyncio.Lock:
    per_loop = _locks.setdefault(asyncio.get_running_loop(), {})
    found = per_loop.get(key)
    if found is None:
        found = per_loop[key] = asyncio.Lock()
    return found


def _copy(value: Any, what: str) -> Any:
    try:
        return serde.decode(serde.encode(value), wire=True)
    except SerializationError as exc:
        raise ArgumentError(f"{what} cannot be sent: {exc}") from None


class _PlainSink(EagerSink):
    def __init__(self, scope: dict[str, Any] | None) -> None:
        self.scope = scope

    async def send(self, stub: Stub) -> Any:
        return await self._apply(stub, list(stub.ops))

    async def _run(self, stub: Stub, base: Stub | None) -> Any:
        if base is None:
            return await self.send(stub)
        assert base._task is not None
        value = await base._task  # the rest of a chain whose prefix was sent: data hops only
        rest = stub.ops[len(base.ops) :]
        return _copy(read_data(value, rest, repr(base)), f"the result of {stub!r}")

    async def _apply(self, stub: Stub, ops: list[Any]) -> Any:
        cls = _class(stub.target[0], self.scope)
        plan = check_chain(cls, ops, coerce=False)  # arguments are coerced once resolved
        instance = plain_entity(cls, stub.target[1])
        async with _lock((cls, stub.target[1])):
            saved = instance.state
            snapshot = saved.model_copy(deep=True) if saved is not None else None
            try:
                value = await run_chain(instance, plan, resolve=self.resolve_arg)
            except BaseException:
                instance.state = snapshot
                raise
        return _copy(value, f"the result of {stub!r}")

    async def resolve_arg(self, value: Any) -> Any:
        if isinstance(value, Stub):
            return await value
        if isinstance(value, list | tuple | dict) and _has_stub(value):
            value = await _resolve_nested(value, self.resolve_arg)
        return _copy(value, "an argument")


def _has_stub(value: Any) -> bool:
    if isinstance(value, Stub):
        return True
    if isinstance(value, list | tuple):
        return any(_has_stub(v) for v in value)
    if isinstance(value, dict):
        return any(_has_stub(v) for v in value.values())
    return False


async def _resolve_nested(value: Any, resolve: Any) -> Any:
    if isinstance(value, Stub):
        return await value
    if isinstance(value, list):
        return [await _resolve_nested(v, resolve) for v in value]
    if isinstance(value, tuple):
        return tuple([await _resolve_nested(v, resolve) for v in value])
    if isinstance(value, dict):
        return {k: await _resolve_nested(v, resolve) for k, v in value.items()}
    return value


def plain_sink(origin: Any) -> _PlainSink:
    """The sink of stubs made by `origin` outside any engine."""
    module = sys.modules.get(type(origin).__module__)
    return _PlainSink(vars(module) if module is not None else None)
