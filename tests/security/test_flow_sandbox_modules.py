"""A `.flow` file reaches only the modules its host allows, and only plain data from them.

Issue 10 ("Trust boundaries") found that `dotdo check` accepted, and `dotdo run` executed,
`.flow` files binding steps to `os:system`, `use os` + `step system`, `import subprocess:
Popen`, callable-taking types (`builtins: map`, `operator: attrgetter`, `pydantic:
ImportString`), `io: FileIO`, and underscore names. Each class of attempt is refused here in
several spellings, always as a positioned diagnostic (never a traceback), and always
without importing anything (`no_new_modules`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import Project

from dotdo.dsl.flow.checker import check_source
from dotdo.dsl.flow.diagnostics import Diagnostic, FlowError
from dotdo.dsl.flow.loader import load_source

USE_STEP = "workflow w(x: int):\n    y = do s(x)\n    return y\n"
"""A workflow that runs the step `s` (appended to the declarations under test)."""


@contextmanager
def no_new_modules() -> Iterator[None]:
    before = set(sys.modules)
    yield
    assert set(sys.modules) - before == set(), "checking imported a module"


def errors(text: str, path: str = "attack.flow") -> list[Diagnostic]:
    with no_new_modules():
        found = [d for d in check_source(text, path) if d.is_error]
    assert found, f"accepted:\n{text}"
    for d in found:
        assert d.line >= 1 and d.col >= 1 and d.message, d
        assert "Traceback" not in d.render()
    return found


def first(text: str) -> Diagnostic:
    return errors(text)[0]


# ----------------------------------------------------------------- standard library
@pytest.mark.parametrize(
    "binding",
    [
        "os:system",
        "os:popen",
        "subprocess:run",
        "subprocess:Popen",
        "builtins:eval",
        "builtins:exec",
        "importlib:import_module",
        "os.path:join",
        "shutil:rmtree",
        "ctypes:CDLL",
        "posix:system",
        "pickle:loads",
        "code:interact",
    ],
)
def test_a_step_bound_to_the_standard_library_is_refused(binding: str) -> None:
    found = first(f"step s = {binding}\n{USE_STEP}")
    assert (found.code, found.line, found.col) == ("not-allowed", 1, 1)
    assert "standard library" in found.message
    assert "flow_modules" in (found.expected or "")


@pytest.mark.parametrize(
    ("module", "name"),
    [("os", "system"), ("subprocess", "run"), ("builtins", "eval"), ("pickle", "loads")],
)
def test_use_of_a_standard_library_module_is_refused(module: str, name: str) -> None:
    text = f"use {module}\nstep {name}\nworkflow w(x: int):\n    y = do {name}(x)\n    return y\n"
    found = errors(text)
    assert (found[0].code, found[0].line) == ("not-allowed", 1)


@pytest.mark.parametrize(
    "line",
    [
        "import subprocess: Popen",
        "import io: FileIO",
        "import builtins: map",
        "import builtins: ValueError",
        "import operator: attrgetter",
        "import operator: methodcaller",
        "import functools: partial",
        "import types: FunctionType",
        "import os: PathLike",
    ],
)
def test_importing_types_from_the_standard_library_is_refused(line: str) -> None:
    found = first(f"{line}\nworkflow w():\n    return 1\n")
    assert (found.code, found.line) == ("not-allowed", 1)


# ------------------------------------------------------------ third-party and dotdo
@pytest.mark.parametrize(
    "text",
    [
        "step s = httpx:get\n" + USE_STEP,
        "step s = click:echo\n" + USE_STEP,
        "use hypothesis\nstep given\nworkflow w():\n    return 1\n",
        "import pydantic: ImportString\nworkflow w():\n    return 1\n",
        "import pydantic: BaseModel\nworkflow w():\n    return 1\n",
        "import lark: Lark\nworkflow w():\n    return 1\n",
        "import networkx: DiGraph\nworkflow w():\n    return 1\n",
    ],
)
def test_installed_packages_are_refused_by_default(text: str) -> None:
    found = first(text)
    assert (found.code, found.line) == ("not-allowed", 1)
    assert "installed package" in found.message


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("step s = dotdo.cli:main\n" + USE_STEP, "not-allowed"),
        ("use dotdo.engine.engine\nstep advance\n" + USE_STEP, "not-allowed"),
        ("import dotdo: Engine\nworkflow w():\n    return 1\n", "not-a-type"),
        ("import dotdo: DO\nworkflow w():\n    return 1\n", "not-a-type"),
        ("import dotdo: load_flow\nworkflow w():\n    return 1\n", "not-a-type"),
        ("import dotdo.errors: DotdoError\nworkflow w():\n    return 1\n", "not-allowed"),
    ],
)
def test_dotdo_offers_its_data_types_and_nothing_else(text: str, code: str) -> None:
    assert first(text).code == code


def test_dotdo_data_types_can_be_imported() -> None:
    text = "import dotdo: EventRecord, Approval, RunFailed\nworkflow w(e: EventRecord):\n"
    assert [d for d in check_source(text + "    return e\n", "ok.flow") if d.is_error] == []


# ------------------------------------------------- the project's modules, read as source
STEPS = """\
import functools
import os
import subprocess
from os import system
from operator import attrgetter

from pydantic import BaseModel


def ok_step(x):
    return x


async def ok_async(x):
    return x


def _hidden(x):
    return x


popen = os.popen
run = functools.partial(subprocess.run, shell=True)
evaluate = eval


@functools.lru_cache
def cached(x):
    return x


def rebound(x):
    return x


rebound = os.system


def changed_later(x):
    return x


def changer():
    global changed_later
    changed_later = os.system


class Good(BaseModel):
    x: int = 0


class Klass:
    pass
"""


@pytest.mark.parametrize(
    ("function", "why"),
    [
        ("system", "imported into"),
        ("attrgetter", "imported into"),
        ("popen", "not a function definition"),
        ("run", "not a function definition"),
        ("evaluate", "not a function definition"),
        ("cached", "decorated"),
        ("rebound", "bound more than once"),
        ("changed_later", "bound more than once"),
        ("Good", "not a function definition"),
        ("Klass", "not a function definition"),
        ("BaseModel", "imported into"),
    ],
)
def test_a_step_must_be_a_function_its_module_defines(
    project: Project, function: str, why: str
) -> None:
    project.write("steps", STEPS)
    explicit = first(f"step s = steps:{function}\n{USE_STEP}")
    assert explicit.code == "not-a-function" and why in explicit.message, explicit
    used = first(f"use steps\nstep {function}\nworkflow w(x: int):\n    y = do {function}(x)\n")
    assert used.code == "not-a-function" and used.line == 2, used


def test_the_project_module_that_reexports_still_lends_its_own_functions(
    project: Project,
) -> None:
    project.write("steps", STEPS)
    text = "step s = steps:ok_step\nstep a = steps:ok_async\n" + USE_STEP
    text += "workflow v(x: int):\n    y = do a(x)\n    return y\n"
    with no_new_modules():
        assert [d for d in check_source(text, "ok.flow") if d.is_error] == []


@pytest.mark.parametrize(
    "text",
    [
        "step s = steps:_hidden\n" + USE_STEP,
        "step _s = steps:ok_step\nworkflow w(x: int):\n    y = do _s(x)\n",
        "use steps._impl\nworkflow w():\n    return 1\n",
        "import steps: _Hidden\nworkflow w():\n    return 1\n",
        "step s = _private_mod:f\n" + USE_STEP,
        "step s = steps:__init__\n" + USE_STEP,
        "use steps.__init__\nworkflow w():\n    return 1\n",
        "import steps: __class__\nworkflow w():\n    return 1\n",
        "workflow _w():\n    return 1\n",
    ],
)
def test_names_starting_with_an_underscore_are_refused(project: Project, text: str) -> None:
    project.write("steps", STEPS)
    found = first(text)
    assert found.code in ("private-name", "dunder") and found.line == 1, found


# ------------------------------------------------------------------------ data types
TYPES = """\
import dataclasses
import enum
import io
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ImportString


class Order(BaseModel):
    id: str
    items: list[str] = []
    note: "str | None" = None


@dataclass(frozen=True)
class Point:
    x: int
    y: int


class Color(str, enum.Enum):
    RED = "red"


class Declined(Exception):
    pass


class Special(Order):
    extra: dict[str, Any] = {}


class Loader(BaseModel):
    target: ImportString


class Hook(BaseModel):
    fn: Callable[[int], int]


class Factory(BaseModel):
    kind: type[int]


class Holder(BaseModel):
    module: ModuleType


@dataclasses.dataclass
class Task:
    run: "Callable[[], None]"


class Plain:
    pass


class Exit(SystemExit):
    pass


class Meta(BaseModel, metaclass=type):
    pass


def make():
    return Order


Alias = Order
FileIO = io.FileIO
"""


def test_data_classes_of_the_project_can_be_imported(project: Project) -> None:
    project.write("models", TYPES)
    text = "import models: Order, Point, Color, Declined, Special\nworkflow w(o: Order) -> Point:\n"
    text += "    return Point(x=1, y=2)\n"
    with no_new_modules():
        assert [d for d in check_source(text, "ok.flow") if d.is_error] == []


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Loader", "ImportString"),
        ("Hook", "Callable"),
        ("Factory", "type"),
        ("Holder", "ModuleType"),
        ("Task", "Callable"),
        ("Plain", "plain class"),
        ("Exit", "not a data-class base"),
        ("Meta", "metaclass"),
        ("make", "not a class definition"),
        ("Alias", "not a class definition"),
        ("FileIO", "not a class definition"),
        ("BaseModel", "imported into"),
        ("ImportString", "imported into"),
        ("Callable", "imported into"),
    ],
)
def test_only_plain_data_classes_can_be_imported(project: Project, name: str, why: str) -> None:
    project.write("models", TYPES)
    found = first(f"import models: {name}\nworkflow w():\n    return 1\n")
    assert found.code == "not-a-type" and why in found.message, found


def test_a_module_that_swaps_a_function_at_import_time_fails_when_loaded(
    project: Project,
) -> None:
    """What the source does not show (globals() tricks), the loader catches live."""
    project.write(
        "sly",
        """\
        import os


        def ok_step(x):
            return x


        globals()["ok_step"] = os.system
        """,
    )
    text = "step s = sly:ok_step\n" + USE_STEP
    with no_new_modules():
        assert [d for d in check_source(text, "sly.flow") if d.is_error] == []
    with pytest.raises(FlowError) as info:
        load_source(text, str(project.root / "sly.flow"))
    found = info.value.diagnostics[0]
    assert (found.code, found.line) == ("not-a-function", 1)
    assert "replaces it" in found.message


def test_a_class_swapped_at_import_time_fails_when_loaded(project: Project) -> None:
    project.write(
        "slytypes",
        """\
        import io
        from pydantic import BaseModel


        class Order(BaseModel):
            id: str


        globals()["Order"] = io.FileIO
        """,
    )
    text = "import slytypes: Order\nworkflow w(o: Order):\n    return 1\n"
    with pytest.raises(FlowError) as info:
        load_source(text, str(project.root / "slytypes.flow"))
    assert info.value.diagnostics[0].code == "not-a-type"


def test_unreadable_or_missing_modules_are_positioned_diagnostics(project: Project) -> None:
    project.write("broken", "def f(:\n")
    found = first("step s = broken:f\n" + USE_STEP)
    assert (found.code, found.line) == ("bad-module", 1)
    assert "SyntaxError" in found.message
    missing = first("import nowhere_at_all: X\nworkflow w():\n    return 1\n")
    assert (missing.code, missing.line) == ("bad-module", 1)
    star = project.write("starry", "from os.path import *\n\n\ndef f(x):\n    return x\n")
    assert star.exists()
    assert "import *" in first("step s = starry:f\n" + USE_STEP).message
