"""Opening PostgreSQL connections, with one clear line for everything that can go wrong.

An unreachable server, refused credentials, a database or schema that does not exist and a
malformed URL each become one `StoreError` subclass whose message names the server (never
the password) and says what to do. Nothing is written before the connection works and the
schema version has been read, so a refused open changes nothing.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from dotdo.engine.store.location import redact
from dotdo.errors import StoreAuthError, StoreError, StoreUnreachable

__all__ = ["connect", "describe", "is_connection_loss"]


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - the extra is part of dev
        raise StoreError(
            "the PostgreSQL backend needs asyncpg: pip install 'dotdo[postgres]'"
        ) from None
    return asyncpg


async def connect(url: str, *, timeout: float = 10.0, **kwargs: Any) -> Any:
    """An asyncpg connection to `url`, or one StoreError line saying why not."""
    asyncpg = _asyncpg()
    try:
        conn = await asyncpg.connect(url, timeout=timeout, **kwargs)
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError) and not isinstance(exc, TimeoutError):
            raise
        error = describe(url, exc)
        if error is None:
            raise
        raise error from None
    try:
        schema = await conn.fetchval("SELECT current_schema()")
    except BaseException:
        conn.terminate()
        raise
    if schema is None:
        conn.terminate()
        raise StoreError(
            f"{redact(url)}: the schema of its search_path does not exist "
            "(create it first: CREATE SCHEMA name)"
        )
    return conn


def describe(url: str, exc: BaseException) -> StoreError | None:
    """The one-line StoreError for a failure to connect (None: not a connection failure)."""
    asyncpg = _asyncpg()
    where = redact(url)
    if isinstance(exc, StoreError):
        return exc
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return StoreAuthError(f"{where}: the server refused the credentials: {_first(exc)}")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreError(f"{where}: {_first(exc)} (create it first: createdb NAME)")
    if isinstance(exc, asyncpg.TooManyConnectionsError | asyncpg.CannotConnectNowError):
        return StoreUnreachable(f"{where}: the server refused a connection: {_first(exc)}")
    if isinstance(exc, socket.gaierror):
        return StoreUnreachable(f"{where}: unknown host ({exc.strerror or exc})")
    if isinstance(exc, TimeoutError):
        return StoreUnreachable(f"{where}: no answer from the server (timed out)")
    if isinstance(exc, ConnectionRefusedError):
        return StoreUnreachable(f"{where}: connection refused (is PostgreSQL running there?)")
    if isinstance(exc, OSError | asyncpg.ConnectionDoesNotExistError):
        return StoreUnreachable(f"{where}: cannot connect: {_first(exc)}")
    if isinstance(exc, asyncpg.ClientConfigurationError | ValueError | OverflowError):
        return StoreError(f"{where}: not a usable PostgreSQL URL: {_first(exc)}")
    return None


def is_connection_loss(exc: BaseException) -> bool:
    """Whether `exc` means the connection is gone (reconnect), not that a statement failed."""
    asyncpg = _asyncpg()
    return isinstance(
        exc,
        OSError
        | ConnectionError
        | asyncpg.ConnectionDoesNotExistError
        | asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError
        | asyncpg.AdminShutdownError
        | asyncpg.CannotConnectNowError,
    )


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
