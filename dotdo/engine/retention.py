"""Retention: removing finished runs, and what was recorded for them, once they are old.

`engine.prune(older_than=..., statuses=..., workflow=...)` removes finished runs that match
every filter given, with their journals, event waits, decided approvals, delivered entity
calls, dispatched events and history; with `older_than`, also the entity call records and
the run-less dispatched events older than that. At least one filter is required: nothing
ever removes every run by default. Running and waiting runs are never removed. Deletion goes
in batches, each one transaction, so a worker's runs keep committing in between; with
`export_to` each run's whole history is written as JSON (dotdo.engine.export) first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from dotdo.engine.export import write_export
from dotdo.engine.store.interface import FINISHED, PruneFilter
from dotdo.errors import DotdoError

if TYPE_CHECKING:
    from dotdo.engine.engine import Engine
    from dotdo.engine.shell import Shell

__all__ = ["keep_pruning", "parse_age", "prune_runs"]

log = logging.getLogger("dotdo.engine")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_age(text: str) -> float:
    """`30d`, `12h`, `90m`, `45s`, `2w` (or a sum such as `1d12h`) as seconds."""
    parts = _AGE.findall(text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise DotdoError(
            f"bad age {text[:40]!r}: expected a number and a unit (s, m, h, d, w), e.g. 30d"
        )
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _seconds(older_than: timedelta | float | None) -> float | None:
    if older_than is None:
        return None
    seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise DotdoError(f"older_than must be a timedelta or seconds, not {older_than!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise DotdoError(f"older_than must be a finite age of 0 or more, not {older_than!r}")
    return float(seconds)


def check_filter(
    older_than: timedelta | float | None,
    statuses: Iterable[str] | None,
    workflow: str | None,
    now: float,
) -> tuple[PruneFilter, float | None]:
    """The filter a prune asks for, refused in one line when it names none or a bad one."""
    seconds = _seconds(older_than)
    chosen = tuple(statuses) if statuses is not None else None
    if seconds is None and not chosen and workflow is None:
        raise DotdoError(
            "prune needs a filter (an age such as --older-than 30d, a status or a workflow): "
            "nothing was removed"
        )
    bad = [s for s in chosen or () if s not in FINISHED]
    if bad:
        raise DotdoError(
            f"cannot prune runs that are {bad[0]!r}: only finished runs "
            f"({', '.join(FINISHED)}) are removed"
        )
    before = None if seconds is None else now - seconds
    return PruneFilter(before, chosen or FINISHED, workflow), before


async def prune_runs(
    engine: Shell,
    *,
    older_than: timedelta | float | None = None,
    statuses: Iterable[str] | None = None,
    workflow: str | None = None,
    export_to: str | Path | None = None,
    batch: int = 500,
) -> list[str]:
    """Remove the finished runs matching every filter given; returns their ids."""
    where, before = check_filter(older_than, statuses, workflow, engine.clock.now())
    folder = None if export_to is None else Path(export_to)
    if folder is not None and not folder.is_dir():
        raise DotdoError(f"export folder {folder} does not exist: nothing was removed")
    removed: list[str] = []
    while ids := await engine.store.prunable_runs(where, batch):
        if folder is not None:
            for run_id in ids:
                await write_export(engine.store, run_id, folder / f"{run_id}.json")
        done = await engine.store.delete_runs(ids, where)
        removed += done
        if not done:
            break  # every selected run changed meanwhile: stop rather than spin
    if before is not None:  # the age-bound records not tied to a run
        await engine.store.prune_unowned(before)
    return removed


async def keep_pruning(engine: Engine, older_than: float, every: float = 3600.0) -> None:
    """A worker's retention: prune finished runs older than `older_than` seconds, now and
    then every `every` seconds, until cancelled; a failed prune is logged and retried."""
    while True:
        try:
            removed = await prune_runs(engine, older_than=older_than)
            if removed:
                log.info("retention: removed %d finished runs", len(removed))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("retention: prune failed (%s); trying again later", exc)
        await asyncio.sleep(every)
