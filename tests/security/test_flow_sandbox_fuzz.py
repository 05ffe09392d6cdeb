"""Hypothesis fuzz of `.flow` declarations: checking never runs a module, and a file passes
only when everything it names is allowed; loading imports nothing else.

Each example draws `use`, `import` and `step` lines naming modules from every class the
issue lists (standard library, installed packages, dotdo itself, the project, a module
outside it, private and dunder names, missing ones) and names within them (functions,
re-exports, builtins, data classes, plain classes, callable-holding models). Two project
modules leave a marker file when their top-level code runs. The second property takes the
generated programs of `_flow_programs` (the crash suites' generator) and rebinds their steps
to a drawn module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import _flow_programs as F
from _property_support import SETTINGS
from conftest import ROOT, Project, side_effect
from hypothesis import event, given
from hypothesis import strategies as st

from dotdo.dsl.flow.checker import check_source
from dotdo.dsl.flow.loader import load_source

STDLIB = ["os", "subprocess", "builtins", "io", "operator", "importlib", "os.path", "ctypes"]
STDLIB += ["pickle", "json", "sys", "posix", "functools", "types", "shutil"]
INSTALLED = ["pydantic", "httpx", "click", "hypothesis", "lark", "networkx"]
HOST = ["dotdo", "dotdo.cli", "dotdo.engine.engine", "dotdo.errors"]
ODD = ["_fz", "fz_steps._x", "__main__", "fz_steps.__init__", "nope_mod", "fz_out.inner"]
MODULES = st.sampled_from([*STDLIB, *INSTALLED, *HOST, *ODD, "fz_steps", "fz_out"])
FUNCTIONS = st.sampled_from(
    [
        "ok_step",
        "system",
        "popen",
        "_hidden",
        "__init__",
        "eval",
        "run",
        "Popen",
        "map",
        "attrgetter",
        "Good",
        "Plain",
        "loads",
        "get",
        "main",
        "import_module",
    ]
)
TYPES = st.sampled_from(
    [
        "Good",
        "Hook",
        "Plain",
        "Popen",
        "FileIO",
        "map",
        "attrgetter",
        "ImportString",
        "BaseModel",
        "EventRecord",
        "Engine",
        "_Hidden",
        "__class__",
        "ok_step",
    ]
)

STEPS = """\
import os
from collections.abc import Callable
from operator import attrgetter
from os import system

from pydantic import BaseModel

popen = os.popen


def ok_step(x):
    return x


def _hidden(x):
    return x


class Good(BaseModel):
    x: int = 0


class Hook(BaseModel):
    fn: Callable[[int], int]


class Plain:
    pass
"""

SAFE_STEPS = {("fz_steps", "ok_step")}
SAFE_TYPES = {("fz_steps", "Good"), ("dotdo", "EventRecord")}

Decl = tuple[str, str, str]


@st.composite
def declarations(draw: st.DrawFn) -> list[Decl]:
    binds = draw(st.lists(st.tuples(st.just("bind"), MODULES, FUNCTIONS), max_size=3))
    uses = draw(st.lists(st.tuples(st.just("use"), MODULES, FUNCTIONS), max_size=1))
    imports = draw(
        st.lists(st.tuples(st.just("import"), MODULES, TYPES), max_size=3, unique_by=lambda d: d[2])
    )
    decls: list[Decl] = [*binds, *uses, *imports]
    if not decls:
        decls = [("bind", draw(MODULES), draw(FUNCTIONS))]
    if draw(st.booleans()):
        # Near misses: everything allowed but (perhaps) one hostile line.
        hostile = draw(st.integers(-len(decls), len(decls) - 1))
        safe_imports = iter(sorted(SAFE_TYPES))
        decls = [
            d
            if i == hostile
            else (d[0], *next(safe_imports, ("dotdo", "EventRecord")))
            if d[0] == "import"
            else (d[0], "fz_steps", "ok_step")
            for i, d in enumerate(decls)
        ]
        decls = list({(k, m, n): None for k, m, n in decls if k != "import"}) + list(
            {n: (k, m, n) for k, m, n in decls if k == "import"}.values()
        )
    return draw(st.permutations(decls))


def render(decls: list[Decl]) -> str:
    head: list[str] = []
    calls: list[str] = []
    for i, (kind, module, name) in enumerate(decls):
        if kind == "bind":
            head.append(f"step s{i} = {module}:{name}")
            calls.append(f"s{i}")
        elif kind == "use":
            head += [f"use {module}", f"step {name}"]
            calls.append(name)
        else:
            head.append(f"import {module}: {name}")
    body = [f"    v{i} = do {call}(x)" for i, call in enumerate(calls)]
    return "\n".join([*head, "", "workflow w(x: int):", *body, "    return x", ""])


def safe(decls: list[Decl]) -> bool:
    for kind, module, name in decls:
        if kind == "import" and (module, name) not in SAFE_TYPES:
            return False
        if kind != "import" and (module, name) not in SAFE_STEPS:
            return False
    return True


def fresh_modules(before: set[str]) -> set[str]:
    return set(sys.modules) - before


def test_the_fuzz_project_itself_is_sound(project: Project, elsewhere: Project) -> None:
    """The safe declarations pass, so the property's `safe -> passes` is not vacuous."""
    project.write("fz_steps", STEPS)
    text = render([("bind", "fz_steps", "ok_step"), ("import", "dotdo", "EventRecord")])
    assert [d for d in check_source(text, "fz.flow") if d.is_error] == []


@SETTINGS
@given(decls=declarations())
def test_checking_runs_nothing_and_passes_only_what_is_allowed(
    project: Project, elsewhere: Project, decls: list[Decl]
) -> None:
    inside, outside = project.marker("fz_steps"), elsewhere.marker("fz_out")
    if not (project.root / "fz_steps.py").exists():
        project.write("fz_steps", side_effect(inside) + STEPS)
        elsewhere.write("fz_out", side_effect(outside) + STEPS)
    text = render(decls)
    lines = text.count("\n")
    project.forget()
    elsewhere.forget()
    before = set(sys.modules)
    diagnostics = check_source(text, str(project.root / "fz.flow"))
    assert fresh_modules(before) == set(), text
    assert not inside.exists() and not outside.exists(), text
    for d in diagnostics:
        assert 1 <= d.line <= lines and d.col >= 1, (d, text)
    errors = [d for d in diagnostics if d.is_error]
    event("allowed" if safe(decls) else "refused")
    assert (errors == []) == safe(decls), (text, [d.render() for d in errors])
    if errors:
        return
    module = load_source(text, str(project.root / "fz.flow"))
    imported = fresh_modules(before)
    assert imported <= {"fz_steps"}, imported
    assert inside.exists() == ("fz_steps" in imported)
    assert not outside.exists()
    assert module["w"].graph is not None
    inside.unlink(missing_ok=True)


@SETTINGS
@given(ops=F.programs(), module=MODULES, keep=st.booleans())
def test_generated_programs_rebound_to_any_module_are_refused(
    ops: list[Any], module: str, keep: bool
) -> None:
    """The crash suites' programs check clean as generated; bound to any other module, never,
    and checking them imports nothing."""
    text = F.render(ops, "flow").text
    target = "flow_program_steps" if keep else module
    text = text.replace("= flow_program_steps:", f"= {target}:")
    path = str(ROOT / "tests" / "generated.flow")  # in this project, as the generator's steps
    before = set(sys.modules)
    errors = [d for d in check_source(text, path) if d.is_error]
    assert fresh_modules(before) == set()
    bound = "= flow_program_steps:" in F.render(ops, "flow").text
    assert (errors == []) == (keep or not bound), (text, [d.render() for d in errors])
    for d in errors:
        assert d.code in ("not-allowed", "not-a-function", "private-name", "dunder", "bad-module")


def test_no_marker_means_nothing_ran(tmp_path: Path) -> None:
    """`side_effect` really leaves its marker when the module runs (the fuzz relies on it)."""
    marker = tmp_path / "m.ran"
    exec(compile(side_effect(marker), "m.py", "exec"), {})
    assert marker.exists()
