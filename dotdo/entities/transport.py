"""Getting a request message to the host of a class: in this process, or over HTTP.

The two routes take and return the same JSON-shaped messages, so a call behaves the same
wherever its callee lives: arguments are encoded (and the callee works on copies), results
and errors come back decoded from the wire form.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from dotdo.engine.telemetry import trace_headers
from dotdo.entities.messages import parse_json
from dotdo.errors import (
    ArgumentError,
    CallIdReused,
    EntityAuthError,
    EntityError,
    EntityUnavailable,
    ProtocolError,
    UnknownEntity,
    UnknownMethod,
)

if TYPE_CHECKING:
    from dotdo.entities.host import EntityHost

__all__ = ["RPC_PATH", "LocalRoute", "RemoteRoute", "Route"]

RPC_PATH = "/dotdo/rpc"
MAX_IN_FLIGHT = 8
"""Concurrent requests per server; more wait in line (and share kept-alive connections)."""


class Route(Protocol):
    key: str

    async def send(self, request: dict[str, Any]) -> Any:
        """Deliver one request message; return the results message."""

    async def aclose(self) -> None: ...


class LocalRoute:
    """The class is registered on this engine: its host runs the batch directly."""

    key = "local"

    def __init__(self, host: EntityHost) -> None:
        self.host = host

    async def send(self, request: dict[str, Any]) -> Any:
        return await self.host.handle(request)

    async def aclose(self) -> None:
        return None


class RemoteRoute:
    """A `dotdo serve` process: one POST per batch, bearer token, kept-alive connections."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        token = token if token is not None else os.environ.get("DOTDO_TOKEN")
        if not token:
            raise EntityError(f"calls to {url} need a bearer token: pass token= or set DOTDO_TOKEN")
        self.url = url.rstrip("/")
        self.key = self.url
        self.timeout = timeout
        self._token = token
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self.requests = 0

    def __repr__(self) -> str:
        return f"RemoteRoute({self.url!r})"

    def same_server(self, other: RemoteRoute) -> bool:
        return (self.url, self._token, self.timeout) == (other.url, other._token, other.timeout)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self.timeout,
                limits=httpx.Limits(
                    max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT
                ),
            )
        return self._client

    async def send(self, request: dict[str, Any]) -> Any:
        # Queue here, not in httpx: its pool rescans every waiting request for every free
        # connection, which turns a thousand concurrent calls quadratic.
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.requests += 1
        try:
            async with self._slots:
                response = await self._http().post(RPC_PATH, json=request, headers=trace_headers())
        except httpx.HTTPError as exc:
            raise EntityUnavailable(
                f"{self.url} did not answer: {type(exc).__name__}: {exc}"
            ) from None
        if response.status_code == 200:
            try:
                return parse_json(response.content)
            except ProtocolError as exc:
                raise EntityUnavailable(f"{self.url} answered garbage: {exc}") from None
        kind, detail = _detail(response)
        status = response.status_code
        if status in (401, 403):
            raise EntityAuthError(f"{self.url} refused the call ({status}): {detail}")
        if status == 409:
            raise CallIdReused(f"{self.url} refused the call id ({status}): {detail}")
        if status in (400, 404, 413, 422):
            error = _REFUSALS.get(kind, ProtocolError)
            raise error(f"{self.url} refused the call ({status}): {detail}")
        raise EntityUnavailable(f"{self.url} failed ({status}): {detail}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


_REFUSALS: dict[str, type[EntityError]] = {
    cls.__name__: cls for cls in (ProtocolError, UnknownEntity, UnknownMethod, ArgumentError)
}
"""A 400's error type -> the class the caller raises (all PermanentErrors: a refusal
before anything ran does not change with a retry)."""


def _detail(response: httpx.Response) -> tuple[str, str]:
    """(error type, message) of a refusal, as far as the body says."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return "", response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        kind = error.get("type")
        return (kind if isinstance(kind, str) else ""), str(error.get("message", error))[:2000]
    return "", str(body)[:200]
