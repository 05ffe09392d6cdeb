"""`dotdo serve`: host DO entities over HTTP for cross-DO calls from other processes.

Bound to 127.0.0.1 by default; every request needs the bearer token ($DOTDO_TOKEN or
--token), so a missing token is refused before the port is opened, and so is any address
other than loopback (`--host 0.0.0.0`) without a token of at least 16 characters.
"""

from __future__ import annotations

import click

from dotdo.cli.common import (
    USAGE,
    CliError,
    Db,
    db_option,
    execute,
    import_module,
    selected_db,
)

__all__ = ["serve"]


async def _serve(db: Db, apps: list[str], host: str, port: int, token: str | None) -> int:
    from dotdo.entities.server import check_bind, serve_async
    from dotdo.errors import EntityError

    for name in apps:
        import_module(name)  # a bad module name is one line, not a traceback
    if not token:
        raise CliError("dotdo serve needs a token: set DOTDO_TOKEN or pass --token", USAGE)
    try:
        check_bind(host, token)
    except EntityError as exc:
        raise CliError(f"dotdo serve: {exc}", USAGE) from None
    click.echo(f"dotdo serve: {', '.join(apps)} on http://{host}:{port} (db {db}); Ctrl-C stops")
    await serve_async(apps, host, port, db, token=token, log_level="warning")
    return 0


@click.command()
@click.option(
    "--app",
    "apps",
    multiple=True,
    required=True,
    metavar="MODULE",
    help="Host the DO classes of this module.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8123, show_default=True)
@click.option("--token", envvar="DOTDO_TOKEN", help="Bearer token callers must send.")
@db_option()
def serve(apps: tuple[str, ...], host: str, port: int, token: str | None) -> None:
    """Serve DO entities over HTTP (cross-DO calls and pipelining)."""
    execute(_serve(selected_db(), list(apps), host, port, token))
