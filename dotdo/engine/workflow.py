"""What the engine needs of a workflow, whichever front end made it.

The engine runs graphs; it does not care whether a graph came from a decorated Python
method or a `.flow` file. Both front ends hand it objects with this surface, and the engine
imports neither of them (an import-linter contract keeps it so): a `Workflow` to start and
resume runs of, and an `App` (a DO class, a loaded `.flow` file) that contributes several
workflows and the class their steps run on.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Protocol, TypeGuard

from dotdo.compiler.codegen import Program
from dotdo.compiler.ir import Graph
from dotdo.engine.triggers import Schedule

__all__ = ["App", "Workflow", "is_workflow", "workflows_of"]


class Workflow(Protocol):
    """One startable workflow: its graph, how to run it, how to call it."""

    @property
    def qualname(self) -> str:
        """The name runs record (`Orders.process_order`, `order.process_order`)."""

    @property
    def graph(self) -> Graph:
        """The current graph; runs pin its hash."""

    owner: type[Any] | None
    """The class whose instance a run's steps execute on: `owner(entity_id, run_id=...)`."""
    schedule: Schedule | None
    """Set by `@every`: the engine starts a run at each fire time."""
    trigger: str | None
    """Set by `@on`: the event pattern whose events start a run each."""

    def program(self, graph: Graph | None = None) -> Program:
        """The executable form of `graph` (default: the current one)."""

    def signature(self) -> inspect.Signature:
        """How the workflow is called (the first parameter is the instance)."""

    def type_hints(self) -> dict[str, Any]:
        """Resolved annotations: inputs are converted to them, results typed by them."""


class App(Protocol):
    """A DO class or a loaded `.flow` file: a set of workflows on one class."""

    @property
    def __dotdo_workflows__(self) -> Mapping[str, Workflow]: ...


_SURFACE = ("qualname", "graph", "program", "signature", "type_hints")


def is_workflow(target: object) -> TypeGuard[Workflow]:
    """Whether `target` offers the `Workflow` surface (looked up on its class, so a graph
    that is not compiled yet is not built, nor its error raised, by asking)."""
    return not isinstance(target, type) and all(hasattr(type(target), n) for n in _SURFACE)


def workflows_of(target: object) -> tuple[type[Any] | None, list[Workflow]]:
    """The class and workflows `engine.register(target)` adds, or (None, []) when `target`
    is neither a workflow nor an app (a DO class, or a loaded `.flow` file: its class)."""
    if is_workflow(target):
        return target.owner, [target]
    owner = getattr(target, "owner", None)
    if isinstance(owner, type) and hasattr(target, "workflows") and not isinstance(target, type):
        target = owner
    found = getattr(target, "__dotdo_workflows__", None) if isinstance(target, type) else None
    if isinstance(target, type) and isinstance(found, Mapping):
        return target, [wf for wf in found.values() if is_workflow(wf)]
    return None, []
