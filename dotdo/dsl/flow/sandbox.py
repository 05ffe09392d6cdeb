"""Which Python modules a `.flow` file may reach, decided without running any of them.

A `.flow` file is not trusted (ARCHITECTURE.md, trust model): it may name only modules the
host allows. By default that is the file's own project: modules whose source file lies
under the directory of the nearest `pyproject.toml` above the file (or the file's own
directory when there is none), outside the standard library and every site-packages
directory. The host adds modules or packages explicitly (`Engine(flow_modules=[...])`,
`[tool.dotdo] flow-modules` in that pyproject, `--allow-module` on the command line).
Nothing allows the standard library, dotdo itself (its data types are offered through
`import dotdo: Name`), or a name with a segment that starts with `_`.

Everything here finds modules the way the import system would, but stops before loading:
top-level names through `importlib.util.find_spec` (which imports nothing for a name without
dots), submodules through `PathFinder` over the parent's search locations (a dotted
`find_spec` would import the parents, running their code). The loader imports a module
only after this said yes.
"""

from __future__ import annotations

import importlib.util
import os
import site
import sys
import sysconfig
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib.machinery import PathFinder
from pathlib import Path

from dotdo.engine.allowlist import HOST, STDLIB, bad_segment, check_allow_list
from dotdo.errors import DotdoError

__all__ = [
    "HOST",
    "STDLIB",
    "FlowPolicy",
    "Located",
    "bad_segment",
    "check_allow_list",
    "ensure_cwd_on_path",
    "locate",
    "policy_at",
    "policy_for",
    "project_root",
    "refusal",
]


@dataclass(frozen=True)
class FlowPolicy:
    """What one `.flow` file may name: its project's modules, and the host's allow-list."""

    root: Path
    """The project directory: modules with their source under it are allowed by default."""
    modules: tuple[str, ...] = ()
    """Modules or packages the host allows explicitly (a package allows its submodules)."""
    config: str | None = None
    """Why the project's `[tool.dotdo] flow-modules` could not be used, if it could not."""

    def lists(self, name: str) -> bool:
        return any(name == m or name.startswith(m + ".") for m in self.modules)


def project_root(path: str) -> Path:
    """The directory of the nearest pyproject.toml at or above `path`'s directory, else that
    directory. A path that names no file (`<flow>`) starts from the working directory."""
    start = Path(path).resolve().parent
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            return directory
    return start


@lru_cache(maxsize=64)
def _configured(pyproject: Path, stamp: tuple[int, int]) -> tuple[tuple[str, ...], str | None]:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return (), f"cannot read {pyproject}: {exc}"
    listed = data.get("tool", {}).get("dotdo", {}).get("flow-modules", [])
    if not isinstance(listed, list):
        return (), f"{pyproject}: [tool.dotdo] flow-modules must be a list of module names"
    try:
        return check_allow_list(listed, f"{pyproject} [tool.dotdo] flow-modules"), None
    except DotdoError as exc:
        return (), str(exc)


def policy_for(path: str, flow_modules: Iterable[str] | None = None) -> FlowPolicy:
    """The policy for the `.flow` file at `path`: its project root, the host's explicit
    modules (validated; DotdoError if one is bad) and its pyproject's `flow-modules`."""
    return policy_at(project_root(path), flow_modules)


def policy_at(root: Path, flow_modules: Iterable[str] | None = None) -> FlowPolicy:
    """The policy of a project directory, with the host's explicit modules added."""
    explicit = check_allow_list(flow_modules or (), "flow_modules")
    configured: tuple[str, ...] = ()
    problem = None
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        stat = pyproject.stat()
        configured, problem = _configured(pyproject, (stat.st_mtime_ns, stat.st_size))
    modules = tuple(dict.fromkeys((*explicit, *configured)))
    return FlowPolicy(root=root, modules=modules, config=problem)


# ----------------------------------------------------------------- locating modules
@dataclass(frozen=True)
class Located:
    """Where a module's source is, found without importing it (nor its parents)."""

    name: str
    file: Path
    package: bool


def ensure_cwd_on_path() -> None:
    """Modules are imported the way `python -m` finds them from the working directory (kept
    last on the path, so it never shadows an installed package)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def locate(name: str) -> Located | str:
    """The source file of module `name`, or why there is none to read."""
    parts = name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name imports nothing
    except (ImportError, ValueError) as exc:
        return f"cannot look `{parts[0]}` up: {exc}"
    if spec is None:
        spec = PathFinder.find_spec(parts[0], [os.getcwd()])
    if spec is None:
        return f"no module named `{parts[0]}` (searched the current directory and sys.path)"
    for i in range(2, len(parts) + 1):
        locations = spec.submodule_search_locations
        if locations is None:
            return f"`{'.'.join(parts[: i - 1])}` is a module, not a package"
        found = PathFinder.find_spec(".".join(parts[:i]), list(locations))
        if found is None:
            return f"no module named `{'.'.join(parts[:i])}`"
        spec = found
    origin = spec.origin
    # Any loader that reads a .py file will do (pytest's assertion rewriter is one).
    if not spec.has_location or origin is None or not origin.endswith(".py"):
        what = "a namespace package" if spec.submodule_search_locations else "not Python source"
        return f"`{name}` is {what}: a flow can only name modules whose source can be read"
    return Located(name, Path(origin), spec.submodule_search_locations is not None)


@lru_cache(maxsize=1)
def _installed_dirs() -> tuple[str, ...]:
    """Directories of the standard library and of installed (third-party) packages."""
    dirs: set[str] = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if key in paths:
            dirs.add(paths[key])
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - some embedded interpreters lack it
        pass
    user = site.getusersitepackages()
    if isinstance(user, str):
        dirs.add(user)
    return tuple(sorted(os.path.realpath(d) for d in dirs))


def _is_installed(file: str) -> bool:
    parts = Path(file).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return any(file == d or file.startswith(d + os.sep) for d in _installed_dirs())


def refusal(name: str, located: Located | None, policy: FlowPolicy) -> str | None:
    """Why `policy` does not let a flow name module `name` (found at `located`), or None."""
    problem = bad_segment(name)
    if problem is not None:
        return problem
    top = name.split(".")[0]
    if top in STDLIB:
        return f"`{name}` is part of Python's standard library, which a .flow file never reaches"
    if top == HOST:
        return f"`{name}` is dotdo itself: only `import dotdo: Name` (its data types) is allowed"
    if policy.lists(name):
        return None
    if located is None:
        return f"`{name}` is not allowed"
    file = os.path.realpath(located.file)
    root = os.path.realpath(policy.root)
    if _is_installed(file):
        return f"`{name}` is an installed package ({file}), not one of this project's modules"
    if not (file + os.sep).startswith(root + os.sep):
        return f"`{name}` is outside this project ({file} is not under {root})"
    return None
