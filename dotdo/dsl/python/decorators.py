"""`@workflow`, `@step` and `@compensate`: markers the DO class compiles at creation.

Each decorator returns a descriptor that still behaves as the plain method when called on an
instance, so a workflow can run as ordinary Python (steps as ordinary calls) for tests, and
the same source compiles into the durable graph.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from dotdo.compiler.codegen import Program, build_program
from dotdo.compiler.ir import Graph, Policy
from dotdo.dsl.python.build import StepInfo, lower_function

__all__ = ["CompensateDef", "StepDef", "WorkflowDef", "compensate", "step", "workflow"]

F = TypeVar("F", bound=Callable[..., Any])


class StepDef(Generic[F]):
    """A method whose calls inside a workflow are durable steps with a retry policy."""

    def __init__(self, fn: F, policy: Policy) -> None:
        self.fn = fn
        self.policy = policy
        self.name = fn.__name__
        self.compensator: str | None = None
        functools.update_wrapper(self, fn)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return types.MethodType(self.fn, instance)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def info(self) -> StepInfo:
        return StepInfo(policy=self.policy, compensator=self.compensator)


@overload
def step(fn: F, /) -> StepDef[F]: ...
@overload
def step(
    *,
    retries: int = 3,
    backoff: float = 2.0,
    timeout: float | None = None,
    initial_delay: float = 1.0,
    max_delay: float = 300.0,
) -> Callable[[F], StepDef[F]]: ...
def step(
    fn: F | None = None,
    /,
    *,
    retries: int = 3,
    backoff: float = 2.0,
    timeout: float | None = None,
    initial_delay: float = 1.0,
    max_delay: float = 300.0,
) -> StepDef[F] | Callable[[F], StepDef[F]]:
    """Mark a DO method as a durable step: at least once, recorded exactly once.

    A failed attempt is retried `retries` times; the wait before retry k is
    `initial_delay * backoff**(k-1)` seconds (at most `max_delay`) and is a durable timer.
    `timeout` bounds one attempt, in seconds.
    """
    policy = Policy(
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        initial_delay=initial_delay,
        max_delay=max_delay,
    )
    if fn is not None:
        return StepDef(fn, policy)
    return lambda f: StepDef(f, policy)


class CompensateDef(StepDef[F]):
    """The undo of a step; it receives the step's result and runs as a durable step."""

    def __init__(self, fn: F, target: StepDef[Any], policy: Policy) -> None:
        super().__init__(fn, policy)
        self.target = target

    def __set_name__(self, owner: type, name: str) -> None:
        super().__set_name__(owner, name)
        self.target.compensator = name


def compensate(
    target: StepDef[Any],
    *,
    retries: int = 3,
    backoff: float = 2.0,
    timeout: float | None = None,
    initial_delay: float = 1.0,
    max_delay: float = 300.0,
) -> Callable[[F], CompensateDef[F]]:
    """Register the decorated method as the undo of `target` (a `@step` method)."""
    if not isinstance(target, StepDef):
        raise TypeError("@compensate(...) takes the @step method it undoes")
    policy = Policy(
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        initial_delay=initial_delay,
        max_delay=max_delay,
    )
    return lambda fn: CompensateDef(fn, target, policy)


class WorkflowDef(Generic[F]):
    """A durable workflow method; the class compiles it to a graph when it is created."""

    def __init__(self, fn: F) -> None:
        if not inspect.iscoroutinefunction(fn):
            # Checked again by the compiler with a position; this catches decorator misuse.
            pass
        self.fn = fn
        self.name = fn.__name__
        self.owner: type | None = None
        self.schedule: Any = None
        """A `dotdo.dsl.python.triggers.Schedule` when declared with `@every`."""
        self.trigger: str | None = None
        """An event pattern when declared with `@on`."""
        self._graph: Graph | None = None
        self._programs: dict[str, Program] = {}
        self._hints: dict[str, Any] | None = None
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return types.MethodType(self.fn, instance)

    @property
    def qualname(self) -> str:
        owner = self.owner.__name__ if self.owner else "?"
        return f"{owner}.{self.name}"

    def compile(self, steps: dict[str, StepInfo]) -> Graph:
        self._graph = lower_function(self.fn, name=self.qualname, steps=steps)
        self._programs.clear()
        return self._graph

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            raise RuntimeError(f"workflow {self.qualname} is not part of a DO class")
        return self._graph

    def _repr_svg_(self) -> str | None:
        """The workflow's diagram, so a notebook shows it by itself (None without Graphviz)."""
        return self.graph._repr_svg_()

    def program(self, graph: Graph | None = None) -> Program:
        """The executable form of `graph` (default: the current one), built once per hash."""
        graph = graph or self.graph
        found = self._programs.get(graph.hash)
        if found is None:
            found = build_program(graph, self.fn.__globals__, self.cells())
            self._programs[graph.hash] = found
        return found

    def cells(self) -> dict[str, Any]:
        code = self.fn.__code__
        closure = self.fn.__closure__ or ()
        return dict(zip(code.co_freevars, closure, strict=True))

    def type_hints(self) -> dict[str, Any]:
        """Resolved annotations, computed once (every start and result needs them)."""
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.fn)
            except Exception:
                self._hints = {}
        return self._hints

    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)


def workflow(fn: F) -> WorkflowDef[F]:
    """Mark an `async def` DO method as a durable workflow."""
    return WorkflowDef(fn)
