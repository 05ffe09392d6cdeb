"""`upgrade apply`: move a parked run onto the current graph, when that is provably safe.

A run pins its graph, so a deploy never changes what a waiting run does (it finishes on
its old graph, as long as the old graph's calls still resolve: `upgrade check`). Moving it
onto the new graph is what Temporal makes people write by hand with `patched()`; here it is
computed, and refused with the reason unless all of these hold:

- the run is parked (`waiting`, nobody holds it) and pinned to another graph;
- where it stands maps onto the new graph: the node it waits at has a node with the same
  kind and step id in the new graph (dotdo.compiler.diff);
- every step it completed exists in the new graph by step id (so its journal, its retry
  keys and its compensation stack mean the same thing there);
- every local the new graph reads from that node on (liveness) is in the run's state;
- every compensation on its stack resolves in today's code.

The move rewrites the run's graph pin and node in one transaction, only if the run is still
pinned and parked as it was read, and records an `upgraded` line in the run's history.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dotdo.compiler.diff import diff_graphs
from dotdo.compiler.ir import DURABLE_KINDS, Graph
from dotdo.compiler.liveness import live_locals
from dotdo.engine.code_check import CodeChecker
from dotdo.engine.ids import shown_id
from dotdo.engine.store import operations
from dotdo.engine.trust import graph_mac, mac_key, source_of, stored_graph
from dotdo.errors import DotdoError, GraphIntegrityError, RunNotFound

if TYPE_CHECKING:
    from dotdo.engine.engine import Engine

__all__ = ["UpgradeOutcome", "apply_upgrades"]

_QUALIFIED = re.compile(r"(\[\d+\])+$")
_SET_BY_INTERPRETER = frozenset({"__ret", "__exc"})


@dataclass(frozen=True)
class UpgradeOutcome:
    run_id: str
    applied: bool
    reason: str = ""
    """Why it was refused (or, applied, where it moved)."""
    from_hash: str = ""
    to_hash: str = ""


def _plan(
    row: sqlite3.Row,
    old: Graph,
    new: Graph,
    journal: Iterable[str],
    checker: CodeChecker,
) -> tuple[str | None, str]:
    """(the node the run moves to, or None; the reason either way). Pure."""
    node = old.nodes.get(row["node"])
    if node is None or node.kind not in DURABLE_KINDS:
        return None, f"it stands at {row['node']!r}, which is not a durable node of its graph"
    where = f"{node.kind} {getattr(node, 'name', node.id)!r}"
    diff = diff_graphs(old, new)
    back = {o: n for n, o in diff.matched.items()}
    target = back.get(node.id)
    if target is None:
        return None, f"its position ({where}) does not exist in the new graph"
    names = {getattr(n, "name", None) for n in new.nodes.values() if n.kind in DURABLE_KINDS}
    for key in journal:
        base = _QUALIFIED.sub("", key.split(":")[0] if not key.startswith("compensate:") else "")
        if base and base not in names:
            return None, f"it completed step {base!r}, which the new graph does not have"
    state = json.loads(row["state"])
    have = set(state.get("frame", {})) | set(state.get("aliases", {}))
    # Liveness over-approximates (a local assigned on every branch of an `if` counts as
    # read before it): what the old graph already needed here without the run having it is
    # written before it is read, there and in the new graph alike. `__ret`/`__exc` are set
    # by the interpreter itself.
    needed = live_locals(new).get(target, frozenset())
    expected = live_locals(old).get(node.id, frozenset())
    missing = sorted(needed - have - expected - _SET_BY_INTERPRETER)
    if missing:
        shown = [m if not m.startswith("__") else f"{m} (a hidden local)" for m in missing]
        return None, (
            f"the new graph reads {', '.join(shown)} from {where} on, which this run does not have"
        )
    for _key, method, _value in state.get("comp", []):
        problem = checker.compensation(method)
        if problem:
            return None, f"{problem} (on its compensation stack)"
    return target, f"moved from {where} at {node.id} to {target}"


async def apply_upgrades(
    engine: Engine, run_ids: Iterable[str] | None = None, *, dry_run: bool = False
) -> list[UpgradeOutcome]:
    """Move the given parked runs (default: every parked run of a registered workflow
    pinned to an older graph) onto their workflow's current graph; see the module doc."""
    store = engine.store
    if run_ids is None:
        rows = [
            r
            for r in await store.fetch(
                "SELECT * FROM runs WHERE status = 'waiting' ORDER BY run_id"
            )
            if r["workflow"] in engine.workflows
            and r["graph_hash"] != engine.workflows[r["workflow"]].graph.hash
        ]
    else:
        rows = []
        for run_id in run_ids:
            row = await operations.run_row(store, run_id)
            if row is None:
                raise RunNotFound(f"no run with id {shown_id(run_id)}")
            rows.append(row)
    outcomes = []
    for row in rows:
        outcomes.append(await _apply_one(engine, row, dry_run))
    return outcomes


async def _apply_one(engine: Engine, row: sqlite3.Row, dry_run: bool) -> UpgradeOutcome:
    run_id, old_hash = row["run_id"], row["graph_hash"]

    def refused(reason: str) -> UpgradeOutcome:
        return UpgradeOutcome(run_id, False, reason, old_hash)

    if row["status"] != "waiting" or row["lease_owner"] is not None:
        return refused(f"it is {row['status']}: only a parked (waiting) run can be moved")
    wf = engine.workflows.get(row["workflow"])
    if wf is None:
        return refused(f"its workflow {row['workflow']} is not registered here")
    new = wf.graph
    if old_hash == new.hash:
        return refused("it is already on the current graph")
    body = await operations.graph_body(engine.store, old_hash)
    try:
        old = stored_graph(body, old_hash, name=new.name, run_id=run_id)
    except GraphIntegrityError as exc:
        return refused(str(exc))
    journal = [
        r["step_key"]
        for r in await operations.journal_rows(engine.store, run_id)
        if r["status"] == "completed"
    ]
    target, reason = _plan(row, old, new, journal, CodeChecker(wf.owner, engine.registered_classes))
    if target is None:
        return refused(reason)
    if dry_run:
        return UpgradeOutcome(run_id, True, f"would be {reason}", old_hash, new.hash)
    now = engine.clock.now()
    secret = engine._secret
    mac = (mac_key(new.hash), graph_mac(secret, new)) if secret is not None else None
    note = {"from": old_hash, "to": new.hash, "node_from": row["node"], "node_to": target}

    def write(conn: sqlite3.Connection) -> bool:
        moved = operations.repin_run(
            conn,
            run_id,
            old_hash=old_hash,
            new_hash=new.hash,
            graph=(new.name, new.to_json(), source_of(wf)),
            node=target,
            state=row["state"],
            now=now,
            lease_now=time.time(),
            mac=mac,
        )
        if moved:
            operations.add_history(conn, run_id, "upgraded", note, now)
        return moved

    if not await engine.store.write_on_thread(functools.partial(write)):
        return refused("it changed while being moved (it woke, or another process moved it)")
    return UpgradeOutcome(run_id, True, reason, old_hash, new.hash)


def check_one(outcomes: list[UpgradeOutcome]) -> UpgradeOutcome:
    """The single outcome of `upgrade apply RUN`, raising its refusal as one clear error."""
    outcome = outcomes[0]
    if not outcome.applied:
        raise DotdoError(f"run {shown_id(outcome.run_id)} cannot be upgraded: {outcome.reason}")
    return outcome
