"""Resolve a `.flow` file's declarations against the Python world it names, without
running any of it.

`use` and `import` lines name modules; steps name functions in them; schedules and event
handlers name workflows of the file. Modules are first checked against the file's policy
(`flow_sandbox`: the project's own modules and the host's allow-list), then read as source
(`flow_static`): a step must be a function its module defines, an imported type a data class
its module defines. Nothing is imported here, so checking a file never runs a module's
top-level code. Every problem becomes a positioned diagnostic; the result, a `FlowEnv`, is
what the statement checker, the compiler and the loader work from.
"""

from __future__ import annotations

from dotdo.compiler.ir import Policy
from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.builtins import BUILTINS, EXCEPTIONS, RESERVED, TYPES
from dotdo.dsl.flow.env import FlowEnv, ResolvedStep, UsedModule, suggest
from dotdo.dsl.flow.options import check_compensator, policy_from, schedule_from
from dotdo.dsl.flow.sandbox import HOST, STDLIB, FlowPolicy, bad_segment, locate, refusal
from dotdo.dsl.flow.static import ModuleInfo, TypeInfo, host_type, read_module
from dotdo.dsl.python.do import DO
from dotdo.engine.triggers import EVENT_PATTERN

__all__ = ["ALLOW_HINT", "Resolver"]

_DO_NAMES = frozenset(dir(DO)) | {"entity_id", "run_id", "sent"}

ALLOW_HINT = (
    "a flow may use its own project's modules; the host allows others with "
    "Engine(flow_modules=[...]), `--allow-module M` or [tool.dotdo] flow-modules"
)


class Resolver:
    """Top-level declarations: modules, types, steps, schedules, handlers."""

    def __init__(self, env: FlowEnv) -> None:
        assert env.policy is not None
        self.env = env
        self.policy: FlowPolicy = env.policy
        self.modules: list[tuple[str, ModuleInfo]] = []
        self.read: dict[str, ModuleInfo | tuple[str, str, str]] = {}

    def run(self) -> FlowEnv:
        items = self.env.module.items
        if self.policy.config is not None:
            self.env.report(A.Pos(1, 1), self.policy.config, code="bad-config")
        for item in items:
            if isinstance(item, A.Use):
                self.use(item)
            elif isinstance(item, A.Import):
                self.import_(item)
        for item in items:
            if isinstance(item, A.Workflow):
                self.declare_workflow(item)
        for item in items:
            if isinstance(item, A.StepDecl):
                self.step(item)
        for step in self.env.steps.values():
            self.check_compensator(step)
        for item in items:
            if isinstance(item, A.Every):
                self.every(item)
            elif isinstance(item, A.On):
                self.on(item)
        return self.env

    # ----------------------------------------------------------------- modules
    def dunder(self, pos: A.Pos, name: str, what: str) -> bool:
        """Report a name with `__` or a leading `_` anywhere in it; True if reported."""
        problem = bad_segment(name)
        if problem is None:
            return False
        if "__" in name:
            self.env.report(
                pos,
                f"{what} `{name}` contains '__', which .flow files do not allow",
                "double underscores reach Python internals; rename it",
                code="dunder",
            )
        else:
            self.env.report(
                pos,
                f"{what} `{name}` is not allowed: {problem}",
                "a name starting with '_' is private to its Python code; use a public one",
                code="private-name",
            )
        return True

    def _module(self, pos: A.Pos, name: str, what: str, example: str) -> ModuleInfo | None:
        """The source of the module `name`, or None after reporting why the flow may not
        have it: not allowed by the policy, not found, or not readable as source."""
        if self.dunder(pos, name, "the module"):
            return None
        if name not in self.read:
            self.read[name] = self._read(pos, name, what, example)
        found = self.read[name]
        if isinstance(found, tuple):
            message, hint, code = found
            self.env.report(pos, message, hint, code=code)
            return None
        return found

    def _read(
        self, pos: A.Pos, name: str, what: str, example: str
    ) -> ModuleInfo | tuple[str, str, str]:
        top = name.split(".")[0]
        located = None if top == HOST or top in STDLIB else locate(name)
        if isinstance(located, str):
            hint = f"give a module Python can import, like {example}"
            return f"cannot {what} `{name}`: {located}", hint, "bad-module"
        why = refusal(name, located, self.policy)
        if why is not None:
            return f"cannot {what} `{name}`: {why}", ALLOW_HINT, "not-allowed"
        assert located is not None
        found = read_module(located)
        if isinstance(found, str):
            return found, "a flow reads a module's source to check it", "bad-module"
        self.env.modules.setdefault(name, UsedModule(located, pos))
        return found

    def use(self, item: A.Use) -> None:
        module = self._module(item.pos, item.module, "use module", "examples.flow_steps")
        if module is not None:
            self.modules.append((item.module, module))

    def import_(self, item: A.Import) -> None:
        if item.module == HOST:
            self.import_host(item)
            return
        module = self._module(item.pos, item.module, "import from", "examples.orders")
        if module is None:
            return
        for name in item.names:
            if self.dunder(item.pos, name, "the name"):
                continue
            found = module.data_class(name)
            if isinstance(found, str):
                known = name in module.bindings or name in module.imports
                self.env.report(
                    item.pos,
                    found if known else f"`{item.module}` has no type named `{name}`",
                    "import only data classes: pydantic models, dataclasses, enums, errors"
                    if known
                    else suggest(name, list(module.classes))
                    or f"check the spelling, or the module {item.module}",
                    code="not-a-type" if known else "unknown-type",
                )
                continue
            self.add_type(item.pos, found)

    def import_host(self, item: A.Import) -> None:
        """`import dotdo: EventRecord`: dotdo's public data types (already loaded)."""
        for name in item.names:
            if self.dunder(item.pos, name, "the name"):
                continue
            found = host_type(name)
            if isinstance(found, str):
                self.env.report(
                    item.pos,
                    found,
                    "dotdo offers its records and errors, like EventRecord or PermanentError",
                    code="not-a-type",
                )
                continue
            self.add_type(item.pos, found)

    def add_type(self, pos: A.Pos, found: TypeInfo) -> None:
        name = found.name
        if found.module == HOST and (name in EXCEPTIONS or name in TYPES):
            return  # importing a built-in type of .flow explicitly changes nothing
        if name in self.env.types or name in TYPES or name in EXCEPTIONS:
            self.env.report(
                pos,
                f"the type name `{name}` is already taken",
                "each type name can be imported once (built-in ones not at all)",
                code="dup-type",
            )
        elif name in BUILTINS or name in RESERVED:
            self.env.report(pos, f"`{name}` is a built-in name of .flow", code="reserved-name")
        else:
            self.env.types[name] = found

    # ------------------------------------------------------------------- steps
    def step(self, decl: A.StepDecl) -> None:
        name = decl.name
        env = self.env
        if self.dunder(decl.pos, name, "the step"):
            return
        if name in env.steps:
            env.report(decl.pos, f"the step `{name}` is declared twice", code="dup-step")
            return
        clash = self.clash(name)
        if clash:
            env.report(decl.pos, f"a step cannot be called `{name}`: {clash}", code="reserved-name")
            return
        if decl.options.step_id is not None:
            env.report(
                decl.pos,
                "`as` names one call of a step, not its declaration",
                'write it where the step runs: `x = do step(...) as "id"`',
                code="bad-option",
            )
        bound = self.bind(decl)
        policy = policy_from(env, decl.options, Policy(), decl.pos, mode="decl")
        if bound is None:
            bound = ResolvedStep(name, None, policy, decl.options.compensate, decl, name)
        bound.policy = policy
        env.steps[name] = bound

    def clash(self, name: str) -> str | None:
        if name in RESERVED or name in BUILTINS:
            return "that is a built-in name of .flow"
        if name in _DO_NAMES:
            return "the engine uses that name itself"
        if name in self.env.types or name in EXCEPTIONS or name in TYPES:
            return "that is the name of a type"
        if name in self.env.workflows:
            return "a workflow has that name"
        return None

    def bind(self, decl: A.StepDecl) -> ResolvedStep | None:
        """The function a declaration names, as its module's source defines it."""
        env = self.env
        if decl.module is not None and decl.function is not None:
            where = f"{decl.module}:{decl.function}"
            if self.dunder(decl.pos, decl.function, "the function"):
                return None
            module = self._module(decl.pos, decl.module, "import", "examples.flow_steps")
            if module is None:
                return None
            if decl.function not in module.bindings and decl.function not in module.imports:
                env.report(
                    decl.pos,
                    f"`{decl.module}` has no function `{decl.function}`",
                    suggest(decl.function, _functions(module)),
                    code="unknown-step",
                )
                return None
            return self.function(decl, decl.module, module, decl.function, where)
        found = [
            (m, mod)
            for m, mod in self.modules
            if decl.name in mod.bindings or decl.name in mod.imports
        ]
        if not found:
            if self.modules:
                names = [n for _, mod in self.modules for n in _functions(mod)]
                used = ", ".join(m for m, _ in self.modules)
                env.report(
                    decl.pos,
                    f"the step `{decl.name}` is not a function of {used}",
                    suggest(decl.name, names) or f"bind it: step {decl.name} = module:function",
                    code="unknown-step",
                )
            elif not any(isinstance(i, A.Use) for i in env.module.items):
                env.report(
                    decl.pos,
                    f"the step `{decl.name}` is not bound to a function",
                    f"add `use some.module` at the top, or `step {decl.name} = module:function`",
                    code="unknown-step",
                )
            return None
        if len(found) > 1:
            env.report(
                decl.pos,
                f"the step `{decl.name}` exists in {found[0][0]} and {found[1][0]}",
                f"say which one: step {decl.name} = {found[0][0]}:{decl.name}",
                code="ambiguous-step",
            )
        module_name, module = found[0]
        where = f"{module_name}:{decl.name}"
        return self.function(decl, module_name, module, decl.name, where)

    def function(
        self, decl: A.StepDecl, module_name: str, module: ModuleInfo, name: str, where: str
    ) -> ResolvedStep | None:
        found = module.function(name)
        if isinstance(found, str):
            self.env.report(
                decl.pos,
                f"`{where}` cannot be a step: {found}",
                "a step runs a plain Python function (def or async def) of its module",
                code="not-a-function",
            )
            return None
        return ResolvedStep(
            decl.name,
            None,
            Policy(),
            decl.options.compensate,
            decl,
            where,
            module=module_name,
            function=name,
            line=found.line,
            signature=found.signature,
        )

    def check_compensator(self, step: ResolvedStep) -> None:
        if step.compensate is None:
            return
        check_compensator(self.env, step.compensate, step.decl.pos)

    # --------------------------------------------------------------- workflows
    def declare_workflow(self, wf: A.Workflow) -> None:
        if self.dunder(wf.pos, wf.name, "the workflow"):
            return
        if wf.name in self.env.workflows:
            self.env.report(wf.pos, f"the workflow `{wf.name}` is defined twice", code="dup-wf")
            return
        self.env.workflows[wf.name] = wf

    def target(self, pos: A.Pos, name: str, what: str) -> A.Workflow | None:
        wf = self.env.workflows.get(name)
        if wf is None:
            self.env.report(
                pos,
                f"{what} runs `{name}`, which is not a workflow of this file",
                suggest(name, self.env.workflows) or "define it with `workflow name(...):`",
                code="unknown-workflow",
            )
        return wf

    def every(self, item: A.Every) -> None:
        env = self.env
        schedule = schedule_from(env, item)
        wf = self.target(item.pos, item.target, "this schedule")
        if wf is not None:
            required = [p.name for p in wf.params if p.default is None]
            if required:
                env.report(
                    item.pos,
                    f"a scheduled workflow starts with no input, but `{wf.name}` needs "
                    f"{', '.join(required)}",
                    "give those parameters default values",
                    code="schedule-params",
                )
        if any(target == item.target for _, target in env.schedules):
            env.report(
                item.pos,
                f"`{item.target}` already has a schedule; the engine runs one per workflow",
                "keep one `every` line for it",
                code="dup-trigger",
            )
        elif schedule is not None:
            env.schedules.append((schedule, item.target))

    def on(self, item: A.On) -> None:
        env = self.env
        if not EVENT_PATTERN.fullmatch(item.pattern):
            env.report(
                item.pos,
                f"bad event pattern {item.pattern!r}",
                "use dotted names of letters, digits and _, where a part may be *: Order.placed, "
                "*.failed, Order.*",
                code="bad-event",
            )
        wf = self.target(item.pos, item.target, "this handler")
        if wf is not None:
            required = [p for p in wf.params if p.default is None]
            if len(wf.params) < 1 or len(required) > 1:
                env.report(
                    item.pos,
                    f"an event handler receives the event: `{wf.name}` must take one parameter",
                    f"write `workflow {wf.name}(event):`",
                    code="handler-params",
                )
        if any(target == item.target for _, target in env.handlers):
            env.report(
                item.pos,
                f"`{item.target}` already handles an event; the engine gives a workflow one `on`",
                "use a wildcard (Order.*) or a second workflow",
                code="dup-trigger",
            )
        else:
            env.handlers.append((item.pattern, item.target))


def _functions(module: ModuleInfo) -> list[str]:
    return [n for n in module.functions if not n.startswith("_")]
