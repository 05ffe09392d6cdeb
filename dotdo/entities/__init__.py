"""Cross-DO calls: DO instances as addressable entities, and promise pipelining.

A DO class is also an entity type: an instance is addressed by class name and id, keeps a
pydantic `State` in the engine's SQLite file and answers calls one at a time. Inside a
workflow, `await self.Inventory(w).reserve(items)` is a durable step (journalled once,
retried, applied once by the callee: the step's idempotency key is the call id);
`await self.User(id).profile.email` sends the whole chain in one round trip; and
`self.User(id).notify(...)` as a statement is a durable fire-and-forget send.

Callees are found through the calling engine: the classes registered on it run in-process,
others go over HTTP to a `dotdo serve` named by `remote(engine, "Inventory", url)`.
See docs/cross-do.md.
"""

from dotdo.entities.client import Client, connect
from dotdo.entities.entity import Entity
from dotdo.entities.plain import plain_entity, reset_plain
from dotdo.entities.runtime import Entities, entities_of, remote
from dotdo.entities.server import build_app, create_app, running, serve, serve_async
from dotdo.entities.stubs import Stub
from dotdo.errors import (
    ArgumentError,
    CallConflict,
    CallIdReused,
    EntityAuthError,
    EntityError,
    EntityUnavailable,
    PermanentRemoteError,
    ProtocolError,
    UnknownEntity,
    UnknownMethod,
)

__all__ = [
    "ArgumentError",
    "CallConflict",
    "CallIdReused",
    "Client",
    "Entities",
    "Entity",
    "EntityAuthError",
    "EntityError",
    "EntityUnavailable",
    "PermanentRemoteError",
    "ProtocolError",
    "Stub",
    "UnknownEntity",
    "UnknownMethod",
    "build_app",
    "connect",
    "create_app",
    "entities_of",
    "plain_entity",
    "remote",
    "reset_plain",
    "running",
    "serve",
    "serve_async",
]
