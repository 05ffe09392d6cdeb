"""Creating a run's rows: its graph (signed when the engine has a secret) and the run itself.

Kept apart from `Engine.start` so the rules of a start are in one place: the graph row is
written once per hash; the run row is created, or, when the run id exists, the start is
idempotent only if it asks for the same workflow, entity and input (`_ids.same_json`);
anything else is a `RunConflict` naming the run, never the old run's result passed off as
the answer to a different request.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from dotdo.compiler.ir import Graph
from dotdo.engine.ids import same_json, shown_id
from dotdo.engine.trust import graph_mac, mac_key
from dotdo.errors import RunConflict

__all__ = ["NewRun", "create_run"]


@dataclass(frozen=True)
class NewRun:
    """What a start writes, prepared outside the writer thread."""

    run_id: str
    workflow: str
    entity_id: str
    entity_given: bool
    """Whether the caller chose the entity (else it defaults to the run id)."""
    graph: Graph
    graph_body: str
    source: str
    node: str
    state: str
    input: str
    owner: str
    lease_until: float
    now: float
    secret: bytes | None
    sign: bool
    """Write the graph's signature: the first start of this hash in this process."""


def create_run(conn: sqlite3.Connection, new: NewRun) -> bool:
    """Write the rows of `new` on the writer thread; False when the same run already exists.

    Raises RunConflict when the run id exists for another workflow, entity or input.
    """
    conn.execute(
        "INSERT INTO graphs(hash, name, body, created_at, module) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(hash) DO NOTHING",
        (new.graph.hash, new.graph.name, new.graph_body, new.now, new.source),
    )
    if new.sign and new.secret is not None:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (mac_key(new.graph.hash), graph_mac(new.secret, new.graph)),
        )
    inserted = conn.execute(
        "INSERT INTO runs(run_id, workflow, graph_hash, entity_id, status, node, state, "
        "input, lease_owner, lease_until, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(run_id) DO NOTHING",
        (
            new.run_id,
            new.workflow,
            new.graph.hash,
            new.entity_id,
            new.node,
            new.state,
            new.input,
            new.owner,
            new.lease_until,
            new.now,
            new.now,
        ),
    ).rowcount
    if inserted:
        return True
    row = conn.execute(
        "SELECT workflow, entity_id, input FROM runs WHERE run_id = ?", (new.run_id,)
    ).fetchone()
    _check_same(new, *row)
    return False


def _check_same(new: NewRun, workflow: str, entity_id: str, stored_input: Any) -> None:
    run = f"run {shown_id(new.run_id)}"
    if workflow != new.workflow:
        raise RunConflict(
            f"{run} already exists as a run of {workflow!r}, not of {new.workflow!r}: "
            "choose another run id",
            run_id=new.run_id,
        )
    if new.entity_given and entity_id != new.entity_id:
        raise RunConflict(
            f"{run} already exists for entity {shown_id(entity_id)}, not "
            f"{shown_id(new.entity_id)}: choose another run id",
            run_id=new.run_id,
        )
    if not isinstance(stored_input, str) or not same_json(stored_input, new.input):
        raise RunConflict(
            f"{run} already exists with a different input: starting it again must pass the "
            "same input (or choose another run id)",
            run_id=new.run_id,
        )
