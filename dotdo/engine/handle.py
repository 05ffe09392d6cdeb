"""The caller's view of one run: its status and, once it ends, its typed result."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from dotdo.engine import serde
from dotdo.engine.records import RunInfo
from dotdo.engine.workflow import Workflow
from dotdo.errors import RunFailed

if TYPE_CHECKING:
    from dotdo.engine.engine import Engine

__all__ = ["RunHandle"]


class RunHandle:
    """A started run: ask its status, await its result."""

    def __init__(self, engine: Engine, run_id: str, workflow: Workflow | None) -> None:
        self.engine = engine
        self.run_id = run_id
        self._workflow = workflow

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    def _repr_svg_(self) -> str | None:
        """The run drawn live on its graph: a notebook shows it by itself."""
        from dotdo.compiler.live import live_svg  # graphviz loads only when drawing

        return live_svg(self.engine, self.run_id, self._workflow.graph if self._workflow else None)

    async def status(self) -> str:
        return (await self.engine.get_run(self.run_id)).status

    async def info(self) -> RunInfo:
        return await self.engine.get_run(self.run_id)

    async def result(self, *, timeout: float | None = None) -> Any:
        """The workflow's return value, typed by its annotation; raises RunFailed otherwise."""
        info = await self.engine.wait(self.run_id, timeout=timeout)
        if info.status != "completed":
            error = info.error
            raise RunFailed(self.run_id, info.status, error) from error
        workflow = self._workflow or self.engine.workflows.get(info.workflow)
        if workflow is None:
            return info.result  # not registered here: the stored value, as typed as it can be
        annotation = workflow.type_hints().get("return", inspect.Parameter.empty)
        return serde.coerce(info.result, annotation)
