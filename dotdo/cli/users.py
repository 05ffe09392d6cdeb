"""`dotdo users add | remove | list`: the people who may use the console.

Each user has a role (viewer, approver, operator) and the approver names they act as: their
own name in workflows' `approvers=[...]` and any group (`finance`). A password is read from
a prompt or $DOTDO_PASSWORD (never a command-line argument, which other users can see);
`--token` prints a new API token once (only its digest is stored).
"""

from __future__ import annotations

import os
import time

import click

from dotdo.cli.common import USAGE, CliError, Db, db_option, execute, opened, selected_db
from dotdo.cli.output import console
from dotdo.engine import people

__all__ = ["users"]


def _name(value: str, what: str) -> str:
    if not value or len(value) > 200 or not value.isprintable() or value != value.strip():
        raise CliError(f"bad {what} {value[:80]!r}: one printable name, at most 200", USAGE)
    return value


async def _add(
    db: Db, name: str, role: str, names: list[str], password: str | None, token: bool
) -> int:
    _name(name, "user name")
    for n in names:
        _name(n, "approver name")
    async with opened(db) as engine:
        await people.add_user(
            engine.store,
            name,
            role=role,  # type: ignore[arg-type]
            names=names or [name],
            password=password,
            now=time.time(),
        )
        click.echo(f"user {name}: {role}, acts as {', '.join(names or [name])}")
        if token:
            fresh = await people.new_token(engine.store, name, now=time.time())
            click.echo(f"API token (shown once): {fresh}")
    return 0


async def _remove(db: Db, name: str) -> int:
    async with opened(db, existing=True) as engine:
        if not await people.remove_user(engine.store, name):
            raise CliError(f"no user named {name!r}")
    click.echo(f"removed user {name}")
    return 0


async def _list(db: Db) -> int:
    async with opened(db, existing=True, read_only=True) as engine:
        found = await people.list_users(engine.store)
    if not found:
        click.echo("no users (add one with `dotdo users add NAME --role approver`)")
        return 0
    from rich.table import Table

    table = Table("user", "role", "acts as", "password")
    for p in found:
        table.add_row(p.name, p.role, ", ".join(p.names), "yes" if p.has_password else "no")
    console().print(table)
    return 0


@click.group()
def users() -> None:
    """Console users: who may sign in, their role, the approver names they act as."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(people.ROLES), default="approver", show_default=True)
@click.option(
    "--as",
    "names",
    multiple=True,
    metavar="APPROVER",
    help="An approver name or group this user decides for (repeatable; default: NAME).",
)
@click.option("--password/--no-password", default=True, help="Prompt for a password.")
@click.option("--token", is_flag=True, help="Also print a new API token.")
@db_option()
def add(name: str, role: str, names: tuple[str, ...], password: bool, token: bool) -> None:
    """Add a user (or change an existing one's role, names and password)."""
    secret = None
    if password:
        secret = os.environ.get("DOTDO_PASSWORD") or click.prompt(
            "Password", hide_input=True, confirmation_prompt=True
        )
        if len(secret) < 8:
            raise click.UsageError("a password needs at least 8 characters")
    execute(_add(selected_db(), name, role, list(names), secret, token))


@users.command("remove")
@click.argument("name")
@db_option()
def remove(name: str) -> None:
    """Remove a user, their names and their tokens."""
    execute(_remove(selected_db(), name))


@users.command("list")
@db_option()
def list_() -> None:
    """List users."""
    execute(_list(selected_db()))
