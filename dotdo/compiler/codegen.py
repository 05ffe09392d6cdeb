"""Turn a graph back into Python callables the interpreter can run, node by node.

Each node's source text becomes one small function over the run's persisted locals (a
`Frame`): names the workflow binds are rewritten to `__L__["name"]`, so a block reads and
writes exactly the state that is checkpointed, and lambdas or comprehensions inside a block
still see it. `return`, and `break`/`continue` that leave a block, become signals returned to
the interpreter, which routes them through `finally` regions. Code is compiled with the
user's file name and line numbers, so tracebacks point at the lines they wrote.
"""

from __future__ import annotations

import ast
import builtins
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dotdo.compiler import _scan
from dotdo.compiler.ir import (
    ApprovalNode,
    BlockNode,
    CascadeNode,
    ChoiceNode,
    FailNode,
    Graph,
    SendNode,
    SleepNode,
    StepNode,
    WaitEventNode,
)
from dotdo.compiler.liveness import live_locals

__all__ = ["JUMP", "RETURN", "Frame", "NodeFn", "Program", "build_program"]

RETURN = 0
JUMP = 1

NodeFn = Callable[[Any, "Frame", Mapping[str, Any]], Any]


class Frame(dict[str, Any]):
    """A run's locals. Reading one not yet bound raises like Python does."""

    def __missing__(self, key: str) -> Any:
        raise UnboundLocalError(
            f"cannot access local variable {key!r} where it is not associated with a value"
        )

    def __delitem__(self, key: str) -> None:
        if key not in self:
            self.__missing__(key)
        super().__delitem__(key)

    def bind(self, key: str, value: Any) -> Any:
        """Target of a rewritten walrus (`x := v`)."""
        self[key] = value
        return value


@dataclass
class Program:
    """A graph made executable: one callable per node that evaluates code."""

    graph: Graph
    code: dict[str, NodeFn]
    cells: Mapping[str, Any] = field(default_factory=dict)
    members: dict[str, frozenset[str]] = field(default_factory=dict)
    live: dict[str, frozenset[str]] = field(default_factory=dict)
    """Per node, the locals that may still be read there: what a checkpoint must keep."""

    @property
    def hash(self) -> str:
        return self.graph.hash


def build_program(
    graph: Graph, namespace: dict[str, Any], cells: Mapping[str, Any] | None = None
) -> Program:
    """Compile every code-bearing node of `graph` against the user's module `namespace`.

    `cells` maps free variable names of the original function to their closure cells, for
    workflows defined inside another function.
    """
    cells = dict(cells or {})
    local_names = set(graph.locals)
    functions: list[ast.stmt] = []
    names: dict[str, str] = {}
    for node in graph.nodes.values():
        body = _node_body(node)
        if body is None:
            continue
        rewriter = _Rewriter(
            local_names,
            set(cells) - local_names,
            breaks_to=getattr(node, "breaks_to", None),
            continues_to=getattr(node, "continues_to", None),
        )
        if isinstance(node, BlockNode):
            flat = rewriter.rewrite_block(body)
        else:
            # An expression node: rewrite the expression, not the `return` that wraps it.
            ret = body[0]
            assert isinstance(ret, ast.Return) and ret.value is not None
            ret.value = rewriter.visit(ret.value)
            flat = [ret]
        fname = f"__dotdo_{node.kind}_{node.id}"
        names[node.id] = fname
        func = ast.FunctionDef(
            name=fname,
            args=ast.arguments(
                posonlyargs=[],
                args=[ast.arg(arg=graph.self_name), ast.arg(arg="__L__"), ast.arg(arg="__C__")],
                kwonlyargs=[],
                kw_defaults=[],
                defaults=[],
            ),
            body=flat or [ast.Pass()],
            decorator_list=[],
            returns=None,
        )
        ast.copy_location(func, flat[0] if flat else ast.Pass(lineno=node.line, col_offset=0))
        functions.append(func)
    module = ast.fix_missing_locations(ast.Module(body=functions, type_ignores=[]))
    compiled = compile(module, graph.file, "exec")
    scratch: dict[str, Any] = {"__builtins__": builtins}
    exec(compiled, scratch)
    code: dict[str, NodeFn] = {}
    for node_id, fname in names.items():
        template = scratch[fname]
        code[node_id] = types.FunctionType(template.__code__, namespace, fname)
    members = {rid: frozenset(region.members) for rid, region in graph.regions.items()}
    return Program(graph=graph, code=code, cells=cells, members=members, live=live_locals(graph))


def _parse_at(src: str, line: int, mode: str = "exec") -> list[ast.stmt]:
    tree = ast.parse(src, mode="exec")
    ast.increment_lineno(tree, max(line - 1, 0))
    return tree.body


def _returning(expr_src: str, line: int) -> list[ast.stmt]:
    return _parse_at(f"return ({expr_src})", line)


def _node_body(node: Any) -> list[ast.stmt] | None:
    if isinstance(node, BlockNode):
        stmts: list[ast.stmt] = []
        for stmt in node.code:
            stmts.extend(_parse_at(stmt.src, stmt.line))
        return stmts
    if isinstance(node, ChoiceNode):
        return _returning(node.cond, node.line)
    if isinstance(node, StepNode):
        args = "".join(f"{a}, " for a in node.args)
        kwargs = ", ".join(f"{k!r}: {v}" if k else f"**{v}" for k, v in node.kwargs)
        return _returning(f"{node.call}, ({args}), {{{kwargs}}}", node.line)
    if isinstance(node, SendNode):
        return _returning(f"{node.event}, {node.data}", node.line)
    if isinstance(node, SleepNode):
        return _returning(node.duration or node.until or "0", node.line)
    if isinstance(node, FailNode):
        return _returning(node.expr, node.line)
    if isinstance(node, ApprovalNode):
        return _returning(node.request, node.line)
    if isinstance(node, WaitEventNode):
        return _returning(f"{node.event}, {node.match}, {node.timeout}", node.line)
    if isinstance(node, CascadeNode):
        tiers = ", ".join(f"({name!r}, {src})" for name, src in node.tiers)
        return _returning(f"{node.task}, [{tiers}], {node.threshold}", node.line)
    return None


def _frame_ref(name: str, ctx: ast.expr_context) -> ast.Subscript:
    return ast.Subscript(
        value=ast.Name(id="__L__", ctx=ast.Load()), slice=ast.Constant(value=name), ctx=ctx
    )


class _Rewriter(ast.NodeTransformer):
    """Map workflow locals onto the frame; turn block exits into signals."""

    def __init__(
        self,
        local_names: set[str],
        cell_names: set[str],
        *,
        breaks_to: str | None,
        continues_to: str | None,
    ) -> None:
        self.locals = local_names
        self.cells = cell_names
        self.shadow: frozenset[str] = frozenset()
        self.loop_depth = 0
        self.fn_depth = 0
        self.breaks_to = breaks_to
        self.continues_to = continues_to

    # -- names
    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.shadow:
            return node
        if node.id in self.locals:
            return ast.copy_location(_frame_ref(node.id, node.ctx), node)
        if node.id in self.cells:
            cell = ast.Subscript(
                value=ast.Name(id="__C__", ctx=ast.Load()),
                slice=ast.Constant(value=node.id),
                ctx=ast.Load(),
            )
            return ast.copy_location(
                ast.Attribute(value=cell, attr="cell_contents", ctx=node.ctx), node
            )
        return node

    def visit_NamedExpr(self, node: ast.NamedExpr) -> ast.AST:
        value = self.visit(node.value)
        name = node.target.id
        if name in self.shadow or name not in self.locals:
            node.value = value
            return node
        bind = ast.Attribute(
            value=ast.Name(id="__L__", ctx=ast.Load()), attr="bind", ctx=ast.Load()
        )
        return ast.copy_location(
            ast.Call(func=bind, args=[ast.Constant(value=name), value], keywords=[]), node
        )

    def rewrite_block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        return self._visit_stmts(stmts)

    def _binds_here(self, name: str) -> bool:
        return self.fn_depth == 0 and name in self.locals and name not in self.shadow

    def _store(self, name: str, value: ast.expr, where: ast.AST) -> ast.stmt:
        stmt = ast.Assign(targets=[_frame_ref(name, ast.Store())], value=value)
        return ast.copy_location(stmt, where)

    def visit_Import(self, node: ast.Import) -> Any:
        return self._import(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        return self._import(node)

    def _import(self, node: ast.Import | ast.ImportFrom) -> Any:
        out: list[ast.stmt] = [node]
        for alias in node.names:
            bound = (alias.asname or alias.name).split(".")[0]
            if self._binds_here(bound):
                out.append(self._store(bound, ast.Name(id=bound, ctx=ast.Load()), node))
        return out

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        if node.type is not None:
            node.type = self.visit(node.type)
        name = node.name
        node.body = self._visit_stmts(node.body)
        if name and self._binds_here(name):
            # Bind the caught exception in the frame, and unbind it after, as Python does.
            temp = f"__dotdo_caught_{name}"
            node.name = temp
            unbind = ast.parse(f"__L__.pop({name!r}, None)").body
            guarded = ast.Try(body=node.body, handlers=[], orelse=[], finalbody=unbind)
            node.body = [
                self._store(name, ast.Name(id=temp, ctx=ast.Load()), node),
                ast.copy_location(guarded, node),
            ]
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Any:
        # `x: T = v` on a frame slot is a plain assignment (annotations of locals are unused).
        target = self.visit(node.target)
        if node.value is None:
            return ast.copy_location(ast.Pass(), node)
        value = self.visit(node.value)
        return ast.copy_location(ast.Assign(targets=[target], value=value), node)

    def _visit_stmts(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in stmts:
            result = self.visit(stmt)
            out.extend(result if isinstance(result, list) else [result])
        return out

    # -- nested scopes
    def _scoped(self, extra: set[str], visit: Callable[[], Any]) -> Any:
        saved_shadow, saved_depth, saved_loops = self.shadow, self.fn_depth, self.loop_depth
        self.shadow = self.shadow | extra
        self.fn_depth += 1
        self.loop_depth = 0
        try:
            return visit()
        finally:
            self.shadow, self.fn_depth, self.loop_depth = saved_shadow, saved_depth, saved_loops

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        node.args = self.visit(node.args)
        params = {a.arg for a in _all_args(node.args)}
        node.body = self._scoped(params, lambda: self.visit(node.body))
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args = self.visit(node.args)
        inner = {a.arg for a in _all_args(node.args)} | set(_scan.bound_names(node.body))
        node.body = self._scoped(inner, lambda: self._visit_stmts(node.body))
        if self._binds_here(node.name):
            return [node, self._store(node.name, ast.Name(id=node.name, ctx=ast.Load()), node)]
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        return node  # annotations of nested functions are left alone

    def _comprehension(self, node: Any) -> Any:
        generators: list[ast.comprehension] = node.generators
        generators[0].iter = self.visit(generators[0].iter)
        targets = {
            n.id for gen in generators for n in ast.walk(gen.target) if isinstance(n, ast.Name)
        }

        def inner() -> None:
            for i, gen in enumerate(generators):
                if i:
                    gen.iter = self.visit(gen.iter)
                gen.ifs = [self.visit(cond) for cond in gen.ifs]
            for attr in ("elt", "key", "value"):
                if hasattr(node, attr):
                    setattr(node, attr, self.visit(getattr(node, attr)))

        saved = self.shadow
        self.shadow = self.shadow | targets
        try:
            inner()
        finally:
            self.shadow = saved
        return node

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    # -- exits
    def visit_Return(self, node: ast.Return) -> ast.AST:
        value = self.visit(node.value) if node.value is not None else ast.Constant(value=None)
        if self.fn_depth:
            node.value = value
            return node
        signal = ast.Tuple(elts=[ast.Constant(value=RETURN), value], ctx=ast.Load())
        return ast.copy_location(ast.Return(value=signal), node)

    def _loop(self, node: ast.For | ast.While) -> ast.AST:
        for attr in ("target", "iter", "test"):
            if hasattr(node, attr):
                setattr(node, attr, self.visit(getattr(node, attr)))
        self.loop_depth += 1
        node.body = self._visit_stmts(node.body)
        self.loop_depth -= 1
        node.orelse = self._visit_stmts(node.orelse)
        return node

    visit_For = visit_While = _loop

    def _jump(self, node: ast.stmt, target: str | None) -> ast.AST:
        if self.fn_depth or self.loop_depth or target is None:
            return node
        signal = ast.Tuple(
            elts=[ast.Constant(value=JUMP), ast.Constant(value=target)], ctx=ast.Load()
        )
        return ast.copy_location(ast.Return(value=signal), node)

    def visit_Break(self, node: ast.Break) -> ast.AST:
        return self._jump(node, self.breaks_to)

    def visit_Continue(self, node: ast.Continue) -> ast.AST:
        return self._jump(node, self.continues_to)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        # Statement lists must go through _visit_stmts so one statement may become several.
        for name, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, name, self._visit_stmts(value))
            elif isinstance(value, list):
                setattr(node, name, [self.visit(v) if isinstance(v, ast.AST) else v for v in value])
            elif isinstance(value, ast.AST):
                setattr(node, name, self.visit(value))
        return node


def _all_args(args: ast.arguments) -> list[ast.arg]:
    out = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if args.vararg:
        out.append(args.vararg)
    if args.kwarg:
        out.append(args.kwarg)
    return out
