"""Stubs: `self.User(id).profile.email` records hops; `await` sends them all at once.

A stub is the caller's handle on another DO instance, in the spirit of Cap'n Web: reading an
attribute, indexing or calling it returns a longer stub and sends nothing, so a whole chain
travels to the callee in one message and runs there (promise pipelining). What happens on
`await`, and to a call nobody awaits, depends on where the stub was made; that is a `Sink`:

- inside a compiled workflow the engine evaluates the chain as a thunk under `capture()`,
  and the step itself sends it (durably, with the step's idempotency key);
- inside an entity method running on a host, awaited calls go out at once and un-awaited
  calls are queued in the host's outbox, in the transaction that saves the caller's state;
- elsewhere (plain mode, `@step` bodies, clients) an un-awaited call is sent on the next
  turn of the event loop unless a longer chain built on it is awaited first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

from dotdo.errors import EntityError

__all__ = [
    "Op",
    "Sink",
    "Stub",
    "StubFactory",
    "capture",
    "context_sink",
    "entity_key",
    "host_sink",
    "report_failure",
    "sent_prefix",
]

log = logging.getLogger("dotdo.entities")

Op = tuple[Any, ...]
"""One recorded hop: ("get", name), ("item", key) or ("call", args, kwargs)."""


class Sink(Protocol):
    """Decides what building and awaiting a stub does (see the module docstring)."""

    def extended(self, stub: Stub) -> None:
        """`stub` was just built from its parent by one more hop."""

    async def resolve(self, stub: Stub) -> Any:
        """Send `stub`'s chain (or what is left of it) and return the callee's answer."""


class Stub:
    """A recorded chain of hops on one DO instance; `await` it for the result."""

    __slots__ = ("_claimed", "_cls", "_handle", "_key", "_ops", "_parent", "_sink", "_task")

    def __init__(
        self, sink: Sink, cls: str, key: str, ops: tuple[Op, ...] = (), parent: Stub | None = None
    ) -> None:
        self._sink = sink
        self._cls = cls
        self._key = key
        self._ops = ops
        self._parent = parent
        self._claimed = False
        self._handle: asyncio.Handle | None = None
        self._task: asyncio.Task[Any] | None = None

    @property
    def target(self) -> tuple[str, str]:
        """(class name, instance id) of the DO this chain starts at."""
        return self._cls, self._key

    @property
    def ops(self) -> tuple[Op, ...]:
        return self._ops

    def _extend(self, op: Op) -> Stub:
        child = Stub(self._sink, self._cls, self._key, (*self._ops, op), self)
        self._sink.extended(child)
        return child

    def __getattr__(self, name: str) -> Stub:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._extend(("get", name))

    def __getitem__(self, key: Any) -> Stub:
        return self._extend(("item", key))

    def __call__(self, *args: Any, **kwargs: Any) -> Stub:
        return self._extend(("call", args, kwargs))

    def __await__(self) -> Generator[Any, None, Any]:
        return self._sink.resolve(self).__await__()

    def __iter__(self) -> Iterator[Any]:
        raise TypeError(f"{self!r} is a stub, not a value: await it first")

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} is a stub, not a value: did you forget `await`?")

    def __repr__(self) -> str:
        text = f"{self._cls}({self._key!r})"
        for op in self._ops:
            if op[0] == "get":
                text += f".{op[1]}"
            elif op[0] == "item":
                text += f"[{op[1]!r}]"
            else:
                text += "(...)" if op[1] or op[2] else "()"
        return f"<stub {text}>"

    def claim(self) -> None:
        """Mark this chain and every prefix of it as taken by an `await`."""
        node: Stub | None = self
        while node is not None and not node._claimed:
            node._claimed = True
            node = node._parent


class StubFactory:
    """`self.Inventory`: call it with an instance id to get a stub."""

    __slots__ = ("name", "sink")

    def __init__(self, name: str, sink: Sink) -> None:
        self.name = name
        self.sink = sink

    def __call__(self, entity_id: str | int) -> Stub:
        return Stub(self.sink, self.name, entity_key(entity_id))

    def __repr__(self) -> str:
        return f"<entity class {self.name}>"


def entity_key(entity_id: object) -> str:
    """Instance ids are text; ints are accepted for convenience."""
    if isinstance(entity_id, bool) or not isinstance(entity_id, str | int):
        raise TypeError(f"an entity id must be a str or an int, got {type(entity_id).__name__}")
    key = str(entity_id)
    if not key:
        raise ValueError("an entity id cannot be empty")
    return key


# ---------------------------------------------------------------- where stubs are made
class _Capture:
    """Record-only: the workflow step that built the chain is what sends it."""

    def extended(self, stub: Stub) -> None:
        return None

    async def resolve(self, stub: Stub) -> Any:
        raise EntityError(
            f"{stub!r} was built for a workflow step and cannot be awaited on its own"
        )


_CAPTURE = _Capture()
_capturing: ContextVar[bool] = ContextVar("dotdo_entity_capture", default=False)
_host: ContextVar[Sink | None] = ContextVar("dotdo_entity_host", default=None)


def capture(thunk: Callable[[], Any]) -> Any:
    """Evaluate a compiled chain thunk so that it only records (no sends, no tasks)."""
    token = _capturing.set(True)
    try:
        return thunk()
    finally:
        _capturing.reset(token)


@contextlib.contextmanager
def host_sink(sink: Sink) -> Iterator[None]:
    """Stubs made while an entity method runs on a host route through `sink`."""
    token = _host.set(sink)
    try:
        yield
    finally:
        _host.reset(token)


def context_sink() -> Sink | None:
    """Where a stub made right now goes, when the context decides it: nowhere while a
    compiled chain is captured, the host's sink while an entity method runs; otherwise
    None (the `Entity` making the stub picks a step's or plain mode's sink)."""
    if _capturing.get():
        return _CAPTURE
    return _host.get()


def sent_prefix(stub: Stub | None) -> Stub | None:
    """The longest prefix of `stub` (itself included) already on its way, if any."""
    while stub is not None and stub._task is None:
        stub = stub._parent
    return stub


def report_failure(task: asyncio.Task[Any]) -> None:
    """Done-callback of an un-awaited call: its failure is logged, not lost."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.warning("an un-awaited entity call failed: %s: %s", type(error).__name__, error)
