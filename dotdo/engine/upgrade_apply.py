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

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dotdo.compiler.diff import diff_graphs
from dotdo.compiler.ir import DURABLE_KINDS, Graph
from dotdo.compiler.liveness import live_locals
from dotdo.engine.code_check import CodeChecker
from dotdo.engine.ids import shown_id
from dotdo.engine.store.interface import Repin, StoredRun
from dotdo.engine.trust import graph_mac, mac_key, source_of, stored_graph
from dotdo.errors import DotdoError, GraphIntegrityError, RunNotFound

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

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
    row: StoredRun,
    old: Graph,
    new: Graph,
    journal: Iterable[str],
    checker: CodeChecker,
) -> tuple[str | None, str]:
    """(the node the run moves to, or None; the reason either way). Pure."""
    node = old.nodes.get(row.node)
    if node is None or node.kind not in DURABLE_KINDS:
        return None, f"it stands at {row.node!r}, which is not a durable node of its graph"
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
    state = json.loads(row.state)
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
    engine: Shell, run_ids: Iterable[str] | None = None, *, dry_run: bool = False
) -> list[UpgradeOutcome]:
    """Move the given parked runs (default: every parked run of a registered workflow
    pinned to an older graph) onto their workflow's current graph; see the module doc."""
    store = engine.store
    rows: list[StoredRun] = []
    if run_ids is None:
        for parked in await store.unfinished_runs(None):
            wf = engine._workflows.get(parked.workflow)
            if parked.status == "waiting" and wf is not None and parked.graph_hash != wf.graph.hash:
                row = await store.load_run(parked.run_id)
                if row is not None:
                    rows.append(row)
    else:
        for run_id in run_ids:
            found = await store.load_run(run_id)
            if found is None:
                raise RunNotFound(f"no run with id {shown_id(run_id)}")
            rows.append(found)
    outcomes = []
    for row in rows:
        outcomes.append(await _apply_one(engine, row, dry_run))
    return outcomes


async def _apply_one(engine: Shell, row: StoredRun, dry_run: bool) -> UpgradeOutcome:
    run_id, old_hash = row.run_id, row.graph_hash

    def refused(reason: str) -> UpgradeOutcome:
        return UpgradeOutcome(run_id, False, reason, old_hash)

    if row.status != "waiting" or row.lease_owner is not None:
        return refused(f"it is {row.status}: only a parked (waiting) run can be moved")
    wf = engine._workflows.get(row.workflow)
    if wf is None:
        return refused(f"its workflow {row.workflow} is not registered here")
    new = wf.graph
    if old_hash == new.hash:
        return refused("it is already on the current graph")
    body = await engine.store.graph_body(old_hash)
    try:
        old = stored_graph(body, old_hash, name=new.name, run_id=run_id)
    except GraphIntegrityError as exc:
        return refused(str(exc))
    journal = [r.key for r in await engine.store.journal(run_id) if r.status == "completed"]
    target, reason = _plan(row, old, new, journal, CodeChecker(wf.owner, dict(engine._classes)))
    if target is None:
        return refused(reason)
    if dry_run:
        return UpgradeOutcome(run_id, True, f"would be {reason}", old_hash, new.hash)
    now = engine.clock.now()
    secret = engine._secret
    mac = (mac_key(new.hash), graph_mac(secret, new)) if secret is not None else None
    note = {"from": old_hash, "to": new.hash, "node_from": row.node, "node_to": target}

    repin = Repin(
        run_id=run_id,
        old_hash=old_hash,
        new_hash=new.hash,
        graph_name=new.name,
        graph_body=new.to_json(),
        module=source_of(wf),
        node=target,
        state=row.state,
        now=now,
        lease_now=time.time(),
        note=json.dumps(note, sort_keys=True),
        mac=mac,
    )
    if not await engine.store.repin_run(repin):
        return refused("it changed while being moved (it woke, or another process moved it)")
    return UpgradeOutcome(run_id, True, reason, old_hash, new.hash)


def check_one(outcomes: list[UpgradeOutcome]) -> UpgradeOutcome:
    """The single outcome of `upgrade apply RUN`, raising its refusal as one clear error."""
    outcome = outcomes[0]
    if not outcome.applied:
        raise DotdoError(f"run {shown_id(outcome.run_id)} cannot be upgraded: {outcome.reason}")
    return outcome
