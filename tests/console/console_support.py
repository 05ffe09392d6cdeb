"""Helpers for the console tests: a console over a fresh database with five people, driven
in-process through httpx (fast), or served on 127.0.0.1 by uvicorn in a thread (for the
browser), with a way to run coroutines on the server's own loop.

A module of its own name (not conftest): `from conftest import ...` would find whichever
directory's conftest was imported last."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.applications import Starlette

from dotdo import Engine
from dotdo.console import ConsoleConfig, create_app
from dotdo.engine import people

T = TypeVar("T")
PASSWORD = "correct horse battery"
PEOPLE = {
    "alice": ("approver", ["manager"]),
    "dan": ("approver", ["director"]),
    "fin": ("approver", ["finance"]),
    "olga": ("operator", ["ops", "human"]),
    "vic": ("viewer", ["viewer-name"]),
}


def engine_for(db: str | Path) -> Engine:
    import console_app

    return Engine(db, poll_seconds=0.02).register(console_app.Purchases, console_app.Mailer)


async def add_people(engine: Engine) -> None:
    for name, (role, names) in PEOPLE.items():
        await people.add_user(
            engine.store, name, role=role, names=names, password=PASSWORD, now=time.time()
        )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@dataclass
class Console:
    engine: Engine
    app: Starlette
    base: str = "http://127.0.0.1"

    def client(self, peer: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        return httpx.AsyncClient(transport=transport, base_url=self.base)

    async def login(self, name: str, password: str = PASSWORD) -> httpx.AsyncClient:
        client = self.client()
        page = await client.get("/login")
        response = await client.post(
            "/login",
            data={"csrf": csrf_of(page.text), "username": name, "password": password},
        )
        assert response.status_code == 303, response.text
        return client

    async def csrf(self, client: httpx.AsyncClient, path: str = "/inbox") -> str:
        return csrf_of((await client.get(path)).text)


async def open_console(location: str | Path) -> AsyncIterator[Console]:
    """A console over a fresh database at `location` (a file path or a backend's URL)."""
    import console_app

    console_app.MAILBOX.clear()
    engine = engine_for(location)
    await engine.open()
    try:
        await add_people(engine)
        app = create_app(engine, ConsoleConfig(trust_header="X-Forwarded-User"))
        async with app.router.lifespan_context(app):
            yield Console(engine, app)
    finally:
        await engine.close()


class LiveServer:
    """uvicorn on 127.0.0.1 (a free port) in a thread with its own event loop."""

    def __init__(self, db: Path, config: ConsoleConfig | None = None) -> None:
        self.db = db
        self.config = config or ConsoleConfig()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: Engine | None = None
        self._ready = threading.Event()
        self._server: uvicorn.Server | None = None
        self._error: BaseException | None = None
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )  # no 40 ms delayed-ACK stalls
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._run, name="console-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.engine = engine_for(self.db)
        await self.engine.open()
        await add_people(self.engine)
        app = create_app(self.engine, self.config)
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        serving = asyncio.create_task(self._server.serve(sockets=[self.sock]))
        while not self._server.started:
            if serving.done():
                await serving
            await asyncio.sleep(0.01)
        self._ready.set()
        try:
            await serving
        finally:
            await self.engine.close()

    def start(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the console did not start: {self._error!r}")
        return self

    def call(self, make: Callable[[Engine], Awaitable[T]], timeout: float = 20) -> T:
        assert self.loop is not None and self.engine is not None
        engine = self.engine

        async def run() -> T:
            return await make(engine)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(15)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")
