"""The records of operating a database (docs/operations.md, docs/upgrades.md): retries,
run history, retention, exports, upgrades. Plain data and JSON text, like rows.py's; the
operations taking them are the "operations" section of `dotdo.engine.store.interface.Store`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dotdo.engine.store.rows import FINISHED, RunToCreate, StoredStep

__all__ = [
    "REUSED",
    "HistoryEntry",
    "PruneFilter",
    "Repin",
    "RetryToCreate",
    "RunExport",
    "UnfinishedRun",
]

REUSED = "reused"
"""Status of a journal row a retry copied from the run it continues: its value is handed
back to the step instead of running it, and the row becomes `completed` (a checkpoint's
journal row replaces it) as it is used."""


@dataclass(frozen=True)
class RetryToCreate:
    """A retry: a new run (`run`, created as `create_run` would) linked to `retry_of`, with
    the original's results it reuses copied into its journal as `REUSED` rows, and a history
    line (`note`, JSON) on both runs: "retried" on the original, "retry" on the new one."""

    run: RunToCreate
    retry_of: str
    reused: tuple[StoredStep, ...]
    note: str


@dataclass(frozen=True)
class HistoryEntry:
    """One operation recorded on a run ("retry", "retried", "upgraded"), oldest first."""

    kind: str
    body: str
    """JSON object: what the operation did (from/to graph, the retry's ids, ...)."""
    at: float


@dataclass(frozen=True)
class PruneFilter:
    """Which finished runs a prune removes: every condition given holds (ended before
    `before`, in `statuses`, of `workflow`). Statuses are finished ones only."""

    before: float | None = None
    statuses: tuple[str, ...] = FINISHED
    workflow: str | None = None


@dataclass(frozen=True)
class UnfinishedRun:
    """What an upgrade check needs of a running or waiting run (not its state or input)."""

    run_id: str
    workflow: str
    graph_hash: str
    node: str
    status: str
    compensations: tuple[str, ...]
    """The methods on its compensation stack (the state's `comp` entries), in order."""


@dataclass(frozen=True)
class Repin:
    """Move a parked run onto another graph: only if it is still pinned to `old_hash`,
    waiting, and nobody holds its lease (as of `lease_now`); the new graph is stored when it
    is not yet (with its signature `mac` when signing), and an "upgraded" history line
    (`note`, JSON) is written with the move."""

    run_id: str
    old_hash: str
    new_hash: str
    graph_name: str
    graph_body: str
    module: str | None
    node: str
    state: str
    now: float
    lease_now: float
    note: str
    mac: tuple[str, str] | None = None


@dataclass(frozen=True)
class RunExport:
    """Everything stored about one run, as JSON-ready data: each row a dict of its columns,
    JSON columns (state, input, result, error, values, bodies) parsed as JSON, never decoded
    into the app's classes."""

    run: dict[str, Any]
    graph: dict[str, Any] | None
    """The identity of its graph (hash, name, module, created_at), not its body."""
    steps: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    waits: list[dict[str, Any]] = field(default_factory=list)
    entity_calls: list[dict[str, Any]] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    """The runs that retry this one, oldest first."""
