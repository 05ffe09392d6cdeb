"""The Python front end: an `async def` workflow method to the common tree, then lowered.

Statements without durable operations stay Python statements; durable calls nested in
expressions are hoisted, in order, into temporaries (`dotdo.dsl.python.hoist`); control flow
holding durable operations becomes the tree's if/while/for/try. What cannot be lowered
raises `CompileError` with file, line and a hint. The graph itself is built by the one
lowering the `.flow` front end also uses (`dotdo.compiler.lower`).
"""

from __future__ import annotations

import ast
import copy
import linecache
from collections.abc import Callable, Mapping
from typing import Any

from dotdo.compiler import _scan
from dotdo.compiler import tree as T
from dotdo.compiler.ir import Graph, Param
from dotdo.compiler.lower import lower_tree
from dotdo.dsl.python.hoist import DurableOps, StepInfo
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
    return lower_tree(_Builder(func, name=name, file=file, lines=lines, steps=steps).build())


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


class _Builder(DurableOps):
    """The method's statements as the common tree; Python's own rules and errors stay here."""

    def build(self) -> T.Workflow:
        func = self.func
        params = self.check_signature(func)
        body = self.build_body(func.body)
        bound = _scan.bound_names(func.body)
        return T.Workflow(
            name=self.name,
            file=self.file,
            line=func.lineno,
            end_line=getattr(func, "end_lineno", func.lineno) or func.lineno,
            params=params,
            body=body,
            bound={n: line for n, line in bound.items() if n != self.self_name},
            self_name=self.self_name,
            returns=ast.unparse(func.returns) if func.returns is not None else None,
            hidden=self.hidden,
        )

    def check_signature(self, func: ast.AsyncFunctionDef) -> list[Param]:
        """The parameters after `self`."""
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
        return params[1:]

    # -------------------------------------------------------------- statements
    def build_body(self, stmts: list[ast.stmt]) -> list[T.Stmt]:
        outer, self.out = self.out, []
        try:
            for stmt in stmts:
                self.build_stmt(stmt)
            return self.out
        finally:
            self.out = outer

    def build_stmt(self, stmt: ast.stmt) -> None:
        self.reject_unsupported(stmt)
        if not self.needs_lowering(stmt):
            self.add_plain(stmt)
            return
        if isinstance(stmt, ast.If):
            self.build_if(stmt)
        elif isinstance(stmt, ast.While):
            self.build_while(stmt)
        elif isinstance(stmt, ast.For):
            self.build_for(stmt)
        elif isinstance(stmt, ast.Try):
            self.build_try(stmt)
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
    def hoisted(self, node: ast.expr) -> str:
        """`node` as source, its durable operations appended to the tree before it."""
        expr = self.hoist(node)
        assert isinstance(expr, ast.expr)
        return ast.unparse(expr)

    def build_if(self, stmt: ast.If) -> None:
        test = self.hoisted(stmt.test)
        body, orelse = self.build_body(stmt.body), self.build_body(stmt.orelse)
        self.out.append(T.If(line=stmt.lineno, test=test, body=body, orelse=orelse))

    def build_while(self, stmt: ast.While) -> None:
        outer, self.out = self.out, []
        try:
            test = self.hoisted(stmt.test)
            test_ops = self.out
        finally:
            self.out = outer
        self.out.append(
            T.While(
                line=stmt.lineno,
                test=test,
                test_ops=test_ops,
                body=self.build_body(stmt.body),
                orelse=self.build_body(stmt.orelse),
            )
        )

    def build_for(self, stmt: ast.For) -> None:
        iterable = self.hoisted(stmt.iter)
        self.out.append(
            T.For(
                line=stmt.lineno,
                target=ast.unparse(stmt.target),
                iter=iterable,
                body=self.build_body(stmt.body),
                orelse=self.build_body(stmt.orelse),
            )
        )

    def build_try(self, stmt: ast.Try) -> None:
        body, orelse = self.build_body(stmt.body), self.build_body(stmt.orelse)
        handlers = []
        for i, handler in enumerate(stmt.handlers):
            if handler.type is None and i != len(stmt.handlers) - 1:
                raise self.error(handler, "a bare `except:` must be the last handler")
            test = None
            if handler.type is not None:
                test = f"isinstance(__exc, {ast.unparse(handler.type)})"
            handlers.append(
                T.Handler(
                    line=handler.lineno,
                    test=test,
                    name=handler.name,
                    body=self.build_body(handler.body),
                )
            )
        final = stmt.finalbody
        self.out.append(
            T.Try(
                line=stmt.lineno,
                body=body,
                handlers=handlers,
                orelse=orelse,
                finalbody=self.build_body(final),
                final_lines=(final[0].lineno, final[-1].lineno) if final else (0, 0),
            )
        )
