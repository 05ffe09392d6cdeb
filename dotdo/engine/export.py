"""Exporting a run's whole history as JSON, for audits (and before pruning it).

The export holds the run row, its graph's identity, its journal, the events it sent, its
approvals with their decisions, its event waits, its entity calls, its history of
operations and the retries that continue it. Stored values appear as the JSON they are
stored as: exporting never decodes them into the app's classes, so it needs no app code
and imports nothing a row names.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from dotdo.engine.ids import shown_id
from dotdo.engine.store.interface import Store
from dotdo.errors import RunNotFound

__all__ = ["EXPORT_FORMAT", "export_run", "write_export"]

EXPORT_FORMAT = "dotdo.run-export/1"


async def export_run(store: Store, run_id: str) -> dict[str, Any]:
    data = await store.export_run(run_id)
    if data is None:
        raise RunNotFound(f"no run with id {shown_id(run_id)}")
    history = [{"kind": h.kind, "at": h.at, **json.loads(h.body)} for h in data.history]
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    return {"format": EXPORT_FORMAT, **fields, "history": history}


async def write_export(store: Store, run_id: str, path: Path) -> None:
    """Write the export to `path` whole or not at all (a temporary file, then a rename)."""
    text = json.dumps(await export_run(store, run_id), indent=2, sort_keys=True, default=str)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text + "\n", encoding="utf-8")
    os.replace(partial, path)
