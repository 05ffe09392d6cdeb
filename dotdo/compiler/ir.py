"""The IR: one explicit state-machine graph that both front ends lower into and the engine walks.

A node holds Python source text (not code objects) so the graph can be stored as JSON, hashed
into the version a run pins, drawn as a diagram, and recompiled later from the store: an
in-flight run keeps executing the exact graph it started on, whatever the code says today.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

__all__ = [
    "DURABLE_KINDS",
    "END",
    "ApprovalNode",
    "BlockNode",
    "CascadeNode",
    "ChoiceNode",
    "EndFinallyNode",
    "EndNode",
    "FailNode",
    "Finding",
    "Graph",
    "Node",
    "Param",
    "Policy",
    "RecordNode",
    "Region",
    "SendNode",
    "SleepNode",
    "StartNode",
    "StepNode",
    "Stmt",
    "WaitEventNode",
]

END = "end"
"""Id of the one terminal node every `return` leads to."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=False, extra="forbid")


class Policy(_Model):
    """How a durable step is retried: attempt k waits initial_delay * backoff**(k-1), capped."""

    model_config = ConfigDict(extra="forbid", strict=True)

    retries: int = Field(default=3, ge=0)
    backoff: float = Field(default=2.0, ge=1.0)
    initial_delay: float = Field(default=1.0, ge=0.0)
    max_delay: float = Field(default=300.0, ge=0.0)
    timeout: float | None = Field(default=None, gt=0.0)

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait before the retry that follows `failed_attempts` failures."""
        raw = self.initial_delay * self.backoff ** max(failed_attempts - 1, 0)
        return float(min(raw, self.max_delay))


class Stmt(_Model):
    """One source statement of a block and the line it stands on in the user's file."""

    line: int
    src: str


class _NodeBase(_Model):
    id: str
    line: int = 0
    next: str | None = None
    catch: str | None = None
    """Where an exception raised at this node goes; None means the run fails."""
    fin: str | None = None
    """Innermost `finally` region this node lies in; returns and jumps pass through it."""


class StartNode(_NodeBase):
    kind: Literal["start"] = "start"


class BlockNode(_NodeBase):
    """Straight-line code; it may also return or jump (break/continue) out of itself."""

    kind: Literal["block"] = "block"
    code: list[Stmt]
    returns: bool = False
    """Whether some statement in the block returns from the workflow."""
    breaks_to: str | None = None
    continues_to: str | None = None


class ChoiceNode(_NodeBase):
    kind: Literal["choice"] = "choice"
    cond: str
    bounded: bool = False
    """The head of a `for` loop: it iterates a stored list, so it always ends."""
    then: str | None = None
    orelse: str | None = None


class StepNode(_NodeBase):
    """A durable call: `do` (retried, at least once) or `try` (single attempt, at most once)."""

    kind: Literal["step"] = "step"
    mode: Literal["do", "try"] = "do"
    name: str
    """The step id; inside loops the engine qualifies it by iteration (`name[2][1]`)."""
    call: str
    args: list[str] = Field(default_factory=list)
    kwargs: list[tuple[str | None, str]] = Field(default_factory=list)
    result: str | None = None
    policy: Policy = Field(default_factory=Policy)
    compensate: str | None = None
    """Method that undoes this step; it receives the step's result."""
    loops: list[str] = Field(default_factory=list)


class RecordNode(_NodeBase):
    """A recorded nondeterministic value: `now`, `uuid` or `random`."""

    kind: Literal["record"] = "record"
    what: Literal["now", "uuid", "random"]
    name: str
    result: str
    loops: list[str] = Field(default_factory=list)


class SendNode(_NodeBase):
    """Fire-and-forget event, written in the same transaction as the next checkpoint."""

    kind: Literal["send"] = "send"
    event: str
    data: str = "None"


class SleepNode(_NodeBase):
    """A durable timer: `duration` (seconds or timedelta) or `until` (a datetime)."""

    kind: Literal["sleep"] = "sleep"
    name: str
    duration: str | None = None
    until: str | None = None
    loops: list[str] = Field(default_factory=list)


class ApprovalNode(_NodeBase):
    """Hibernate until a human decides. `request` evaluates to the request's fields
    (type, title, amount, requested_by, approvers, deadline, priority, extra)."""

    kind: Literal["approval"] = "approval"
    name: str
    request: str
    options: dict[str, Any] = Field(default_factory=dict)
    """Defaults from an `@approval` decorator: approvers, deadline (seconds)."""
    result: str | None = None
    loops: list[str] = Field(default_factory=list)


class WaitEventNode(_NodeBase):
    """Hibernate until an event named `event` (optionally matching `match`) arrives."""

    kind: Literal["wait_event"] = "wait_event"
    name: str
    event: str
    match: str | None = None
    timeout: str | None = None
    result: str | None = None
    loops: list[str] = Field(default_factory=list)


class CascadeNode(_NodeBase):
    """Tiers tried in order until one answers with confidence >= threshold."""

    kind: Literal["cascade"] = "cascade"
    name: str
    task: str
    tiers: list[tuple[str, str]]
    threshold: str = "0.9"
    result: str | None = None
    loops: list[str] = Field(default_factory=list)


class FailNode(_NodeBase):
    """Raise the exception `expr` evaluates to (re-raise in an except dispatch)."""

    kind: Literal["fail"] = "fail"
    expr: str


class EndFinallyNode(_NodeBase):
    """End of a `finally` body: resume the completion (normal, raise, return, jump) it holds."""

    kind: Literal["endfinally"] = "endfinally"
    region: str
    targets: list[str] = Field(default_factory=list)


class EndNode(_NodeBase):
    kind: Literal["end"] = "end"


Node = Annotated[
    StartNode
    | BlockNode
    | ChoiceNode
    | StepNode
    | RecordNode
    | SendNode
    | SleepNode
    | ApprovalNode
    | WaitEventNode
    | CascadeNode
    | FailNode
    | EndFinallyNode
    | EndNode,
    Field(discriminator="kind"),
]

DURABLE_KINDS = frozenset({"step", "record", "sleep", "approval", "wait_event", "cascade"})


class Region(_Model):
    """A try statement with a `finally`: its entry, enclosing region and protected nodes."""

    entry: str
    parent: str | None = None
    members: list[str] = Field(default_factory=list)


class Param(_Model):
    name: str
    annotation: str | None = None
    default: str | None = None
    kind: Literal["positional", "keyword", "varargs", "varkw"] = "positional"


class Finding(_Model):
    severity: Literal["error", "warning"]
    message: str
    node: str | None = None
    line: int = 0


class Graph(_Model):
    """A whole workflow. `nodes` keeps emission order, which is also source order."""

    name: str
    file: str = "<unknown>"
    self_name: str = "self"
    params: list[Param] = Field(default_factory=list)
    returns: str | None = None
    locals: list[str] = Field(default_factory=list)
    local_lines: dict[str, int] = Field(default_factory=dict)
    regions: dict[str, Region] = Field(default_factory=dict)
    nodes: dict[str, Node] = Field(default_factory=dict)
    start: str = "start"
    _hash: str | None = PrivateAttr(default=None)

    def to_json(self) -> str:
        """Canonical JSON: the same graph always gives the same text, hence the same hash."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Graph:
        return cls.model_validate_json(text)

    @property
    def hash(self) -> str:
        """Computed once: a graph is not changed after it is built (lowering, loading)."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.to_json().encode()).hexdigest()[:20]
        return self._hash

    def edges(self) -> Iterator[tuple[str, str, str]]:
        """Every (source, target, kind) edge; kinds: next, true, false, error, return, jump."""
        for node in self.nodes.values():
            if isinstance(node, ChoiceNode):
                if node.then:
                    yield node.id, node.then, "true"
                if node.orelse:
                    yield node.id, node.orelse, "false"
            elif node.next:
                yield node.id, node.next, "next"
            if node.catch:
                yield node.id, node.catch, "error"
            if isinstance(node, BlockNode):
                for target in (node.breaks_to, node.continues_to):
                    if target:
                        yield node.id, self._jump_target(node, target), "jump"
                if node.returns:
                    yield node.id, self._return_target(node), "return"
            if isinstance(node, EndFinallyNode):
                for target in node.targets:
                    yield node.id, target, "jump"

    def _jump_target(self, node: BlockNode, target: str) -> str:
        """A jump out of a try/finally goes through the finally first."""
        if node.fin and target not in self.regions[node.fin].members:
            return self.regions[node.fin].entry
        return target

    def _return_target(self, node: BlockNode) -> str:
        return self.regions[node.fin].entry if node.fin else END

    def to_networkx(self) -> nx.MultiDiGraph[str]:
        graph: nx.MultiDiGraph[str] = nx.MultiDiGraph(name=self.name)
        for node in self.nodes.values():
            graph.add_node(node.id, kind=node.kind, line=node.line)
        for src, dst, kind in self.edges():
            graph.add_edge(src, dst, kind=kind)
        return graph

    def _repr_svg_(self) -> str | None:
        """The diagram, so a notebook shows a graph by itself (None without Graphviz)."""
        from dotdo.compiler.render import to_svg

        return to_svg(self)

    def validate_graph(self) -> list[Finding]:
        """Structural checks: dangling edges, unreachable nodes, dead ends, busy loops."""
        findings: list[Finding] = []
        for src, dst, kind in self.edges():
            if dst not in self.nodes:
                findings.append(
                    Finding(
                        severity="error",
                        message=f"{kind} edge to unknown node {dst!r}",
                        node=src,
                        line=self.nodes[src].line,
                    )
                )
        if findings:
            return findings
        graph = self.to_networkx()
        reachable = nx.descendants(graph, self.start) | {self.start}
        for node_id, node in self.nodes.items():
            if node_id not in reachable and node_id != END:
                findings.append(
                    Finding(
                        severity="error", message="unreachable code", node=node_id, line=node.line
                    )
                )
        terminals = {n for n, node in self.nodes.items() if node.kind in ("end", "fail", "step")}
        # Everything that can reach a terminal: one reverse walk from all of them at once.
        reverse = graph.reverse(copy=False)
        can_finish = set(terminals)
        todo = list(terminals)
        while todo:
            for before in reverse.successors(todo.pop()):
                if before not in can_finish:
                    can_finish.add(before)
                    todo.append(before)
        for node_id in reachable - can_finish:
            node = self.nodes[node_id]
            findings.append(
                Finding(
                    severity="warning",
                    message="no path from here reaches the end",
                    node=node_id,
                    line=node.line,
                )
            )
        busy = graph.subgraph(
            n
            for n, node in self.nodes.items()
            if node.kind not in DURABLE_KINDS and not getattr(node, "bounded", False)
        ).copy()
        for component in nx.strongly_connected_components(busy):
            if len(component) > 1:
                first = min(component, key=lambda n: self.nodes[n].line)
                findings.append(
                    Finding(
                        severity="warning",
                        message="a loop path with no durable operation on it",
                        node=first,
                        line=self.nodes[first].line,
                    )
                )
        return findings
