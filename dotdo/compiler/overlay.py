"""A run drawn on its graph: which nodes are done, failed, current, and the last edge taken.

Pure: it reads the run's status, its current node and its journal (step keys, in order), all
of which the caller fetched from the store. The engine checkpoints only at durable nodes,
so the last edge is found by walking from the last finished durable node to where the run
is now through code, choices and sends; when two branches of a decision both lead there
(the journal cannot tell which was taken), no edge is claimed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

from dotdo.compiler.ir import DURABLE_KINDS, END, Graph
from dotdo.compiler.render import Overlay

__all__ = ["JournalLine", "last_edge", "run_overlay"]

_QUALIFIER = re.compile(r"(\[\d+\])+$")


class JournalLine(Protocol):
    """What the overlay reads of a journal record (`dotdo.StepRecord` has it)."""

    @property
    def key(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def seq(self) -> int | None: ...


def _base(key: str) -> str:
    """`charge[2][1]` -> `charge`: a step inside loops, whatever the iteration."""
    return _QUALIFIER.sub("", key)


def run_overlay(
    graph: Graph, *, status: str, node: str, finished: bool, journal: Iterable[JournalLine]
) -> Overlay:
    """The overlay of a run with this `status`, at `node`, with this journal."""
    lines = list(journal)
    completed = {_base(r.key) for r in lines if r.status == "completed"}
    failed_keys = {_base(r.key) for r in lines if r.status == "failed"}
    by_name: dict[str, str] = {}
    done: set[str] = set()
    failed: set[str] = set()
    for n in graph.nodes.values():
        name = getattr(n, "name", None)
        if name is None:
            continue
        by_name.setdefault(name, n.id)
        if name in completed:
            done.add(n.id)
        if f"compensate:{name}" in completed:
            done.add(f"undo_{n.id}")
        if name in failed_keys and status in ("failed", "compensated"):
            failed.add(n.id)
    if status == "completed":
        done.add(END)
    current = None if finished else node
    target = current
    if status == "completed":
        target = END
    elif target is None and failed:
        target = next(iter(sorted(failed)))
    edge = None
    if target is not None and target in graph.nodes:
        ordered = sorted(
            (r for r in lines if r.status == "completed" and r.seq is not None),
            key=lambda r: r.seq or 0,
        )
        source = graph.start
        for record in reversed(ordered):
            found = by_name.get(_base(record.key))
            if found is not None and found != target:
                source = found
                break
        edge = last_edge(graph, source, target)
    return Overlay(done=done, failed=failed, current=current, last_edge=edge)


def last_edge(graph: Graph, source: str, target: str) -> tuple[str, str] | None:
    """The edge into `target` on the way from `source` through non-durable nodes, if the
    way is unique."""
    successors: dict[str, set[str]] = {}
    for src, dst, _ in graph.edges():
        successors.setdefault(src, set()).add(dst)
    into: set[tuple[str, str]] = set()
    seen = {source}
    todo = [source]
    while todo:
        current = todo.pop()
        for nxt in successors.get(current, ()):
            if nxt == target:
                into.add((current, nxt))
            elif (
                nxt not in seen
                and nxt in graph.nodes
                and graph.nodes[nxt].kind not in DURABLE_KINDS
            ):
                seen.add(nxt)
                todo.append(nxt)
    return next(iter(into)) if len(into) == 1 else None
