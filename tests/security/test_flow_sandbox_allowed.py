"""What the host allows still works, and nothing else runs: the three ways to allow a module
(`Engine(flow_modules=...)` / `load_flow(..., flow_modules=...)`, `[tool.dotdo]
flow-modules`, `--allow-module`), the default (the file's own project), and the promise
that `dotdo check` runs no module at all while loading runs only allowed ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import ROOT, Project, side_effect

import dotdo.cli
from dotdo import DotdoError, Engine
from dotdo.dsl.flow.checker import check_file
from dotdo.dsl.flow.diagnostics import FlowError
from dotdo.dsl.flow.loader import load_flow

STEP = """\
def double(x):
    return 2 * x
"""
FLOW = """\
step s = {module}:double

workflow w(x: int) -> int:
    y = do s(x)
    return y
"""


def codes(path: Path, **options: object) -> list[str]:
    return [d.code for d in check_file(path, **options) if d.is_error]  # type: ignore[arg-type]


async def run(engine: Engine, path: Path) -> int:
    async with engine:
        module = load_flow(path, engine=engine)
        handle = await engine.start(module["w"], 21, run_id="r")
        result: int = await handle.result(timeout=30)
        return result


# ------------------------------------------------------------------------ the examples
@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.flow")), ids=lambda p: p.name)
def test_every_example_checks_clean_and_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert codes(path) == []
    module = load_flow(path)
    Engine(":memory:").register(module)  # the engine re-checks and accepts it


# ------------------------------------------------------- the project's own modules
def test_check_runs_no_module_and_loading_runs_the_allowed_one(project: Project) -> None:
    marker = project.marker("steps")
    project.write("steps", side_effect(marker) + STEP)
    path = project.flow("double.flow", FLOW.format(module="steps"))
    assert codes(path) == []
    assert not marker.exists(), "dotdo check ran the module's top-level code"
    load_flow(path)
    assert marker.exists()


async def test_a_project_flow_runs_on_a_default_engine(project: Project) -> None:
    project.write("steps", STEP)
    path = project.flow("double.flow", FLOW.format(module="steps"))
    assert await run(Engine(project.root / "app.db"), path) == 42


def test_a_flow_in_a_subdirectory_belongs_to_the_project_above(project: Project) -> None:
    project.write("pkg.steps", STEP)
    (project.root / "flows").mkdir()
    path = project.flow("flows/double.flow", FLOW.format(module="pkg.steps"))
    assert codes(path) == []


# ------------------------------------------------------------ modules outside it
def test_a_module_outside_the_project_is_refused_and_never_run(
    project: Project, elsewhere: Project
) -> None:
    marker = elsewhere.marker("outside")
    elsewhere.write("outside", side_effect(marker) + STEP)
    path = project.flow("double.flow", FLOW.format(module="outside"))
    assert codes(path) == ["not-allowed"]
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert info.value.diagnostics[0].code == "not-allowed"
    assert not marker.exists()


async def test_engine_flow_modules_allow_a_module(project: Project, elsewhere: Project) -> None:
    marker = elsewhere.marker("outside")
    elsewhere.write("outside", side_effect(marker) + STEP)
    path = project.flow("double.flow", FLOW.format(module="outside"))
    assert codes(path, flow_modules=["outside"]) == []
    assert not marker.exists()
    engine = Engine(project.root / "app.db", flow_modules=["outside"])
    assert await run(engine, path) == 42
    assert marker.exists()


def test_an_engine_rechecks_a_flow_loaded_with_a_wider_allow_list(
    project: Project, elsewhere: Project
) -> None:
    elsewhere.write("outside", STEP)
    path = project.flow("double.flow", FLOW.format(module="outside"))
    module = load_flow(path, flow_modules=["outside"])
    for target in (module, module.owner, module["w"]):
        with pytest.raises(FlowError) as info:
            Engine(project.root / "app.db").register(target)
        found = info.value.diagnostics[0]
        assert (found.code, found.line) == ("not-allowed", 1)
        assert "this engine does not allow `outside`" in found.message
    Engine(project.root / "app.db", flow_modules=["outside"]).register(module)


def test_a_package_allows_its_submodules(project: Project, elsewhere: Project) -> None:
    elsewhere.write("shared.steps", STEP)
    path = project.flow("double.flow", FLOW.format(module="shared.steps"))
    assert codes(path) == ["not-allowed"]
    assert codes(path, flow_modules=["shared"]) == []
    assert codes(path, flow_modules=["shared.steps"]) == []
    assert codes(path, flow_modules=["shared.other"]) == ["not-allowed"]


@pytest.mark.parametrize(
    "name", ["os", "subprocess", "os.path", "_private", "pkg._impl", "pkg.__init__", "dotdo", "a-b"]
)
def test_nothing_allows_the_stdlib_dotdo_or_private_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(DotdoError):
        Engine(tmp_path / "x.db", flow_modules=[name])
    with pytest.raises(DotdoError):
        load_flow(tmp_path / "x.flow", flow_modules=[name])


def test_an_allowed_installed_package_still_lends_only_its_own_functions(
    project: Project,
) -> None:
    path = project.flow("echo.flow", "step s = click:echo\nworkflow w():\n    do s(1)\n")
    assert codes(path) == ["not-allowed"]
    assert codes(path, flow_modules=["click"]) == ["not-a-function"]  # re-exported from utils


# ------------------------------------------------------------------------ pyproject
def test_pyproject_flow_modules_allow_a_module(project: Project, elsewhere: Project) -> None:
    marker = elsewhere.marker("outside")
    elsewhere.write("outside", side_effect(marker) + STEP)
    (project.root / "pyproject.toml").write_text(
        '[project]\nname = "proj"\n\n[tool.dotdo]\nflow-modules = ["outside"]\n'
    )
    path = project.flow("double.flow", FLOW.format(module="outside"))
    assert codes(path) == []
    assert not marker.exists()
    module = load_flow(path)
    Engine(project.root / "app.db").register(module)  # the engine reads the same pyproject
    assert marker.exists()


@pytest.mark.parametrize(
    "config",
    [
        '[tool.dotdo]\nflow-modules = "outside"\n',
        '[tool.dotdo]\nflow-modules = ["os"]\n',
        '[tool.dotdo]\nflow-modules = ["_x"]\n',
        "[tool.dotdo\n",
    ],
)
def test_a_bad_pyproject_setting_is_a_positioned_diagnostic(project: Project, config: str) -> None:
    project.write("steps", STEP)
    (project.root / "pyproject.toml").write_text(config)
    path = project.flow("double.flow", FLOW.format(module="steps"))
    found = [d for d in check_file(path) if d.is_error]
    assert [(d.code, d.line, d.col) for d in found] == [("bad-config", 1, 1)]
    assert "pyproject.toml" in found[0].message


# ------------------------------------------------------------------------------- CLI
def dotdo_cmd(*args: str | Path) -> Result:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_allow_module(project: Project, elsewhere: Project) -> None:
    marker = elsewhere.marker("outside")
    elsewhere.write("outside", side_effect(marker) + STEP)
    path = project.flow("double.flow", FLOW.format(module="outside"))
    refused = dotdo_cmd("check", path)
    assert refused.exit_code == 1
    assert "double.flow:1:1: cannot import `outside`" in refused.stderr
    assert dotdo_cmd("check", "--allow-module", "outside", path).exit_code == 0
    out = project.root / "d.mmd"
    assert dotdo_cmd("render", path, "-o", out, "--allow-module", "outside").exit_code == 0
    assert not marker.exists(), "check and render ran the module"
    db = project.root / "cli.db"
    failed = dotdo_cmd("run", path, "--input", '{"x": 2}', "--db", db)
    assert failed.exit_code == 1 and failed.stderr.startswith("error: ")
    assert "Traceback" not in failed.output and not marker.exists()
    done = dotdo_cmd("run", path, "--input", '{"x": 2}', "--db", db, "--allow-module", "outside")
    assert done.exit_code == 0 and done.stdout.strip() == "4"
    assert marker.exists()
    bad = dotdo_cmd("check", "--allow-module", "os", path)
    assert bad.exit_code == 2 and "standard library" in bad.stderr
    # --app FILE.flow (worker, approve, reject, send, cancel) takes --allow-module too.
    refused = dotdo_cmd("send", "Nothing.happened", "--app", path, "--db", db)
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert "outside" in refused.stderr
    sent = dotdo_cmd(
        "send", "Nothing.happened", "--app", path, "--allow-module", "outside", "--db", db
    )
    assert sent.exit_code == 0, sent.stderr


def test_the_cli_checks_the_examples_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = dotdo_cmd("check", *sorted((ROOT / "examples").glob("*.flow")))
    assert result.exit_code == 0, result.stderr
