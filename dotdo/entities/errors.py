"""Errors of cross-DO calls.

They travel as values: the callee encodes them into its answer and the caller re-raises the
same class, so each takes its message as its only argument (that is how serde rebuilds an
exception). Mistakes that no retry can fix (a class nobody hosts, a method that is not
there, a refused token, a malformed message, an argument that cannot be sent) are also
`PermanentError`s, so a workflow step fails at once instead of backing off three times.
"""

from __future__ import annotations

from dotdo.errors import DotdoError, PermanentError, RemoteError

__all__ = [
    "ArgumentError",
    "CallConflict",
    "CallIdReused",
    "EntityAuthError",
    "EntityError",
    "EntityUnavailable",
    "PermanentRemoteError",
    "ProtocolError",
    "UnknownEntity",
    "UnknownMethod",
]


class EntityError(DotdoError):
    """Base of the errors of calls between DO instances."""


class UnknownEntity(EntityError, PermanentError):
    """No class of that name is hosted here, registered on the engine or routed remotely."""


class UnknownMethod(EntityError, PermanentError):
    """The chain reads or calls something the target does not offer to callers."""


class ArgumentError(EntityError, PermanentError):
    """An argument of the chain cannot be encoded, so the call cannot be sent."""


class ProtocolError(EntityError, PermanentError):
    """A message that does not follow the wire format (or a server that answered nonsense)."""


class EntityAuthError(EntityError, PermanentError):
    """The server refused the bearer token (missing or wrong)."""


class EntityUnavailable(EntityError):
    """The callee could not be reached or failed before answering; retrying is safe."""


class CallConflict(EntityError):
    """Another writer kept changing the instance's state; the call was not applied."""


class CallIdReused(EntityError, PermanentError):
    """A call id the callee already applied came back with another target, method or
    arguments. The callee refuses it (HTTP 409) instead of answering another call's result:
    a call id belongs to one request of one caller (see docs/cross-do.md, call identity)."""


class PermanentRemoteError(RemoteError, PermanentError):
    """A callee's PermanentError whose class the caller does not have: a RemoteError (type
    name and message) that still fails the caller's step at once instead of retrying."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.args = (type_name, message)  # so that it is stored and rebuilt as itself

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"
