"""Operating a database of runs: the engine part behind `engine.retry`, `prune`, `export`,
`upgrade_check`, `upgrade_apply` and `observe` (docs/operations.md, docs/upgrades.md).

A part like `Waits` and `Retries`: it reaches the engine (its store, clock, registered code,
the driver) only through the `Shell` protocol, and hands each job to the module doing it
(retry.py, retention.py, export.py, upgrade_check.py, upgrade_apply.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotdo.engine.export import export_run
from dotdo.engine.retention import prune_runs
from dotdo.engine.retry import retry_run
from dotdo.engine.telemetry import Observer, Telemetry
from dotdo.engine.upgrade_apply import UpgradeOutcome, apply_upgrades
from dotdo.engine.upgrade_check import UpgradeReport, check_runs
from dotdo.engine.workflow import Workflow

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = ["Operations"]


class Operations:
    """Retry, prune, export, upgrade check and apply, and the engine's observers."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def observe(self, *observers: Observer) -> None:
        """Add telemetry observers; they see every run, step, wait and commit from then on
        (commits through the store's commit hook, which reads `shell.telemetry` each time)."""
        shell = self.shell
        shell.telemetry = Telemetry([*shell.telemetry.observers, *observers])
        for observer in observers:
            observer.bind(shell)

    async def retry(
        self, run_id: str, *, from_step: str | None = None, new_run_id: str | None = None
    ) -> tuple[str, Workflow]:
        """Start the retry of a failed, compensated or cancelled run (retry.py); returns the
        new run's id and workflow."""
        return await retry_run(self.shell, run_id, from_step=from_step, new_run_id=new_run_id)

    async def prune(
        self,
        *,
        older_than: timedelta | float | None = None,
        statuses: Iterable[str] | None = None,
        workflow: str | None = None,
        export_to: str | Path | None = None,
    ) -> list[str]:
        return await prune_runs(
            self.shell,
            older_than=older_than,
            statuses=statuses,
            workflow=workflow,
            export_to=export_to,
        )

    async def upgrade_check(self, *, workflows: Iterable[str] | None = None) -> UpgradeReport:
        return await check_runs(self.shell, workflows=workflows)

    async def upgrade_apply(
        self, run_ids: Iterable[str] | None = None, *, dry_run: bool = False
    ) -> list[UpgradeOutcome]:
        return await apply_upgrades(self.shell, run_ids, dry_run=dry_run)

    async def export(self, run_id: str) -> dict[str, Any]:
        return await export_run(self.shell.store, run_id)
