"""Shared DO classes and helpers of the entity and pipelining tests (no tests here)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from dotdo import DO, Engine, PermanentError, workflow
from dotdo.entities import create_app, running

TOKEN = "test-token-0123456789"
APPLIED: Tally[str] = Tally()
"""How many times each entity method body ran to completion (across engines)."""


# -------------------------------------------------------------------------- counters
class CounterState(BaseModel):
    n: int = 0
    notes: list[str] = Field(default_factory=list)


class Counter(DO):
    State = CounterState

    async def increment(self, by: int = 1) -> int:
        n = self.state.n
        await asyncio.sleep(0)  # a lost update would show if two calls interleaved here
        self.state.n = n + by
        APPLIED[f"increment:{self.entity_id}"] += 1
        return self.state.n

    async def note(self, text: str) -> int:
        self.state.notes.append(text)
        APPLIED[f"note:{self.entity_id}"] += 1
        return len(self.state.notes)

    async def hold(self, seconds: float) -> float:
        started = time.monotonic()
        await asyncio.sleep(seconds)
        self.state.n += 1
        return started

    async def explode(self) -> None:
        self.state.n += 1000  # must not be saved: the call fails
        raise ValueError("boom")

    async def refuse(self) -> None:
        raise PermanentError("no")

    async def add(self, value: int) -> int:
        self.state.n += value
        return self.state.n

    def echo(self, value: Any) -> Any:
        return value

    @property
    def value(self) -> int:
        return self.state.n

    @workflow
    async def bump_self(self) -> int:
        return await self.Counter(self.entity_id).increment()


# ------------------------------------------------------------------- a 6-hop graph
# The models' own methods (title, lead, team) are not reachable by a chain: what a member
# returns is data. tests/security/test_entity_surface.py checks they are refused.
class Person(BaseModel):
    name: str
    email: str

    def title(self) -> str:
        return self.name.title()


class Team(BaseModel):
    name: str
    members: list[Person]

    def lead(self) -> Person:
        return self.members[0]


class Directory(BaseModel):
    teams: dict[str, Team] = Field(default_factory=dict)

    def team(self, name: str) -> Team:
        return self.teams[name]  # KeyError for an unknown team: an error at a middle hop


class Profile(BaseModel):
    email: str = "ada@example.com"
    name: str = "ada"


class UserState(BaseModel):
    profile: Profile = Field(default_factory=Profile)
    directory: Directory = Field(
        default_factory=lambda: Directory(
            teams={"core": Team(name="core", members=[Person(name="grace", email="g@x.io")])}
        )
    )
    inbox: list[str] = Field(default_factory=list)


class User(DO):
    State = UserState

    @property
    def profile(self) -> Profile:
        return self.state.profile

    def org(self) -> Directory:
        return self.state.directory

    async def notify(self, message: str) -> int:
        self.state.inbox.append(message)
        APPLIED[f"notify:{self.entity_id}"] += 1
        return len(self.state.inbox)

    async def rename(self, email: str) -> Profile:
        self.state.profile.email = email
        return self.state.profile

    async def relay(self, target: str, message: str) -> str:
        # An entity method calling another entity: awaited, and fire-and-forget.
        n = await self.User(target).notify(f"relayed: {message}")
        self.User(target).notify(f"and again: {message}")
        return f"{target} has {n}"

    async def relay_then_fail(self, target: str) -> None:
        self.User(target).notify("never")
        raise ValueError("after queueing a send")


class Stateless(DO):
    def ping(self) -> str:
        return f"pong {self.entity_id}"


# ------------------------------------------------------------------------ workflows
class Flows(DO):
    @workflow
    async def bump(self, key: str) -> int:
        return await self.Counter(key).increment()

    @workflow
    async def bump_twice(self, key: str) -> list[int]:
        first = await self.Counter(key).increment()
        second = await self.Counter(key).increment(by=10)
        return [first, second]

    @workflow
    async def email(self, uid: str) -> str:
        return await self.User(uid).profile.email

    @workflow
    async def lead_email(self, uid: str, team: str) -> str:
        # Data hops after the declared method: a model's fields, a dict's item, a list's.
        return await self.User(uid).org().teams[team].members[0].email

    @workflow
    async def email_hop_by_hop(self, uid: str) -> str:
        user = await self.User(uid)
        profile = await self.User(uid).profile
        email = await self.User(uid).profile.email
        assert user.profile == profile
        return email

    @workflow
    async def announce(self, uid: str, text: str) -> str:
        self.User(uid).notify(text)
        return "sent"

    @workflow
    async def announce_then_wait(self, uid: str, text: str) -> str:
        self.User(uid).notify(text)
        await self.sleep(3600)
        return "done"

    @workflow
    async def pipelined_arg(self, key: str, uid: str) -> int:
        # The inner stub is not awaited: it travels in the same batch as an import.
        return await self.Counter(key).add(self.User(uid).notify("counted"))

    @workflow
    async def failing(self, key: str) -> None:
        await self.Counter(key).explode()

    @workflow
    async def refused(self, key: str) -> None:
        await self.Counter(key).refuse()

    @workflow
    async def unknown_class(self) -> None:
        await self.Nobody("x").anything()

    @workflow
    async def unknown_method(self, key: str) -> None:
        await self.Counter(key).missing()

    @workflow
    async def bad_argument(self, key: str) -> None:
        await self.Counter(key).echo(object())

    @workflow
    async def looped(self, keys: list[str]) -> int:
        total = 0
        for key in keys:
            total += await self.Counter(key).increment()
        return total


ALL = (Counter, User, Stateless, Flows)


# -------------------------------------------------------------------------- helpers
async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def served(
    db: Path, *classes: type[DO], token: str = TOKEN
) -> AsyncIterator[tuple[str, Engine, Any]]:
    """An engine hosting `classes` on `db`, served by uvicorn on 127.0.0.1:<free port>.

    Yields (url, engine, server state with request counters); always shuts down.
    """
    engine = Engine(db).register(*(classes or (Counter, User, Stateless)))
    async with engine:
        app = create_app(engine, token=token)
        async with running(app) as url:
            yield url, engine, app.state.dotdo
