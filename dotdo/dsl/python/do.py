"""The `DO` base class: a durable object whose workflows compile when the class is created.

Its methods `do`, `try_`, `send`, `sleep`, `now`, `uuid` and `random` are what a workflow
calls. Inside the engine the compiler has replaced those calls by graph nodes; called
directly on an instance they run as plain Python, so a workflow can be unit-tested (and
checked against its compiled form) without an engine.

A DO is also an addressable entity: `self.Inventory(id)` names another DO instance (a stub,
see `dotdo.entities`), and the class's `State` model is that instance's persisted state.
"""

from __future__ import annotations

import asyncio
import inspect
import random as _random
import uuid as _uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from dotdo.compiler.ir import Policy
from dotdo.dsl.python.approvals import ApprovalDef, ApprovalFlow
from dotdo.dsl.python.decorators import StepDef, WorkflowDef
from dotdo.dsl.python.hoist import StepInfo
from dotdo.engine.cascade import run_cascade_plain
from dotdo.engine.models import CascadeResult, EventRecord
from dotdo.entities.entity import Entity

__all__ = ["DO"]


class DO(Entity):
    """Base class for durable objects. Subclass it and decorate methods.

    An entity (`dotdo.entities.Entity`: an id, a `State`, stubs to other instances) whose
    workflows compile into graphs when the class is created.
    """

    __dotdo_base__: ClassVar[bool] = True
    __dotdo_workflows__: ClassVar[dict[str, WorkflowDef[Any]]] = {}
    __dotdo_steps__: ClassVar[dict[str, StepDef[Any]]] = {}

    def __init__(self, entity_id: str = "default", *, run_id: str | None = None) -> None:
        super().__init__(entity_id, run_id=run_id)
        self.sent: list[tuple[str, Any]] = []
        """Events sent while running as plain Python (the engine uses its outbox instead)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        steps: dict[str, StepDef[Any]] = {}
        approvals: dict[str, ApprovalDef] = {}
        workflows: dict[str, WorkflowDef[Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, StepDef):
                    steps[name] = value
                elif isinstance(value, ApprovalDef):
                    approvals[name] = value
                elif isinstance(value, WorkflowDef):
                    workflows[name] = value
        cls.__dotdo_steps__ = steps
        cls.__dotdo_workflows__ = workflows
        infos = {name: s.info() for name, s in steps.items()}
        infos.update({name: a.info() for name, a in approvals.items()})
        # A capitalised name the class defines (State, a nested class) is its own attribute,
        # not a reference to another entity: tell the compiler so.
        for klass in cls.__mro__[:-1]:
            for name in vars(klass):
                if name[:1].isupper() and name not in infos:
                    infos[name] = StepInfo(policy=Policy(), kind="local")
        for name, wf in workflows.items():
            if name in vars(cls):
                wf.compile(infos)

    # ------------------------------------------------------------ plain mode
    async def do(
        self,
        fn: Callable[..., Any],
        *args: Any,
        step_id: str | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        timeout: float | None = None,
        initial_delay: float | None = None,
        max_delay: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """A durable step: retried per policy, recorded once. Plain mode calls `fn` once."""
        return await _call(fn, args, kwargs, timeout)

    async def try_(
        self,
        fn: Callable[..., Any],
        *args: Any,
        step_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """A single attempt, at most once: never re-run, even after a crash."""
        return await _call(fn, args, kwargs, timeout)

    def send(self, event: str, data: Any = None) -> None:
        """Fire-and-forget event, written in the same transaction as the next checkpoint."""
        self.sent.append((event, data))

    async def sleep(self, duration: float | timedelta) -> None:
        """A durable timer: the run hibernates (no task, no memory) until it fires."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        await asyncio.sleep(seconds)

    async def sleep_until(self, when: datetime) -> None:
        await asyncio.sleep(max((when - datetime.now(UTC)).total_seconds(), 0.0))

    @property
    def approval_flow(self) -> ApprovalFlow:
        """The seed's inline approvals: `await self.approval_flow.request_approval(...)`."""
        return ApprovalFlow(self)

    async def wait_for_event(
        self,
        event: str,
        *,
        match: dict[str, Any] | None = None,
        timeout: float | timedelta | None = None,
        step_id: str | None = None,
    ) -> EventRecord | None:
        """Hibernate until a matching event arrives; None after `timeout`.

        `match` is a dict of fields the event's data must equal. Plain Python has no
        events, so it returns None at once.
        """
        return None

    async def cascade(
        self,
        *,
        task: str,
        tiers: dict[str, Callable[[], Any]],
        confidence_threshold: float = 0.9,
        step_id: str | None = None,
    ) -> CascadeResult:
        """Try tiers in order; the first answer at or above the threshold wins.

        Each tier returns `(value, confidence)`, a dict with those keys, or an object with
        `.value`/`.confidence`. In the engine the `human` tier hibernates like an approval;
        plain Python takes the best earlier candidate instead.
        """
        return await run_cascade_plain(task, tiers, confidence_threshold)

    def now(self) -> datetime:
        """The current time, recorded: a resumed run sees the same value."""
        return datetime.now(UTC)

    def uuid(self) -> _uuid.UUID:
        """A fresh UUID, recorded."""
        return _uuid.uuid4()

    def random(self) -> float:
        """A random float in [0, 1), recorded."""
        return _random.random()


async def _call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        return await asyncio.wait_for(result, timeout) if timeout else await result
    return result
