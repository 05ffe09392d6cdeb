"""Creating a run's rows: its graph (signed when the engine has a secret) and the run itself.

Kept apart from `Engine.start` so the rules of a start are in one place: the graph row is
written once per hash; the run row is created, or, when the run id exists, the start is
idempotent only if it asks for the same workflow, entity and input (`_ids.same_json`);
anything else is a `RunConflict` naming the run, never the old run's result passed off as
the answer to a different request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dotdo.compiler.ir import Graph
from dotdo.engine.ids import same_json, shown_id
from dotdo.engine.store.interface import RunToCreate, StartOutcome
from dotdo.engine.trust import graph_mac, mac_key
from dotdo.errors import RunConflict

__all__ = ["NewRun", "check_same", "rows_of"]


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
    lease_until: float
    now: float
    secret: bytes | None
    sign: bool
    """Write the graph's signature: the first start of this hash in this process."""


def rows_of(new: NewRun) -> RunToCreate:
    """What the store writes for `new` (its graph signed when the engine signs)."""
    mac = None
    if new.sign and new.secret is not None:
        mac = (mac_key(new.graph.hash), graph_mac(new.secret, new.graph))
    return RunToCreate(
        run_id=new.run_id,
        workflow=new.workflow,
        entity_id=new.entity_id,
        graph_hash=new.graph.hash,
        graph_name=new.graph.name,
        graph_body=new.graph_body,
        module=new.source,
        node=new.node,
        state=new.state,
        input=new.input,
        lease_until=new.lease_until,
        now=new.now,
        mac=mac,
    )


def check_same(new: NewRun, outcome: StartOutcome) -> None:
    """A start that found its run id taken: fine if it is the same run, else RunConflict."""
    if outcome.existing is not None:
        _check_same(new, *outcome.existing)


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
