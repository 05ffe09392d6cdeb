"""A host's allow-list of Python modules: which of its own modules data files may reach.

`.flow` files are data (ARCHITECTURE.md, trust model): they may bind steps and types only in
modules the host allows. The host declares that list to the engine
(`Engine(flow_modules=[...])`) and on the command line (`--allow-module`), so validating an
entry lives here with the engine, below the front end that applies the list: a typo must
stop the host at startup, not silently allow nothing (or something else).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

from dotdo.errors import DotdoError

__all__ = ["HOST", "STDLIB", "bad_segment", "check_allow_list"]

STDLIB = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names)
"""Top-level names of the standard library: never reachable from a flow."""

HOST = "dotdo"
"""The engine's own package: a flow may import its public data types, nothing else."""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def bad_segment(dotted: str) -> str | None:
    """Why a dotted Python name may not appear in a flow (`__x`, `_x` anywhere), or None."""
    for part in dotted.split("."):
        if "__" in part:
            return f"`{part}` contains '__' (Python internals)"
        if part.startswith("_"):
            return f"`{part}` starts with '_' (private to its Python code)"
    return None


def check_allow_list(names: Iterable[str], where: str) -> tuple[str, ...]:
    """A host's allow-list, validated: dotted module names only, none private or internal.

    Raises DotdoError naming the bad entry: a typo here should stop the host at startup,
    not silently allow nothing (or, worse, something else).
    """
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _IDENT.fullmatch(name):
            raise DotdoError(f"{where}: {name!r} is not a dotted module name")
        problem = bad_segment(name)
        if problem is not None:
            raise DotdoError(f"{where}: {name!r} cannot be allowed: {problem}")
        if name.split(".")[0] in STDLIB:
            raise DotdoError(
                f"{where}: {name!r} is part of the standard library, which a .flow file "
                "never reaches; wrap what you need in a function of your own module"
            )
        if name.split(".")[0] == HOST:
            raise DotdoError(f"{where}: {name!r} is dotdo itself; use `import dotdo: Name`")
        out.append(name)
    return tuple(out)
