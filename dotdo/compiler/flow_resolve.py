"""Resolve a `.flow` file's declarations against the Python world it names.

`use` and `import` lines name modules; steps name functions in them; schedules and event
handlers name workflows of the file. Everything is looked up here, once, and every problem
becomes a positioned diagnostic rather than an ImportError or AttributeError later. The
result, a `FlowEnv`, is what the statement checker and the compiler work from.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from dotdo.compiler.flow_builtins import BUILTINS, EXCEPTIONS, RESERVED, TYPES
from dotdo.compiler.flow_env import EVENT_PATTERN, FlowEnv, ResolvedStep, suggest
from dotdo.compiler.flow_options import check_compensator, policy_from, schedule_from
from dotdo.compiler.ir import Policy
from dotdo.dsl import flow_ast as A
from dotdo.dsl.do import DO

__all__ = ["Resolver"]

_DO_NAMES = frozenset(dir(DO)) | {"entity_id", "run_id", "sent"}


def _import(module: str) -> tuple[Any, str | None]:
    """Import as `python -m` would from the current directory (kept last on the path, so
    it never shadows an installed package)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # the user's module may fail in any way while importing
        return None, f"{type(exc).__name__}: {exc}"


class Resolver:
    """Top-level declarations: modules, types, steps, schedules, handlers."""

    def __init__(self, env: FlowEnv) -> None:
        self.env = env
        self.modules: list[tuple[str, Any]] = []

    def run(self) -> FlowEnv:
        items = self.env.module.items
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
        if "__" in name:
            self.env.report(
                pos,
                f"{what} `{name}` contains '__', which .flow files do not allow",
                "double underscores reach Python internals; rename it",
                code="dunder",
            )
            return True
        return False

    def _module(self, item: A.Use | A.Import, what: str, example: str) -> Any:
        """The module `item` names, or None after reporting why it cannot be had."""
        if self.dunder(item.pos, item.module, "the module"):
            return None
        module, problem = _import(item.module)
        if module is None:
            self.env.report(
                item.pos,
                f"cannot {what} `{item.module}`: {problem}",
                f"give a module Python can import (a dotted path, like {example})",
                code="bad-module",
            )
        return module

    def use(self, item: A.Use) -> None:
        module = self._module(item, "use module", "examples.flow_steps")
        if module is not None:
            self.modules.append((item.module, module))

    def import_(self, item: A.Import) -> None:
        module = self._module(item, "import", "examples.orders")
        if module is None:
            return
        for name in item.names:
            if self.dunder(item.pos, name, "the name"):
                continue
            value = getattr(module, name, None)
            if value is None:
                public = [n for n in vars(module) if not n.startswith("_")]
                self.env.report(
                    item.pos,
                    f"`{item.module}` has no type named `{name}`",
                    suggest(name, public) or f"check the spelling, or the module {item.module}",
                    code="unknown-type",
                )
            elif not isinstance(value, type):
                self.env.report(
                    item.pos,
                    f"`{item.module}.{name}` is not a type (it is a {type(value).__name__})",
                    "import only classes: pydantic models, dataclasses, errors",
                    code="not-a-type",
                )
            elif value is EXCEPTIONS.get(name) or value is TYPES.get(name):
                continue  # importing a built-in type of .flow explicitly changes nothing
            elif name in self.env.types or name in TYPES or name in EXCEPTIONS:
                self.env.report(
                    item.pos,
                    f"the type name `{name}` is already taken",
                    "each type name can be imported once (built-in ones not at all)",
                    code="dup-type",
                )
            elif name in BUILTINS or name in RESERVED:
                self.env.report(
                    item.pos, f"`{name}` is a built-in name of .flow", code="reserved-name"
                )
            else:
                self.env.types[name] = value

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
        fn, where = self.bind(decl)
        policy = policy_from(env, decl.options, Policy(), decl.pos, mode="decl")
        env.steps[name] = ResolvedStep(name, fn, policy, decl.options.compensate, decl, where)

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

    def bind(self, decl: A.StepDecl) -> tuple[Callable[..., Any] | None, str]:
        env = self.env
        if decl.module is not None and decl.function is not None:
            where = f"{decl.module}:{decl.function}"
            if self.dunder(decl.pos, where, "the function"):
                return None, where
            module, problem = _import(decl.module)
            if module is None:
                env.report(decl.pos, f"cannot import `{decl.module}`: {problem}", code="bad-module")
                return None, where
            fn = getattr(module, decl.function, None)
            if fn is None:
                env.report(
                    decl.pos,
                    f"`{decl.module}` has no function `{decl.function}`",
                    suggest(decl.function, _functions(module)),
                    code="unknown-step",
                )
                return None, where
            return self.callable_(decl, fn, where), where
        found = [(m, getattr(mod, decl.name)) for m, mod in self.modules if hasattr(mod, decl.name)]
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
            return None, decl.name
        if len(found) > 1:
            env.report(
                decl.pos,
                f"the step `{decl.name}` exists in {found[0][0]} and {found[1][0]}",
                f"say which one: step {decl.name} = {found[0][0]}:{decl.name}",
                code="ambiguous-step",
            )
        module_name, fn = found[0]
        where = f"{module_name}:{decl.name}"
        return self.callable_(decl, fn, where), where

    def callable_(self, decl: A.StepDecl, fn: Any, where: str) -> Callable[..., Any] | None:
        if not callable(fn) or isinstance(fn, type):
            self.env.report(
                decl.pos,
                f"`{where}` is not a function",
                "a step runs a Python function (def or async def)",
                code="not-a-function",
            )
            return None
        return fn  # type: ignore[no-any-return]

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


def _functions(module: Any) -> list[str]:
    return [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
