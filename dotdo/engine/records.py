"""What the engine reports about runs and steps, read back from the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from dotdo.engine import serde
from dotdo.engine.store.interface import FINISHED, StoredRun, StoredStep
from dotdo.errors import SerializationError

__all__ = ["RunInfo", "StepRecord", "readable"]


def readable(text: str | None) -> Any:
    """A stored value for reading it: typed where this process knows the classes, and, part
    by part, the stored JSON where it does not (a model of an app not loaded here, a row
    written by someone else). Never imports anything, never fails on valid JSON."""
    if text is None:
        return None
    try:
        return serde.loads(text)
    except SerializationError:
        pass
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return text
    try:
        return _partly(data)
    except RecursionError:
        return data


def _partly(data: Any) -> Any:
    if isinstance(data, list):
        return [_partly(x) for x in data]
    if not isinstance(data, dict):
        return data
    if "$t" in data:
        try:
            return serde.decode(data)
        except SerializationError:
            pass
        cls = serde.resolve_class(data["cls"]) if isinstance(data.get("cls"), str) else None
        if data["$t"] == "model" and isinstance(cls, type) and issubclass(cls, BaseModel):
            try:  # a known model holding unknown values: keep the model, show those raw
                return cls.model_validate(_partly(data.get("v")))
            except ValueError:
                pass
    return {k: _partly(x) for k, x in data.items()}


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


class RunInfo(BaseModel):
    """A run as stored: where it is, how it ended."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_id: str
    workflow: str
    entity_id: str
    status: str
    node: str
    graph_hash: str
    steps_done: int
    created_at: datetime | None
    updated_at: datetime | None
    wake_at: datetime | None = None
    lease_owner: str | None = None
    result: Any = None
    error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_stored(cls, row: StoredRun) -> RunInfo:
        return cls(
            run_id=row.run_id,
            workflow=row.workflow,
            entity_id=row.entity_id,
            status=row.status,
            node=row.node,
            graph_hash=row.graph_hash,
            steps_done=row.steps_done,
            created_at=_time(row.created_at),
            updated_at=_time(row.updated_at),
            wake_at=_time(row.wake_at),
            lease_owner=row.lease_owner,
            result=readable(row.result),
            error=_error(row.error),
        )


def _error(text: str | None) -> BaseException | None:
    if text is None:
        return None
    value = readable(text)
    return value if isinstance(value, BaseException) else RuntimeError(str(value))


class StepRecord(BaseModel):
    """One line of a run's journal: a step, a recorded value, a timer or an undo."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    key: str
    status: str
    attempts: int
    seq: int | None
    value: Any = None
    error: BaseException | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_stored(cls, row: StoredStep) -> StepRecord:
        return cls(
            key=row.key,
            status=row.status,
            attempts=row.attempts,
            seq=row.seq,
            value=readable(row.value),
            error=_error(row.error),
            started_at=_time(row.started_at),
            finished_at=_time(row.finished_at),
        )
