"""Import what a checked `.flow` file names, and make sure it is what the checker read.

The checker decided from source text alone (`flow_static`); loading is where modules run.
Only modules the file's policy allowed are imported (they are the host's own code), and
then every bound object is checked again, live: a step must be the very function the
checker saw (a plain function, defined in its module, same file, same first line), and an
imported type the very class, still a data class whose fields hold no code. A module that
rebinds a name at import time (`globals()[...] = ...`) is caught here. An engine checks a
loaded flow once more against its own allow-list when the flow is registered.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import importlib
import os
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowError
from dotdo.dsl.flow.env import FlowEnv, UsedModule
from dotdo.dsl.flow.grammar import source_line
from dotdo.dsl.flow.resolve import ALLOW_HINT
from dotdo.dsl.flow.sandbox import HOST, ensure_cwd_on_path, policy_at, refusal
from dotdo.dsl.flow.static import FORBIDDEN_FIELD_TYPES, forbidden_in_text

__all__ = ["FlowOrigin", "bind"]


@dataclass(frozen=True)
class FlowOrigin:
    """Where a loaded flow came from and which modules it reaches. It is kept on the flow's
    DO class as `__dotdo_flow__`, so an engine can re-check a flow it is handed without
    knowing about the flow front end."""

    path: str
    text: str
    root: Path
    modules: dict[str, UsedModule]

    def check(self, flow_modules: tuple[str, ...]) -> None:
        """Raise FlowError if an engine allowing `flow_modules` (besides the file's project
        and its pyproject's list) would not allow a module this flow reaches."""
        policy = policy_at(self.root, flow_modules)
        problems: list[Diagnostic] = []
        for name, used in self.modules.items():
            why = refusal(name, used.located, policy)
            if why is not None:
                problems.append(
                    Diagnostic(
                        self.path,
                        used.pos.line,
                        used.pos.col,
                        f"this engine does not allow `{name}`: {why}",
                        ALLOW_HINT,
                        source_line(self.text, used.pos.line),
                        code="not-allowed",
                    )
                )
        if problems:
            raise FlowError(problems)


def _same_file(a: str | os.PathLike[str] | None, b: str | os.PathLike[str]) -> bool:
    return a is not None and os.path.realpath(a) == os.path.realpath(b)


def bind(env: FlowEnv) -> dict[str, type]:
    """Import the env's allowed modules, bind each step's `fn`, return the imported types.

    Raises FlowError listing every object that is not what the checker read.
    """
    problems: list[Diagnostic] = []

    def report(pos: A.Pos, message: str, expected: str | None, code: str) -> None:
        problems.append(
            Diagnostic(
                env.path,
                pos.line,
                pos.col,
                message,
                expected,
                source_line(env.text, pos.line),
                code=code,
            )
        )

    ensure_cwd_on_path()
    loaded: dict[str, types.ModuleType] = {}
    for name, used in env.modules.items():
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # the host's module may fail in any way while importing
            report(
                used.pos,
                f"importing `{name}` failed: {type(exc).__name__}: {exc}",
                None,
                "import-failed",
            )
            continue
        if not _same_file(getattr(module, "__file__", None), used.located.file):
            report(
                used.pos,
                f"`{name}` was imported from {getattr(module, '__file__', None)}, not from "
                f"{used.located.file}, the source the checker read",
                "another module of that name shadows it on sys.path",
                "not-allowed",
            )
            continue
        loaded[name] = module
    for step in env.steps.values():
        owner = loaded.get(step.module or "")
        if owner is None or step.module is None or step.function is None:
            continue
        file = env.modules[step.module].located.file
        fn = vars(owner).get(step.function)
        code = getattr(fn, "__code__", None)
        if (
            type(fn) is not types.FunctionType
            or fn.__module__ != step.module
            or fn.__qualname__ != step.function
            or code is None
            or not _same_file(code.co_filename, file)
            or code.co_firstlineno != step.line
        ):
            report(
                step.decl.pos,
                f"`{step.where}` is not, once imported, the function defined on line "
                f"{step.line} of {file}: the module replaces it",
                "a step runs a plain function its module defines and leaves alone",
                "not-a-function",
            )
            continue
        step.fn = fn
    live: dict[str, type] = {}
    for name, info in env.types.items():
        host = info.module == HOST
        source = sys.modules[HOST] if host else loaded.get(info.module)
        if source is None:
            continue
        value = vars(source).get(name)
        problem = _type_problem(value, None if host else info.module, name)
        if problem is not None:
            report(_import_pos(env, name), problem, "import only data classes", "not-a-type")
            continue
        assert isinstance(value, type)
        live[name] = value
    if problems:
        raise FlowError(problems)
    return live


def _import_pos(env: FlowEnv, name: str) -> A.Pos:
    for item in env.module.items:
        if isinstance(item, A.Import) and name in item.names:
            return item.pos
    return A.Pos(1, 1)


def _type_problem(value: Any, module: str | None, name: str) -> str | None:
    """Why a live imported object is not the data class the checker read, or None."""
    if not isinstance(value, type):
        return f"`{name}` is not a class once its module is imported"
    if module is not None and (value.__module__ != module or value.__qualname__ != name):
        return f"`{name}` is {value.__module__}.{value.__qualname__}, not defined in `{module}`"
    hints: dict[str, Any]
    if issubclass(value, BaseModel):
        hints = {k: f.annotation for k, f in value.model_fields.items()}
        metadata = {k: tuple(f.metadata) for k, f in value.model_fields.items()}
    elif dataclasses.is_dataclass(value):
        hints = {f.name: f.type for f in dataclasses.fields(value)}
        metadata = {}
    elif issubclass(value, enum.Enum | Exception):
        return None
    else:
        return f"`{name}` is not a data class (a pydantic model, dataclass, enum or error)"
    for field, hint in hints.items():
        bad = _forbidden(hint, 0) or next(
            (b for m in metadata.get(field, ()) if (b := _forbidden(type(m), 0))), None
        )
        if bad is not None:
            return f"the field `{name}.{field}` holds `{bad}`: a field that holds code is not data"
    return None


_CODE_TYPES = (
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.FrameType,
)


def _forbidden(hint: Any, depth: int) -> str | None:
    """The name of a code-holding type inside the annotation `hint`, or None."""
    if depth > 20 or hint is None:
        return None
    if isinstance(hint, str):
        return forbidden_in_text(hint)
    shown = getattr(hint, "__name__", None)
    if not isinstance(shown, str):
        shown = type(hint).__name__
    if shown in FORBIDDEN_FIELD_TYPES and shown != "type":
        return shown
    if hint is type or typing.get_origin(hint) is type:
        return "type"
    if hint is collections.abc.Callable or typing.get_origin(hint) is collections.abc.Callable:
        return "Callable"
    if isinstance(hint, type) and issubclass(hint, _CODE_TYPES):
        return str(hint.__qualname__)
    if typing.get_origin(hint) is typing.Literal:
        return None
    for arg in typing.get_args(hint):
        found = _forbidden(arg if not isinstance(arg, list) else tuple(arg), depth + 1)
        if found is not None:
            return found
    for meta in getattr(hint, "__metadata__", ()):
        found = _forbidden(type(meta), depth + 1)
        if found is not None:
            return found
    return None
