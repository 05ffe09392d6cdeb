"""Plumbing every `dotdo` command shares: one-line errors, opening an engine, --db, --app.

A user mistake becomes one line on stderr (exit 2 for usage errors, 1 for everything else);
only unexpected errors offer a traceback, and only on request (DOTDO_DEBUG=1).

The CLI imports only what its command line names: the TARGET of `run` and `render`, and each
`--app` (a module, or a `.flow` file and the modules its `use` lines name). Nothing read
from the database (a `graphs.module`, a class name in a row) is ever imported; a command that
must drive a run on is told where its code is with `--app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import click

from dotdo.cli.output import debug, describe_error, one_line
from dotdo.dsl.flow.loader import load_flow
from dotdo.dsl.python.do import DO
from dotdo.engine.allowlist import check_allow_list
from dotdo.engine.engine import Engine
from dotdo.engine.ids import check_id
from dotdo.engine.store.location import locate
from dotdo.errors import DotdoError

__all__ = [
    "FAILURE",
    "USAGE",
    "CliError",
    "allow_option",
    "allowed_modules",
    "app_option",
    "checked_id",
    "classes_in",
    "cwd_importable",
    "db_option",
    "execute",
    "import_module",
    "load_apps",
    "opened",
    "parse_json",
    "selected_db",
]

USAGE = 2
FAILURE = 1
_DEBUG_HINT = "(run with DOTDO_DEBUG=1 for a traceback)"
MAX_LINE = 500
"""An error line longer than this (a pasted 100k-character id, say) is cut short."""
_F = TypeVar("_F", bound=Callable[..., Any])
MAX_JSON_DEPTH = 100
"""Nesting allowed in JSON given on the command line: far beyond any real input, and well
inside what the encoder, pydantic and the store handle without deep recursion."""


class CliError(Exception):
    """A mistake to report in one line; `cause` is the user's own exception, if any."""

    def __init__(self, message: str, code: int = FAILURE, cause: BaseException | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.cause = cause


def fail(message: str, code: int, *, hint: bool = False) -> NoReturn:
    line = one_line(message)
    if len(line) > MAX_LINE:
        line = line[: MAX_LINE - 1] + "…"
    click.echo(f"error: {line}" + (f" {_DEBUG_HINT}" if hint else ""), err=True)
    sys.exit(code)


def execute(work: Coroutine[Any, Any, int]) -> None:
    """Run one command's coroutine and turn whatever it raises into one line and an exit."""
    try:
        code = asyncio.run(work)
    except CliError as exc:
        if exc.cause is not None and debug():
            traceback.print_exception(exc.cause)
        fail(exc.message, exc.code, hint=exc.cause is not None and not debug())
    except DotdoError as exc:
        fail(str(exc), FAILURE)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:
        if debug():
            traceback.print_exception(exc)
        fail(f"unexpected {describe_error(exc)}", FAILURE, hint=not debug())
    if code:
        sys.exit(code)


# ----------------------------------------------------------------- command-line input
def checked_id(value: str, what: str = "run id") -> str:
    """An id from the command line, refused in one line (exit 2) when dotdo would refuse it."""
    try:
        return check_id(value, what)
    except DotdoError as exc:
        raise CliError(str(exc), USAGE) from None


def parse_json(text: str, option: str) -> Any:
    """JSON given on the command line; too deep, too big a number or invalid: one line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{option} is not valid JSON: {exc}", USAGE) from None
    except RecursionError:
        value = _TOO_DEEP
    except ValueError as exc:  # an integer of more digits than Python converts, say
        raise CliError(f"{option} is not usable JSON: {exc}", USAGE) from None
    if value is _TOO_DEEP or _depth(value) > MAX_JSON_DEPTH:
        raise CliError(f"{option} is nested too deeply (at most {MAX_JSON_DEPTH} levels)", USAGE)
    return value


_TOO_DEEP = object()


def _depth(value: Any) -> int:
    """How many lists and objects nest in `value` (`[]` is 1), without recursing."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


# ----------------------------------------------------------------- importing user code
def cwd_importable() -> None:
    """Import from the current directory as `python -m` would, for the modules the command
    line names (a target, an --app, a .flow file's `use`); only commands that import call it."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)


def import_module(name: str) -> ModuleType:
    cwd_importable()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise CliError(
                f"cannot import {name!r}: no module named {exc.name!r} "
                "(searched the current directory and PYTHONPATH)",
                USAGE,
            ) from None
        raise CliError(f"importing {name!r} failed: {describe_error(exc)}", cause=exc) from None
    except DotdoError as exc:
        raise CliError(f"cannot load {name!r}: {exc}") from None
    except Exception as exc:
        raise CliError(f"importing {name!r} failed: {describe_error(exc)}", cause=exc) from None


def classes_in(name: str) -> list[type[DO]]:
    module = import_module(name)
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, DO)
        and obj is not DO
        and obj.__module__ == module.__name__
    ]
    if not found:
        raise CliError(f"module {name!r} defines no DO classes", USAGE)
    return found


def load_apps(names: Iterable[str]) -> list[Any]:
    """What each `--app` names: the DO classes of a module, or a loaded `.flow` file (with
    the `--allow-module` modules allowed besides its project's)."""
    found: list[Any] = []
    for name in names:
        if name.endswith(".flow"):
            if not Path(name).is_file():
                raise CliError(f"no such file: {name}", USAGE)
            cwd_importable()  # for the modules its `use` and `import` lines name
            module: Any = load_flow(name, flow_modules=allowed_modules())
            found += [] if module in found else [module]
        else:
            found += [c for c in classes_in(name) if c not in found]
    return found


def app_option(help: str, *, required: bool = False) -> Callable[[_F], _F]:
    """`--app MODULE|FILE.flow`, repeatable: the code this command may drive runs of; with
    it `--allow-module`, for the modules those .flow files may use."""
    app = click.option(
        "--app", "apps", multiple=True, required=required, metavar="MODULE|FILE.flow", help=help
    )

    def both(fn: _F) -> _F:
        return app(allow_option(expose=False)(fn))

    return both


Db = Path | str
"""Where the store is: an SQLite file, or a postgresql:// URL (kept as text)."""


@contextlib.asynccontextmanager
async def opened(
    db: Db,
    *targets: Any,
    existing: bool = False,
    read_only: bool = False,
) -> AsyncIterator[Engine]:
    """`async with engine`, except that a failing open (a run that cannot be resumed, a bad
    store) still closes what it started; otherwise its SQLite threads keep the process alive.
    `read_only` opens the file `mode=ro`: the engine reads and never writes."""
    if (existing or read_only) and isinstance(db, Path) and not db.exists():
        raise CliError(f"no dotdo database at {db} (set --db or DOTDO_DB)")
    engine = Engine(db, read_only=read_only, flow_modules=allowed_modules()).register(*targets)
    try:
        await engine.open()
        yield engine
    finally:
        await engine.close()


def db_option(on_group: bool = False) -> Callable[[_F], _F]:
    """`--db` before or after the command name; the innermost one given wins."""

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is None:
            return
        try:
            where = locate(value)
        except DotdoError as exc:
            raise click.BadParameter(str(exc)) from None
        if where.backend == "sqlite" and Path(where.target).is_dir():
            raise click.BadParameter(f"{where.target} is a directory, not a database file")
        ctx.meta["dotdo.db"] = Path(where.target) if where.backend == "sqlite" else where.target

    return click.option(
        "--db",
        metavar="FILE|URL",
        envvar="DOTDO_DB" if on_group else None,
        default="dotdo.db" if on_group else None,
        show_default=on_group,
        expose_value=False,
        callback=remember,
        help="SQLite file or postgresql://user@host/db URL of the store (env DOTDO_DB).",
    )


def allow_option(*, expose: bool = True) -> Callable[[_F], _F]:
    """`--allow-module M` (repeatable): a module or package .flow files may use besides
    their own project's (docs/security.md). Also kept for `allowed_modules()`."""

    def validate(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
        try:
            checked = check_allow_list(value, "--allow-module")
        except DotdoError as exc:
            raise click.BadParameter(str(exc).removeprefix("--allow-module: ")) from None
        ctx.meta["dotdo.allow"] = tuple(checked)
        return checked

    return click.option(
        "--allow-module",
        "allow_modules",
        multiple=True,
        metavar="MODULE",
        callback=validate,
        expose_value=expose,
        help="Let .flow files use this module or package too (repeatable).",
    )


def allowed_modules() -> tuple[str, ...]:
    """The --allow-module values of the running command (none outside a command)."""
    ctx = click.get_current_context(silent=True)
    return tuple(ctx.meta.get("dotdo.allow", ())) if ctx is not None else ()


def selected_db() -> Db:
    db: Db = click.get_current_context().meta["dotdo.db"]
    return db
