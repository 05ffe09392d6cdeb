"""Log records that say which run and step they belong to, and a JSON formatter.

Every log record made while the engine advances a run carries `run_id` (and, inside a step,
`step_id` and `attempt`) as record attributes, whichever logger made it: the engine's own
(`dotdo.*`) and the application's, so a step's own log lines can be found by run. They come
from context variables (each run is advanced in its own task), added by a log record factory
installed once when the engine is imported. `JsonFormatter` writes one JSON object per
record (`dotdo worker --log-json`).
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

from dotdo.engine.context import _current as _current_step

__all__ = ["JsonFormatter", "bind_run", "current_run_id"]

_run: ContextVar[str | None] = ContextVar("dotdo_run", default=None)


def bind_run(run_id: str) -> None:
    """Mark the current task as advancing `run_id` (a run's task is its own context)."""
    _run.set(run_id)


def current_run_id() -> str | None:
    step = _current_step.get()
    return step.run_id if step is not None else _run.get()


_base_factory = logging.getLogRecordFactory()


def _record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    step = _current_step.get()
    record.run_id = step.run_id if step is not None else _run.get()
    record.step_id = step.step_id if step is not None else None
    record.attempt = step.attempt if step is not None else None
    return record


if not getattr(logging.getLogRecordFactory(), "_dotdo", False):
    _record._dotdo = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(_record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run_id, step_id, attempt
    (when known), and the exception's text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("run_id", "step_id", "attempt"):
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)
