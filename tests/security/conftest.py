"""Fixtures for the `.flow` sandbox tests: a throwaway project on disk.

`project` writes a directory with a pyproject.toml and the Python modules a test names,
puts it on sys.path, makes it the working directory (modules are found the way `python -m`
finds them), and forgets its modules afterwards, so each test imports (or, under `dotdo
check`, must not import) fresh code. Marker files let a test see whether a module's
top-level code ran.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "tests"):  # examples.*, and the shared generators of tests/
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


class Project:
    """A project directory: `write` adds modules, `flow` adds .flow files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: set[str] = set()

    def write(self, name: str, source: str) -> Path:
        """Module `name` (dotted names become packages) with `source` (dedented)."""
        parts = name.split(".")
        directory = self.root
        for package in parts[:-1]:
            directory = directory / package
            directory.mkdir(exist_ok=True)
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text("")
        path = directory / f"{parts[-1]}.py"
        path.write_text(textwrap.dedent(source))
        self.modules.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        importlib.invalidate_caches()
        return path

    def flow(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(textwrap.dedent(text))
        return path

    def marker(self, name: str) -> Path:
        return self.root / f"{name}.ran"

    def forget(self) -> None:
        for name in self.modules:
            sys.modules.pop(name, None)


def side_effect(marker: Path) -> str:
    """Top-level code that leaves `marker` behind when its module is imported."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "proj"\n')
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    found = Project(root)
    try:
        yield found
    finally:
        found.forget()


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """Modules importable (on sys.path) but outside the project: not allowed by default."""
    root = tmp_path / "elsewhere"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    found = Project(root)
    try:
        yield found
    finally:
        found.forget()
