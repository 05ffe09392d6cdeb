"""`EagerSink`: what awaiting a stub does outside a compiled workflow step.

Await sends the chain; a call nobody awaits is sent on the next turn of the event loop.
Plain mode, calls from inside a step body, the caller-side `Entities` and the HTTP client
all send this way and differ only in `send`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dotdo.entities.chains import read_data
from dotdo.entities.stubs import Stub, report_failure, sent_prefix
from dotdo.errors import EntityError

__all__ = ["EagerSink"]


class EagerSink:
    """Await sends the chain; a call nobody awaits is sent on the next loop turn.

    Awaiting a chain claims it and its prefixes, so `await a.f().g` sends `f().g` once and
    `f()` is not also sent on its own. A prefix already sent (kept in a variable, awaited
    later) is awaited once and the rest of the chain (data hops only: fields and items) is
    applied to its result.
    """

    def extended(self, stub: Stub) -> None:
        if stub._ops[-1][0] == "call":
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise EntityError(
                    f"{stub!r}: an entity call needs a running event loop (call it from "
                    "async code and await it)"
                ) from None
            stub._handle = loop.call_soon(self._fire, stub)

    def _fire(self, stub: Stub) -> None:
        stub._handle = None
        if stub._claimed:
            return
        stub._task = asyncio.get_running_loop().create_task(self._start(stub))
        stub._task.add_done_callback(report_failure)

    async def _start(self, stub: Stub) -> Any:
        base = sent_prefix(stub._parent)
        return await self._run(stub, base)

    async def resolve(self, stub: Stub) -> Any:
        stub.claim()
        base = sent_prefix(stub)
        if base is stub:
            assert stub._task is not None
            return await stub._task
        return await self._run(stub, base)

    async def _run(self, stub: Stub, base: Stub | None) -> Any:
        if base is None:
            return await self.send(stub)
        assert base._task is not None
        value = await base._task
        # The rest of the chain applies to a result: data hops only, as on a callee.
        return read_data(value, stub._ops[len(base._ops) :], repr(base))

    async def send(self, stub: Stub) -> Any:
        raise NotImplementedError

    async def resolve_arg(self, value: Any) -> Any:
        return await value if isinstance(value, Stub) else value
