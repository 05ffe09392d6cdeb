"""Check a `.flow` file and report every problem in it, each with its position.

Parsing stops at the first syntax error (what follows it cannot be trusted), but the
semantic checks run to the end and collect everything: undefined names, unknown or
undeclared steps, wrong argument counts, duplicate step ids, code after `return`, calls
that are neither steps nor builtins, `__` anywhere. A file that passes is compiled, and the
graph's own validation runs too, so `check_file` says all the compiler would say.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dotdo.dsl.flow import nodes as A
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowError
from dotdo.dsl.flow.env import FlowEnv
from dotdo.dsl.flow.grammar import normalise, too_deep
from dotdo.dsl.flow.parser import parse_source
from dotdo.dsl.flow.resolve import Resolver
from dotdo.dsl.flow.rules import BodyChecker
from dotdo.dsl.flow.sandbox import FlowPolicy, policy_for

__all__ = ["analyze", "check_file", "check_files", "check_source"]


def analyze(
    text: str,
    path: str = "<flow>",
    *,
    flow_modules: Iterable[str] | None = None,
    policy: FlowPolicy | None = None,
) -> FlowEnv:
    """Parse, resolve and check `text`; the env's diagnostics list every problem found.

    Modules are read, never imported. `flow_modules` adds to what the file's project allows
    (see `flow_sandbox`); `policy`, when given, replaces the whole decision.
    """
    policy = policy or policy_for(path, flow_modules)
    try:
        module = parse_source(text, path)
    except FlowError as exc:
        env = FlowEnv(path, text, A.Module(()), policy=policy)
        env.diagnostics.extend(exc.diagnostics)
        return env
    env = Resolver(FlowEnv(path, normalise(text), module, policy=policy)).run()
    used: set[str] = set()
    try:
        for wf in env.workflows.values():
            BodyChecker(env, wf, used).run()
    except RecursionError:
        env.diagnostics.append(too_deep(env.text, path))
        return env
    for name, step in env.steps.items():
        if step.signature is None:
            continue
        if name not in used and not any(s.compensate == name for s in env.steps.values()):
            env.report(
                step.decl.pos,
                f"the step `{name}` is declared but never used",
                code="unused-step",
                severity="warning",
            )
    env.diagnostics.sort(key=lambda d: (d.line, d.col))
    return env


def check_source(
    text: str, path: str = "<flow>", *, flow_modules: Iterable[str] | None = None
) -> list[Diagnostic]:
    """Every problem in `text`: syntax, names, steps, schedules, and the compiled graphs.

    Nothing the file names is imported: modules are read as source (`flow_static`)."""
    from dotdo.dsl.flow.compile import compile_env

    env = analyze(text, path, flow_modules=flow_modules)
    if env.ok:
        try:
            compile_env(env)
        except FlowError as exc:
            env.diagnostics.extend(exc.diagnostics)
        except RecursionError:
            env.diagnostics.append(too_deep(env.text, path))
    return env.diagnostics


def check_file(
    path: str | os.PathLike[str], *, flow_modules: Iterable[str] | None = None
) -> list[Diagnostic]:
    """`check_source` of a file; a file that cannot be read is one diagnostic too."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [Diagnostic(name, 1, 1, f"cannot read the file: {reason}", code="unreadable")]
    return check_source(text, name, flow_modules=flow_modules)


def check_files(
    paths: Iterable[str | os.PathLike[str]], *, flow_modules: Iterable[str] | None = None
) -> list[Diagnostic]:
    """Every diagnostic of every file, in file order (what `dotdo check FILE...` prints)."""
    allowed = tuple(flow_modules or ())
    return [d for path in paths for d in check_file(path, flow_modules=allowed)]
