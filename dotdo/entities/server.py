"""`dotdo serve`: host DO instances over HTTP (Starlette + uvicorn).

One endpoint, `POST /dotdo/rpc`, takes a batch message (see `messages`) and answers its
results. The bearer token is checked before the body is even read, so a request without it
(401) or with a wrong one (403) changes nothing. Every refusal happens before any chain runs
and is a JSON `{"error": {"type", "message"}}`, never a traceback: a malformed or hostile body
or a chain that reaches for what the class does not offer is 400, a reused call id 409, a
body over 8 MiB 413. A peer holding the token is still not trusted (docs/security.md).

The server binds to 127.0.0.1 unless told otherwise, and refuses any other address without a
token of at least 16 characters: the token is the only guard, and without TLS in front it
travels in clear text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dotdo.engine.engine import Engine
from dotdo.engine.telemetry import incoming_trace
from dotdo.entities import registry
from dotdo.entities.messages import MAX_BODY, parse_json
from dotdo.entities.runtime import Entities, entities_of
from dotdo.entities.transport import RPC_PATH
from dotdo.errors import (
    ArgumentError,
    CallIdReused,
    EntityError,
    ProtocolError,
    UnknownEntity,
    UnknownMethod,
)

__all__ = [
    "MIN_PUBLIC_TOKEN",
    "Server",
    "build_app",
    "check_bind",
    "create_app",
    "load_classes",
    "running",
    "serve",
    "serve_async",
]

log = logging.getLogger("dotdo.entities")

MIN_PUBLIC_TOKEN = 16
"""Shortest token accepted when serving on an address other than loopback."""

_REFUSED: dict[type[Exception], int] = {
    ProtocolError: 400,
    UnknownEntity: 400,
    UnknownMethod: 400,
    ArgumentError: 400,
    CallIdReused: 409,
}


class Server:
    """The state of one app: its engine's entity runtime, its token, request counts."""

    def __init__(self, entities: Entities | None, token: str) -> None:
        self.entities = entities
        self.token = token.encode()
        self.requests = 0
        """Authorised RPC requests handled (each one a batch, however many hops), refused
        ones included."""
        self.refused = 0
        """Requests refused for their token (401, 403)."""
        self.rejected = 0
        """Authorised requests refused before anything ran (400, 409, 413)."""

    def check(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            self.refused += 1
            return _error(401, "EntityAuthError", "a bearer token is required", bearer=True)
        if not hmac.compare_digest(given.strip().encode(), self.token):
            self.refused += 1
            return _error(403, "EntityAuthError", "the bearer token is wrong")
        return None

    async def rpc(self, request: Request) -> Response:
        refused = self.check(request)
        if refused is not None:
            return refused
        if self.entities is None:
            return _error(503, "EntityUnavailable", "the server is starting or stopping")
        self.requests += 1
        body = await _read_capped(request)
        if body is None:
            self.rejected += 1
            return _error(413, "ProtocolError", f"the message is larger than {MAX_BODY} bytes")
        try:
            with incoming_trace(request.headers):
                answer = await self.entities.host.handle(parse_json(body))
            return JSONResponse(answer)
        except tuple(_REFUSED) as exc:
            self.rejected += 1
            status = next(code for kind, code in _REFUSED.items() if isinstance(exc, kind))
            return _error(status, type(exc).__name__, str(exc))
        except RecursionError:  # belt and braces: parse_json bounds nesting already
            self.rejected += 1
            return _error(400, "ProtocolError", "the message is nested too deeply")
        except Exception:
            log.exception("dotdo serve failed on a request")
            return _error(500, "InternalError", "the server failed on this request; see its log")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})


async def _read_capped(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY (without reading the rest into memory)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, kind: str, message: str, *, bearer: bool = False) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if bearer else None
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


def _token(token: str | None) -> str:
    token = token if token is not None else os.environ.get("DOTDO_TOKEN")
    if not token or not token.strip():
        raise EntityError("serving DOs needs a bearer token: set DOTDO_TOKEN (or pass token=)")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_bind(host: str, token: str | None) -> str:
    """The token to serve with on `host`; EntityError (one line) when that is not safe.

    Loopback needs a token; any other address (0.0.0.0, a LAN or public address, a host
    name) needs one of at least MIN_PUBLIC_TOKEN characters, and TLS in front.
    """
    given = token if token is not None else os.environ.get("DOTDO_TOKEN")
    if is_loopback(host):
        return _token(given)
    if not given or len(given.strip()) < MIN_PUBLIC_TOKEN:
        raise EntityError(
            f"refusing to serve on {host}, which is not a loopback address, without a bearer "
            f"token of at least {MIN_PUBLIC_TOKEN} characters: set DOTDO_TOKEN (or --token), "
            "and put TLS in front"
        )
    return given


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (unknown path 404, wrong method 405) as JSON too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "the server failed"
    return _error(status, "ProtocolError" if status < 500 else "InternalError", str(detail))


def _app(server: Server, lifespan: Any = None) -> Starlette:
    app = Starlette(
        routes=[
            Route(RPC_PATH, server.rpc, methods=["POST"]),
            Route("/dotdo/health", server.health, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.dotdo = server
    return app


def create_app(engine: Engine, *, token: str | None = None) -> Starlette:
    """An ASGI app serving the DO classes registered on `engine` (which the caller opens)."""
    return _app(Server(entities_of(engine), _token(token)))


def load_classes(modules: Iterable[str | ModuleType]) -> list[type[Any]]:
    """The DO classes found in these modules (imported by name if needed)."""
    found: list[type[Any]] = []
    for module in modules:
        mod = importlib.import_module(module) if isinstance(module, str) else module
        for value in vars(mod).values():
            if registry.is_entity_class(value):
                if value not in found:
                    found.append(value)
    if not found:
        names = ", ".join(m if isinstance(m, str) else m.__name__ for m in modules)
        raise EntityError(f"no DO classes found in {names}")
    return found


def build_app(
    modules: Sequence[str | ModuleType],
    *,
    db: str | Path = "dotdo.db",
    token: str | None = None,
    engine: Engine | None = None,
) -> Starlette:
    """An ASGI app that opens its own engine on `db`, hosting the DO classes of `modules`.

    The engine also runs those classes' workflows, timers and event handlers, like
    `dotdo worker`; it opens on the app's startup and closes on shutdown.
    """
    classes = load_classes(modules)
    engine = engine or Engine(db)
    engine.register(*classes)
    server = Server(None, _token(token))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with engine:
            server.entities = entities_of(engine)
            try:
                yield
            finally:
                await server.entities.aclose()
                server.entities = None

    return _app(server, lifespan)


async def serve_async(
    app_modules: Sequence[str | ModuleType] | str,
    host: str = "127.0.0.1",
    port: int = 8123,
    db: str | Path = "dotdo.db",
    *,
    token: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve until cancelled or interrupted (see `serve`)."""
    modules = [app_modules] if isinstance(app_modules, str) else list(app_modules)
    token = check_bind(host, token)
    app = build_app(modules, db=db, token=token)
    if not is_loopback(host):
        log.warning("serving DOs on %s: the token travels in clear text, put TLS in front", host)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    await uvicorn.Server(config).serve()


def serve(
    app_modules: Sequence[str | ModuleType] | str,
    host: str = "127.0.0.1",
    port: int = 8123,
    db: str | Path = "dotdo.db",
    *,
    token: str | None = None,
    log_level: str = "info",
) -> None:
    """Host the DO classes of `app_modules` at http://host:port on database `db`.

    Blocks until Ctrl-C. The token is `token` or $DOTDO_TOKEN; callers route a class here
    with `dotdo.entities.remote(engine, "Inventory", "http://host:port", token=...)`.
    """
    check_bind(host, token)  # fail before binding the port
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_async(app_modules, host, port, db, token=token, log_level=log_level))


@contextlib.asynccontextmanager
async def running(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run `app` with uvicorn inside this event loop; yields its URL (port 0: any free one).

    For tests and benchmarks; always shuts the server down on exit.
    """
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="auto")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise EntityError("the server stopped while starting")
            await asyncio.sleep(0.01)
        sockets = [s for srv in server.servers for s in srv.sockets]
        bound = sockets[0].getsockname()[1]
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
