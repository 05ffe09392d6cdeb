"""The statement and expression rules of a workflow body.

Every rule reports and carries on: a file's problems are all listed at once. The rules
mirror what the compiler accepts (same tree queries, from `flow_walk`), and what the
runtime namespace holds (the `flow_builtins` lists), so a checked file always compiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dotdo.compiler.ir import Policy
from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.builtins import (
    BUILTINS,
    EXCEPTIONS,
    INTERNAL_FIELDS,
    RECORDED,
    RESERVED,
    TYPES,
)
from dotdo.dsl.flow.env import FlowEnv, suggest
from dotdo.dsl.flow.grammar import KEYWORDS
from dotdo.dsl.flow.options import (
    arity_problem,
    check_compensator,
    check_event_name,
    policy_from,
)
from dotdo.dsl.flow.walk import (
    APPROVAL_FIELDS,
    CASCADE_TIERS,
    approval_value_problem,
    assigned_names,
    is_literal,
    match_fields,
    record_call,
)

__all__ = ["BodyChecker"]

_TERMINAL = (A.Return, A.Fail, A.Break, A.Continue)


@dataclass
class _Ctx:
    loops: int = 0
    handlers: int = 0


@dataclass
class BodyChecker:
    env: FlowEnv
    wf: A.Workflow
    used: set[str]
    scope: set[str] = field(default_factory=set)
    ids: dict[str, A.Pos] = field(default_factory=dict)

    def run(self) -> None:
        wf = self.wf
        names = assigned_names(wf.body)
        seen_default = False
        params: set[str] = set()
        for param in wf.params:
            self.name_ok(param.pos, param.name, "parameter")
            if param.name in params:
                self.report(param.pos, f"the parameter `{param.name}` appears twice")
            params.add(param.name)
            if param.type is not None:
                self.type_ok(param.type)
            if param.default is not None:
                seen_default = True
                if not is_literal(param.default):
                    self.report(
                        param.default.pos,
                        "a default value must be a literal (a number, a string, true, false, "
                        "null, or a list or dict of those)",
                        code="bad-default",
                    )
            elif seen_default:
                self.report(
                    param.pos,
                    f"`{param.name}` has no default but follows a parameter that has one",
                    "put the parameters with defaults last",
                )
        if wf.returns is not None:
            self.type_ok(wf.returns)
        for name, pos in names.items():
            if name not in params:
                self.name_ok(pos, name, "variable")
        self.scope = params | set(names)
        self.block(wf.body, _Ctx())

    # ----------------------------------------------------------------- helpers
    def report(
        self, pos: A.Pos, message: str, expected: str | None = None, code: str = "semantic"
    ) -> None:
        self.env.report(pos, message, expected, code=code)

    def name_ok(self, pos: A.Pos, name: str, what: str) -> None:
        if "__" in name:
            self.report(
                pos,
                f"the {what} `{name}` contains '__', which .flow files do not allow",
                "rename it",
                code="dunder",
            )
        elif name.startswith("_"):
            self.report(
                pos,
                f"the {what} `{name}` starts with '_', which .flow files do not allow",
                "rename it (names starting with '_' are private to Python code)",
                code="private-name",
            )
        elif name in RESERVED or name in BUILTINS:
            self.report(
                pos,
                f"`{name}` is a built-in name of .flow and cannot be a {what}",
                "choose another name",
                code="reserved-name",
            )
        elif name in self.env.steps:
            self.report(pos, f"`{name}` is a step and cannot be a {what}", code="reserved-name")
        elif name in self.env.types or name in EXCEPTIONS:
            self.report(pos, f"`{name}` is a type and cannot be a {what}", code="reserved-name")
        elif name in KEYWORDS:
            self.report(pos, f"`{name}` is a keyword and cannot be a {what}", code="reserved-name")

    def type_ok(self, ref: A.TypeRef) -> None:
        options = ref.options if isinstance(ref, A.TypeUnion) else (ref,)
        for t in options:
            if t.name not in TYPES and t.name not in self.env.types:
                self.report(
                    t.pos,
                    f"unknown type `{t.name}`",
                    suggest(t.name, [*TYPES, *self.env.types])
                    or f"import it: `import some.module: {t.name}`",
                    code="unknown-type",
                )
            if t.args and t.name not in ("list", "dict"):
                self.report(t.pos, f"`{t.name}` takes no [...] arguments", code="unknown-type")
            for arg in t.args:
                self.type_ok(arg)

    def step_id(self, pos: A.Pos, step_id: str | None) -> None:
        if step_id is None:
            return
        if step_id in self.ids:
            self.report(
                pos,
                f"the step id {step_id!r} is used twice in this workflow",
                f"the other one is on line {self.ids[step_id].line}; ids must be unique",
                code="dup-step-id",
            )
        else:
            self.ids[step_id] = pos

    # -------------------------------------------------------------- statements
    def block(self, body: tuple[A.Stmt, ...], ctx: _Ctx) -> None:
        after: A.Stmt | None = None
        for stmt in body:
            if after is not None:
                word = type(after).__name__.lower()
                self.report(
                    stmt.pos,
                    f"this line never runs: it comes after `{word}`",
                    "remove it, or move it above",
                    code="dead-code",
                )
                after = None
            self.stmt(stmt, ctx)
            if isinstance(stmt, _TERMINAL):
                after = stmt

    def stmt(self, s: A.Stmt, ctx: _Ctx) -> None:
        if isinstance(s, A.Assign):
            if record_call(s.value) is None:
                self.expr(s.value, ctx)
        elif isinstance(s, A.ExprStmt):
            self.expr_stmt(s, ctx)
        elif isinstance(s, A.Do):
            self.do(s, ctx)
        elif isinstance(s, A.Send):
            check_event_name(self.env, s.event)
            self.expr(s.event, ctx)
            if s.data is not None:
                self.expr(s.data, ctx)
        elif isinstance(s, A.Sleep):
            self.duration(s.value, "sleep", ctx, until=s.until)
        elif isinstance(s, A.Approval):
            self.approval(s, ctx)
        elif isinstance(s, A.WaitFor):
            self.wait(s, ctx)
        elif isinstance(s, A.Cascade):
            self.cascade(s, ctx)
        elif isinstance(s, A.If):
            self.expr(s.test, ctx)
            self.block(s.body, ctx)
            self.block(s.orelse, ctx)
        elif isinstance(s, A.While):
            self.expr(s.test, ctx)
            self.block(s.body, _Ctx(ctx.loops + 1, ctx.handlers))
        elif isinstance(s, A.For):
            self.expr(s.iter, ctx)
            self.block(s.body, _Ctx(ctx.loops + 1, ctx.handlers))
        elif isinstance(s, A.Try):
            self.try_(s, ctx)
        elif isinstance(s, A.Return):
            if s.value is not None:
                self.expr(s.value, ctx)
        elif isinstance(s, A.Fail):
            if s.value is not None:
                self.expr(s.value, ctx)
            elif not ctx.handlers:
                self.report(
                    s.pos,
                    "a bare `fail` re-raises the error being handled, so it belongs in `except`",
                    'give a reason: fail "payment was declined"',
                )
        elif isinstance(s, A.Break | A.Continue):
            if not ctx.loops:
                word = "break" if isinstance(s, A.Break) else "continue"
                self.report(s.pos, f"`{word}` outside a loop", "use it inside `for` or `while`")

    def expr_stmt(self, s: A.ExprStmt, ctx: _Ctx) -> None:
        value = s.value
        if isinstance(value, A.Call) and value.name in self.env.steps:
            self.used.add(value.name)
            self.report(
                s.pos,
                f"running the step `{value.name}` needs `do` (retried) or `try` (once)",
                f"write `do {value.name}(...)`",
                code="step-without-do",
            )
            return
        self.expr(value, ctx)
        if isinstance(value, A.Call) and value.name in RECORDED:
            self.report(
                s.pos,
                f"`{value.name}()` must be kept in a variable: x = {value.name}()",
                code="bad-record",
            )
            return
        self.report(
            s.pos,
            "this line computes a value and does nothing with it",
            "assign it (x = ...), send it, or return it",
            code="useless-expression",
        )

    def call_step(self, call: A.Call, ctx: _Ctx, what: str) -> None:
        name = call.name
        for arg in call.args:
            self.expr(arg, ctx)
        for kw in call.kwargs:
            self.dunder(kw.pos, kw.name)
            self.expr(kw.value, ctx)
        if name is None:
            self.report(
                call.pos,
                f"{what} runs a declared step by its name, like `do charge(order)`",
                code="not-a-step",
            )
            return
        self.used.add(name)
        step = self.env.steps.get(name)
        if step is None:
            if name in BUILTINS or name in RECORDED:
                message = f"`{name}` is a builtin, not a step: {what} runs steps"
                hint = f"call it directly: x = {name}(...)"
            else:
                message = f"unknown step `{name}`"
                hint = suggest(name, self.env.steps) or f"declare it at the top: step {name}"
            self.report(call.func.pos, message, hint, code="unknown-step")
            return
        if step.signature is not None:
            kwargs = tuple(k.name for k in call.kwargs)
            problem = arity_problem(step.signature, len(call.args), kwargs)
            if problem is not None:
                self.report(
                    call.pos, f"wrong arguments for the step `{name}`: {problem}", code="arity"
                )

    def do(self, s: A.Do, ctx: _Ctx) -> None:
        self.call_step(s.call, ctx, f"`{s.mode}`")
        self.step_id(s.pos, s.options.step_id)
        policy_from(self.env, s.options, _base(self.env, s.call), s.pos, mode=s.mode)
        if s.options.compensate is not None:
            check_compensator(self.env, s.options.compensate, s.pos)
            self.used.add(s.options.compensate)

    def duration(self, value: A.Expr, what: str, ctx: _Ctx, *, until: bool = False) -> None:
        """A duration literal or expression; for `until` (and deadlines) a point in time too."""
        if isinstance(value, A.Const) and type(value.value) in (int, float):
            n = value.value
            self.report(
                value.pos,
                f"a {what} needs a unit: write {n}s, {n}m, {n}h or {n}d",
                code="bad-duration",
            )
        elif isinstance(value, A.Str | A.ListLit | A.DictLit | A.Const):
            self.report(value.pos, f"a {what} takes a duration like 30s or 1h", code="bad-duration")
        elif until and isinstance(value, A.Duration):
            self.report(
                value.pos,
                "`sleep until` takes a point in time",
                f"to wait a duration write `sleep {value.amount}{value.unit}`",
                code="bad-duration",
            )
        else:
            self.expr(value, ctx)

    def approval(self, s: A.Approval, ctx: _Ctx) -> None:
        self.step_id(s.pos, s.name)
        seen: set[str] = set()
        for f in s.fields:
            if f.name not in APPROVAL_FIELDS:
                self.report(
                    f.pos,
                    f"unknown approval field `{f.name}`",
                    suggest(f.name, APPROVAL_FIELDS) or "fields: " + ", ".join(APPROVAL_FIELDS),
                    code="approval-field",
                )
            elif f.name in seen:
                self.report(f.pos, f"the field `{f.name}` is given twice", code="approval-field")
            seen.add(f.name)
            if f.name == "deadline":
                self.duration(f.value, "deadline", ctx)
            else:
                self.expr(f.value, ctx)
            problem = approval_value_problem(f.name, f.value)
            if problem is not None:
                self.report(f.value.pos, problem[0], problem[1], code="approval-field")
        if "approver" in seen and "approvers" in seen:
            self.report(
                s.pos,
                "give either `approver` (one person) or `approvers` (a chain), not both",
                code="approval-field",
            )
        elif not seen & {"approver", "approvers"}:
            self.report(
                s.pos,
                'an approval needs `approver: "name"` or `approvers: ["a", "b"]`',
                code="approval-field",
            )

    def wait(self, s: A.WaitFor, ctx: _Ctx) -> None:
        check_event_name(self.env, s.event)
        self.expr(s.event, ctx)
        self.step_id(s.pos, s.step_id)
        if s.where is not None:
            for _, value in match_fields(s.where, self.report):
                self.expr(value, ctx)
        if s.timeout is not None:
            self.duration(s.timeout, "timeout", ctx)

    def cascade(self, s: A.Cascade, ctx: _Ctx) -> None:
        self.step_id(s.pos, s.step_id)
        if s.threshold is not None:
            value = s.threshold
            number = value.value if isinstance(value, A.Const) else None
            if type(number) not in (int, float) or not 0 <= number <= 1:  # type: ignore[operator]
                self.report(value.pos, "the threshold is a confidence between 0 and 1, like 0.9")
        seen: set[str] = set()
        for tier in s.tiers:
            if tier.name not in CASCADE_TIERS:
                self.report(
                    tier.pos,
                    f"unknown cascade tier `{tier.name}`",
                    suggest(tier.name, CASCADE_TIERS) or "tiers: " + ", ".join(CASCADE_TIERS),
                    code="cascade-tier",
                )
            elif tier.name in seen:
                self.report(tier.pos, f"the tier `{tier.name}` is given twice", code="cascade-tier")
            seen.add(tier.name)
            self.call_step(tier.call, ctx, "a cascade tier")

    def try_(self, s: A.Try, ctx: _Ctx) -> None:
        self.block(s.body, ctx)
        for i, handler in enumerate(s.handlers):
            if not handler.types and i != len(s.handlers) - 1:
                self.report(
                    handler.pos,
                    "an `except:` that catches everything must be the last one",
                    code="bad-except",
                )
            for name in handler.types:
                imported = self.env.types.get(name)
                if imported is None and name not in EXCEPTIONS:
                    self.report(
                        handler.pos,
                        f"unknown error type `{name}`",
                        suggest(name, [*EXCEPTIONS, *self.env.types])
                        or "built in: " + ", ".join(EXCEPTIONS),
                        code="unknown-type",
                    )
                elif imported is not None and imported.kind != "error":
                    self.report(handler.pos, f"`{name}` is not an error type", code="bad-except")
            self.block(handler.body, _Ctx(ctx.loops, ctx.handlers + 1))
        self.block(s.finalbody, ctx)

    # ------------------------------------------------------------- expressions
    def dunder(self, pos: A.Pos, name: str, *, field: bool = False) -> bool:
        """Report a name (or a `field` after a dot) that could reach Python internals; True
        if reported."""
        if "__" in name:
            self.report(
                pos,
                f"`{name}` contains '__', which .flow files do not allow",
                "double underscores reach Python internals",
                code="dunder",
            )
            return True
        if name.startswith("_"):
            self.report(
                pos,
                f"`{name}` starts with '_', which .flow files do not allow",
                "names and fields starting with '_' are private to Python code",
                code="private-name",
            )
            return True
        if field and name in INTERNAL_FIELDS:
            self.report(
                pos,
                f"the field `{name}` belongs to Python's frames, code or generators",
                "a flow reads data fields only",
                code="internal-field",
            )
            return True
        return False

    def expr(self, e: A.Expr, ctx: _Ctx) -> None:
        if isinstance(e, A.Name):
            self.name(e, ctx)
        elif isinstance(e, A.Attr):
            self.dunder(e.pos, e.name, field=True)
            self.expr(e.value, ctx)
        elif isinstance(e, A.Index):
            self.expr(e.value, ctx)
            self.expr(e.index, ctx)
        elif isinstance(e, A.Call):
            self.call(e, ctx)
        elif isinstance(e, A.Str):
            for part in e.parts:
                if not isinstance(part, str):
                    self.expr(part, ctx)
        elif isinstance(e, A.BinOp):
            self.expr(e.left, ctx)
            self.expr(e.right, ctx)
        elif isinstance(e, A.UnaryOp):
            self.expr(e.operand, ctx)
        elif isinstance(e, A.Compare):
            self.expr(e.left, ctx)
            for c in e.comparators:
                self.expr(c, ctx)
        elif isinstance(e, A.BoolOp):
            for v in e.values:
                self.expr(v, ctx)
        elif isinstance(e, A.IfExp):
            self.expr(e.test, ctx)
            self.expr(e.body, ctx)
            self.expr(e.orelse, ctx)
        elif isinstance(e, A.ListLit):
            for item in e.items:
                self.expr(item, ctx)
        elif isinstance(e, A.DictLit):
            for _, value in e.items:
                self.expr(value, ctx)

    def name(self, e: A.Name, ctx: _Ctx) -> None:
        name = e.id
        if self.dunder(e.pos, name) or name in self.scope:
            return
        if name in self.env.steps:
            self.used.add(name)
            message = f"`{name}` is a step: run it with `x = do {name}(...)`"
        elif name in BUILTINS or name in RECORDED:
            message = f"`{name}` is a function: call it, like `{name}(...)`"
        elif name in self.env.types or name in EXCEPTIONS:
            message = f"`{name}` is a type: call it to build a value, like `{name}(field=...)`"
        elif name == "event":
            message = "`event` exists only in the `where` clause of `wait for`"
        else:
            self.report(
                e.pos,
                f"undefined name `{name}`",
                suggest(name, self.scope) or "assign it first, or add it as a parameter",
                code="undefined-name",
            )
            return
        self.report(e.pos, message, code="bad-name")

    def call(self, e: A.Call, ctx: _Ctx) -> None:
        for arg in e.args:
            self.expr(arg, ctx)
        for kw in e.kwargs:
            self.dunder(kw.pos, kw.name)
            self.expr(kw.value, ctx)
        name = e.name
        if name is None:
            if isinstance(e.func, A.Attr):
                self.expr(e.func.value, ctx)
                method = e.func.name
                hint = (
                    f"use the builtin: {method}(x)" if method in BUILTINS else "use a step instead"
                )
                self.report(
                    e.pos,
                    f"methods cannot be called in a .flow file (`.{method}(...)`)",
                    hint,
                    code="bad-call",
                )
            else:
                self.report(e.pos, "only steps, builtins and types can be called", code="bad-call")
            return
        if self.dunder(e.func.pos, name):
            return
        if name in BUILTINS:
            self.builtin_arity(e)
        elif name in self.env.types or name in EXCEPTIONS:
            return
        elif name in self.env.steps:
            self.used.add(name)
            self.report(
                e.pos,
                f"the step `{name}` cannot run inside an expression",
                f"run it on its own line first: x = do {name}(...)",
                code="step-without-do",
            )
        elif name in RECORDED:
            self.report(
                e.pos,
                f"`{name}()` is recorded once per run, so it must be a line of its own",
                f"write `x = {name}()` and use x",
                code="bad-record",
            )
        else:
            self.report(
                e.func.pos,
                f"unknown function `{name}`",
                suggest(name, [*BUILTINS, *self.env.steps])
                or "only steps (with do/try), imported types and builtins can be called",
                code="bad-call",
            )

    def builtin_arity(self, e: A.Call) -> None:
        name = e.name
        assert name is not None
        spec = BUILTINS[name]
        count = len(e.args)
        bad_kw = [k.name for k in e.kwargs if k.name not in spec.keywords]
        if count < spec.min or (spec.max is not None and count > spec.max) or bad_kw:
            most = "any number of" if spec.max is None else str(spec.max)
            expected = (
                f"{name} takes {spec.min} argument{'s' if spec.min != 1 else ''}"
                if spec.min == spec.max
                else f"{name} takes from {spec.min} to {most} arguments"
            )
            if spec.keywords:
                expected += " and may be given " + ", ".join(f"{k}=" for k in sorted(spec.keywords))
            got = f"got {count}" + (f" and {', '.join(b + '=' for b in bad_kw)}" if bad_kw else "")
            self.report(e.pos, f"wrong arguments for `{name}`: {got}", expected, code="arity")


def _base(env: FlowEnv, call: A.Call) -> Policy:
    step = env.steps.get(call.name or "")
    return step.policy if step is not None else Policy()
