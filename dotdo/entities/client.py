"""A caller without an engine: scripts, services and benchmarks talking to `dotdo serve`.

    async with connect("http://127.0.0.1:8123", token=...) as client:
        email = await client.User("42").profile.email       # one request

Calls made this way are not durable (there is no journal to resume from); each gets a
fresh call id unless `client.call(stub, call_id=...)` names one, which makes a retry safe.
"""

from __future__ import annotations

import uuid
from typing import Any

from dotdo.entities.messages import build_batch, decode_results, encode_request
from dotdo.entities.runtime import _answer
from dotdo.entities.sinks import EagerSink
from dotdo.entities.stubs import Stub, StubFactory
from dotdo.entities.surface import trust_answers
from dotdo.entities.transport import RemoteRoute
from dotdo.errors import ProtocolError

__all__ = ["Client", "connect"]


class Client:
    """Stubs for the DO classes one server hosts: `client.Inventory("w1").reserve(...)`."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.route = RemoteRoute(url, token=token, timeout=timeout)

    @property
    def requests(self) -> int:
        """HTTP requests sent so far (one per awaited chain, however many hops)."""
        return self.route.requests

    def __getattr__(self, name: str) -> StubFactory:
        if name[:1].isupper():
            trust_answers(name)  # answers decode to the types that class declares, if known
            return StubFactory(name, _ClientSink(self))
        raise AttributeError(name)

    async def call(self, stub: Stub, *, call_id: str | None = None) -> Any:
        """Send `stub` in one request under `call_id` (the server applies a call id once)."""
        call_id = call_id or uuid.uuid4().hex
        items, pull = await build_batch(
            stub, call_id, together=lambda s: True, elsewhere=self.call_as
        )
        response = await self.route.send(encode_request(items, [pull]))
        outcomes = decode_results(response)
        if pull not in outcomes:
            raise ProtocolError("the answer has no result for the call")
        return _answer(outcomes, pull)

    async def call_as(self, stub: Stub, call_id: str) -> Any:
        return await self.call(stub, call_id=call_id)

    async def aclose(self) -> None:
        await self.route.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _ClientSink(EagerSink):
    def __init__(self, client: Client) -> None:
        self.client = client

    async def send(self, stub: Stub) -> Any:
        return await self.client.call(stub)


def connect(url: str, *, token: str | None = None, timeout: float = 30.0) -> Client:
    """A client of the `dotdo serve` at `url`; `token` defaults to $DOTDO_TOKEN."""
    return Client(url, token=token, timeout=timeout)
