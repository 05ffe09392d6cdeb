"""The one lowering: a front end's structured tree (`dotdo.compiler.tree`) to the IR graph.

The technique is regenerator's: only statements that contain a durable operation are split;
everything else stays one straight-line block. Loops become a choice node and a back edge
(with a hidden counter that qualifies the step ids inside), `try` becomes an except dispatch
plus, for `finally`, a region whose completion record (normal, raise, return, jump) is a
persisted local, so a crash inside a `finally` resumes it with the right pending action.
Node ids, hidden names, step names (`charge`, `charge_2`, ...) and validation live here
only: both front ends lower through this module, so a `.flow` file and its Python twin give
the same graph.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dotdo.compiler import tree as T
from dotdo.compiler._emitter import Cont, Emitter
from dotdo.compiler.ir import (
    END,
    BlockNode,
    ChoiceNode,
    EndFinallyNode,
    EndNode,
    FailNode,
    Graph,
    Region,
    StartNode,
    Stmt,
)
from dotdo.errors import CompileError

__all__ = ["lower_tree"]

_ID_PREFIX = {
    "step": "t",
    "record": "r",
    "send": "e",
    "sleep": "s",
    "approval": "w",
    "wait_event": "w",
    "cascade": "w",
}


def lower_tree(wf: T.Workflow) -> Graph:
    """The validated graph of `wf`; an invalid result raises CompileError (a compiler bug)."""
    return _Lowering(wf).lower()


class _Lowering(Emitter):
    def __init__(self, wf: T.Workflow) -> None:
        super().__init__(name=wf.name, file=wf.file, self_name=wf.self_name)
        self.wf = wf
        self.hidden.update(wf.hidden)
        self.step_names: set[str] = set()
        self.suffixes: dict[str, int] = {}
        self.explicit_ids = {
            name
            for s in T.walk(wf.body)
            if isinstance(s, T.Op) and (name := s.explicit_name) is not None
        }
        self.reraise: str | None = None
        """The saved error a bare `raise` re-raises inside a lowered `except` body."""

    def lower(self) -> Graph:
        wf = self.wf
        self.graph.params = list(wf.params)
        self.graph.returns = wf.returns
        self.emit(StartNode(id="start", line=wf.line))
        self.lower_body(wf.body)
        self.emit(EndNode(id=END, line=wf.end_line or wf.line))
        self.resolve_labels()
        self.prune()
        self.fill_finally_targets()
        names = [p.name for p in wf.params]
        names += [n for n in wf.bound if n not in names]
        local_lines = {p.name: wf.line for p in wf.params}
        local_lines.update({n: line for n, line in wf.bound.items() if n not in local_lines})
        local_lines.update(self.hidden)
        self.graph.locals = names + [n for n in self.hidden if n not in names]
        self.graph.local_lines = local_lines
        self.graph.nodes = {nid: self.nodes[nid] for nid in self.order if nid in self.nodes}
        errors = [f for f in self.graph.validate_graph() if f.severity == "error"]
        if errors:
            first = errors[0]
            raise CompileError(
                f"internal lowering error: {first.message}",
                file=wf.file,
                line=first.line,
                hint="please report this with the workflow's source",
            )
        return self.graph

    # -------------------------------------------------------------- statements
    def lower_body(self, body: list[T.Stmt]) -> None:
        for s in body:
            if self.dead():
                return
            self.lower_stmt(s)

    def lower_stmt(self, s: T.Stmt) -> None:
        lower: Callable[[T.Stmt], None] = getattr(self, f"lower_{type(s).__name__.lower()}")
        lower(s)

    def lower_plain(self, s: T.Plain) -> None:
        if isinstance(s.stmt, ast.If) and is_decision(s.stmt):
            self.lower_if(_as_decision(s.stmt))
            return
        self.add_plain(_reraise_as(s.stmt, self.reraise) if self.reraise else s.stmt)

    def code(self, src: str, line: int) -> None:
        """Generated statements (hidden counters, bindings) at `line` of the source."""
        self.buffer.extend(p.stmt for p in T.plain_at(src, line))

    def step_name(self, base: str) -> str:
        """`base`, else `base_2`, `base_3`...: the first not taken by an earlier operation
        or an explicit id (taken names only accumulate, so resuming the count is exact)."""
        n = self.suffixes.get(base, 1)
        name = base if n == 1 else f"{base}_{n}"
        while name in self.step_names or name in self.explicit_ids:
            n += 1
            name = f"{base}_{n}"
        self.suffixes[base] = n
        self.step_names.add(name)
        return name

    def lower_op(self, op: T.Op) -> None:
        update: dict[str, object] = {"id": self.new_id(_ID_PREFIX[op.node.kind])}
        if "loops" in type(op.node).model_fields:
            update["loops"] = list(self.ctx.loops)
        if op.explicit_name is None and op.base is not None:
            update["name"] = self.step_name(op.base)
        self.emit(op.node.model_copy(update=update))

    # ------------------------------------------------------------ control flow
    def lower_if(self, s: T.If) -> None:
        choice = ChoiceNode(id=self.new_id("c"), line=s.line, cond=s.test)
        self.emit(choice, tails=())
        self.cont = Cont([(choice.id, "then")])
        self.lower_body(s.body)
        after_body = self.take()
        self.cont = Cont([(choice.id, "orelse")])
        self.lower_body(s.orelse)
        self.cont = self.take().merge(after_body)

    def lower_while(self, s: T.While) -> None:
        counter = self.hidden_name("n", s.line)
        self.code(f"{counter} = 0", s.line)
        self.flush()
        head = self.new_id("L")
        self.cont.labels.append(head)
        with self.scope(loops=(*self.ctx.loops, counter)):
            self.lower_body(s.test_ops)
        choice = ChoiceNode(id=self.new_id("c"), line=s.line, cond=s.test)
        self.emit(choice, tails=())
        self.loop_body(s, choice, head, counter, f"{counter} += 1")

    def lower_for(self, s: T.For) -> None:
        items = self.hidden_name("it", s.line)
        index = self.hidden_name("i", s.line)
        # Lists, tuples, ranges and strings are iterated by index in place (a range is stored
        # as three numbers); any other iterable is evaluated once into a stored list.
        if s.iter_through:
            init = f"{items} = {s.iter_through}({s.iter})\n"
        else:
            init = (
                f"{items} = {s.iter}\n"
                f"if type({items}) not in (list, tuple, range, str):\n"
                f"    {items} = list({items})\n"
            )
        self.code(f"{init}{index} = 0", s.line)
        self.flush()
        choice = ChoiceNode(
            id=self.new_id("c"), line=s.line, cond=f"{index} < len({items})", bounded=True
        )
        self.emit(choice, tails=())
        bind = f"{s.target} = {items}[{index}]\n{index} += 1"
        self.loop_body(s, choice, choice.id, index, bind)

    def loop_body(
        self, s: T.While | T.For, choice: ChoiceNode, head: str, counter: str, prelude: str
    ) -> None:
        exit_label = self.new_id("X")
        self.cont = Cont([(choice.id, "then")])
        self.code(prelude, s.line)
        with self.scope(loops=(*self.ctx.loops, counter), break_to=exit_label, continue_to=head):
            self.lower_body(s.body)
            self.jump_to(head)
        self.cont = Cont([(choice.id, "orelse")])
        self.lower_body(s.orelse)
        self.cont = self.take()
        self.cont.labels.append(exit_label)

    def lower_try(self, s: T.Try) -> None:
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
        self.hidden.setdefault("__exc", s.line)
        with self.scope(catch=dispatch or fin_raise, fin=inner_fin):
            self.lower_body(s.body)
            self.flush()
        with self.scope(catch=inner_catch, fin=inner_fin):
            self.lower_body(s.orelse)
            normal = self.take()
            if dispatch:
                normal = normal.merge(self.lower_handlers(s.handlers, dispatch))
        self.cont = normal
        if not has_fin:
            return
        assert rid is not None and fin_raise is not None
        completion = f"__fin{rid}"
        fin_line, last_line = s.final_lines
        self.hidden[completion] = s.line
        if self.cont:
            self.code(f"{completion} = ('normal',)", fin_line)
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
        end = EndFinallyNode(id=self.new_id("z"), line=last_line, region=rid)
        self.emit(end)
        self.finally_exits[rid] = end.id

    def lower_handlers(self, handlers: list[T.Handler], dispatch: str) -> Cont:
        done = Cont()
        self.cont = Cont()
        choice: ChoiceNode | None = None
        for i, handler in enumerate(handlers):
            saved = self.hidden_name("exc", handler.line)
            binding = f"{saved} = __exc"
            if handler.name:
                binding += f"\n{handler.name} = __exc"
            if handler.test is None:
                if i == 0:
                    self.flush()
                    self.cont.labels.append(dispatch)
            else:
                choice = ChoiceNode(
                    id=dispatch if i == 0 else self.new_id("d"),
                    line=handler.line,
                    cond=handler.test,
                )
                self.emit(choice, tails=())
                self.cont = Cont([(choice.id, "then")])
            self.code(binding, handler.line)
            with self.handling(saved):
                self.lower_body(handler.body)
            if handler.name and not self.dead():
                # As Python does: the name bound by `except ... as e` is gone after the handler.
                self.code(f"{handler.name} = None\ndel {handler.name}", handler.line)
            done = done.merge(self.take())
            if handler.test is None:
                return done
            assert choice is not None
            self.cont = Cont([(choice.id, "orelse")])
        self.emit(FailNode(id=self.new_id("x"), line=handlers[-1].line, expr="__exc"), tails=())
        return done

    @contextmanager
    def handling(self, saved: str) -> Iterator[None]:
        outer, self.reraise = self.reraise, saved
        try:
            yield
        finally:
            self.reraise = outer


def is_decision(stmt: ast.If) -> bool:
    """Whether a plain `if`/`elif`/`else` is a business decision the diagram must show: its
    branches end differently (one returns or raises, another does not, or does the other).

    It becomes a choice node, not a checkpoint: the engine walks choices in memory between
    the same durable operations as before. A test binding a name (`:=`) stays in its block.
    """
    if any(isinstance(n, ast.NamedExpr) for n in ast.walk(stmt.test)):
        return False
    return _ending(stmt.body) != _ending(stmt.orelse)


def _ending(body: list[ast.stmt]) -> str:
    """How a branch ends: "return", "raise", "mixed" (an if whose arms differ) or "through"."""
    if not body:
        return "through"
    last = body[-1]
    if isinstance(last, ast.Return):
        return "return"
    if isinstance(last, ast.Raise):
        return "raise"
    if isinstance(last, ast.If):
        then, orelse = _ending(last.body), _ending(last.orelse)
        return then if then == orelse else "mixed"
    return "through"


def _as_decision(stmt: ast.If) -> T.If:
    return T.If(
        line=stmt.lineno,
        test=ast.unparse(stmt.test),
        body=[T.Plain(s) for s in stmt.body],
        orelse=[T.Plain(s) for s in stmt.orelse],
    )


def _reraise_as(stmt: ast.stmt, saved: str) -> ast.stmt:
    """Point the bare `raise` statements of a lowered handler at the exception it caught
    (the frame's `__exc` is overwritten by any later error); a bare raise inside a nested
    plain `except` keeps re-raising that handler's own exception, as in Python."""

    class Rewriter(ast.NodeTransformer):
        def visit_Raise(self, node: ast.Raise) -> ast.AST:
            if node.exc is None:
                return ast.copy_location(ast.Raise(exc=ast.Name(id=saved, ctx=ast.Load())), node)
            return node

        def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
            return node

        def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
            return node

        visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]
        visit_Lambda = visit_FunctionDef  # type: ignore[assignment]

    rewritten: ast.stmt = Rewriter().visit(stmt)
    return ast.fix_missing_locations(rewritten)
