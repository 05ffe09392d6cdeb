"""Lower an `async def` workflow body to the IR graph.

The technique is regenerator's: only statements that contain a durable operation are split;
everything else stays one straight-line block. Loops become a choice node and a back edge,
`try` becomes an except dispatch plus, for `finally`, a region whose completion record
(normal, raise, return, jump) is a persisted local, so a crash inside a `finally` resumes it
with the right pending action. Durable calls nested in expressions are hoisted, in order,
into temporaries. What cannot be lowered raises `CompileError` with file, line and a hint.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from dotdo.compiler import _scan
from dotdo.compiler.ir import (
    END,
    BlockNode,
    ChoiceNode,
    EndFinallyNode,
    EndNode,
    FailNode,
    Graph,
    Node,
    Param,
    Policy,
    RecordNode,
    Region,
    SendNode,
    SleepNode,
    StartNode,
    StepNode,
    Stmt,
)
from dotdo.errors import CompileError

__all__ = ["StepInfo", "lower_function"]

_OPTION_NAMES = frozenset(
    {"step_id", "retries", "backoff", "timeout", "initial_delay", "max_delay"}
)


@dataclass(frozen=True)
class StepInfo:
    """What the compiler needs to know of a `@step` method: its policy and its undo."""

    policy: Policy
    compensator: str | None = None


@dataclass(frozen=True)
class _Ctx:
    catch: str | None = None
    fin: str | None = None
    loops: tuple[str, ...] = ()
    break_to: str | None = None
    continue_to: str | None = None


@dataclass
class _Cont:
    """Loose ends waiting for the next node: (node, field) tails and unresolved labels."""

    tails: list[tuple[str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tails or self.labels)

    def merge(self, other: _Cont) -> _Cont:
        return _Cont(self.tails + other.tails, self.labels + other.labels)


def lower_function(fn: Callable[..., Any], *, name: str, steps: Mapping[str, StepInfo]) -> Graph:
    """Compile `fn` (an `async def` taking self first) to a validated graph."""
    try:
        lines, first_line = inspect.getsourcelines(fn)
        file = inspect.getsourcefile(fn) or "<unknown>"
    except (OSError, TypeError) as exc:
        raise CompileError(
            f"cannot read the source of workflow {name!r}",
            file=getattr(getattr(fn, "__code__", None), "co_filename", "<unknown>"),
            line=getattr(getattr(fn, "__code__", None), "co_firstlineno", 0),
            hint="workflows must be defined in a file, not typed at a prompt",
        ) from exc
    indent = len(lines[0]) - len(lines[0].lstrip())
    tree = ast.parse(textwrap.dedent("".join(lines)))
    ast.increment_lineno(tree, first_line - 1)
    func = tree.body[0]
    if not isinstance(func, ast.AsyncFunctionDef):
        raise CompileError(
            f"workflow {name!r} must be an `async def`",
            file=file,
            line=first_line,
            col=indent + 1,
            hint="write `async def` so durable calls can be awaited",
        )
    return _Lowerer(func, name=name, file=file, indent=indent, steps=steps).lower()


class _Lowerer:
    def __init__(
        self,
        func: ast.AsyncFunctionDef,
        *,
        name: str,
        file: str,
        indent: int,
        steps: Mapping[str, StepInfo],
    ) -> None:
        self.func = func
        self.file = file
        self.indent = indent
        self.steps = steps
        args = func.args
        if not args.args:
            raise self.error(func, "a workflow method needs `self` as its first parameter")
        self.self_name = args.args[0].arg
        self.graph = Graph(name=name, file=file, self_name=self.self_name)
        self.nodes: dict[str, Node] = {}
        self.order: list[str] = []
        self.counter = 0
        self.cont = _Cont()
        self.buffer: list[ast.stmt] = []
        self.ctx = _Ctx()
        self.labels: dict[str, str] = {}
        self.hidden: dict[str, int] = {}
        self.step_names: set[str] = set()
        self.explicit_ids = self._collect_explicit_ids()
        self.finally_exits: dict[str, str] = {}

    # ----------------------------------------------------------------- helpers
    def error(self, node: ast.AST, message: str, hint: str | None = None) -> CompileError:
        return CompileError(
            message,
            file=self.file,
            line=getattr(node, "lineno", 0),
            col=getattr(node, "col_offset", 0) + self.indent + 1,
            hint=hint,
        )

    def new_id(self, prefix: str = "n") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def hidden_name(self, prefix: str, line: int) -> str:
        name = f"__{prefix}{self.counter + 1}"
        self.counter += 1
        self.hidden[name] = line
        return name

    @contextmanager
    def scope(self, **changes: Any) -> Iterator[None]:
        saved = self.ctx
        self.ctx = replace(saved, **changes)
        try:
            yield
        finally:
            self.ctx = saved

    def take(self) -> _Cont:
        self.flush()
        cont, self.cont = self.cont, _Cont()
        return cont

    def add_node(self, node: Node) -> None:
        if node.catch is None:
            node.catch = self.ctx.catch
        if node.fin is None:
            node.fin = self.ctx.fin
        self.nodes[node.id] = node
        self.order.append(node.id)

    def emit(self, node: Node, *, tails: tuple[str, ...] = ("next",)) -> Node:
        """Add a node, wiring the loose ends to it; its own `tails` become the new ones."""
        self.flush()
        self.add_node(node)
        self.connect(self.cont, node.id)
        self.cont = _Cont([(node.id, t) for t in tails])
        return node

    def connect(self, cont: _Cont, target: str) -> None:
        for node_id, attr in cont.tails:
            setattr(self.nodes[node_id], attr, target)
        for label in cont.labels:
            self.labels[label] = target

    def jump_to(self, target: str) -> None:
        cont = self.take()
        self.connect(cont, target)

    def dead(self) -> bool:
        return not self.cont and not self.buffer

    # -------------------------------------------------------------- entry point
    def lower(self) -> Graph:
        func = self.func
        self.check_signature(func)
        self.emit(StartNode(id="start", line=func.lineno))
        self.lower_body(func.body)
        self.emit(EndNode(id=END, line=getattr(func, "end_lineno", func.lineno) or func.lineno))
        self.resolve_labels()
        self.prune()
        self.fill_finally_targets()
        bound = _scan.bound_names(func.body)
        params = [p.name for p in self.graph.params]
        names = [n for n in params if n != self.self_name]
        names += [n for n in bound if n not in names and n != self.self_name]
        local_lines = {n: self.func.lineno for n in params if n != self.self_name}
        local_lines.update({n: line for n, line in bound.items() if n not in local_lines})
        local_lines.update(self.hidden)
        self.graph.locals = names + [n for n in self.hidden if n not in names]
        self.graph.local_lines = local_lines
        self.graph.nodes = {nid: self.nodes[nid] for nid in self.order if nid in self.nodes}
        if func.returns is not None:
            self.graph.returns = ast.unparse(func.returns)
        errors = [f for f in self.graph.validate_graph() if f.severity == "error"]
        if errors:
            first = errors[0]
            raise CompileError(
                f"internal lowering error: {first.message}", file=self.file, line=first.line
            )
        return self.graph

    def check_signature(self, func: ast.AsyncFunctionDef) -> None:
        args = func.args
        positional = args.posonlyargs + args.args
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
        defaults += list(args.defaults)
        params = [
            Param(
                name=a.arg,
                annotation=ast.unparse(a.annotation) if a.annotation else None,
                default=ast.unparse(d) if d is not None else None,
            )
            for a, d in zip(positional, defaults, strict=True)
        ]
        if args.vararg:
            params.append(Param(name=args.vararg.arg, kind="varargs"))
        for a, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            params.append(
                Param(
                    name=a.arg,
                    annotation=ast.unparse(a.annotation) if a.annotation else None,
                    default=ast.unparse(kw_default) if kw_default is not None else None,
                    kind="keyword",
                )
            )
        if args.kwarg:
            params.append(Param(name=args.kwarg.arg, kind="varkw"))
        self.graph.params = params[1:]

    def resolve_labels(self) -> None:
        def res(ref: str | None) -> str | None:
            seen = set()
            while ref is not None and ref in self.labels and ref not in seen:
                seen.add(ref)
                ref = self.labels[ref]
            return ref

        for node in self.nodes.values():
            for attr in ("next", "catch", "then", "orelse", "breaks_to", "continues_to"):
                if hasattr(node, attr):
                    setattr(node, attr, res(getattr(node, attr)))
        for region in self.graph.regions.values():
            region.entry = res(region.entry) or END
            region.members = sorted({res(m) or m for m in region.members})

    def prune(self) -> None:
        """Drop nodes no path reaches (dead code after a return is legal Python)."""
        reachable: set[str] = set()
        todo = ["start"]
        edges: dict[str, set[str]] = {}
        for src, dst, _ in self.graph.model_copy(update={"nodes": self.nodes}).edges():
            edges.setdefault(src, set()).add(dst)
        for region_id, exit_id in self.finally_exits.items():
            # A finally exit may resume a return or jump passing through it.
            parent = self.graph.regions[region_id].parent
            if parent is not None:
                edges.setdefault(exit_id, set()).add(self.graph.regions[parent].entry)
        while todo:
            current = todo.pop()
            if current in reachable or current not in self.nodes:
                continue
            reachable.add(current)
            todo.extend(edges.get(current, ()))
        reachable.add(END)
        self.nodes = {k: v for k, v in self.nodes.items() if k in reachable}

    def fill_finally_targets(self) -> None:
        """Give each finally exit its possible resume targets, so the diagram shows them."""
        regions = self.graph.regions
        passing: dict[str, set[str]] = {rid: set() for rid in regions}
        for node in self.nodes.values():
            if not isinstance(node, BlockNode):
                continue
            jumps = [t for t in (node.breaks_to, node.continues_to) if t]
            if node.returns:
                jumps.append(END)
            for target in jumps:
                rid = node.fin
                while rid is not None and target not in regions[rid].members:
                    passing[rid].add(target)
                    rid = regions[rid].parent
        for rid, exit_id in self.finally_exits.items():
            exit_node = self.nodes.get(exit_id)
            if not isinstance(exit_node, EndFinallyNode):
                continue
            parent = regions[rid].parent
            targets = set()
            for target in passing[rid]:
                if parent is not None and target not in regions[parent].members:
                    targets.add(regions[parent].entry)
                else:
                    targets.add(target)
            exit_node.targets = sorted(targets)

    def _collect_explicit_ids(self) -> set[str]:
        seen: dict[str, ast.AST] = {}
        for node in ast.walk(self.func):
            if not isinstance(node, ast.Call) or _scan.durable_op(
                node, self.self_name, self.steps
            ) not in ("do", "try_"):
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
        return set(seen)

    def step_name(self, base: str) -> str:
        name, n = base, 1
        while name in self.step_names or name in self.explicit_ids:
            n += 1
            name = f"{base}_{n}"
        self.step_names.add(name)
        return name

    # -------------------------------------------------------------- statements
    def lower_body(self, stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            if self.dead():
                return
            self.lower_stmt(stmt)

    def needs_lowering(self, stmt: ast.AST) -> bool:
        for node in _scan.walk_same_scope(stmt):
            if isinstance(node, ast.Await):
                return True
            if _scan.durable_op(node, self.self_name, self.steps) is not None:
                return True
        return False

    def lower_stmt(self, stmt: ast.stmt) -> None:
        self.reject_unsupported(stmt)
        if not self.needs_lowering(stmt):
            self.add_plain(stmt)
            return
        if isinstance(stmt, ast.If):
            self.lower_if(stmt)
        elif isinstance(stmt, ast.While):
            self.lower_while(stmt)
        elif isinstance(stmt, ast.For):
            self.lower_for(stmt)
        elif isinstance(stmt, ast.Try):
            self.lower_try(stmt)
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            raise self.error(
                stmt,
                "a `with` block cannot contain a durable operation",
                "the context would not survive a crash; open it inside a step instead",
            )
        elif isinstance(stmt, ast.AsyncFor):
            raise self.error(stmt, "`async for` cannot be lowered", "use a plain `for` loop")
        elif isinstance(stmt, ast.Match):
            raise self.error(
                stmt, "a `match` statement cannot contain a durable operation", "use if/elif"
            )
        elif isinstance(stmt, ast.TryStar):
            raise self.error(stmt, "`except*` cannot be lowered", "use a plain `except`")
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            raise self.error(
                stmt,
                "a nested definition cannot contain a durable operation",
                "define it as a @step method of the class",
            )
        else:
            self.lower_simple(stmt)

    def reject_unsupported(self, stmt: ast.stmt) -> None:
        for node in _scan.walk_same_scope(stmt):
            if isinstance(node, ast.Global | ast.Nonlocal):
                raise self.error(
                    node,
                    "`global`/`nonlocal` cannot be used in a workflow",
                    "workflow state must live in its locals, which are persisted",
                )
            if isinstance(node, ast.ClassDef):
                raise self.error(
                    node, "a class cannot be defined inside a workflow", "define it at module level"
                )
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "super":
                    raise self.error(node, "super() cannot be used in a workflow body")

    def add_plain(self, stmt: ast.stmt) -> None:
        self.buffer.append(stmt)
        if _scan.is_terminal(stmt):
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        stmts, self.buffer = self.buffer, []
        breaks = continues = False
        for s in stmts:
            b, c = _scan.escaping_jumps(s)
            breaks, continues = breaks or b, continues or c
        block = BlockNode(
            id=self.new_id("b"),
            line=stmts[0].lineno,
            code=[Stmt(line=s.lineno, src=ast.unparse(s)) for s in stmts],
            returns=any(_scan.has_return(s) for s in stmts),
            breaks_to=self.ctx.break_to if breaks else None,
            continues_to=self.ctx.continue_to if continues else None,
        )
        self.add_node(block)
        self.connect(self.cont, block.id)
        self.cont = _Cont() if _scan.is_terminal(stmts[-1]) else _Cont([(block.id, "next")])

    def lower_simple(self, stmt: ast.stmt) -> None:
        """Assignments, expression statements, returns... holding durable operations."""
        if isinstance(stmt, ast.Expr):
            value = stmt.value
            if isinstance(value, ast.Await) and self.is_awaited_op(value.value):
                self.emit_op(value, result=None)
                return
            if _scan.durable_op(value, self.self_name, self.steps) == "send":
                assert isinstance(value, ast.Call)
                self.emit_send(value)
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
        return op in _scan.AWAITED_OPS or op == "step"

    # ------------------------------------------------------------------ hoisting
    def hoist(self, node: ast.AST) -> ast.AST:
        """Emit every durable operation inside `node`, in order; return `node` without them."""
        lowerer = self

        class Hoister(ast.NodeTransformer):
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
                    raise lowerer.error(node, "self.send(...) must be a statement of its own")
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
        op = _scan.durable_op(node.value, self.self_name, self.steps)
        if op == "later":
            raise self.error(
                node,
                f"`{ast.unparse(node.value)}` is not supported by this version of dotdo",
                "approvals, events and cascades land with the hibernation feature",
            )
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
            else:
                rest.append(kw)
        return options, rest

    def emit_op(self, node: ast.Await, result: str | None) -> None:
        call = node.value
        assert isinstance(call, ast.Call)
        op = _scan.durable_op(call, self.self_name, self.steps)
        # Durable calls nested in the arguments run first, in order.
        call = self.hoist_args(call)
        assert isinstance(call.func, ast.Attribute)
        if op in ("sleep", "sleep_until"):
            if len(call.args) != 1 or call.keywords:
                raise self.error(call, f"self.{op}() takes exactly one argument")
            arg = ast.unparse(call.args[0])
            self.emit(
                SleepNode(
                    id=self.new_id("s"),
                    line=call.lineno,
                    name=self.step_name(op),
                    duration=arg if op == "sleep" else None,
                    until=arg if op == "sleep_until" else None,
                    loops=list(self.ctx.loops),
                )
            )
            if result is not None:
                self.buffer.append(ast.parse(f"{result} = None").body[0])
            return
        options, keywords = self.options(call) if op != "step" else ({}, call.keywords)
        if op == "step":
            target: ast.expr = call.func
            args = call.args
            method = call.func.attr
        else:
            if not call.args:
                raise self.error(call, f"self.{op}() needs the function to call first")
            target, args = call.args[0], call.args[1:]
            method = self.method_of(target) or ""
        info = self.steps.get(method) if method else None
        policy = info.policy if info else Policy()
        if op == "try_":
            policy = Policy(retries=0, timeout=options.get("timeout", policy.timeout))
            for bad in ("retries", "backoff", "initial_delay", "max_delay"):
                if bad in options:
                    raise self.error(call, f"try_ runs once; `{bad}=` does not apply")
        else:
            policy = policy.model_copy(update={k: v for k, v in options.items() if k != "step_id"})
        explicit = options.get("step_id")
        name = explicit if explicit else self.step_name(method or self.describe(target) or "do")
        self.emit(
            StepNode(
                id=self.new_id("t"),
                line=call.lineno,
                mode="try" if op == "try_" else "do",
                name=name,
                call=ast.unparse(target),
                args=[ast.unparse(a) for a in args],
                kwargs=[(kw.arg, ast.unparse(kw.value)) for kw in keywords],
                result=result,
                policy=policy,
                compensate=info.compensator if info else None,
                loops=list(self.ctx.loops),
            )
        )

    def hoist_args(self, call: ast.Call) -> ast.Call:
        call.args = [self.hoist(a) for a in call.args]  # type: ignore[misc]
        for kw in call.keywords:
            kw.value = self.hoist(kw.value)  # type: ignore[assignment]
        return call

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
            raise self.error(call, f"self.{what}() takes no arguments")
        self.emit(
            RecordNode(
                id=self.new_id("r"),
                line=call.lineno,
                what=what,  # type: ignore[arg-type]
                name=self.step_name(what),
                result=result,
                loops=list(self.ctx.loops),
            )
        )

    def emit_send(self, call: ast.Call) -> None:
        call = self.hoist_args(call)
        if call.keywords or not 1 <= len(call.args) <= 2:
            raise self.error(call, "self.send takes an event name and optional data")
        self.emit(
            SendNode(
                id=self.new_id("e"),
                line=call.lineno,
                event=ast.unparse(call.args[0]),
                data=ast.unparse(call.args[1]) if len(call.args) > 1 else "None",
            )
        )

    # ------------------------------------------------------------ control flow
    def lower_if(self, stmt: ast.If) -> None:
        test = self.hoist(stmt.test)
        assert isinstance(test, ast.expr)
        choice = ChoiceNode(id=self.new_id("c"), line=stmt.lineno, cond=ast.unparse(test))
        self.emit(choice, tails=())
        self.cont = _Cont([(choice.id, "then")])
        self.lower_body(stmt.body)
        after_body = self.take()
        self.cont = _Cont([(choice.id, "orelse")])
        self.lower_body(stmt.orelse)
        self.cont = self.take().merge(after_body)

    def lower_while(self, stmt: ast.While) -> None:
        counter = self.hidden_name("n", stmt.lineno)
        self.buffer.append(ast.parse(f"{counter} = 0").body[0])
        self.flush()
        head = self.new_id("L")
        self.cont.labels.append(head)
        test = self.hoist(stmt.test)
        assert isinstance(test, ast.expr)
        choice = ChoiceNode(id=self.new_id("c"), line=stmt.lineno, cond=ast.unparse(test))
        self.emit(choice, tails=())
        self.loop_body(stmt, choice, head, counter, f"{counter} += 1")

    def lower_for(self, stmt: ast.For) -> None:
        iterable = self.hoist(stmt.iter)
        assert isinstance(iterable, ast.expr)
        items = self.hidden_name("it", stmt.lineno)
        index = self.hidden_name("i", stmt.lineno)
        init = f"{items} = list({ast.unparse(iterable)})\n{index} = 0"
        for s in ast.parse(init).body:
            self.buffer.append(ast.fix_missing_locations(ast.copy_location(s, stmt)))
        self.flush()
        choice = ChoiceNode(id=self.new_id("c"), line=stmt.lineno, cond=f"{index} < len({items})")
        self.emit(choice, tails=())
        bind = f"{ast.unparse(stmt.target)} = {items}[{index}]\n{index} += 1"
        self.loop_body(stmt, choice, choice.id, index, bind)

    def loop_body(
        self, stmt: ast.For | ast.While, choice: ChoiceNode, head: str, counter: str, prelude: str
    ) -> None:
        exit_label = self.new_id("X")
        self.cont = _Cont([(choice.id, "then")])
        for s in ast.parse(prelude).body:
            self.buffer.append(ast.fix_missing_locations(ast.copy_location(s, stmt)))
        with self.scope(loops=(*self.ctx.loops, counter), break_to=exit_label, continue_to=head):
            self.lower_body(stmt.body)
            self.jump_to(head)
        self.cont = _Cont([(choice.id, "orelse")])
        self.lower_body(stmt.orelse)
        self.cont = self.take()
        self.cont.labels.append(exit_label)

    def lower_try(self, stmt: ast.Try) -> None:
        outer = self.ctx
        has_fin = bool(stmt.finalbody)
        rid = self.new_id("R") if has_fin else None
        dispatch = self.new_id("d") if stmt.handlers else None
        fin_raise = self.new_id("f") if has_fin else None
        inner_catch = fin_raise if has_fin else outer.catch
        inner_fin = rid if has_fin else outer.fin
        self.flush()
        first = len(self.order)
        with self.scope(catch=dispatch or fin_raise, fin=inner_fin):
            self.lower_body(stmt.body)
        with self.scope(catch=inner_catch, fin=inner_fin):
            self.lower_body(stmt.orelse)
            normal = self.take()
            if dispatch:
                normal = normal.merge(self.lower_handlers(stmt.handlers, dispatch))
        self.cont = normal
        if not has_fin:
            return
        assert rid is not None and fin_raise is not None
        completion = f"__fin{rid}"
        self.hidden[completion] = stmt.lineno
        if self.cont:
            self.buffer.append(_at(f"{completion} = ('normal',)", stmt.finalbody[0]))
            self.flush()
        members = [*self.order[first:], fin_raise]
        self.add_node(
            BlockNode(
                id=fin_raise,
                line=stmt.finalbody[0].lineno,
                code=[Stmt(line=stmt.finalbody[0].lineno, src=f"{completion} = ('raise', __exc)")],
            )
        )
        self.cont.tails.append((fin_raise, "next"))
        entry = self.new_id("F")
        self.cont.labels.append(entry)
        self.graph.regions[rid] = Region(entry=entry, parent=outer.fin, members=members)
        self.lower_body(stmt.finalbody)
        end = EndFinallyNode(id=self.new_id("z"), line=stmt.finalbody[-1].lineno, region=rid)
        self.emit(end)
        self.finally_exits[rid] = end.id

    def lower_handlers(self, handlers: list[ast.ExceptHandler], dispatch: str) -> _Cont:
        done = _Cont()
        self.cont = _Cont()
        for i, handler in enumerate(handlers):
            saved = self.hidden_name("exc", handler.lineno)
            binding = f"{saved} = __exc"
            if handler.name:
                binding += f"\n{handler.name} = __exc"
            body = [_reraise_as(s, saved) for s in handler.body]
            if handler.type is None:
                if i != len(handlers) - 1:
                    raise self.error(handler, "a bare `except:` must be the last handler")
                if i == 0:
                    self.flush()
                    self.cont.labels.append(dispatch)
            else:
                choice = ChoiceNode(
                    id=dispatch if i == 0 else self.new_id("d"),
                    line=handler.lineno,
                    cond=f"isinstance(__exc, {ast.unparse(handler.type)})",
                )
                self.emit(choice, tails=())
                self.cont = _Cont([(choice.id, "then")])
            for s in ast.parse(binding).body:
                self.buffer.append(ast.fix_missing_locations(ast.copy_location(s, handler)))
            self.lower_body(body)
            done = done.merge(self.take())
            if handler.type is None:
                return done
            self.cont = _Cont([(choice.id, "orelse")])
        self.emit(FailNode(id=self.new_id("x"), line=handlers[-1].lineno, expr="__exc"), tails=())
        return done


def _at(src: str, where: ast.stmt) -> ast.stmt:
    stmt = ast.parse(src).body[0]
    return ast.fix_missing_locations(ast.copy_location(stmt, where))


def _reraise_as(stmt: ast.stmt, saved: str) -> ast.stmt:
    """Point bare `raise` statements of a lowered handler at the exception it caught."""

    class Rewriter(ast.NodeTransformer):
        def visit_Raise(self, node: ast.Raise) -> ast.AST:
            if node.exc is None:
                return ast.copy_location(ast.Raise(exc=ast.Name(id=saved, ctx=ast.Load())), node)
            return node

        def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
            return node  # a bare raise in here re-raises the inner exception

        def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
            return node

        visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    rewritten: ast.stmt = Rewriter().visit(stmt)
    return ast.fix_missing_locations(rewritten)
