"""Plumbing every `dotdo` command shares: one-line errors, opening an engine, --db.

A user mistake becomes one line on stderr (exit 2 for usage errors, 1 for everything else);
only unexpected errors offer a traceback, and only on request (DOTDO_DEBUG=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import click

from dotdo._cli_output import debug, describe_error, one_line
from dotdo.compiler.flow_sandbox import check_allow_list
from dotdo.dsl.do import DO
from dotdo.engine.engine import Engine
from dotdo.errors import DotdoError

__all__ = [
    "FAILURE",
    "USAGE",
    "CliError",
    "allow_option",
    "classes_in",
    "cwd_importable",
    "db_option",
    "execute",
    "import_module",
    "opened",
    "selected_db",
]

USAGE = 2
FAILURE = 1
_DEBUG_HINT = "(run with DOTDO_DEBUG=1 for a traceback)"


class CliError(Exception):
    """A mistake to report in one line; `cause` is the user's own exception, if any."""

    def __init__(self, message: str, code: int = FAILURE, cause: BaseException | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.cause = cause


def fail(message: str, code: int, *, hint: bool = False) -> NoReturn:
    click.echo(f"error: {one_line(message)}" + (f" {_DEBUG_HINT}" if hint else ""), err=True)
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


# ----------------------------------------------------------------- importing user code
def cwd_importable() -> None:
    """Import from the current directory as `python -m` would: for the target and --app
    modules, and for stored models that name their class by module when a run is read."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)


def import_module(name: str) -> ModuleType:
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


def classes_in(name: str, flow_modules: tuple[str, ...] = ()) -> list[type[DO]]:
    """The DO classes of module `name`, or of the `.flow` file `name` (loaded with the
    modules in `flow_modules` allowed besides its project's)."""
    if name.endswith(".flow"):
        from dotdo.dsl.flow_runtime import load_flow

        if not Path(name).is_file():
            raise CliError(f"no such file: {name}", USAGE)
        return [load_flow(name, flow_modules=flow_modules).owner]
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


@contextlib.asynccontextmanager
async def opened(
    db: Path, *classes: type[DO], existing: bool = False, flow_modules: tuple[str, ...] = ()
) -> AsyncIterator[Engine]:
    """`async with engine`, except that a failing open (a run that cannot be resumed, a bad
    store) still closes what it started; otherwise its SQLite threads keep the process alive.
    With nothing registered the engine only reads the store and never advances a run."""
    if existing and not db.exists():
        raise CliError(f"no dotdo database at {db} (set --db or DOTDO_DB)")
    engine = Engine(db, flow_modules=flow_modules).register(*classes)
    try:
        await engine.open()
        yield engine
    finally:
        await engine.close()


_F = TypeVar("_F", bound=Callable[..., Any])


def db_option(on_group: bool = False) -> Callable[[_F], _F]:
    """`--db` before or after the command name; the innermost one given wins."""

    def remember(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
        if value is not None:
            ctx.meta["dotdo.db"] = value

    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="DOTDO_DB" if on_group else None,
        default=Path("dotdo.db") if on_group else None,
        show_default=on_group,
        expose_value=False,
        callback=remember,
        help="SQLite file of the store (env DOTDO_DB).",
    )


def allow_option() -> Callable[[_F], _F]:
    """`--allow-module M` (repeatable): a module or package .flow files may use besides
    their own project's (docs/security.md)."""

    def validate(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
        try:
            return check_allow_list(value, "--allow-module")
        except DotdoError as exc:
            raise click.BadParameter(str(exc).removeprefix("--allow-module: ")) from None

    return click.option(
        "--allow-module",
        "allow_modules",
        multiple=True,
        metavar="MODULE",
        callback=validate,
        help="Let .flow files use this module or package too (repeatable).",
    )


def selected_db() -> Path:
    db: Path = click.get_current_context().meta["dotdo.db"]
    return db
