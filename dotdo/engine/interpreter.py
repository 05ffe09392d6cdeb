"""The interpreter core: a pure transition function over (graph, run state, event).

It never awaits, reads a clock or touches the database: time comes in as an argument, step
results come in as events, and what must happen next goes out as one command (call a step,
record a value, wait, finish). The engine shell performs commands and persists transitions.
That split is what lets tests crash the engine at every boundary cheaply: the core is the
same function every time, and the only state is what the shell stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dotdo.compiler import loop_budget
from dotdo.compiler.codegen import JUMP, RETURN, Frame, Program
from dotdo.compiler.ir import (
    DURABLE_KINDS,
    END,
    ApprovalNode,
    BlockNode,
    CascadeNode,
    ChoiceNode,
    EndFinallyNode,
    EndNode,
    FailNode,
    Node,
    Policy,
    RecordNode,
    SendNode,
    SleepNode,
    StartNode,
    StepNode,
    WaitEventNode,
)
from dotdo.engine import serde
from dotdo.engine.cascade import HUMAN, conclude, human_reviewers, read_answer
from dotdo.engine.triggers import check_event_name
from dotdo.errors import (
    CompensationFailed,
    LoopBudgetExceeded,
    PermanentError,
    StepInterrupted,
)

__all__ = [
    "Call",
    "Command",
    "CompEntry",
    "Event",
    "Finish",
    "Record",
    "Recorded",
    "Resolved",
    "Resume",
    "RunState",
    "StepErr",
    "StepOk",
    "Suspend",
    "TimerFired",
    "Transition",
    "Wait",
    "advance",
    "is_retryable",
    "step_key",
]


@dataclass
class CompEntry:
    """One completed step's undo waiting on the compensation stack."""

    key: str
    method: str
    value: Any


@dataclass
class RunState:
    """Everything the shell persists about a run between two transitions."""

    node: str
    frame: Frame
    attempt: int = 0
    """Failed attempts so far of the step at `node`."""
    comp: list[CompEntry] = field(default_factory=list)
    compensating: BaseException | None = None
    """While undoing: the unhandled error that started it (kept as the run's error)."""


# ---------------------------------------------------------------- events
@dataclass(frozen=True)
class Resume:
    """Continue from the persisted node (a new run, or one recovered after a crash)."""


@dataclass(frozen=True)
class StepOk:
    value: Any


@dataclass(frozen=True)
class StepErr:
    error: BaseException


@dataclass(frozen=True)
class TimerFired:
    pass


@dataclass(frozen=True)
class Recorded:
    value: Any


@dataclass(frozen=True)
class Resolved:
    """What a hibernated node waited for: an approval's outcome, an event (None on timeout)."""

    value: Any


Event = Resume | StepOk | StepErr | TimerFired | Recorded | Resolved


# -------------------------------------------------------------- commands
@dataclass(frozen=True)
class Call:
    """Run one attempt of a step. `attempt` counts from 1; the key is the same each time."""

    key: str
    fn: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    policy: Policy
    mode: Literal["do", "try"]
    attempt: int
    undo: bool = False


@dataclass(frozen=True)
class Record:
    key: str
    what: Literal["now", "uuid", "random"]


@dataclass(frozen=True)
class Wait:
    until: float
    key: str


@dataclass(frozen=True)
class Finish:
    status: Literal["completed", "failed", "compensated"]
    value: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Suspend:
    """Hibernate until resolved from outside. `kind` is "approval" or "event"; `until` is a
    deadline or timeout (the engine resolves the node as expired / None when it passes)."""

    key: str
    kind: Literal["approval", "event"]
    request: dict[str, Any]
    until: float | None = None


Command = Call | Record | Wait | Finish | Suspend


@dataclass
class Transition:
    state: RunState
    command: Command
    sends: list[tuple[str, Any]] = field(default_factory=list)


def step_key(
    node: StepNode | RecordNode | SleepNode | ApprovalNode | WaitEventNode | CascadeNode,
    frame: Frame,
) -> str:
    """A step's id, qualified by the iteration of every loop around it: `charge[2][1]`."""
    if not node.loops:
        return node.name
    return node.name + "".join(f"[{frame.get(c, 0)}]" for c in node.loops)


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, Exception) and not isinstance(error, PermanentError | StepInterrupted)


def advance(
    program: Program,
    instance: Any,
    state: RunState,
    event: Event,
    now: float,
    budget: int = loop_budget.DEFAULT_LOOP_BUDGET,
) -> Transition:
    """Apply `event` to `state`, then run pure code until the next command.

    At most `budget` graph nodes are walked, and at most `budget` iterations of plain
    `.flow` loops run, before the run fails with LoopBudgetExceeded (it would never end).
    """
    loop_budget.arm(budget)
    sends: list[tuple[str, Any]] = []
    if state.compensating is not None:
        return _compensate(program, instance, state, event, now, sends)
    node = program.graph.nodes[state.node]
    if isinstance(node, CascadeNode) and isinstance(event, StepOk | StepErr | Resolved):
        outcome = _cascade_answer(program, instance, state, node, event, now, sends)
        if outcome is not None:
            return outcome
    elif isinstance(event, Resolved) and isinstance(node, ApprovalNode | WaitEventNode):
        if node.result is not None:
            state.frame[node.result] = event.value
        state.node = _next(node)
    elif isinstance(event, StepOk) and isinstance(node, StepNode):
        if node.result is not None:
            state.frame[node.result] = event.value
        if node.compensate:
            key = step_key(node, state.frame)
            state.comp.append(CompEntry(key=key, method=node.compensate, value=event.value))
        state.attempt = 0
        state.node = _next(node)
    elif isinstance(event, StepErr) and isinstance(node, StepNode):
        if is_retryable(event.error) and state.attempt < node.policy.retries:
            state.attempt += 1
            until = now + node.policy.delay(state.attempt)
            return Transition(state, Wait(until, step_key(node, state.frame)), sends)
        state.attempt = 0
        outcome = _throw(program, instance, state, node, event.error, now, sends)
        if outcome is not None:
            return outcome
    elif isinstance(event, Recorded) and isinstance(node, RecordNode):
        state.frame[node.result] = event.value
        state.node = _next(node)
    elif isinstance(event, TimerFired) and isinstance(node, SleepNode):
        state.node = _next(node)
    return _run(program, instance, state, now, sends, budget)


def _next(node: Node) -> str:
    return node.next or END


def _run(
    program: Program,
    instance: Any,
    state: RunState,
    now: float,
    sends: list[tuple[str, Any]],
    budget: int | None = None,
) -> Transition:
    """Run pure code from `state.node` until a command; at most `budget` nodes (by default
    what this transition was armed with)."""
    nodes = program.graph.nodes
    frame = state.frame
    cells = program.cells
    visits = loop_budget.limit() if budget is None else budget
    while True:
        visits -= 1
        if visits < 0:
            return _out_of_budget(program, instance, state, None)
        node = nodes[state.node]
        code = program.code.get(node.id)
        try:
            if isinstance(node, StartNode):
                state.node = _next(node)
            elif isinstance(node, BlockNode):
                assert code is not None
                signal = code(instance, frame, cells)
                if signal is None:
                    state.node = _next(node)
                elif signal[0] == RETURN:
                    frame["__ret"] = signal[1]
                    _leap(program, state, node.fin, ("return",), END)
                else:
                    assert signal[0] == JUMP
                    _leap(program, state, node.fin, ("jump", signal[1]), signal[1])
            elif isinstance(node, ChoiceNode):
                assert code is not None
                target = node.then if code(instance, frame, cells) else node.orelse
                state.node = target or END
            elif isinstance(node, StepNode):
                assert code is not None
                fn, args, kwargs = code(instance, frame, cells)
                call = Call(
                    key=step_key(node, frame),
                    fn=fn,
                    args=args,
                    kwargs=kwargs,
                    policy=node.policy,
                    mode=node.mode,
                    attempt=state.attempt + 1,
                )
                return Transition(state, call, sends)
            elif isinstance(node, RecordNode):
                return Transition(state, Record(step_key(node, frame), node.what), sends)
            elif isinstance(node, SendNode):
                assert code is not None
                name, data = code(instance, frame, cells)
                check_event_name(name)
                sends.append((name, data))
                state.node = _next(node)
            elif isinstance(node, SleepNode):
                assert code is not None
                until = _wake_time(code(instance, frame, cells), node, now)
                return Transition(state, Wait(until, step_key(node, frame)), sends)
            elif isinstance(node, FailNode):
                assert code is not None
                raise code(instance, frame, cells)
            elif isinstance(node, EndFinallyNode):
                _end_finally(program, state, node)
            elif isinstance(node, ApprovalNode):
                assert code is not None
                request = approval_request(code(instance, frame, cells), node, now)
                deadline: float | None = request.get("deadline")
                return Transition(
                    state, Suspend(step_key(node, frame), "approval", request, deadline), sends
                )
            elif isinstance(node, WaitEventNode):
                assert code is not None
                name, match, timeout = code(instance, frame, cells)
                check_event_name(name)
                if match is not None and not isinstance(match, dict):
                    raise TypeError("wait_for_event(match=...) takes a dict of fields to equal")
                request = {"event": name, "match": match}
                expires = None if timeout is None else now + _seconds(timeout)
                return Transition(
                    state, Suspend(step_key(node, frame), "event", request, expires), sends
                )
            elif isinstance(node, CascadeNode):
                return _cascade_next(program, instance, state, node, now, sends)
            elif isinstance(node, EndNode):
                return Transition(state, Finish("completed", value=frame.get("__ret")), sends)
        except Exception as error:
            outcome = _throw(program, instance, state, node, error, now, sends)
            if outcome is not None:
                return outcome
        except loop_budget.OutOfBudget as stop:
            return _out_of_budget(program, instance, state, stop.line)


def _out_of_budget(
    program: Program, instance: Any, state: RunState, line: int | None
) -> Transition:
    """Fail a run whose pure code would not stop. The flow's own `except` and `finally`
    do not run (they are the code that would not stop); completed steps are compensated.
    The sends of this transition are dropped with it: a runaway loop may have made many."""
    graph = program.graph
    line = line if line is not None else _loop_line(program, state.node)
    error = LoopBudgetExceeded(
        f"{graph.file}:{line}: this loop ran more than {loop_budget.limit():,} times with no "
        "durable operation (a step, sleep, wait, approval or recorded value) in between; "
        "the run was stopped",
        graph.file,
        line,
    )
    if state.comp:
        state.compensating = error
        state.attempt = 0
        return _undo_top(instance, state, [])
    return Transition(state, Finish("failed", error=error), [])


def _loop_line(program: Program, node_id: str) -> int:
    """The line of the loop `node_id` keeps cycling through: the first line of the cycle of
    non-durable nodes it belongs to (found only when a budget runs out)."""
    import networkx as nx

    graph = program.graph
    busy = graph.to_networkx().subgraph(
        n for n, node in graph.nodes.items() if node.kind not in DURABLE_KINDS
    )
    for component in nx.strongly_connected_components(busy):
        if node_id in component and len(component) > 1:
            return min(graph.nodes[n].line for n in component)
    return graph.nodes[node_id].line


def _seconds(value: Any) -> float:
    return float(value.total_seconds()) if hasattr(value, "total_seconds") else float(value)


def _wake_time(value: Any, node: SleepNode, now: float) -> float:
    if node.until is not None:
        return float(value.timestamp())
    return now + max(_seconds(value), 0.0)


def approval_request(raw: Any, node: ApprovalNode, now: float) -> dict[str, Any]:
    """Normalise an approval request; bad ones raise into the workflow (a user mistake)."""
    if not isinstance(raw, dict):
        raise TypeError(f"an approval request must be a dict of fields, got {type(raw).__name__}")
    request = {**node.options, **raw}
    approvers = request.get("approvers")
    if isinstance(approvers, str):
        approvers = [approvers]
    if not approvers or not all(isinstance(a, str) and a for a in approvers):
        raise ValueError(f"approval {node.name!r} needs approvers: a name or a list of names")
    request["approvers"] = list(approvers)
    deadline = request.get("deadline")
    if deadline is not None:
        if hasattr(deadline, "timestamp"):
            at = float(deadline.timestamp())
        else:
            at = now + _seconds(deadline)
        if at <= now:
            raise ValueError(f"approval {node.name!r} has a deadline in the past")
        request["deadline"] = at
    serde.encode(request)  # a field that cannot be stored fails here, inside the workflow
    return request


def _cascade_var(node: CascadeNode) -> str:
    return f"__cascade_{node.id}"


def _cascade_next(
    program: Program,
    instance: Any,
    state: RunState,
    node: CascadeNode,
    now: float,
    sends: list[tuple[str, Any]],
) -> Transition:
    """Run the next tier of a cascade (a step), or hibernate on its human tier."""
    code = program.code[node.id]
    task, tiers, threshold = code(instance, state.frame, program.cells)
    progress = state.frame.setdefault(_cascade_var(node), {"tier": 0, "candidates": []})
    index = progress["tier"]
    key = step_key(node, state.frame)
    if index >= len(tiers):
        result = conclude(task, [tuple(c) for c in progress["candidates"]], threshold, final=True)
        return _cascade_done(program, instance, state, node, result, now, sends)
    tier, fn = tiers[index]
    if tier == HUMAN:
        request = {
            "type": "cascade",
            "title": str(task),
            "approvers": human_reviewers(fn),
            "extra": {"candidates": [list(c) for c in progress["candidates"]]},
        }
        return Transition(state, Suspend(f"{key}:{tier}", "approval", request), sends)
    call = Call(
        key=f"{key}:{tier}",
        fn=fn,
        args=(),
        kwargs={},
        policy=Policy(retries=0),
        mode="do",
        attempt=1,
    )
    return Transition(state, call, sends)


def _cascade_answer(
    program: Program,
    instance: Any,
    state: RunState,
    node: CascadeNode,
    event: StepOk | StepErr | Resolved,
    now: float,
    sends: list[tuple[str, Any]],
) -> Transition | None:
    code = program.code[node.id]
    task, tiers, threshold = code(instance, state.frame, program.cells)
    progress = state.frame.setdefault(_cascade_var(node), {"tier": 0, "candidates": []})
    tier = tiers[progress["tier"]][0]
    candidates = [tuple(c) for c in progress["candidates"]]
    if isinstance(event, Resolved):
        decision = event.value
        chosen = decision.decisions[-1].value if getattr(decision, "decisions", None) else None
        if chosen is None and candidates:
            chosen = max(candidates, key=lambda c: c[2])[1]
        candidates.append((tier, chosen, 1.0 if decision.status == "approved" else 0.0))
    elif isinstance(event, StepOk):
        try:
            value, confidence = read_answer(event.value)
        except TypeError as error:
            return _throw(program, instance, state, node, error, now, sends) or _run(
                program, instance, state, now, sends
            )
        candidates.append((tier, value, confidence))
    progress["candidates"] = [list(c) for c in candidates]
    progress["tier"] += 1
    result = conclude(task, candidates, threshold, final=progress["tier"] >= len(tiers))
    if result is None:
        return _cascade_next(program, instance, state, node, now, sends)
    return _cascade_done(program, instance, state, node, result, now, sends)


def _cascade_done(
    program: Program,
    instance: Any,
    state: RunState,
    node: CascadeNode,
    result: Any,
    now: float,
    sends: list[tuple[str, Any]],
) -> Transition:
    state.frame.pop(_cascade_var(node), None)
    if node.result is not None:
        state.frame[node.result] = result
    state.node = _next(node)
    return _run(program, instance, state, now, sends)


def _leap(
    program: Program, state: RunState, region: str | None, completion: tuple[Any, ...], target: str
) -> None:
    """Leave toward `target`, running every `finally` in between (innermost first)."""
    if region is None or (completion[0] == "jump" and target in program.members[region]):
        state.node = target
        return
    state.frame[f"__fin{region}"] = completion
    state.node = program.graph.regions[region].entry


def _end_finally(program: Program, state: RunState, node: EndFinallyNode) -> None:
    completion = state.frame.pop(f"__fin{node.region}", ("normal",))
    parent = program.graph.regions[node.region].parent
    kind = completion[0]
    if kind == "normal":
        state.node = _next(node)
    elif kind == "raise":
        raise completion[1]
    elif kind == "return":
        _leap(program, state, parent, ("return",), END)
    else:
        _leap(program, state, parent, tuple(completion), completion[1])


def _throw(
    program: Program,
    instance: Any,
    state: RunState,
    node: Node,
    error: BaseException,
    now: float,
    sends: list[tuple[str, Any]],
) -> Transition | None:
    """Route `error` to the node's handler; None means carry on running from there."""
    if node.catch is not None:
        state.frame["__exc"] = error
        state.node = node.catch
        return None
    if state.comp:
        state.compensating = error
        state.attempt = 0
        return _undo_top(instance, state, sends)
    return Transition(state, Finish("failed", error=error), sends)


def _undo_top(instance: Any, state: RunState, sends: list[tuple[str, Any]]) -> Transition:
    entry = state.comp[-1]
    method = getattr(type(instance), entry.method, None)
    policy = getattr(method, "policy", None) or Policy()
    call = Call(
        key=f"compensate:{entry.key}",
        fn=getattr(instance, entry.method),
        args=(entry.value,),
        kwargs={},
        policy=policy,
        mode="do",
        attempt=state.attempt + 1,
        undo=True,
    )
    return Transition(state, call, sends)


def _compensate(
    program: Program,
    instance: Any,
    state: RunState,
    event: Event,
    now: float,
    sends: list[tuple[str, Any]],
) -> Transition:
    original = state.compensating
    assert original is not None
    if isinstance(event, StepOk):
        state.comp.pop()
        state.attempt = 0
        if not state.comp:
            return Transition(state, Finish("compensated", error=original), sends)
    elif isinstance(event, StepErr):
        entry = state.comp[-1]
        transition = _undo_top(instance, state, sends)
        assert isinstance(transition.command, Call)
        policy = transition.command.policy
        if is_retryable(event.error) and state.attempt < policy.retries:
            state.attempt += 1
            until = now + policy.delay(state.attempt)
            return Transition(state, Wait(until, transition.command.key), sends)
        failure = CompensationFailed(f"compensate:{entry.key}", event.error, original)
        return Transition(state, Finish("failed", error=failure), sends)
    return _undo_top(instance, state, sends)
