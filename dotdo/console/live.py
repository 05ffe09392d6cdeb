"""Live run views: the diagram as an image, and server-sent events as the run moves.

The stream reads the run's row a few times a second (one indexed read) and sends a fresh
HTML fragment whenever its status, node or step count changes; htmx's SSE extension swaps
it into the page. Reading the store, not listening to one engine, means a run advanced by a
worker in another process shows up just the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from dotdo.console.state import Caller, ConsoleState, Refused
from dotdo.console.templating import templates

__all__ = ["live_routes"]

POLL = 0.1
HEARTBEAT = 15.0


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


async def diagram(request: Request) -> Response:
    state = _state(request)
    caller = await state.identify(request)
    if caller.person is None:
        raise Refused(401, "sign in first")
    highlight = request.query_params.get("highlight") or None
    run_id = request.path_params["run_id"]
    _scope(state, caller, run_id)
    kind, body = await state.diagram(run_id, highlight)
    return Response(body, media_type=kind, headers={"cache-control": "private, max-age=3600"})


def _scope(state: ConsoleState, caller: Caller, run_id: str) -> None:
    """A signed link's session sees the run of its one approval; others need to be viewers."""
    if caller.link is not None:
        if not caller.link[0].startswith(f"{run_id}/"):
            raise Refused(403, "a signed link opens its one decision page only")
    else:
        state.require(caller)


def _event(name: str, html: str) -> str:
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{lines}\n"


async def live(request: Request) -> Response:
    state = _state(request)
    caller = await state.identify(request)
    if caller.person is None:
        raise Refused(401, "sign in first")
    run_id = request.path_params["run_id"]
    _scope(state, caller, run_id)
    await state.run(run_id)  # 404 before the stream starts
    highlight = request.query_params.get("highlight") or ""
    compact = request.query_params.get("compact") == "1"

    async def stream() -> AsyncIterator[str]:
        seen: tuple[object, ...] | None = None
        started = last_sent = time.monotonic()
        while time.monotonic() - started < state.config.live_seconds:
            row = await state.store.load_run(run_id)
            if row is None:
                return
            now_seen = (row.status, row.node, row.steps_done, row.updated_at)
            if now_seen != seen:
                seen = now_seen
                run = await state.run(run_id)
                html = templates.get_template("run_live.html").render(
                    run=run, highlight=highlight, compact=compact
                )
                yield _event("run", html)
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent > HEARTBEAT:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(POLL if row.status in ("running", "waiting") else 1.0)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


live_routes = [
    Route("/runs/{run_id}/diagram", diagram),
    Route("/runs/{run_id}/live", live),
]
