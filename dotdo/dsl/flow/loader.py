"""Load a `.flow` file into workflows the engine runs exactly like decorated Python ones.

The engine knows one kind of workflow: a `WorkflowDef` with a graph, a program, an owner
DO class to instantiate, a signature and type hints. A flow provides that surface. Its
owner is a DO subclass made for the file, whose attributes are the bound step functions
(`self.charge_payment(x)` calls `examples.flow_steps.charge_payment(x)`), each carrying its
retry policy where compensation looks for it. Its program runs against a namespace that
holds only the flow builtins and the imported types.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import reduce
from pathlib import Path
from typing import Any

from dotdo.compiler.codegen import Program, build_program
from dotdo.compiler.ir import Graph, Policy
from dotdo.compiler.render import Diagram, entries_of, to_svg
from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.bind import FlowOrigin, bind
from dotdo.dsl.flow.builtins import TYPES, runtime_namespace
from dotdo.dsl.flow.checker import analyze
from dotdo.dsl.flow.compile import compile_env
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowError
from dotdo.dsl.flow.env import FlowEnv, ResolvedStep
from dotdo.dsl.flow.grammar import too_deep
from dotdo.dsl.flow.sandbox import FlowPolicy, policy_for
from dotdo.dsl.python.decorators import WorkflowDef
from dotdo.dsl.python.do import DO
from dotdo.engine.triggers import Schedule
from dotdo.errors import DotdoError

__all__ = [
    "FlowModule",
    "FlowStep",
    "FlowWorkflow",
    "flow_diagram",
    "load_flow",
    "load_source",
]


class FlowStep:
    """A step of a flow, as an attribute of the flow's DO class.

    On an instance it is the plain function (no `self`), so sync and async functions keep
    their nature for the engine's timeout handling; on the class it is this object, whose
    `policy` is what compensation reads for an undo step.
    """

    def __init__(self, name: str, fn: Callable[..., Any], policy: Policy) -> None:
        self.name = name
        self.fn = fn
        self.policy = policy
        self.__doc__ = getattr(fn, "__doc__", None)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        return self if instance is None else self.fn

    def __repr__(self) -> str:
        return f"<flow step {self.name} -> {getattr(self.fn, '__qualname__', self.fn)!r}>"


def _placeholder(qualname: str, name: str, doc: str | None) -> Callable[..., Any]:
    """A distinct function per workflow: the engine tells workflows apart by `fn` identity."""

    async def flow_workflow(*args: Any, **kwargs: Any) -> Any:
        raise DotdoError(f"{qualname} is a .flow workflow: start it with an Engine")

    flow_workflow.__name__ = name
    flow_workflow.__qualname__ = qualname
    flow_workflow.__doc__ = doc
    return flow_workflow


class FlowWorkflow(WorkflowDef[Callable[..., Any]]):
    """One workflow of a `.flow` file, with the surface the engine uses."""

    def __init__(
        self,
        module_name: str,
        node: A.Workflow,
        graph: Graph,
        owner: type[DO],
        namespace: dict[str, Any],
        hints: dict[str, Any],
        signature: inspect.Signature,
    ) -> None:
        qualname = f"{module_name}.{node.name}"
        super().__init__(_placeholder(qualname, node.name, None))
        self.name = node.name
        self.owner = owner
        self.node = node
        self._graph = graph
        self._flow_qualname = qualname
        self._flow_hints = hints
        self._flow_signature = signature
        self.namespace = namespace
        """Globals of the compiled node code: the flow builtins, types and helpers only."""

    @property
    def qualname(self) -> str:
        return self._flow_qualname

    def compile(self, steps: Any) -> Graph:
        return self.graph  # compiled when the file was loaded

    def program(self, graph: Graph | None = None) -> Program:
        graph = graph or self.graph
        found = self._programs.get(graph.hash)
        if found is None:
            found = build_program(graph, self.namespace)
            self._programs[graph.hash] = found
        return found

    def cells(self) -> dict[str, Any]:
        return {}

    def type_hints(self) -> dict[str, Any]:
        return dict(self._flow_hints)

    def signature(self) -> inspect.Signature:
        return self._flow_signature

    def __repr__(self) -> str:
        return f"<flow workflow {self.qualname}>"


@dataclass
class FlowModule:
    """A loaded `.flow` file: its workflows, schedules and event handlers."""

    path: Path
    name: str
    workflows: dict[str, FlowWorkflow]
    schedules: list[tuple[Schedule, str]] = field(default_factory=list)
    """(schedule, workflow name) for each `every` line."""
    handlers: list[tuple[str, str]] = field(default_factory=list)
    """(event pattern, workflow name) for each `on` line."""
    owner: type[DO] = DO
    warnings: list[Diagnostic] = field(default_factory=list)

    def __getitem__(self, name: str) -> FlowWorkflow:
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(self.workflows) or "none"
            raise DotdoError(f"{self.path} has no workflow {name!r} (it has: {known})") from None

    @property
    def graphs(self) -> dict[str, Graph]:
        return {name: wf.graph for name, wf in self.workflows.items()}

    def _repr_svg_(self) -> str | None:
        """Every workflow of the file in one diagram, so a notebook shows it by itself."""
        entries = entries_of(self.workflows)
        return to_svg(Diagram(self.graphs, entries, name=self.path.name))


_CACHE: dict[tuple[str, str, FlowPolicy], FlowModule] = {}


def load_flow(
    path: str | os.PathLike[str],
    *,
    flow_modules: Iterable[str] | None = None,
    engine: Any = None,
) -> FlowModule:
    """Parse, check and compile a `.flow` file. Raises FlowError listing every problem.

    The file may name its own project's modules and those in `flow_modules` (modules or
    packages the host allows; also `[tool.dotdo] flow-modules` in the project's
    pyproject.toml). Only those are imported, once the file has been checked. With
    `engine=`, the engine's `flow_modules` are the default and the file is registered on it.

    Loading the same unchanged file again returns the same module, so registering it twice
    on one engine is harmless, as it is for a Python class.
    """
    file = Path(path)
    text = _read(file)
    if flow_modules is None and engine is not None:
        flow_modules = engine.flow_modules
    module = load_source(text, str(file.resolve()), flow_modules=flow_modules)
    if engine is not None:
        engine.register(module)
    return module


def load_source(
    text: str, path: str = "<flow>", *, flow_modules: Iterable[str] | None = None
) -> FlowModule:
    """`load_flow` for text in hand; `path` names it in diagnostics and workflow names, and
    its directory decides the project (the working directory for a path that is no file)."""
    policy = policy_for(path, flow_modules)
    key = (path, hashlib.sha256(text.encode()).hexdigest(), policy)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    env = analyze(text, path, policy=policy)
    graphs = _compiled(env)
    live_types = bind(env)
    module = _build(env, graphs, live_types, policy)
    _CACHE[key] = module
    return module


def _compiled(env: FlowEnv) -> dict[str, Graph]:
    """The graphs of a checked file; FlowError listing every problem if it is not ok."""
    if not env.ok:
        raise FlowError([d for d in env.diagnostics if d.is_error])
    try:
        return compile_env(env)
    except RecursionError:
        raise FlowError([too_deep(env.text, env.path)]) from None


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FlowError(
            [Diagnostic(str(file), 1, 1, f"cannot read the file: {reason}", code="unreadable")]
        ) from None


def flow_diagram(
    path: str | os.PathLike[str], *, flow_modules: Iterable[str] | None = None
) -> Diagram:
    """Every workflow of a `.flow` file, for one drawing: its graph, and its schedules and
    event handlers as entry points. Nothing is imported. Raises FlowError."""
    file = Path(path)
    text = _read(file)
    env = analyze(text, str(file.resolve()), flow_modules=flow_modules)
    graphs = _compiled(env)
    entries: dict[str, list[str]] = {}
    for schedule, target in env.schedules:
        entries.setdefault(target, []).append(schedule.spec)
    for pattern, target in env.handlers:
        entries.setdefault(target, []).append(f"on {pattern}")
    return Diagram(graphs, entries, name=file.name)


def _build(
    env: FlowEnv, graphs: dict[str, Graph], live_types: dict[str, type], policy: FlowPolicy
) -> FlowModule:
    stem = env.stem
    attrs: dict[str, Any] = {
        "__doc__": f"Steps of {env.path}, bound to their Python functions.",
        "__module__": __name__,
    }
    for name, step in env.steps.items():
        attrs[name] = FlowStep(name, _bound(step), step.policy)
    class_name = "".join(part.capitalize() for part in stem.replace("-", "_").split("_")) or "Flow"
    attrs["__dotdo_flow__"] = FlowOrigin(env.path, env.text, policy.root, dict(env.modules))
    owner: type[DO] = types.new_class(
        f"{class_name}Flow", (DO,), exec_body=lambda ns: ns.update(attrs)
    )
    namespace = runtime_namespace(live_types)
    workflows: dict[str, FlowWorkflow] = {}
    for name, node in env.workflows.items():
        hints = _hints(node, live_types)
        workflows[name] = FlowWorkflow(
            stem, node, graphs[name], owner, namespace, hints, _signature(node, hints)
        )
    owner.__dotdo_workflows__ = dict(workflows)
    for schedule, target in env.schedules:
        if workflows[target].schedule is None:
            workflows[target].schedule = schedule
    for pattern, target in env.handlers:
        if workflows[target].trigger is None:
            workflows[target].trigger = pattern
    return FlowModule(
        path=Path(env.path),
        name=stem,
        workflows=workflows,
        schedules=list(env.schedules),
        handlers=list(env.handlers),
        owner=owner,
        warnings=[d for d in env.diagnostics if not d.is_error],
    )


def _bound(step: ResolvedStep) -> Callable[..., Any]:
    assert step.fn is not None  # the checker reported unbound steps
    return step.fn


def _type(ref: A.TypeRef, types_: dict[str, type]) -> Any:
    if isinstance(ref, A.TypeUnion):
        return reduce(lambda a, b: a | b, (_type(t, types_) for t in ref.options))
    base: Any = types_.get(ref.name, TYPES.get(ref.name))
    if ref.args:
        args = tuple(_type(a, types_) for a in ref.args)
        return base[args if len(args) > 1 else args[0]]
    return base


def _hints(node: A.Workflow, types_: dict[str, type]) -> dict[str, Any]:
    hints = {p.name: _type(p.type, types_) for p in node.params if p.type is not None}
    if node.returns is not None:
        hints["return"] = _type(node.returns, types_)
    return hints


def _signature(node: A.Workflow, hints: dict[str, Any]) -> inspect.Signature:
    """`(self, order: Order) -> Receipt`, as `inspect.signature` of a method would say."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind)]
    for p in node.params:
        default = _literal(p.default) if p.default is not None else inspect.Parameter.empty
        annotation = hints.get(p.name, inspect.Parameter.empty)
        params.append(inspect.Parameter(p.name, kind, default=default, annotation=annotation))
    returns = hints.get("return", inspect.Signature.empty)
    return inspect.Signature(params, return_annotation=returns)


def _literal(e: A.Expr) -> Any:
    """A default value (the checker allowed literals only)."""
    if isinstance(e, A.Const):
        return e.value
    if isinstance(e, A.Str):
        return e.literal
    if isinstance(e, A.Duration):
        return timedelta(seconds=e.seconds)
    if isinstance(e, A.UnaryOp):
        value = _literal(e.operand)
        return -value if e.op == "-" else value
    if isinstance(e, A.ListLit):
        return [_literal(i) for i in e.items]
    if isinstance(e, A.DictLit):
        return {k: _literal(v) for k, v in e.items}
    raise TypeError(f"not a literal: {e!r}")
