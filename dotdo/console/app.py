"""The console as a Starlette app: `create_app(engine, config)`.

Its lifespan opens the engine (unless the host already did), so the console process also
drives the runs its decisions wake when the app's workflows are registered with it, and
refuses to start on a non-loopback address while the database has no user. Every response
carries the security headers; every refusal becomes an error page or a JSON error with its
status, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dotdo.console.api import api_routes
from dotdo.console.live import live_routes
from dotdo.console.pages import page_routes, render
from dotdo.console.security import HEADERS, refuse_open_bind
from dotdo.console.state import Caller, ConsoleConfig, ConsoleState, Refused
from dotdo.engine import people
from dotdo.engine.engine import Engine
from dotdo.errors import DotdoError

__all__ = ["create_app"]

log = logging.getLogger("dotdo.console")


class _Headers:
    """Security headers on every response (pages, API, static files, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in have
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    if _wants_json(request):
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    if exc.status == 401 and request.method == "GET":
        return RedirectResponse("/login", status_code=303)
    state: ConsoleState = request.app.state.console
    try:
        caller = await state.identify(request)
    except Refused:
        caller = Caller(None, None, "none")
    context = {"status": exc.status, "message": exc.message}
    return render(request, caller, "error.html", context, status=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such page", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return await _refused(request, Refused(exc.status_code, message))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("console error on %s %s", request.method, request.url.path)
    if _wants_json(request):
        return JSONResponse({"error": "internal error (logged)"}, status_code=500)
    return Response("internal error (logged)", status_code=500, media_type="text/plain")


def create_app(engine: Engine, config: ConsoleConfig | None = None) -> Starlette:
    """The console over `engine` (opened by the app's lifespan if it is not open yet)."""
    config = config or ConsoleConfig()
    state = ConsoleState(engine, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opened_here = engine._store is None
        if opened_here:
            await engine.open()
        try:
            reason = refuse_open_bind(config.host, await people.users_exist(engine.store))
            if reason is not None:
                raise DotdoError(reason)
            await state.start()
            yield
        finally:
            if opened_here:
                await engine.close()

    static = StaticFiles(directory=str(Path(__file__).with_name("static")))
    app = Starlette(
        routes=[*api_routes, *live_routes, *page_routes, Mount("/static", static, name="static")],
        exception_handlers={
            Refused: _refused,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.console = state
    app.add_middleware(_Headers)
    return app
