"""Shared targets of the entity-boundary attacks (no tests here).

`SecVault` is an entity class with every kind of member a class body can hold: the declared
remote surface (public methods and properties), and everything that must stay out of reach
(private names, workflows, steps, compensations, approvals, schedules, event handlers,
static and class methods, a function assigned from elsewhere, a lambda, a mixin's method,
a property setter, nested classes, the DO base class's methods). Every body, reachable or
not, appends its name to `RAN`, and so do the methods and properties of the models it
returns, so a test can tell exactly what a request ran.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field

from dotdo import DO, Engine, approval, compensate, every, on, step, workflow
from dotdo.entities import create_app
from dotdo.entities.transport import RPC_PATH

TOKEN = "security-token-0123456789"
RAN: list[str] = []
"""Every method or property body that ran, declared or not, in order."""

DECLARED = frozenset(
    {"deposit", "peek", "describe", "box", "echo", "register", "loose", "size", "level", "fail"}
)
"""The remote surface of SecVault: the only names that may ever appear in RAN as its own."""


def _helper(self: Any, *args: Any) -> str:
    RAN.append("helper")
    return "helper ran"


class Mixin:
    def mixed(self) -> str:
        RAN.append("mixed")
        return "mixed ran"


class Info(BaseModel):
    label: str = "v"
    tags: list[str] = Field(default_factory=lambda: ["a", "b"])
    meta: dict[str, int] = Field(default_factory=lambda: {"k": 1})

    def leak(self) -> str:
        RAN.append("Info.leak")
        return "leaked"

    @property
    def loud(self) -> str:
        RAN.append("Info.loud")
        return self.label.upper()


@dataclass
class Box:
    n: int = 1
    words: tuple[str, ...] = ("x", "y")

    def open(self) -> str:
        RAN.append("Box.open")
        return "opened"


class VaultState(BaseModel):
    stock: dict[str, int] = Field(default_factory=lambda: {"apple": 3})
    items: list[str] = Field(default_factory=lambda: ["first"])
    secret: str = "s3cret"
    info: Info = Field(default_factory=Info)
    anything: Any = Field(default_factory=lambda: {"x": [1, 2]})

    def wipe(self) -> None:
        RAN.append("VaultState.wipe")
        self.stock.clear()

    @property
    def total(self) -> int:
        RAN.append("VaultState.total")
        return sum(self.stock.values())


class SecVault(Mixin, DO):
    State = VaultState

    helper = _helper
    shout = lambda self: RAN.append("shout")  # noqa: E731

    class Nested:
        def __init__(self) -> None:
            RAN.append("Nested")

    # ------------------------------------------------------------ the remote surface
    async def deposit(self, sku: str, n: int) -> int:
        RAN.append("deposit")
        assert type(sku) is str and type(n) is int  # the declared types, always
        self.state.stock[sku] = self.state.stock.get(sku, 0) + n
        return self.state.stock[sku]

    def peek(self) -> VaultState:
        RAN.append("peek")
        return self.state  # type: ignore[no-any-return]

    def describe(self) -> Info:
        RAN.append("describe")
        return self.state.info  # type: ignore[no-any-return]

    def box(self) -> Box:
        RAN.append("box")
        return Box()

    def echo(self, value: Any) -> Any:
        RAN.append("echo")
        ECHOED.append(value)
        return value

    def register(self, info: Info, *, times: int = 1) -> str:
        RAN.append("register")
        assert isinstance(info, Info) and type(times) is int
        return f"{type(info).__name__} x{times}"

    def loose(self, value):  # type: ignore[no-untyped-def]
        RAN.append("loose")
        return value

    def fail(self, kind: str) -> None:
        RAN.append("fail")
        self.state.secret = "changed by a failing call"
        raise RAISABLE[kind]

    @property
    def size(self) -> int:
        RAN.append("size")
        return len(self.state.stock)

    @property
    def level(self) -> int:
        RAN.append("level")
        return 1

    @level.setter
    def level(self, value: int) -> None:
        RAN.append("level.setter")

    # ------------------------------------------------------------ out of reach
    def _private(self) -> str:
        RAN.append("_private")
        return "private"

    @staticmethod
    def static() -> str:
        RAN.append("static")
        return "static"

    @classmethod
    def klass(cls) -> str:
        RAN.append("klass")
        return "klass"

    @step
    async def stp(self) -> int:
        RAN.append("stp")
        return 1

    @compensate(stp)
    async def undo(self, value: int) -> None:
        RAN.append("undo")

    @approval(approvers=["boss"])
    def appr(self) -> dict[str, Any]:
        RAN.append("appr")
        return {"title": "t"}

    @every.day.at("9am")
    async def sched(self) -> None:
        RAN.append("sched")

    @on.SecVault.opened
    async def handler(self, event: Any) -> None:
        RAN.append("handler")

    @workflow
    async def flow(self) -> int:
        RAN.append("flow")
        return await self.stp()


ECHOED: list[Any] = []
"""The values `echo` received, as the method saw them."""

RAISABLE: dict[str, BaseException] = {}
"""What `fail(kind)` raises; filled by the tests that need it."""

OUT_OF_REACH = [
    "_private",
    "__class__",
    "__init__",
    "__dict__",
    "__getattr__",
    "__reduce__",
    "static",
    "klass",
    "stp",
    "undo",
    "appr",
    "sched",
    "handler",
    "flow",
    "helper",
    "shout",
    "mixed",
    "Nested",
    "State",
    "entity_id",
    "run_id",
    "sent",
    "do",
    "try_",
    "send",
    "sleep",
    "sleep_until",
    "now",
    "uuid",
    "random",
    "cascade",
    "wait_for_event",
    "approval_flow",
    "model_config",
    "model_dump",
    "nothing_here",
]
"""Names a chain may not start with (each also tried with a call after it)."""


def request(
    ops: list[Any], *, call: str = "call-1", target: tuple[str, str] = ("SecVault", "v")
) -> dict[str, Any]:
    return {
        "v": 1,
        "push": [{"id": 1, "call": call, "target": list(target), "ops": ops}],
        "pull": [1],
    }


@contextlib.asynccontextmanager
async def vault_server(db: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Engine, Any]]:
    """SecVault hosted on an engine over `db`, its ASGI app reached in-process by httpx."""
    engine = Engine(db).register(SecVault)
    async with engine:
        app = create_app(engine, token=TOKEN)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://vault", headers=headers
        ) as http:
            yield http, engine, app.state.dotdo


async def post(http: httpx.AsyncClient, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return await http.post(RPC_PATH, content=body)
    return await http.post(RPC_PATH, content=json.dumps(body).encode())


async def rows(engine: Engine) -> tuple[list[Any], list[Any]]:
    """Everything a call could have changed: instances and recorded calls."""
    entities = [tuple(r) for r in await engine.store.fetch("SELECT * FROM entities ORDER BY 1, 2")]
    calls = [tuple(r) for r in await engine.store.fetch("SELECT * FROM entity_calls ORDER BY 1")]
    return entities, calls
