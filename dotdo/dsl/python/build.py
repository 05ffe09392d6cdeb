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
import copy
import linecache
from collections.abc import Callable, Mapping
from typing import Any

from dotdo.compiler import _scan
from dotdo.compiler._durable import DurableOps, StepInfo
from dotdo.compiler._emitter import Cont
from dotdo.compiler.ir import (
    END,
    BlockNode,
    ChoiceNode,
    EndFinallyNode,
    EndNode,
    FailNode,
    Graph,
    Param,
    Region,
    StartNode,
    Stmt,
)
from dotdo.errors import CompileError

__all__ = ["StepInfo", "lower_function"]


def lower_function(fn: Callable[..., Any], *, name: str, steps: Mapping[str, StepInfo]) -> Graph:
    """Compile `fn` (an `async def` taking self first) to a validated graph."""
    code = getattr(fn, "__code__", None)
    file = getattr(code, "co_filename", "<unknown>")
    first_line = getattr(code, "co_firstlineno", 0)
    func, lines = _find_function(file, first_line, getattr(fn, "__name__", ""))
    if func is None:
        raise CompileError(
            f"cannot read the source of workflow {name!r}",
            file=file,
            line=first_line,
            hint="workflows must be defined in a file, not typed at a prompt",
        )
    if not isinstance(func, ast.AsyncFunctionDef):
        raise CompileError(
            f"workflow {name!r} must be an `async def`",
            file=file,
            line=func.lineno,
            col=func.col_offset + 1,
            hint="write `async def` so durable calls can be awaited",
        )
    return _Lowerer(func, name=name, file=file, lines=lines, steps=steps).lower()


_PARSED: dict[str, tuple[str, ast.Module]] = {}


def _find_function(
    file: str, first_line: int, fn_name: str
) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef | None, list[str]]:
    """The function's node in its whole file (exact lines and columns, any indentation)."""
    linecache.checkcache(file)
    lines = linecache.getlines(file)
    if not lines:
        return None, []
    text = "".join(lines)
    cached = _PARSED.get(file)
    if cached is None or cached[0] != text:
        try:
            cached = (text, ast.parse(text, filename=file))
        except SyntaxError:
            return None, lines
        _PARSED[file] = cached
    for node in ast.walk(cached[1]):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == fn_name:
            starts = {node.lineno, *(d.lineno for d in node.decorator_list)}
            if first_line in starts:
                # Lowering rewrites the tree in place; the cached one must stay pristine.
                return copy.deepcopy(node), lines
    return None, lines


class _Lowerer(DurableOps):
    """Statement lowering: control flow becomes choices, back edges and finally regions."""

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

    # -------------------------------------------------------------- statements
    def lower_body(self, stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            if self.dead():
                return
            self.lower_stmt(stmt)

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
        for node in ast.walk(stmt):
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
                    raise self.error(
                        node,
                        "super() cannot be used in a workflow body",
                        "call the base class method as a step: `await self.do(Base.m, self)`",
                    )
            if isinstance(node, ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef):
                self.reject_nested(node)
        for node in _scan.walk_same_scope(stmt):
            if isinstance(node, ast.Yield | ast.YieldFrom):
                raise self.error(node, "a workflow cannot `yield`", "return a list, or send events")
            if isinstance(node, ast.AsyncWith | ast.AsyncFor):
                word = "async with" if isinstance(node, ast.AsyncWith) else "async for"
                raise self.error(
                    node,
                    f"`{word}` cannot be used in a workflow",
                    "do the asynchronous work inside a step (`await self.do(fn)`)",
                )
            if isinstance(
                node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
            ) and any(g.is_async for g in node.generators):
                raise self.error(
                    node,
                    "an async comprehension cannot be used in a workflow",
                    "use a for loop, or run the comprehension inside a step",
                )

    def reject_nested(self, scope: ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """Durable operations need the workflow's own frame: none inside nested functions."""
        body: list[ast.AST] = [scope.body] if isinstance(scope, ast.Lambda) else [*scope.body]
        for part in body:
            for node in ast.walk(part):
                op = _scan.durable_op(node, self.self_name, self.steps)
                if op is not None and op not in ("step",):
                    name = op if op != "request_approval" else "approval_flow"
                    what = "a lambda" if isinstance(scope, ast.Lambda) else "a nested function"
                    raise self.error(
                        node if isinstance(scope, ast.Lambda) else scope,
                        f"`self.{name}` (line {getattr(node, 'lineno', 0)}) cannot be used "
                        f"inside {what}",
                        "call it in the workflow body; a function passed to self.do may call "
                        "ordinary methods and @step methods",
                    )

    # ------------------------------------------------------------ control flow
    def lower_if(self, stmt: ast.If) -> None:
        test = self.hoist(stmt.test)
        assert isinstance(test, ast.expr)
        choice = ChoiceNode(id=self.new_id("c"), line=stmt.lineno, cond=ast.unparse(test))
        self.emit(choice, tails=())
        self.cont = Cont([(choice.id, "then")])
        self.lower_body(stmt.body)
        after_body = self.take()
        self.cont = Cont([(choice.id, "orelse")])
        self.lower_body(stmt.orelse)
        self.cont = self.take().merge(after_body)

    def lower_while(self, stmt: ast.While) -> None:
        counter = self.hidden_name("n", stmt.lineno)
        self.buffer.append(ast.parse(f"{counter} = 0").body[0])
        self.flush()
        head = self.new_id("L")
        self.cont.labels.append(head)
        with self.scope(loops=(*self.ctx.loops, counter)):
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
        # Lists, tuples, ranges and strings are iterated by index in place (a range is stored
        # as three numbers); any other iterable is evaluated once into a stored list.
        init = (
            f"{items} = {ast.unparse(iterable)}\n"
            f"if type({items}) not in (list, tuple, range, str):\n"
            f"    {items} = list({items})\n"
            f"{index} = 0"
        )
        for s in ast.parse(init).body:
            self.buffer.append(ast.fix_missing_locations(ast.copy_location(s, stmt)))
        self.flush()
        choice = ChoiceNode(
            id=self.new_id("c"), line=stmt.lineno, cond=f"{index} < len({items})", bounded=True
        )
        self.emit(choice, tails=())
        bind = f"{ast.unparse(stmt.target)} = {items}[{index}]\n{index} += 1"
        self.loop_body(stmt, choice, choice.id, index, bind)

    def loop_body(
        self, stmt: ast.For | ast.While, choice: ChoiceNode, head: str, counter: str, prelude: str
    ) -> None:
        exit_label = self.new_id("X")
        self.cont = Cont([(choice.id, "then")])
        for s in ast.parse(prelude).body:
            self.buffer.append(ast.fix_missing_locations(ast.copy_location(s, stmt)))
        with self.scope(loops=(*self.ctx.loops, counter), break_to=exit_label, continue_to=head):
            self.lower_body(stmt.body)
            self.jump_to(head)
        self.cont = Cont([(choice.id, "orelse")])
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
        self.hidden.setdefault("__exc", stmt.lineno)
        with self.scope(catch=dispatch or fin_raise, fin=inner_fin):
            self.lower_body(stmt.body)
            self.flush()
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

    def lower_handlers(self, handlers: list[ast.ExceptHandler], dispatch: str) -> Cont:
        done = Cont()
        self.cont = Cont()
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
                self.cont = Cont([(choice.id, "then")])
            for s in ast.parse(binding).body:
                self.buffer.append(ast.fix_missing_locations(ast.copy_location(s, handler)))
            self.lower_body(body)
            if handler.name and not self.dead():
                # As Python does: the name bound by `except ... as e` is gone after the handler.
                for s in ast.parse(f"{handler.name} = None\ndel {handler.name}").body:
                    self.buffer.append(ast.fix_missing_locations(ast.copy_location(s, handler)))
            done = done.merge(self.take())
            if handler.type is None:
                return done
            self.cont = Cont([(choice.id, "orelse")])
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
