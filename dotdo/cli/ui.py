"""`dotdo ui`: serve the web console (docs/console.md) beside the workers.

With `--app`, the console's own engine has the app's workflows, so a decision made in the
browser drives the run on at once in this process; without, the run is left due for a
worker. Binding beyond loopback is refused while the database has no user.
"""

from __future__ import annotations

import click

from dotdo.cli.common import (
    USAGE,
    CliError,
    Db,
    app_option,
    db_option,
    execute,
    load_apps,
    selected_db,
)

__all__ = ["ui"]


async def _ui(
    db: Db, apps: list[str], host: str, port: int, trust_header: str | None, url: str | None
) -> int:
    import uvicorn

    from dotdo.cli.common import allowed_modules
    from dotdo.console import ConsoleConfig, create_app
    from dotdo.console.security import refuse_open_bind
    from dotdo.engine import people
    from dotdo.engine.engine import Engine

    targets = load_apps(apps)
    engine = Engine(db, flow_modules=allowed_modules()).register(*targets)
    await engine.open()
    try:
        reason = refuse_open_bind(host, await people.users_exist(engine.store))
        if reason is not None:
            raise CliError(f"dotdo ui: {reason}", USAGE)
        config = ConsoleConfig(host=host, trust_header=trust_header, base_url=url)
        app = create_app(engine, config)
        click.echo(f"dotdo ui: http://{host}:{port} (db {db}); Ctrl-C stops")
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        )
        await server.serve()
    finally:
        await engine.close()
    return 0


@click.command()
@app_option("Register this module's DO classes (or .flow file): decisions drive runs here.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--trust-header",
    metavar="HEADER",
    help="Believe this identity header (e.g. X-Forwarded-User) from a loopback proxy.",
)
@click.option("--url", metavar="URL", help="The console's public URL (for approval links).")
@db_option()
def ui(
    apps: tuple[str, ...], host: str, port: int, trust_header: str | None, url: str | None
) -> None:
    """Serve the web console: inbox, decisions, runs, live diagrams, JSON API."""
    execute(_ui(selected_db(), list(apps), host, port, trust_header, url))
