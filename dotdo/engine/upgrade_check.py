"""`upgrade check`: would every unfinished run finish on the code about to be deployed?

Each run pinned its graph, and the graph is stored, so what a run will still execute is
computable: the nodes reachable (networkx) from where it stands in its pinned graph, plus the
compensations on its stack. Each of those must resolve in today's code
(dotdo.engine.code_check). Runs are grouped by (graph, node, compensations), so ten thousand
runs parked at a handful of places cost a handful of checks; nothing is decoded but each
run's list of compensation methods, which the store reads (`Store.unfinished_runs`; SQLite
with its JSON functions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import networkx as nx

from dotdo.compiler.ir import Graph
from dotdo.engine.code_check import CodeChecker, Finding
from dotdo.engine.trust import stored_graph
from dotdo.engine.workflow import Workflow
from dotdo.errors import GraphIntegrityError

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = ["RunVerdict", "UpgradeReport", "check_runs"]


@dataclass(frozen=True)
class RunVerdict:
    """One unfinished run: whether it can finish on today's code, and why not."""

    run_id: str
    workflow: str
    graph_hash: str
    node: str
    status: str
    findings: tuple[Finding, ...] = ()

    @property
    def strands(self) -> bool:
        return any(f.strands for f in self.findings)

    @property
    def reasons(self) -> list[str]:
        return [str(f) for f in self.findings if f.strands]


@dataclass
class UpgradeReport:
    runs: list[RunVerdict] = field(default_factory=list)

    @property
    def stranded(self) -> list[RunVerdict]:
        return [r for r in self.runs if r.strands]

    @property
    def ok(self) -> bool:
        return not self.stranded


class _GraphCheck:
    """One pinned graph against today's code: per-node findings and reachability, cached."""

    def __init__(self, graph: Graph, checker: CodeChecker) -> None:
        self.graph = graph
        self.checker = checker
        self.nx = graph.to_networkx()
        self._nodes: dict[str, list[Finding]] = {}
        self._from: dict[str, tuple[Finding, ...]] = {}

    def _node(self, node_id: str) -> list[Finding]:
        if node_id not in self._nodes:
            self._nodes[node_id] = self.checker.node(self.graph, node_id)
        return self._nodes[node_id]

    def reachable(self, node_id: str) -> tuple[Finding, ...]:
        if node_id not in self._from:
            if node_id not in self.graph.nodes:
                found: tuple[Finding, ...] = (
                    Finding(node_id, 0, f"it stands at node {node_id!r}, not in its graph"),
                )
            else:
                ahead = sorted(nx.descendants(self.nx, node_id) | {node_id})
                found = tuple(f for n in ahead for f in self._node(n))
            self._from[node_id] = found
        return self._from[node_id]


def _workflow_findings(wf: Workflow) -> list[Finding]:
    try:
        wf.type_hints()
    except Exception as exc:
        return [
            Finding(
                "start",
                0,
                f"{wf.qualname}'s annotations cannot be loaded ({type(exc).__name__}: {exc})",
            )
        ]
    return []


async def check_runs(engine: Shell, *, workflows: Iterable[str] | None = None) -> UpgradeReport:
    """Check every unfinished run (of `workflows`, default all) against the registered code."""
    chosen = list(workflows) if workflows is not None else None
    rows = await engine.store.unfinished_runs(chosen)
    graphs: dict[str, _GraphCheck | Finding] = {}
    checkers: dict[str, CodeChecker] = {}
    per_workflow: dict[str, list[Finding]] = {}
    verdicts: dict[tuple[str, str, str, tuple[str, ...]], tuple[Finding, ...]] = {}
    report = UpgradeReport()
    for row in rows:
        name, graph_hash, node = row.workflow, row.graph_hash, row.node
        comp = row.compensations
        key = (name, graph_hash, node, comp)
        if key not in verdicts:
            verdicts[key] = await _verdict(
                engine, name, graph_hash, node, comp, graphs, checkers, per_workflow
            )
        report.runs.append(
            RunVerdict(row.run_id, name, graph_hash, node, row.status, verdicts[key])
        )
    return report


async def _verdict(
    engine: Shell,
    name: str,
    graph_hash: str,
    node: str,
    comp: tuple[str, ...],
    graphs: dict[str, _GraphCheck | Finding],
    checkers: dict[str, CodeChecker],
    per_workflow: dict[str, list[Finding]],
) -> tuple[Finding, ...]:
    wf = engine._workflows.get(name)
    if wf is None:
        return (Finding(node, 0, f"workflow {name} is not defined in the current code"),)
    if name not in checkers:
        checkers[name] = CodeChecker(wf.owner, dict(engine._classes))
        per_workflow[name] = _workflow_findings(wf)
    checker = checkers[name]
    if graph_hash not in graphs:
        graphs[graph_hash] = await _load(engine, wf, graph_hash, checker)
    pinned = graphs[graph_hash]
    if isinstance(pinned, Finding):
        return (pinned,)
    found = list(per_workflow[name]) + list(pinned.reachable(node))
    for method in comp:
        message = checker.compensation(method)
        if message:
            found.append(Finding(node, 0, f"{message} (on its compensation stack)"))
    return tuple(found)


async def _load(
    engine: Shell, wf: Workflow, graph_hash: str, checker: CodeChecker
) -> _GraphCheck | Finding:
    if graph_hash == wf.graph.hash:
        return _GraphCheck(wf.graph, checker)
    body = await engine.store.graph_body(graph_hash)
    try:
        graph = stored_graph(
            body,
            graph_hash,
            name=wf.graph.name,
            run_id="(any)",
        )
    except GraphIntegrityError as exc:
        return Finding("start", 0, str(exc))
    return _GraphCheck(graph, checker)
