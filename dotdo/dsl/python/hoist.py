"""Durable operations inside a Python workflow body: finding them, hoisting them out of
expressions in evaluation order, and turning each into a tree operation (`dotdo.compiler.tree`)
for the common lowering: step, record, send, sleep, approval, event wait, cascade.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dotdo.compiler import _scan
from dotdo.compiler import tree as T
from dotdo.compiler.ir import (
    ApprovalNode,
    CascadeNode,
    Policy,
    RecordNode,
    SendNode,
    SleepNode,
    StepNode,
    WaitEventNode,
)
from dotdo.errors import CompileError

__all__ = ["DurableOps", "StepInfo"]

_OPTION_NAMES = frozenset(
    {"step_id", "retries", "backoff", "timeout", "initial_delay", "max_delay"}
)


@dataclass(frozen=True)
class StepInfo:
    """What the compiler needs to know of a `@step` method: its policy and its undo."""

    policy: Policy
    compensator: str | None = None
    kind: str = "step"
    """"step", or "approval" for an `@approval` method (its options then apply)."""
    options: dict[str, Any] = field(default_factory=dict)


class DurableOps:
    """Recognises durable operations and appends them, hoisted, to the tree being built."""

    def __init__(
        self,
        func: ast.AsyncFunctionDef,
        *,
        name: str,
        file: str,
        lines: list[str],
        steps: Mapping[str, StepInfo],
    ) -> None:
        args = func.args
        self_name = args.args[0].arg if args.args else "self"
        self.name = name
        self.file = file
        self.lines = lines
        self.out: list[T.Stmt] = []
        """Where the statement being built appends its operations and plain statements."""
        self.hidden: dict[str, int] = {}
        self.counter = 0
        self.func = func
        self.steps = steps
        self.self_name = self_name
        if not args.args:
            raise self.error(func, "a workflow method needs `self` as its first parameter")
        self._check_explicit_ids()
        self.entity_args = 0
        """Depth of entity-call arguments being hoisted (stubs there are pipelined)."""

    def _check_explicit_ids(self) -> None:
        """Every `step_id=` is a string literal used by one call site only."""
        seen: dict[str, ast.AST] = {}
        for node in ast.walk(self.func):
            if not isinstance(node, ast.Call) or _scan.durable_op(
                node, self.self_name, self.steps
            ) not in ("do", "try_", "approval", "request_approval", "wait_for_event", "cascade"):
                continue
            for kw in node.keywords:
                if kw.arg != "step_id":
                    continue
                if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)):
                    raise self.error(
                        kw.value,
                        "step_id must be a string literal",
                        "ids inside loops are qualified by iteration automatically",
                    )
                if kw.value.value in seen:
                    raise self.error(
                        kw.value,
                        f"step id {kw.value.value!r} is used by two call sites",
                        f"the other one is on line {getattr(seen[kw.value.value], 'lineno', 0)}",
                    )
                seen[kw.value.value] = kw.value

    def error(self, node: ast.AST, message: str, hint: str | None = None) -> CompileError:
        return CompileError(
            message,
            file=self.file,
            line=getattr(node, "lineno", 0),
            col=self.column(node) + 1,
            hint=hint,
        )

    def column(self, node: ast.AST) -> int:
        """ast counts columns in UTF-8 bytes; people count characters."""
        offset = getattr(node, "col_offset", 0)
        line = getattr(node, "lineno", 0)
        if not 0 < line <= len(self.lines):
            return int(offset)
        return len(self.lines[line - 1].encode()[:offset].decode(errors="ignore"))

    def hidden_name(self, prefix: str, line: int) -> str:
        """A temporary of the front end's own (`__v1`...), kept in the run's locals."""
        self.counter += 1
        name = f"__{prefix}{self.counter}"
        self.hidden[name] = line
        return name

    def add_plain(self, stmt: ast.stmt) -> None:
        self.out.append(T.Plain(stmt))

    def op(self, node: Any, base: str | None = None) -> None:
        self.out.append(T.Op(node, base))

    def needs_lowering(self, stmt: ast.AST) -> bool:
        for node in _scan.walk_same_scope(stmt):
            if isinstance(node, ast.Await):
                return True
            if _scan.durable_op(node, self.self_name, self.steps) is not None:
                return True
        return False

    def lower_simple(self, stmt: ast.stmt) -> None:
        """Assignments, expression statements, returns... holding durable operations."""
        if isinstance(stmt, ast.AugAssign) and self.contains_durable(stmt.value):
            # Python evaluates the target's container and index before the value.
            target = stmt.target
            if isinstance(target, ast.Subscript | ast.Attribute) and self.changes_later(
                target.value
            ):
                target.value = self.assign_temp(target.value)
            if isinstance(target, ast.Subscript) and self.changes_later(target.slice):
                target.slice = self.assign_temp(target.slice)
        if isinstance(stmt, ast.Expr):
            value = stmt.value
            if isinstance(value, ast.Await) and self.is_awaited_op(value.value):
                self.emit_op(value, result=None)
                return
            if _scan.durable_op(value, self.self_name, self.steps) == "send":
                assert isinstance(value, ast.Call)
                self.emit_send(value)
                return
            if _scan.entity_chain(value, self.self_name, self.steps) is not None:
                self.emit_entity(value, result=None, send=True)
                return
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and isinstance(stmt.value, ast.Await)
            and self.is_awaited_op(stmt.value.value)
        ):
            self.emit_op(stmt.value, result=stmt.targets[0].id)
            return
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(stmt.value, ast.Await)
            and self.is_awaited_op(stmt.value.value)
        ):
            self.emit_op(stmt.value, result=stmt.target.id)
            return
        rewritten = self.hoist(stmt)
        assert isinstance(rewritten, ast.stmt)
        self.add_plain(rewritten)

    def is_awaited_op(self, call: ast.AST) -> bool:
        op = _scan.durable_op(call, self.self_name, self.steps)
        if op in _scan.AWAITED_OPS or op in ("step", "approval"):
            return True
        return _scan.entity_chain(call, self.self_name, self.steps) is not None

    # ------------------------------------------------------------------ hoisting
    def hoist(self, node: ast.AST) -> ast.AST:
        """Emit every durable operation inside `node`, in order; return `node` without them."""
        lowerer = self

        class Hoister(ast.NodeTransformer):
            def generic_visit(self, node: ast.AST) -> ast.AST:
                if not isinstance(node, ast.expr):
                    return super().generic_visit(node)
                slots = _slots(node)
                fixed = {0} if isinstance(node, ast.Call) else set()  # the callee stays put
                values = lowerer.sequence([_get(slot) for slot in slots], fixed)
                for slot, value in zip(slots, values, strict=True):
                    _put(slot, value)
                return node

            def visit_Await(self, node: ast.Await) -> ast.AST:
                if not lowerer.is_awaited_op(node.value):
                    lowerer.reject_await(node)
                temp = lowerer.hidden_name("v", node.lineno)
                lowerer.emit_op(node, result=temp)
                return ast.copy_location(ast.Name(id=temp, ctx=ast.Load()), node)

            def visit_Call(self, node: ast.Call) -> ast.AST:
                op = _scan.durable_op(node, lowerer.self_name, lowerer.steps)
                if op in ("now", "uuid", "random"):
                    temp = lowerer.hidden_name("v", node.lineno)
                    lowerer.emit_record(node, op, temp)
                    return ast.copy_location(ast.Name(id=temp, ctx=ast.Load()), node)
                if op == "send":
                    raise lowerer.error(
                        node,
                        "self.send(...) must be a statement of its own",
                        "it returns nothing: write `self.send(name, data)` on its own line",
                    )
                if op == "entity" and lowerer.entity_args:
                    # A stub passed to an entity call: pipelined, resolved by the callee.
                    self.generic_visit(node)
                    return node
                if op == "entity":
                    raise lowerer.error(
                        node,
                        f"`{ast.unparse(node)}` names another DO: await a call on it",
                        "`await self.Noun(id).method(...)`, or a statement of its own "
                        "(`self.Noun(id).method(...)`) to send it without waiting",
                    )
                if op is not None:
                    raise lowerer.error(
                        node,
                        f"`{ast.unparse(node.func)}(...)` must be awaited",
                        "write `await` before it",
                    )
                self.generic_visit(node)
                return node

            def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
                node.values[0] = self.visit(node.values[0])
                for value in node.values[1:]:
                    lowerer.forbid_inside(
                        value, "the right side of `and`/`or`", "use an if statement"
                    )
                return node

            def visit_Compare(self, node: ast.Compare) -> ast.AST:
                for later in node.comparators[1:]:
                    lowerer.forbid_inside(
                        later,
                        "a chained comparison after its first comparison",
                        "split it: `a < b and b < c` with an if statement",
                    )
                return self.generic_visit(node)

            def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
                node.test = self.visit(node.test)
                lowerer.forbid_inside(node.body, "a conditional expression", "use an if statement")
                lowerer.forbid_inside(
                    node.orelse, "a conditional expression", "use an if statement"
                )
                return node

            def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
                lowerer.forbid_inside(
                    node.body, "a lambda", "await the durable call in the workflow body"
                )
                return node

            def _comprehension(self, node: ast.AST) -> ast.AST:
                lowerer.forbid_inside(node, "a comprehension", "use a for loop")
                return node

            visit_ListComp = visit_SetComp = visit_DictComp = _comprehension
            visit_GeneratorExp = _comprehension

        result: ast.AST = Hoister().visit(node)
        return result

    def forbid_inside(self, node: ast.AST, where: str, hint: str) -> None:
        for inner in ast.walk(node):
            if isinstance(inner, ast.Await) or (
                _scan.durable_op(inner, self.self_name, self.steps) is not None
            ):
                raise self.error(inner, f"a durable operation cannot be inside {where}", hint)

    def reject_await(self, node: ast.Await) -> None:
        raise self.error(
            node,
            "only durable operations can be awaited in a workflow",
            "wrap the call in `await self.do(fn, ...)` or make it a @step method",
        )

    # ---------------------------------------------------------- durable nodes
    def options(self, call: ast.Call) -> tuple[dict[str, Any], list[ast.keyword]]:
        options: dict[str, Any] = {}
        rest: list[ast.keyword] = []
        for kw in call.keywords:
            if kw.arg in _OPTION_NAMES:
                try:
                    options[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    raise self.error(
                        kw.value, f"`{kw.arg}=` must be a literal", "policies are part of the graph"
                    ) from None
                problem = _option_problem(kw.arg, options[kw.arg])
                if problem:
                    raise self.error(
                        kw.value,
                        f"`{kw.arg}=` {problem}",
                        "policies are fixed when the class is compiled",
                    )
            else:
                rest.append(kw)
        return options, rest

    def emit_op(self, node: ast.Await, result: str | None) -> None:
        if _scan.entity_chain(node.value, self.self_name, self.steps) is not None:
            self.emit_entity(node.value, result=result, send=False)
            return
        call = node.value
        assert isinstance(call, ast.Call)
        op = _scan.durable_op(call, self.self_name, self.steps)
        # Durable calls nested in the arguments run first, in order.
        call = self.hoist_args(call)
        assert isinstance(call.func, ast.Attribute)
        if op in ("sleep", "sleep_until"):
            if len(call.args) != 1 or call.keywords:
                raise self.error(
                    call,
                    f"self.{op}() takes exactly one argument",
                    "self.sleep(seconds or timedelta), self.sleep_until(datetime)",
                )
            arg = ast.unparse(call.args[0])
            self.op(
                SleepNode(
                    id="",
                    line=call.lineno,
                    name="",
                    duration=arg if op == "sleep" else None,
                    until=arg if op == "sleep_until" else None,
                ),
                base=op,
            )
            if result is not None:
                none = ast.parse(f"{result} = None").body[0]
                self.add_plain(ast.fix_missing_locations(ast.copy_location(none, call)))
            return
        if op in ("approval", "request_approval", "wait_for_event", "cascade"):
            self.emit_wait(call, op, result)
            return
        options, keywords = self.options(call) if op != "step" else ({}, call.keywords)
        if op == "step":
            target: ast.expr = call.func
            args = call.args
            method = call.func.attr
        else:
            if not call.args:
                raise self.error(
                    call,
                    f"self.{op}() needs the function to call first",
                    f"self.{op}(fn, *args): fn may be a method, a function or a lambda",
                )
            target, args = call.args[0], call.args[1:]
            method = self.method_of(target) or ""
        info = self.steps.get(method) if method else None
        policy = info.policy if info else Policy()
        if op == "try_":
            policy = Policy(retries=0, timeout=options.get("timeout", policy.timeout))
            for bad in ("retries", "backoff", "initial_delay", "max_delay"):
                if bad in options:
                    raise self.error(
                        call,
                        f"try_ runs once; `{bad}=` does not apply",
                        "use self.do(...) for a step that retries",
                    )
        else:
            policy = policy.model_copy(update={k: v for k, v in options.items() if k != "step_id"})
        explicit = options.get("step_id")
        self.op(
            StepNode(
                id="",
                line=call.lineno,
                mode="try" if op == "try_" else "do",
                name=explicit or "",
                call=ast.unparse(target),
                args=[ast.unparse(a) for a in args],
                kwargs=[(kw.arg, ast.unparse(kw.value)) for kw in keywords],
                result=result,
                policy=policy,
                compensate=info.compensator if info else None,
            ),
            base=method or self.describe(target) or "do",
        )

    def emit_wait(self, call: ast.Call, op: str, result: str | None) -> None:
        """Operations that hibernate the run: approvals, event waits, cascades."""
        assert isinstance(call.func, ast.Attribute)
        explicit = self.literal_kw(call, "step_id")
        keywords = [kw for kw in call.keywords if kw.arg != "step_id"]
        common: dict[str, Any] = {
            "id": "",
            "line": call.lineno,
            "result": result,
        }
        if op == "approval":
            method = call.func.attr
            info = self.steps[method]
            args = [
                *(ast.unparse(a) for a in call.args),
                *(
                    f"{k.arg}={ast.unparse(k.value)}" if k.arg else f"**{ast.unparse(k.value)}"
                    for k in keywords
                ),
            ]
            self.op(
                ApprovalNode(
                    name=explicit or "",
                    request=f"{self.self_name}.{method}.fields({', '.join(args)})",
                    options=dict(info.options),
                    **common,
                ),
                base=method,
            )
        elif op == "request_approval":
            if call.args:
                raise self.error(
                    call,
                    "request_approval takes keyword arguments only",
                    "request_approval(title=..., approvers=[...])",
                )
            fields = ", ".join(
                f"{k.arg!r}: {ast.unparse(k.value)}" if k.arg else f"**{ast.unparse(k.value)}"
                for k in keywords
            )
            self.op(
                ApprovalNode(name=explicit or "", request=f"{{{fields}}}", **common),
                base="approval",
            )
        elif op == "wait_for_event":
            if len(call.args) != 1:
                raise self.error(
                    call,
                    "wait_for_event takes the event name first",
                    'wait_for_event("Payment.confirmed", match={...}, timeout=...)',
                )
            extra = {k.arg: ast.unparse(k.value) for k in keywords}
            unknown = set(extra) - {"match", "timeout"}
            if unknown:
                raise self.error(
                    call, f"wait_for_event got unknown options {sorted(str(u) for u in unknown)}"
                )
            self.op(
                WaitEventNode(
                    name=explicit or "",
                    event=ast.unparse(call.args[0]),
                    match=extra.get("match"),
                    timeout=extra.get("timeout"),
                    **common,
                ),
                base="wait",
            )
        else:
            kw = {k.arg: k.value for k in keywords}
            tiers = kw.get("tiers")
            if not isinstance(tiers, ast.Dict) or not all(
                isinstance(k, ast.Constant) and isinstance(k.value, str) for k in tiers.keys
            ):
                raise self.error(
                    call,
                    "cascade needs `tiers=` as a dict literal with string keys",
                    'tiers={"code": lambda: ..., "human": ...}',
                )
            task = kw.get("task")
            threshold = kw.get("confidence_threshold")
            self.op(
                CascadeNode(
                    name=explicit or "",
                    task=ast.unparse(task) if task is not None else "'cascade'",
                    tiers=[
                        (k.value, ast.unparse(v))  # type: ignore[union-attr]
                        for k, v in zip(tiers.keys, tiers.values, strict=True)
                    ],
                    threshold=ast.unparse(threshold) if threshold is not None else "0.9",
                    **common,
                ),
                base="cascade",
            )

    def literal_kw(self, call: ast.Call, name: str) -> Any:
        for kw in call.keywords:
            if kw.arg == name:
                try:
                    return ast.literal_eval(kw.value)
                except ValueError:
                    raise self.error(
                        kw.value, f"`{name}=` must be a literal", "ids are part of the graph"
                    ) from None
        return None

    def hoist_args(self, call: ast.Call) -> ast.Call:
        values = self.sequence([*call.args, *(kw.value for kw in call.keywords)])
        call.args = values[: len(call.args)]
        for kw, value in zip(call.keywords, values[len(call.args) :], strict=True):
            kw.value = value
        return call

    def sequence(self, exprs: list[ast.expr], fixed: set[int] | None = None) -> list[ast.expr]:
        """Hoist durable calls out of sibling expressions, keeping Python's order: an operand
        left of a durable call is evaluated (into a temporary) before it, unless reading it
        later gives the same value (a constant, a local, `self.method`)."""
        last = max((i for i, e in enumerate(exprs) if self.contains_durable(e)), default=-1)
        out: list[ast.expr] = []
        for i, expr in enumerate(exprs):
            if (
                i < last
                and i not in (fixed or set())
                and not self.contains_durable(expr)
                and self.changes_later(expr)
            ):
                if isinstance(expr, ast.Starred):
                    expr.value = self.assign_temp(expr.value)
                    out.append(expr)
                else:
                    out.append(self.assign_temp(expr))
            else:
                hoisted = self.hoist(expr)
                assert isinstance(hoisted, ast.expr)
                out.append(hoisted)
        return out

    def contains_durable(self, expr: ast.AST) -> bool:
        return any(
            isinstance(n, ast.Await)
            or _scan.durable_op(n, self.self_name, self.steps) in ("now", "uuid", "random")
            for n in ast.walk(expr)
        )

    def changes_later(self, expr: ast.expr) -> bool:
        """Whether evaluating `expr` after a step could give another value (or effects)."""
        if isinstance(expr, ast.Starred):
            expr = expr.value
        if isinstance(expr, ast.Constant | ast.Name | ast.Lambda):
            return False
        root: ast.expr = expr
        while isinstance(root, ast.Attribute):
            root = root.value
        return not (isinstance(root, ast.Name) and root.id == self.self_name)

    def assign_temp(self, expr: ast.expr) -> ast.Name:
        temp = self.hidden_name("v", getattr(expr, "lineno", 0))
        assign = ast.Assign(targets=[ast.Name(id=temp, ctx=ast.Store())], value=expr)
        self.add_plain(ast.fix_missing_locations(ast.copy_location(assign, expr)))
        return ast.copy_location(ast.Name(id=temp, ctx=ast.Load()), expr)

    def method_of(self, target: ast.expr) -> str | None:
        """`self.name` -> name; a lambda whose body calls `self.name(...)` -> name."""
        if isinstance(target, ast.Lambda) and isinstance(target.body, ast.Call):
            target = target.body.func
        if (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == self.self_name
        ):
            return target.attr
        return None

    @staticmethod
    def describe(target: ast.expr) -> str | None:
        if isinstance(target, ast.Lambda) and isinstance(target.body, ast.Call):
            target = target.body.func
        if isinstance(target, ast.Name):
            return target.id
        if isinstance(target, ast.Attribute):
            return target.attr
        return None

    def emit_record(self, call: ast.Call, what: str, result: str) -> None:
        if call.args or call.keywords:
            raise self.error(
                call, f"self.{what}() takes no arguments", "the engine records the value it returns"
            )
        self.op(
            RecordNode(
                id="",
                line=call.lineno,
                what=what,  # type: ignore[arg-type]
                name="",
                result=result,
            ),
            base=what,
        )

    def emit_send(self, call: ast.Call) -> None:
        call = self.hoist_args(call)
        if call.keywords or not 1 <= len(call.args) <= 2:
            raise self.error(call, "self.send takes an event name and optional data")
        self.op(
            SendNode(
                id="",
                line=call.lineno,
                event=ast.unparse(call.args[0]),
                data=ast.unparse(call.args[1]) if len(call.args) > 1 else "None",
            )
        )

    # ---------------------------------------------------------------- entities
    def emit_entity(self, chain: ast.expr, result: str | None, *, send: bool) -> None:
        """A call chain on another DO instance: one durable step that sends the whole chain.

        The chain goes into the step as a thunk (`lambda: self.Inventory(w).reserve(i)`):
        building it only records hops, and the step's callable builds it, then sends it
        (awaited: one round trip, retried under the step's idempotency key) or queues it in
        the entity outbox (a statement: fire-and-forget).
        """
        if send and not isinstance(chain, ast.Call):
            raise self.error(
                chain,
                "a fire-and-forget entity call must end in a method call",
                "await it to read a value: `x = await self.Noun(id).attr`",
            )
        chain = self.hoist_chain(chain)
        target = "__dotdo_send__" if send else "__dotdo_call__"
        self.op(
            StepNode(
                id="",
                line=chain.lineno,
                mode="do",
                name="",
                call=f"{self.self_name}.{target}",
                args=[f"lambda: {ast.unparse(chain)}"],
                result=result,
                policy=Policy(),
            ),
            base=_scan.entity_step_name(chain),
        )

    def hoist_chain(self, chain: ast.expr) -> ast.expr:
        """Hoist durable operations out of the arguments of every hop of `chain`."""
        self.entity_args += 1
        try:
            node: ast.AST = chain
            while True:
                if isinstance(node, ast.Call):
                    self.hoist_args(node)
                    if _scan.durable_op(node, self.self_name, self.steps) == "entity":
                        return chain
                    node = node.func
                elif isinstance(node, ast.Subscript):
                    node.slice = self.hoist(node.slice)  # type: ignore[assignment]
                    node = node.value
                elif isinstance(node, ast.Attribute):
                    node = node.value
                else:  # pragma: no cover - entity_chain vetted the shape
                    return chain
        finally:
            self.entity_args -= 1


def _option_problem(name: str, value: Any) -> str | None:
    """Why a literal step option is unusable, or None."""
    if name == "step_id":
        return None if isinstance(value, str) and value else "must be a non-empty string"
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name == "retries":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else "must be a whole number >= 0"
    if name == "timeout":
        return None if value is None or (number and value > 0) else "must be a number > 0"
    if name == "backoff":
        return None if number and value >= 1 else "must be a number >= 1"
    return None if number and value >= 0 else "must be a number >= 0"


_Slot = tuple[Any, Any]


def _slots(node: ast.expr) -> list[_Slot]:
    """Where a node's child expressions sit, in evaluation order (keyword values included)."""
    slots: list[_Slot] = []
    if isinstance(node, ast.Dict):
        for i, key in enumerate(node.keys):
            if key is not None:
                slots.append((node.keys, i))
            slots.append((node.values, i))
        return slots
    for name, value in ast.iter_fields(node):
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, ast.expr):
                    slots.append((value, i))
                elif isinstance(item, ast.keyword):
                    slots.append((item, "value"))
        elif isinstance(value, ast.expr):
            slots.append((node, name))
    return slots


def _get(slot: _Slot) -> Any:
    holder, key = slot
    return holder[key] if isinstance(holder, list) else getattr(holder, key)


def _put(slot: _Slot, value: Any) -> None:
    holder, key = slot
    if isinstance(holder, list):
        holder[key] = value
    else:
        setattr(holder, key, value)
