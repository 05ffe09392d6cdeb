"""Running a chain of hops on the callee's side, and what a chain may touch.

The caller chooses the hops, and over HTTP the caller is another machine, so a chain cannot
be allowed to walk anywhere `getattr` can: it starts at a member the DO's own class defines
(a plain method or property, or `state`; never a workflow, a step, the DO base class's
machinery or a private name) and never reads a name that starts with an underscore.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dotdo.dsl.approvals import ApprovalDef
from dotdo.dsl.decorators import StepDef, WorkflowDef
from dotdo.dsl.do import DO
from dotdo.entities.errors import ProtocolError, UnknownMethod
from dotdo.entities.stubs import Op

__all__ = ["check_ops", "members", "run_chain", "run_ops"]

MAX_OPS = 64

_members: dict[type, frozenset[str]] = {}


def members(cls: type[DO]) -> frozenset[str]:
    """What a chain may start with on `cls`: its own public methods and properties, `state`."""
    found = _members.get(cls)
    if found is None:
        names = {"state"}
        for klass in cls.__mro__:
            if klass is DO or klass is object:
                continue
            for name, value in vars(klass).items():
                if name.startswith("_") or name[:1].isupper():
                    continue
                if isinstance(value, WorkflowDef | StepDef | ApprovalDef):
                    continue
                if isinstance(value, staticmethod | classmethod):
                    continue
                if callable(value) or isinstance(value, property):
                    names.add(name)
        found = _members[cls] = frozenset(names)
    return found


def check_ops(cls: type[DO], ops: Sequence[Op]) -> None:
    """Refuse a chain before anything runs: wrong shapes, private names, unknown members."""
    if len(ops) > MAX_OPS:
        raise ProtocolError(f"a chain has at most {MAX_OPS} hops, this one has {len(ops)}")
    for i, op in enumerate(ops):
        kind = op[0] if op else None
        if kind == "get":
            name = op[1] if len(op) == 2 else None
            if not isinstance(name, str) or not name.isidentifier():
                raise ProtocolError(f"hop {i}: an attribute name must be an identifier")
            if name.startswith("_"):
                raise UnknownMethod(f"{cls.__name__}: private name {name!r} cannot be reached")
        elif kind == "item":
            if len(op) != 2:
                raise ProtocolError(f"hop {i}: an item hop takes one key")
        elif kind == "call":
            if len(op) != 3 or not isinstance(op[1], list | tuple) or not isinstance(op[2], dict):
                raise ProtocolError(f"hop {i}: a call hop takes a list of args and a dict")
            if not all(isinstance(k, str) and k.isidentifier() for k in op[2]):
                raise ProtocolError(f"hop {i}: keyword argument names must be identifiers")
        else:
            raise ProtocolError(f"hop {i}: unknown hop kind {kind!r} (get, item or call)")
    if not ops:
        return
    if ops[0][0] != "get":
        raise UnknownMethod(
            f"a chain on {cls.__name__} must start with one of its methods or attributes"
        )
    name = ops[0][1]
    offered = members(cls)
    if name not in offered:
        listing = ", ".join(sorted(offered))
        raise UnknownMethod(
            f"{cls.__name__} has no method or attribute {name!r} (offers: {listing})"
        )


async def run_chain(
    instance: DO, ops: Sequence[Op], resolve: Callable[[Any], Awaitable[Any]]
) -> Any:
    """Apply `ops` to the instance; an empty chain reads its state."""
    if not ops:
        return instance.state
    return await run_ops(instance, ops, resolve=resolve)


async def run_ops(
    value: Any, ops: Sequence[Op], *, resolve: Callable[[Any], Awaitable[Any]]
) -> Any:
    """Apply hops to a value, awaiting whatever a hop returns that is awaitable.

    `resolve` turns an argument into the value the method receives (a pipelined result, a
    stub to await); an awaitable result, a stub included, is awaited like a promise.
    """
    for op in ops:
        kind = op[0]
        if kind == "get":
            if op[1].startswith("_"):
                raise UnknownMethod(f"private name {op[1]!r} cannot be reached")
            value = getattr(value, op[1])
        elif kind == "item":
            value = value[op[1]]
        else:
            args = [await resolve(a) for a in op[1]]
            kwargs = {k: await resolve(v) for k, v in op[2].items()}
            value = value(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
    return value
