"""All SQL lives behind the store interface (dotdo/engine/store/): nothing else in dotdo
writes a statement, calls a connection or imports a database driver.

The scan reads each module's syntax tree, so it sees the string literals the code runs
(implicit concatenations and f-strings included) and ignores comments and docstrings, which
may talk about tables freely.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "dotdo"
STORE = ROOT / "engine" / "store"

SQL = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+(OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b|\b(CREATE|DROP|ALTER)\s+(TABLE|INDEX|VIEW|TRIGGER)\b|\bPRAGMA\b"
    r"|\bBEGIN\s+(IMMEDIATE|EXCLUSIVE|DEFERRED)\b|\bON\s+CONFLICT\b|\bRETURNING\b.*\bFROM\b",
    re.IGNORECASE,
)
"""Statement shapes, not single words: "select" or "update" alone is ordinary English."""

DRIVERS = {"sqlite3", "aiosqlite", "psycopg", "psycopg_pool", "asyncpg"}
RAW_CALLS = {"fetch", "fetch_one", "execute_fetchall", "executemany", "write_on_thread"}
"""Methods of the SQLite store's raw layer and of database connections."""


def _docstrings(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
        # An attribute docstring: a string statement right after an assignment.
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if not isinstance(stmts, list):
                continue
            for before, stmt in itertools.pairwise(stmts):
                if (
                    isinstance(before, ast.Assign | ast.AnnAssign)
                    and isinstance(stmt, ast.Expr)
                    and isinstance(stmt.value, ast.Constant)
                ):
                    ids.add(id(stmt.value))
    return ids


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string the code uses, f-strings joined from their parts."""
    skip = _docstrings(tree)
    inside_fstring: set[int] = set()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstring.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append(" x ")
            found.append((node.lineno, "".join(parts)))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and id(node) not in inside_fstring
        ):
            found.append((node.lineno, node.value))
    return found


def violations(path: Path, source: str) -> list[str]:
    tree = ast.parse(source, filename=str(path))
    out = [
        f"{path}:{line}: SQL in a string: {text.strip()[:60]!r}"
        for line, text in _literals(tree)
        if SQL.search(text)
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            out.extend(
                f"{path}:{node.lineno}: imports the database driver {name}"
                for name in names
                if name.split(".")[0] in DRIVERS
            )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in RAW_CALLS
        ):
            out.append(f"{path}:{node.lineno}: raw store call .{node.func.attr}()")
    return out


def _outside_store() -> list[Path]:
    return [p for p in sorted(ROOT.rglob("*.py")) if STORE not in p.parents]


def test_no_sql_outside_the_store() -> None:
    found = [v for p in _outside_store() for v in violations(p, p.read_text())]
    assert found == [], "\n".join(found)


def test_the_scan_covers_the_package() -> None:
    files = _outside_store()
    assert len(files) > 50
    assert ROOT / "engine" / "engine.py" in files
    assert STORE / "sqlite" / "runs.py" not in files


# ---------------------------------------------------------------- the scan itself
@pytest.mark.parametrize(
    "code",
    [
        'q = "SELECT * FROM runs WHERE run_id = ?"',
        'q = "select body from graphs"',
        'q = ("UPDATE runs SET status = ? "\n     "WHERE run_id = ?")',
        'q = f"SELECT {cols} FROM runs WHERE x = {y}"',
        'q = f"DELETE FROM {table}"',
        'q = "INSERT INTO outbox(event) VALUES (?)"',
        'q = "INSERT OR REPLACE INTO meta VALUES (1)"',
        'q = "CREATE TABLE t (a)"',
        'q = "PRAGMA journal_mode = WAL"',
        'def f():\n    x = 1\n    run("BEGIN IMMEDIATE")',
        "import sqlite3",
        "import aiosqlite as db",
        "from psycopg import AsyncConnection",
        "async def f(store):\n    await store.fetch_one('x')",
        "async def f(conn):\n    await conn.executemany('x', [])",
    ],
)
def test_the_scan_finds_sql_and_raw_access(code: str) -> None:
    assert violations(Path("x.py"), code)


@pytest.mark.parametrize(
    "code",
    [
        '"""Reads SELECT * FROM runs to show how it works."""',
        'def f():\n    """UPDATE runs SET nothing: a docstring."""\n    return 1',
        "# SELECT * FROM runs in a comment\nx = 1",
        'x = 1\n"""An attribute docstring: INSERT INTO outbox is described here."""',
        'msg = "select a run, then update its status"',
        'msg = "no approval with id {x!r}"',
        "async def f(host):\n    await host.execute(items, plans)",
    ],
)
def test_the_scan_ignores_prose_and_docstrings(code: str) -> None:
    assert violations(Path("x.py"), code) == []
