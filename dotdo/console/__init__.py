"""The web console: inbox, decisions, runs, live run diagrams, and a JSON API (`dotdo ui`).

See docs/console.md. `create_app(engine, ConsoleConfig(...))` is the Starlette app; the
`dotdo ui` command serves it with uvicorn.
"""

from dotdo.console.app import create_app
from dotdo.console.state import ConsoleConfig

__all__ = ["ConsoleConfig", "create_app"]
