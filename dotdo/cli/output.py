"""How the CLI shows values, runs and problems: JSON for results, rich tables for people,
one line per error.

Results go out as JSON so scripts can consume them; the JSON default is lenient because a
workflow may return anything the store can hold (datetimes, UUIDs, Decimals, sets,
dataclasses), and refusing to print a result that was already stored helps nobody. Tables
are for people: they favour short cells (truncated values, one-line errors) over completeness,
and user text goes in as `Text` so brackets in it are never read as rich markup.

The CLI reads runs without the user's code (and never imports a module a row names), so a
stored model or dataclass may name a class this process does not know; such a value is
shown as stored JSON instead of failing the whole listing.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import sys
import traceback
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

import click
from pydantic import BaseModel, ValidationError
from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dotdo.engine import serde
from dotdo.engine.engine import Engine
from dotdo.engine.models import Approval
from dotdo.engine.records import RunInfo, StepRecord
from dotdo.engine.store.interface import StoredRun, StoredStep
from dotdo.errors import RunNotFound, SerializationError

__all__ = [
    "console",
    "debug",
    "describe_approval",
    "describe_error",
    "explain_invalid",
    "format_time",
    "log_to_stderr",
    "one_line",
    "read_run",
    "read_runs",
    "render_runs",
    "render_status",
    "to_json",
]

_STYLE = {
    "completed": "green",
    "failed": "red",
    "compensated": "red",
    "cancelled": "yellow",
    "waiting": "cyan",
    "running": "blue",
    "started": "blue",
}


def console() -> Console:
    """A console on the current stdout; piped output gets a wide fixed width so that tables
    are not squeezed into 80 columns and step keys stay on one line."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    return Console(width=width, highlight=False, soft_wrap=False)


def debug() -> bool:
    return os.environ.get("DOTDO_DEBUG", "").strip() not in ("", "0", "false", "no")


def one_line(text: str) -> str:
    return " ".join(text.split())


def describe_error(error: BaseException | None) -> str:
    if error is None:
        return ""
    message = one_line(str(error))
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _plain(text: str | None) -> str | None:
    """A stored value, or its plain JSON if it cannot be rebuilt here."""
    if text is None:
        return None
    try:
        serde.loads(text)
    except SerializationError:
        return serde.dumps(json.loads(text))
    return text


def _run_as_stored(row: StoredRun) -> StoredRun:
    """The run with every value that cannot be rebuilt here replaced by its stored JSON."""
    return dataclasses.replace(row, result=_plain(row.result), error=_plain(row.error))


def _step_as_stored(row: StoredStep) -> StoredStep:
    return dataclasses.replace(row, value=_plain(row.value), error=_plain(row.error))


async def read_run(engine: Engine, run_id: str) -> tuple[RunInfo, list[StepRecord]]:
    try:
        return await engine.get_run(run_id), await engine.journal(run_id)
    except SerializationError:
        pass
    row = await engine.store.load_run(run_id)
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    steps = await engine.store.journal(run_id)
    return RunInfo.from_stored(_run_as_stored(row)), [
        StepRecord.from_stored(_step_as_stored(r)) for r in steps
    ]


async def read_runs(
    engine: Engine, status: str | None, workflow: str | None, limit: int
) -> list[RunInfo]:
    try:
        return await engine.runs(status=status, workflow=workflow, limit=limit)
    except SerializationError:
        pass
    rows = await engine.store.list_runs(status=status, workflow=workflow, limit=limit)
    return [RunInfo.from_stored(_run_as_stored(r)) for r in rows]


def explain_invalid(name: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in (name, *err["loc"]))
        got = "" if err["type"] == "missing" else f" (got {_brief(err.get('input'))})"
        problems.append(f"{where}: {err['msg']}{got}")
    return "; ".join(problems)


def _brief(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:39] + "…"


class _LogLine(logging.Handler):
    """Engine log records (a run that hit an engine error, a lost lease) as one stderr line;
    resolved through click at emit time so that a swapped sys.stderr is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        text = f"dotdo: {record.getMessage()}"
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            text += f": {describe_error(error)}"
            if debug():
                text += "\n" + "".join(traceback.format_exception(error)).rstrip()
        click.echo(text, err=True)


def log_to_stderr(level: int) -> None:
    logger = logging.getLogger("dotdo")
    if not any(isinstance(h, _LogLine) for h in logger.handlers):
        logger.addHandler(_LogLine())
    logger.setLevel(level)
    logger.propagate = False


def describe_approval(approval: Approval) -> str:
    """What a person needs to act on it: the id to approve, who decides, by when."""
    text = f"approval {approval.id}"
    if approval.title:
        text += f" ({approval.title})"
    if approval.waiting_on:
        text += f" by {approval.waiting_on}"
    if approval.deadline:
        text += f", deadline {format_time(approval.deadline)}"
    return text


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID | Decimal | PurePath):
        return str(value)
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, BaseException):
        return describe_error(value)
    raise TypeError(f"{type(value).__qualname__} is not JSON serializable")


def to_json(value: Any, *, indent: int | None = 2) -> str:
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(
        value, default=_json_default, indent=indent, ensure_ascii=False, separators=separators
    )


def format_time(moment: datetime | None) -> str:
    """UTC with a Z: the same text on every machine, and parseable by `fromisoformat`."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _until(moment: datetime) -> str:
    seconds = int((moment - datetime.now(UTC)).total_seconds())
    if seconds <= 0:
        return "due now"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes or hours else []
    return "in " + "".join(parts) + f"{secs}s"


def _short(text: str, limit: int) -> str:
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(value: Any, limit: int = 60) -> str:
    try:
        shown = to_json(value, indent=None)
    except (TypeError, ValueError):
        shown = repr(value)
    return _short(shown, limit)


def _status(status: str) -> Text:
    return Text(status, style=_STYLE.get(status, ""))


def render_status(out: Console, info: RunInfo, journal: list[StepRecord], waits: str) -> None:
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    rows: list[tuple[str, Text]] = [
        ("run", Text(info.run_id)),
        ("workflow", Text(info.workflow)),
        ("entity", Text(info.entity_id)),
        ("status", _status(info.status)),
        ("node", Text(info.node)),
        ("steps done", Text(str(info.steps_done))),
        ("created", Text(format_time(info.created_at))),
        ("updated", Text(format_time(info.updated_at))),
    ]
    if waits:
        rows.append(("waits", Text(waits)))
    if info.wake_at is not None:
        rows.append(("wakes", Text(f"{format_time(info.wake_at)} ({_until(info.wake_at)})")))
    if info.lease_owner:
        rows.append(("owner", Text(info.lease_owner)))
    if info.status == "completed":
        rows.append(("result", Text(_value(info.result, 100))))
    if info.error is not None:
        rows.append(("error", Text(_short(describe_error(info.error), 200), style="red")))
    for name, text in rows:
        fields.add_row(name, text)

    steps = Table(box=box.SIMPLE_HEAD, title="journal", title_justify="left")
    steps.add_column("seq", justify="right")
    steps.add_column("step", no_wrap=True)
    steps.add_column("status")
    steps.add_column("attempts", justify="right")
    steps.add_column("value", overflow="ellipsis")
    steps.add_column("error", style="red", overflow="ellipsis")
    for record in journal:
        steps.add_row(
            Text("" if record.seq is None else str(record.seq)),
            Text(record.key),
            _status(record.status),
            Text(str(record.attempts)),
            Text(_value(record.value) if record.status == "completed" else ""),
            Text(_short(describe_error(record.error), 80)),
        )
    body = steps if journal else Text("journal: no steps yet", style="dim")
    out.print(Panel(Group(fields, Text(""), body), title=f"run {info.run_id}", expand=False))


def render_runs(out: Console, runs: list[RunInfo]) -> None:
    if not runs:
        out.print("no runs")
        return
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("run", overflow="fold")  # ids are copied into other commands: never cut
    table.add_column("workflow", no_wrap=True)
    table.add_column("status")
    table.add_column("steps", justify="right")
    table.add_column("node", overflow="ellipsis")
    table.add_column("created", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    table.add_column("wakes / error", overflow="ellipsis")
    for info in runs:
        note = format_time(info.wake_at) if info.wake_at else describe_error(info.error)
        table.add_row(
            Text(info.run_id),
            Text(info.workflow),
            _status(info.status),
            Text(str(info.steps_done)),
            Text(info.node),
            Text(format_time(info.created_at)),
            Text(format_time(info.updated_at)),
            Text(_short(note, 60)),
        )
    out.print(table)
