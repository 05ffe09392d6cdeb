"""What the checker and compiler share about one file: its tree, its resolved names, and
the diagnostics found so far, each positioned in the source the author wrote."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dotdo.compiler.ir import Policy
from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.diagnostics import Diagnostic
from dotdo.dsl.flow.grammar import source_line
from dotdo.dsl.flow.sandbox import FlowPolicy, Located
from dotdo.dsl.flow.static import TypeInfo
from dotdo.engine.triggers import Schedule

__all__ = ["FlowEnv", "ResolvedStep", "UsedModule", "suggest"]


@dataclass
class ResolvedStep:
    """A declared step: the function it runs, its retry policy, its undo.

    The checker knows the function from its module's source (`module`, `function`, `line`,
    `signature`); `fn` is the live function, set only when the loader imports the module.
    """

    name: str
    fn: Callable[..., Any] | None
    policy: Policy
    compensate: str | None
    decl: A.StepDecl
    where: str = ""
    module: str | None = None
    function: str | None = None
    line: int = 0
    signature: inspect.Signature | None = None


@dataclass(frozen=True)
class UsedModule:
    """A module the file names, allowed by its policy: where its source is, and the first
    line that names it (where a problem found when importing it is reported)."""

    located: Located
    pos: A.Pos


@dataclass
class FlowEnv:
    """A file with its names resolved, and every diagnostic found so far."""

    path: str
    text: str
    module: A.Module
    steps: dict[str, ResolvedStep] = field(default_factory=dict)
    types: dict[str, TypeInfo] = field(default_factory=dict)
    """Imported data classes by name, as their modules' source shows them."""
    modules: dict[str, UsedModule] = field(default_factory=dict)
    """Every module the file reaches (use, import, step bindings), by name."""
    policy: FlowPolicy | None = None
    workflows: dict[str, A.Workflow] = field(default_factory=dict)
    schedules: list[tuple[Schedule, str]] = field(default_factory=list)
    handlers: list[tuple[str, str]] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return Path(self.path).stem

    def report(
        self,
        pos: A.Pos,
        message: str,
        expected: str | None = None,
        *,
        code: str = "semantic",
        severity: Literal["error", "warning"] = "error",
    ) -> None:
        self.diagnostics.append(
            Diagnostic(
                self.path,
                pos.line,
                pos.col,
                message,
                expected,
                source_line(self.text, pos.line),
                code=code,
                severity=severity,
            )
        )

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def suggest(name: str, candidates: Any) -> str | None:
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return f"did you mean `{found[0]}`?" if found else None
