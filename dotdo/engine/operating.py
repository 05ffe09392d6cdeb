"""Operating a database of runs: the Engine methods of docs/operations.md and upgrades.md.

A mixin of `Engine`, kept out of the engine shell: each method hands the engine to the
module that does the work (retry, retention, export, upgrade check and apply).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dotdo.engine.export import export_run
from dotdo.engine.handle import RunHandle
from dotdo.engine.retention import prune_runs
from dotdo.engine.retry import retry_run
from dotdo.engine.telemetry import Observer, Telemetry
from dotdo.engine.upgrade_apply import UpgradeOutcome, apply_upgrades
from dotdo.engine.upgrade_check import UpgradeReport, check_runs

if TYPE_CHECKING:
    from dotdo.engine.engine import Engine

__all__ = ["Operations"]


class Operations:
    """Retry, prune, export, upgrade check and apply (mixed into Engine)."""

    _classes: dict[str, type[Any]]

    def _engine(self) -> Engine:
        return cast("Engine", self)

    @property
    def registered_classes(self) -> dict[str, type[Any]]:
        """The DO classes registered here, by class name (also the entity types hosted)."""
        return dict(self._classes)

    def observe(self, *observers: Observer) -> Engine:
        """Add telemetry observers (dotdo.engine.telemetry: Prometheus metrics, OpenTelemetry
        traces, your own); they see every run, step, wait and commit from then on."""
        engine = self._engine()
        engine.telemetry = Telemetry([*engine.telemetry.observers, *observers])
        for observer in observers:
            observer.bind(engine)
        if engine._store is not None:
            engine._store.on_commit = engine.telemetry.committed
        return engine

    async def retry(
        self, run_id: str, *, from_step: str | None = None, new_run_id: str | None = None
    ) -> RunHandle:
        """Start a new run, linked to a failed, compensated or cancelled one, that reuses its
        recorded results before `from_step` (all of them by default) and runs the rest on
        the current code (docs/operations.md)."""
        return await retry_run(self._engine(), run_id, from_step=from_step, new_run_id=new_run_id)

    async def prune(
        self,
        *,
        older_than: timedelta | float | None = None,
        statuses: Iterable[str] | None = None,
        workflow: str | None = None,
        export_to: str | Path | None = None,
    ) -> list[str]:
        """Remove finished runs matching every filter given (at least one), with all that
        was recorded for them; `export_to` writes each one's JSON export there first."""
        return await prune_runs(
            self._engine(),
            older_than=older_than,
            statuses=statuses,
            workflow=workflow,
            export_to=export_to,
        )

    async def upgrade_check(self, *, workflows: Iterable[str] | None = None) -> UpgradeReport:
        """Whether every unfinished run can finish on the code registered here: for each,
        what it would still run that today's code no longer resolves (docs/upgrades.md)."""
        return await check_runs(self._engine(), workflows=workflows)

    async def upgrade_apply(
        self, run_ids: Iterable[str] | None = None, *, dry_run: bool = False
    ) -> list[UpgradeOutcome]:
        """Move parked runs (default: all pinned to an older graph) onto their workflow's
        current graph where that is safe; each refusal says why (docs/upgrades.md)."""
        return await apply_upgrades(self._engine(), run_ids, dry_run=dry_run)

    async def export(self, run_id: str) -> dict[str, Any]:
        """A run's whole stored history as JSON-ready data (docs/operations.md)."""
        return await export_run(self._engine().store, run_id)
