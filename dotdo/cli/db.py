"""`dotdo db ...`: operations on a whole database (today: `copy`, moving off SQLite)."""

from __future__ import annotations

import time

import click

from dotdo.cli.common import USAGE, CliError, execute
from dotdo.engine.store.location import locate

__all__ = ["db"]


@click.group()
def db() -> None:
    """Operations on a whole database."""


@db.command("copy")
@click.option("--from", "source", required=True, metavar="FILE", help="The SQLite file to copy.")
@click.option("--to", "target", required=True, metavar="URL", help="postgresql://user@host/dbname")
@click.option(
    "--into-non-empty",
    "--force",
    "into_non_empty",
    is_flag=True,
    help="Add to a target that already holds dotdo data (rows whose key is there are kept).",
)
def copy(source: str, target: str, into_non_empty: bool) -> None:
    """Copy every run, journal, wait, approval, schedule, graph and entity of an SQLite
    database into PostgreSQL, in one transaction. Stop the SQLite file's workers first;
    unfinished and hibernating runs continue on the new database's workers."""
    execute(_copy(source, target, into_non_empty))


async def _copy(source: str, target: str, into_non_empty: bool) -> int:
    if locate(source).backend != "sqlite":
        raise CliError(f"--from must be an SQLite file, not {locate(source).display}", USAGE)
    where = locate(target)
    if where.backend != "postgres":
        raise CliError(f"--to must be a postgresql:// URL, not {where.display}", USAGE)
    from dotdo.engine.store.postgres.copy import copy_sqlite_to_postgres

    started = time.monotonic()
    report = await copy_sqlite_to_postgres(
        locate(source).target, where.target, into_non_empty=into_non_empty
    )
    rows = sum(report.copied.values())
    kept = sum(report.kept.values())
    note = f"; {kept} already there, kept" if kept else ""
    click.echo(
        f"copied {report.runs} runs ({rows} rows) from {source} to {where.display} "
        f"in {time.monotonic() - started:.1f}s{note}"
    )
    return 0
