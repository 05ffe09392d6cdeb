"""Build the common tree (`dotdo.compiler.tree`) from checked `.flow` workflows.

What is `.flow`'s own stays here: its statements become plain Python statements generated
through Python's own `ast` (so only constructs the checker allowed can appear), its durable
statements become tree operations, `fail` becomes a raise, plain loops count against the
loop budget, and an internal error becomes a flow diagnostic. Ids, step names, loops, try
and finally are the one lowering's (`dotdo.compiler.lower`), the same the Python front end
uses, so a flow and its Python twin give the same graph.
"""

from __future__ import annotations

import ast

from dotdo.compiler import tree as T
from dotdo.compiler.ir import (
    ApprovalNode,
    CascadeNode,
    Graph,
    Param,
    RecordNode,
    SendNode,
    SleepNode,
    StepNode,
    WaitEventNode,
)
from dotdo.compiler.lower import lower_tree
from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowError
from dotdo.dsl.flow.env import FlowEnv
from dotdo.dsl.flow.grammar import source_line
from dotdo.dsl.flow.options import policy_from
from dotdo.dsl.flow.pyexpr import py_expr, src, type_text
from dotdo.dsl.flow.walk import assigned_names, is_durable, match_fields, record_call
from dotdo.errors import CompileError

__all__ = ["build_tree", "compile_env", "compile_workflow"]


def compile_env(env: FlowEnv) -> dict[str, Graph]:
    """Every workflow of a checked file, by name. Raises FlowError on an internal problem."""
    return {name: compile_workflow(wf, env) for name, wf in env.workflows.items()}


def compile_workflow(wf: A.Workflow, env: FlowEnv) -> Graph:
    try:
        return lower_tree(build_tree(wf, env))
    except CompileError as e:
        raise FlowError(
            [
                Diagnostic(
                    env.path,
                    e.line or wf.pos.line,
                    1,
                    f"internal compiler error: {e.message}",
                    "please report this with the file",
                    source_line(env.text, e.line or wf.pos.line),
                    code="internal",
                )
            ]
        ) from None


def build_tree(wf: A.Workflow, env: FlowEnv) -> T.Workflow:
    """The workflow as the tree both front ends hand to the lowering."""
    return _Builder(wf, env).build()


class _Builder:
    def __init__(self, wf: A.Workflow, env: FlowEnv) -> None:
        self.wf = wf
        self.env = env
        self.hidden: dict[str, int] = {}
        self.counter = 0

    def build(self) -> T.Workflow:
        wf = self.wf
        params = [
            Param(
                name=p.name,
                annotation=type_text(p.type) if p.type is not None else None,
                default=src(p.default) if p.default is not None else None,
            )
            for p in wf.params
        ]
        body = self.body(wf.body)
        return T.Workflow(
            name=f"{self.env.stem}.{wf.name}",
            file=self.env.path,
            line=wf.pos.line,
            end_line=wf.pos.end_line or wf.pos.line,
            params=params,
            body=body,
            bound={n: pos.line for n, pos in assigned_names(wf.body).items()},
            returns=type_text(wf.returns) if wf.returns is not None else None,
            hidden=self.hidden,
        )

    def hidden_name(self, prefix: str, line: int) -> str:
        self.counter += 1
        name = f"__{prefix}{self.counter}"
        self.hidden[name] = line
        return name

    # -------------------------------------------------------------- statements
    def body(self, stmts: tuple[A.Stmt, ...]) -> list[T.Stmt]:
        out: list[T.Stmt] = []
        for s in stmts:
            out.extend(self.stmt(s))
        return out

    def stmt(self, s: A.Stmt) -> list[T.Stmt]:
        line = s.pos.line
        if not is_durable(s):
            return [T.Plain(self.plain(s))]
        if isinstance(s, A.If):
            return [T.If(line, src(s.test), self.body(s.body), self.body(s.orelse))]
        if isinstance(s, A.While):
            return [T.While(line, src(s.test), body=self.body(s.body))]
        if isinstance(s, A.For):
            body = self.body(s.body)
            return [T.For(line, s.var, src(s.iter), body, iter_through="__flow_iter")]
        if isinstance(s, A.Try):
            return [self.try_(s)]
        if isinstance(s, A.Do):
            return [self.step(s)]
        if isinstance(s, A.Send):
            data = src(s.data) if s.data is not None else "None"
            return [T.Op(SendNode(id="", line=line, event=src(s.event), data=data))]
        if isinstance(s, A.Sleep):
            kind = "sleep_until" if s.until else "sleep"
            value = src(s.value)
            node = SleepNode(
                id="",
                line=line,
                name="",
                duration=None if s.until else value,
                until=value if s.until else None,
            )
            return [T.Op(node, base=kind)]
        if isinstance(s, A.Approval):
            return [self.approval(s)]
        if isinstance(s, A.WaitFor):
            return [self.wait(s)]
        if isinstance(s, A.Cascade):
            return [self.cascade(s)]
        if isinstance(s, A.Assign):
            what = record_call(s.value)
            assert what is not None
            temp = self.hidden_name("v", line)
            record = RecordNode(id="", line=line, what=what, name="", result=temp)  # type: ignore[arg-type]
            return [T.Op(record, base=what), *T.plain_at(f"{s.target} = {temp}", line)]
        raise AssertionError(f"cannot lower {type(s).__name__}")  # pragma: no cover

    def try_(self, s: A.Try) -> T.Try:
        body = self.body(s.body)
        handlers = []
        for h in s.handlers:
            test = None
            if h.types:
                types = ", ".join(h.types)
                types = f"({types})" if len(h.types) > 1 else types
                test = f"__flow_isinstance(__exc, {types})"
            handlers.append(T.Handler(h.pos.line, test, h.name, self.body(h.body)))
        final = s.finalbody
        return T.Try(
            s.pos.line,
            body,
            handlers,
            finalbody=self.body(final),
            final_lines=(final[0].pos.line, final[-1].pos.line) if final else (0, 0),
        )

    def plain(self, s: A.Stmt) -> ast.stmt:
        """A statement without durable operations, as one Python statement (nested ok).
        A bare `fail` is a bare `raise`: inside a lowered `except` the lowering points it
        at the saved error, inside a plain one Python re-raises natively."""
        line = s.pos.line
        node: ast.stmt
        if isinstance(s, A.Assign):
            node = ast.Assign([ast.Name(s.target, ast.Store())], py_expr(s.value))
        elif isinstance(s, A.ExprStmt):
            node = ast.Expr(py_expr(s.value))
        elif isinstance(s, A.Return):
            node = ast.Return(py_expr(s.value) if s.value is not None else None)
        elif isinstance(s, A.Fail):
            if s.value is None:
                node = ast.Raise(None)
            else:
                fail = ast.Name("__flow_fail", ast.Load())
                node = ast.Raise(ast.Call(fail, [py_expr(s.value)], []))
        elif isinstance(s, A.Break):
            node = ast.Break()
        elif isinstance(s, A.Continue):
            node = ast.Continue()
        elif isinstance(s, A.Pass):
            node = ast.Pass()
        elif isinstance(s, A.If):
            node = ast.If(
                py_expr(s.test),
                self.plain_body(s.body),
                self.plain_body(s.orelse),
            )
        elif isinstance(s, A.While):
            body = [_tick(line), *self.plain_body(s.body)]
            node = ast.While(py_expr(s.test), body, [])
        elif isinstance(s, A.For):
            body = [_tick(line), *self.plain_body(s.body)]
            node = ast.For(ast.Name(s.var, ast.Store()), py_expr(s.iter), body, [])
        elif isinstance(s, A.Try):
            handlers = [
                ast.ExceptHandler(
                    _exc_types(h.types),
                    h.name,
                    self.plain_body(h.body),
                )
                for h in s.handlers
            ]
            node = ast.Try(
                self.plain_body(s.body),
                handlers,
                [],
                self.plain_body(s.finalbody),
            )
        else:  # pragma: no cover - durable kinds never reach here
            raise AssertionError(f"{type(s).__name__} is not a plain statement")
        ast.copy_location(node, ast.Pass(lineno=line, col_offset=0))
        return ast.fix_missing_locations(node)

    def plain_body(self, body: tuple[A.Stmt, ...]) -> list[ast.stmt]:
        return [self.plain(s) for s in body]

    # ------------------------------------------------------------ durable nodes
    def step(self, s: A.Do) -> T.Op:
        step_name = s.call.name
        assert step_name is not None
        info = self.env.steps[step_name]
        policy = policy_from(self.env, s.options, info.policy, s.pos, mode=s.mode)
        node = StepNode(
            id="",
            line=s.pos.line,
            mode=s.mode,
            name=s.options.step_id or "",
            call=f"self.{step_name}",
            args=[src(a) for a in s.call.args],
            kwargs=[(k.name, src(k.value)) for k in s.call.kwargs],
            result=s.target,
            policy=policy,
            compensate=s.options.compensate or info.compensate,
        )
        return T.Op(node, base=step_name)

    def approval(self, s: A.Approval) -> T.Op:
        fields: list[tuple[str, str]] = [("type", repr(s.name))]
        for f in s.fields:
            key = "approvers" if f.name == "approver" else f.name
            fields = [(k, v) for k, v in fields if k != key]
            fields.append((key, src(f.value)))
        request = "{" + ", ".join(f"{k!r}: {v}" for k, v in fields) + "}"
        node = ApprovalNode(id="", line=s.pos.line, name=s.name, request=request, result=s.target)
        return T.Op(node)

    def wait(self, s: A.WaitFor) -> T.Op:
        match = None
        if s.where is not None:
            pairs = match_fields(s.where)
            match = "{" + ", ".join(f"{k!r}: {src(v)}" for k, v in pairs) + "}"
        node = WaitEventNode(
            id="",
            line=s.pos.line,
            name=s.step_id or "",
            event=src(s.event),
            match=match,
            timeout=src(s.timeout) if s.timeout is not None else None,
            result=s.target,
        )
        return T.Op(node, base="wait")

    def cascade(self, s: A.Cascade) -> T.Op:
        tiers = [(tier.name, f"lambda: {src(_step_call(tier.call))}") for tier in s.tiers]
        node = CascadeNode(
            id="",
            line=s.pos.line,
            name=s.step_id or "",
            task=repr(s.task),
            tiers=tiers,
            threshold=src(s.threshold) if s.threshold is not None else "0.9",
            result=s.target,
        )
        return T.Op(node, base="cascade")


def _step_call(call: A.Call) -> A.Expr:
    """`rule_based(x)` -> `self.rule_based(x)`: a tier runs the step's bound function."""
    assert call.name is not None
    return A.Call(A.Attr(A.Name("self"), call.name), call.args, call.kwargs)


def _tick(line: int) -> ast.stmt:
    """`__flow_tick(line)`: one iteration of a plain loop, counted against the budget
    (dotdo.compiler.loop_budget), so a loop with no durable step cannot spin forever."""
    call = ast.Call(ast.Name("__flow_tick", ast.Load()), [ast.Constant(line)], [])
    return ast.Expr(call)


def _exc_types(types: tuple[str, ...]) -> ast.expr:
    if not types:
        # A bare `except:` catches errors (`Exception`), as the graph's except dispatch
        # does: never the budget's stop signal, nor a KeyboardInterrupt.
        return ast.Name("Error", ast.Load())
    if len(types) == 1:
        return ast.Name(types[0], ast.Load())
    return ast.Tuple([ast.Name(t, ast.Load()) for t in types], ast.Load())
