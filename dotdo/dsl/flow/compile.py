"""Compile checked `.flow` workflows into the IR graph the Python front end also produces.

The lowering is the Python one, statement for statement: the same `Emitter` (blocks, loose
ends, labels, pruning, finally targets), the same shapes for `if`, loops with hidden
counters, `try` with an except dispatch and finally regions, the same node ids and step
names. So a flow and its Python twin give isomorphic graphs, and the engine cannot tell
them apart. Node code is Python source generated from the restricted flow tree, through
Python's own `ast`, so only constructs the checker allowed can appear in it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager

from dotdo.compiler._emitter import Cont, Emitter
from dotdo.compiler.ir import (
    END,
    ApprovalNode,
    BlockNode,
    CascadeNode,
    ChoiceNode,
    EndFinallyNode,
    EndNode,
    FailNode,
    Graph,
    Param,
    RecordNode,
    Region,
    SendNode,
    SleepNode,
    StartNode,
    StepNode,
    Stmt,
    WaitEventNode,
)
from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowError
from dotdo.dsl.flow.env import FlowEnv
from dotdo.dsl.flow.grammar import source_line
from dotdo.dsl.flow.options import policy_from
from dotdo.dsl.flow.pyexpr import py_expr, src, type_text
from dotdo.dsl.flow.walk import assigned_names, is_durable, match_fields, record_call

__all__ = ["compile_env", "compile_workflow"]


def compile_env(env: FlowEnv) -> dict[str, Graph]:
    """Every workflow of a checked file, by name. Raises FlowError on an internal problem."""
    return {name: compile_workflow(wf, env) for name, wf in env.workflows.items()}


def compile_workflow(wf: A.Workflow, env: FlowEnv) -> Graph:
    return _Lowerer(wf, env).lower()


def _at(node: ast.stmt, line: int) -> ast.stmt:
    for inner in ast.walk(node):
        if "lineno" in inner._attributes:
            inner.lineno = line  # type: ignore[attr-defined]
            inner.col_offset = 0  # type: ignore[attr-defined]
    return ast.fix_missing_locations(node)


def _parsed(code: str, line: int) -> list[ast.stmt]:
    return [_at(s, line) for s in ast.parse(code).body]


# ------------------------------------------------------------------ lowering
class _Lowerer(Emitter):
    """`dotdo.compiler.lower._Lowerer`, reading a flow tree instead of a Python one."""

    def __init__(self, wf: A.Workflow, env: FlowEnv) -> None:
        super().__init__(name=f"{env.stem}.{wf.name}", file=env.path, indent=0, self_name="self")
        self.wf = wf
        self.env = env
        self.step_names: set[str] = set()
        self.suffixes: dict[str, int] = {}
        self.explicit_ids = _explicit_ids(wf.body)
        self.reraise: str | None = None
        """The saved error a bare `fail` re-raises inside a lowered `except` body."""

    def lower(self) -> Graph:
        wf = self.wf
        self.graph.params = [
            Param(
                name=p.name,
                annotation=type_text(p.type) if p.type is not None else None,
                default=src(p.default) if p.default is not None else None,
            )
            for p in wf.params
        ]
        if wf.returns is not None:
            self.graph.returns = type_text(wf.returns)
        self.emit(StartNode(id="start", line=wf.pos.line))
        self.lower_body(wf.body)
        self.emit(EndNode(id=END, line=wf.pos.end_line or wf.pos.line))
        self.resolve_labels()
        self.prune()
        self.fill_finally_targets()
        params = [p.name for p in wf.params]
        bound = assigned_names(wf.body)
        names = params + [n for n in bound if n not in params]
        local_lines = {n: wf.pos.line for n in params}
        local_lines.update({n: pos.line for n, pos in bound.items() if n not in local_lines})
        local_lines.update(self.hidden)
        self.graph.locals = names + [n for n in self.hidden if n not in names]
        self.graph.local_lines = local_lines
        self.graph.nodes = {nid: self.nodes[nid] for nid in self.order if nid in self.nodes}
        errors = [f for f in self.graph.validate_graph() if f.severity == "error"]
        if errors:
            first = errors[0]
            raise FlowError(
                [
                    Diagnostic(
                        self.env.path,
                        first.line,
                        1,
                        f"internal compiler error: {first.message}",
                        "please report this with the file",
                        source_line(self.env.text, first.line),
                        code="internal",
                    )
                ]
            )
        return self.graph

    # -------------------------------------------------------------- statements
    def lower_body(self, stmts: tuple[A.Stmt, ...]) -> None:
        for stmt in stmts:
            if self.dead():
                return
            self.lower_stmt(stmt)

    def lower_stmt(self, s: A.Stmt) -> None:
        if not is_durable(s):
            self.add_plain(self.plain(s, self.reraise))
        elif isinstance(s, A.If):
            self.lower_if(s)
        elif isinstance(s, A.While):
            self.lower_while(s)
        elif isinstance(s, A.For):
            self.lower_for(s)
        elif isinstance(s, A.Try):
            self.lower_try(s)
        elif isinstance(s, A.Do):
            self.emit_step(s)
        elif isinstance(s, A.Send):
            self.emit(
                SendNode(
                    id=self.new_id("e"),
                    line=s.pos.line,
                    event=src(s.event),
                    data=src(s.data) if s.data is not None else "None",
                )
            )
        elif isinstance(s, A.Sleep):
            self.emit_sleep(s)
        elif isinstance(s, A.Approval):
            self.emit_approval(s)
        elif isinstance(s, A.WaitFor):
            self.emit_wait(s)
        elif isinstance(s, A.Cascade):
            self.emit_cascade(s)
        elif isinstance(s, A.Assign):
            what = record_call(s.value)
            assert what is not None
            temp = self.hidden_name("v", s.pos.line)
            self.emit(
                RecordNode(
                    id=self.new_id("r"),
                    line=s.pos.line,
                    what=what,  # type: ignore[arg-type]
                    name=self.step_name(what),
                    result=temp,
                    loops=list(self.ctx.loops),
                )
            )
            self.buffer.extend(_parsed(f"{s.target} = {temp}", s.pos.line))
        else:  # pragma: no cover - is_durable covers exactly the kinds above
            raise AssertionError(f"cannot lower {type(s).__name__}")

    def plain(self, s: A.Stmt, reraise: str | None) -> ast.stmt:
        """A statement without durable operations, as one Python statement (nested ok)."""
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
                node = ast.Raise(ast.Name(reraise, ast.Load()) if reraise else None)
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
                self.plain_body(s.body, reraise),
                self.plain_body(s.orelse, reraise),
            )
        elif isinstance(s, A.While):
            body = [_tick(line), *self.plain_body(s.body, reraise)]
            node = ast.While(py_expr(s.test), body, [])
        elif isinstance(s, A.For):
            body = [_tick(line), *self.plain_body(s.body, reraise)]
            node = ast.For(ast.Name(s.var, ast.Store()), py_expr(s.iter), body, [])
        elif isinstance(s, A.Try):
            handlers = [
                ast.ExceptHandler(
                    _exc_types(h.types),
                    h.name,
                    self.plain_body(h.body, None),  # a bare `fail` re-raises natively here
                )
                for h in s.handlers
            ]
            node = ast.Try(
                self.plain_body(s.body, reraise),
                handlers,
                [],
                self.plain_body(s.finalbody, reraise),
            )
        else:  # pragma: no cover - durable kinds never reach here
            raise AssertionError(f"{type(s).__name__} is not a plain statement")
        ast.copy_location(node, ast.Pass(lineno=line, col_offset=0))
        return ast.fix_missing_locations(node)

    def plain_body(self, body: tuple[A.Stmt, ...], reraise: str | None) -> list[ast.stmt]:
        return [self.plain(s, reraise) for s in body]

    # ------------------------------------------------------------ control flow
    def lower_if(self, s: A.If) -> None:
        choice = ChoiceNode(id=self.new_id("c"), line=s.pos.line, cond=src(s.test))
        self.emit(choice, tails=())
        self.cont = Cont([(choice.id, "then")])
        self.lower_body(s.body)
        after_body = self.take()
        self.cont = Cont([(choice.id, "orelse")])
        self.lower_body(s.orelse)
        self.cont = self.take().merge(after_body)

    def lower_while(self, s: A.While) -> None:
        counter = self.hidden_name("n", s.pos.line)
        self.buffer.extend(_parsed(f"{counter} = 0", s.pos.line))
        self.flush()
        head = self.new_id("L")
        self.cont.labels.append(head)
        choice = ChoiceNode(id=self.new_id("c"), line=s.pos.line, cond=src(s.test))
        self.emit(choice, tails=())
        self.loop_body(s.body, s.pos.line, choice, head, counter, f"{counter} += 1")

    def lower_for(self, s: A.For) -> None:
        items = self.hidden_name("it", s.pos.line)
        index = self.hidden_name("i", s.pos.line)
        # As in Python workflows: lists, tuples, ranges and strings are iterated in place,
        # any other iterable is stored once as a list.
        init = f"{items} = __flow_iter({src(s.iter)})\n{index} = 0"
        self.buffer.extend(_parsed(init, s.pos.line))
        self.flush()
        head = {"id": self.new_id("c"), "line": s.pos.line, "cond": f"{index} < len({items})"}
        choice = ChoiceNode.model_validate({**head, **_BOUNDED})
        self.emit(choice, tails=())
        bind = f"{s.var} = {items}[{index}]\n{index} += 1"
        self.loop_body(s.body, s.pos.line, choice, choice.id, index, bind)

    def loop_body(
        self,
        body: tuple[A.Stmt, ...],
        line: int,
        choice: ChoiceNode,
        head: str,
        counter: str,
        prelude: str,
    ) -> None:
        exit_label = self.new_id("X")
        self.cont = Cont([(choice.id, "then")])
        self.buffer.extend(_parsed(prelude, line))
        with self.scope(loops=(*self.ctx.loops, counter), break_to=exit_label, continue_to=head):
            self.lower_body(body)
            self.jump_to(head)
        self.cont = Cont([(choice.id, "orelse")])
        self.cont = self.take()
        self.cont.labels.append(exit_label)

    def lower_try(self, s: A.Try) -> None:
        outer = self.ctx
        has_fin = bool(s.finalbody)
        rid = self.new_id("R") if has_fin else None
        dispatch = self.new_id("d") if s.handlers else None
        fin_raise = self.new_id("f") if has_fin else None
        inner_catch = fin_raise if has_fin else outer.catch
        inner_fin = rid if has_fin else outer.fin
        self.flush()
        first = len(self.order)
        # The interpreter puts a caught error in the frame as `__exc`; dispatch reads it there.
        self.hidden.setdefault("__exc", s.pos.line)
        with self.scope(catch=dispatch or fin_raise, fin=inner_fin):
            self.lower_body(s.body)
            self.flush()
        with self.scope(catch=inner_catch, fin=inner_fin):
            normal = self.take()
            if dispatch:
                normal = normal.merge(self.lower_handlers(s.handlers, dispatch))
        self.cont = normal
        if not has_fin:
            return
        assert rid is not None and fin_raise is not None
        completion = f"__fin{rid}"
        fin_line = s.finalbody[0].pos.line
        self.hidden[completion] = s.pos.line
        if self.cont:
            self.buffer.extend(_parsed(f"{completion} = ('normal',)", fin_line))
            self.flush()
        members = [*self.order[first:], fin_raise]
        self.add_node(
            BlockNode(
                id=fin_raise,
                line=fin_line,
                code=[Stmt(line=fin_line, src=f"{completion} = ('raise', __exc)")],
            )
        )
        self.cont.tails.append((fin_raise, "next"))
        entry = self.new_id("F")
        self.cont.labels.append(entry)
        self.graph.regions[rid] = Region(entry=entry, parent=outer.fin, members=members)
        self.lower_body(s.finalbody)
        last = s.finalbody[-1].pos
        end = EndFinallyNode(id=self.new_id("z"), line=last.line, region=rid)
        self.emit(end)
        self.finally_exits[rid] = end.id

    def lower_handlers(self, handlers: tuple[A.Handler, ...], dispatch: str) -> Cont:
        done = Cont()
        self.cont = Cont()
        choice: ChoiceNode | None = None
        for i, handler in enumerate(handlers):
            line = handler.pos.line
            saved = self.hidden_name("exc", line)
            binding = f"{saved} = __exc"
            if handler.name:
                binding += f"\n{handler.name} = __exc"
            if not handler.types:
                if i == 0:
                    self.flush()
                    self.cont.labels.append(dispatch)
            else:
                types = ", ".join(handler.types)
                types = f"({types})" if len(handler.types) > 1 else types
                choice = ChoiceNode(
                    id=dispatch if i == 0 else self.new_id("d"),
                    line=line,
                    cond=f"__flow_isinstance(__exc, {types})",
                )
                self.emit(choice, tails=())
                self.cont = Cont([(choice.id, "then")])
            self.buffer.extend(_parsed(binding, line))
            with self.handling(saved):
                self.lower_body(handler.body)
            if handler.name and not self.dead():
                # As in Python: the name bound by `except ... as e` is gone after the handler.
                self.buffer.extend(_parsed(f"{handler.name} = None\ndel {handler.name}", line))
            done = done.merge(self.take())
            if not handler.types:
                return done
            assert choice is not None
            self.cont = Cont([(choice.id, "orelse")])
        self.emit(FailNode(id=self.new_id("x"), line=handlers[-1].pos.line, expr="__exc"), tails=())
        return done

    @contextmanager
    def handling(self, saved: str) -> Iterator[None]:
        outer, self.reraise = self.reraise, saved
        try:
            yield
        finally:
            self.reraise = outer

    # ------------------------------------------------------------ durable nodes
    def step_name(self, base: str) -> str:
        """`base`, else `base_2`, `base_3`...: the Python front end's names, found without
        rescanning from 1 each time (taken names only accumulate, so resuming is exact)."""
        n = self.suffixes.get(base, 1)
        name = base if n == 1 else f"{base}_{n}"
        while name in self.step_names or name in self.explicit_ids:
            n += 1
            name = f"{base}_{n}"
        self.suffixes[base] = n
        self.step_names.add(name)
        return name

    def emit_step(self, s: A.Do) -> None:
        step_name = s.call.name
        assert step_name is not None
        info = self.env.steps[step_name]
        policy = policy_from(self.env, s.options, info.policy, s.pos, mode=s.mode)
        self.emit(
            StepNode(
                id=self.new_id("t"),
                line=s.pos.line,
                mode=s.mode,
                name=s.options.step_id or self.step_name(step_name),
                call=f"self.{step_name}",
                args=[src(a) for a in s.call.args],
                kwargs=[(k.name, src(k.value)) for k in s.call.kwargs],
                result=s.target,
                policy=policy,
                compensate=s.options.compensate or info.compensate,
                loops=list(self.ctx.loops),
            )
        )

    def emit_sleep(self, s: A.Sleep) -> None:
        kind = "sleep_until" if s.until else "sleep"
        self.emit(
            SleepNode(
                id=self.new_id("s"),
                line=s.pos.line,
                name=self.step_name(kind),
                duration=None if s.until else src(s.value),
                until=src(s.value) if s.until else None,
                loops=list(self.ctx.loops),
            )
        )

    def emit_approval(self, s: A.Approval) -> None:
        fields: list[tuple[str, str]] = [("type", repr(s.name))]
        for f in s.fields:
            key = "approvers" if f.name == "approver" else f.name
            fields = [(k, v) for k, v in fields if k != key]
            fields.append((key, src(f.value)))
        request = "{" + ", ".join(f"{k!r}: {v}" for k, v in fields) + "}"
        self.emit(
            ApprovalNode(
                id=self.new_id("w"),
                line=s.pos.line,
                name=s.name,
                request=request,
                result=s.target,
                loops=list(self.ctx.loops),
            )
        )

    def emit_wait(self, s: A.WaitFor) -> None:
        match = None
        if s.where is not None:
            pairs = match_fields(s.where)
            match = "{" + ", ".join(f"{k!r}: {src(v)}" for k, v in pairs) + "}"
        self.emit(
            WaitEventNode(
                id=self.new_id("w"),
                line=s.pos.line,
                name=s.step_id or self.step_name("wait"),
                event=src(s.event),
                match=match,
                timeout=src(s.timeout) if s.timeout is not None else None,
                result=s.target,
                loops=list(self.ctx.loops),
            )
        )

    def emit_cascade(self, s: A.Cascade) -> None:
        tiers = [(tier.name, f"lambda: {src(_step_call(tier.call))}") for tier in s.tiers]
        self.emit(
            CascadeNode(
                id=self.new_id("w"),
                line=s.pos.line,
                name=s.step_id or self.step_name("cascade"),
                task=repr(s.task),
                tiers=tiers,
                threshold=src(s.threshold) if s.threshold is not None else "0.9",
                result=s.target,
                loops=list(self.ctx.loops),
            )
        )


_BOUNDED: dict[str, bool] = {"bounded": True} if "bounded" in ChoiceNode.model_fields else {}
"""A `for` head always ends (it walks a stored sequence); IRs without the flag do without."""


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


def _explicit_ids(body: tuple[A.Stmt, ...]) -> set[str]:
    ids: set[str] = set()
    for node in A.walk(body):
        if isinstance(node, A.Do) and node.options.step_id:
            ids.add(node.options.step_id)
        elif isinstance(node, A.WaitFor | A.Cascade) and node.step_id:
            ids.add(node.step_id)
        elif isinstance(node, A.Approval):
            ids.add(node.name)
    return ids
