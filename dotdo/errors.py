"""Every error dotdo raises on purpose, in one place.

User mistakes (bad workflow code, unknown run ids, a locked database) surface as a subclass of
`DotdoError`, so the CLI can print one line instead of a traceback and callers can catch the
whole family at once. Each class names, in `__module__`, the public module it is imported
from (`dotdo`, `dotdo.entities`, `dotdo.testing`), which is also the name a stored error
is recorded under.

    Exception
    ├── PermanentError                 raise it in a step: fail at once, no retries
    ├── AssertionError
    │   └── CrashSafetyError           dotdo.testing: a crash point broke a property
    └── DotdoError
        ├── CompileError               workflow code that cannot be lowered (file:line:col)
        │   └── FlowError              a .flow file with problems (.diagnostics)
        │       └── FlowSyntaxError
        ├── FlowFailure                `fail "reason"` in a running flow
        ├── ScheduleError              an @every / @on the engine cannot understand
        ├── SerializationError         a value that cannot be stored (or rebuilt)
        ├── StoreError                 the database cannot be used
        │   ├── StoreWriteError        a write was not committed (disk full, I/O)
        │   ├── StoreUnreachable       no database server answers (or it hung up)
        │   ├── StoreAuthError         the server refused the credentials
        │   ├── SchemaTooNew           written by a newer dotdo
        │   └── UnknownStoreURL        a --db URL of a scheme dotdo has no backend for
        ├── RunNotFound
        ├── InvalidId                  a run or entity id dotdo refuses
        ├── RunConflict                a run id reused with another workflow or input
        ├── GraphIntegrityError        a stored graph that must not run
        ├── UnknownWorkflow
        ├── LeaseLost                  another process owns the run now
        ├── LoopBudgetExceeded         plain code that would not stop
        ├── StepTimeout
        ├── StepInterrupted            a try_ in flight when its process died
        ├── ApprovalError              an approval that cannot be decided
        ├── CompensationFailed
        ├── RunFailed                  RunHandle.result() of a run that did not complete
        ├── RemoteError                an error whose class is not known here
        │   └── PermanentRemoteError   ... that the callee marked permanent
        └── EntityError                dotdo.entities: calls between DO instances
            ├── UnknownEntity *        * also PermanentError
            ├── UnknownMethod *
            ├── ArgumentError *
            ├── ProtocolError *
            ├── EntityAuthError *
            ├── CallIdReused *
            ├── EntityUnavailable      the callee could not be reached; retrying is safe
            └── CallConflict
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ApprovalError",
    "ArgumentError",
    "CallConflict",
    "CallIdReused",
    "CompensationFailed",
    "CompileError",
    "CrashSafetyError",
    "DotdoError",
    "EntityAuthError",
    "EntityError",
    "EntityUnavailable",
    "FlowError",
    "FlowFailure",
    "FlowSyntaxError",
    "GraphIntegrityError",
    "InvalidId",
    "LeaseLost",
    "LoopBudgetExceeded",
    "PermanentError",
    "PermanentRemoteError",
    "ProtocolError",
    "RemoteError",
    "RunConflict",
    "RunFailed",
    "RunNotFound",
    "ScheduleError",
    "SchemaTooNew",
    "SerializationError",
    "StepInterrupted",
    "StepTimeout",
    "StoreAuthError",
    "StoreError",
    "StoreUnreachable",
    "StoreWriteError",
    "UnknownEntity",
    "UnknownMethod",
    "UnknownStoreURL",
    "UnknownWorkflow",
]


class DotdoError(Exception):
    """Base of every error dotdo raises on purpose."""


class CompileError(DotdoError):
    """Workflow code the compiler cannot lower to a graph; carries its position and a hint."""

    def __init__(
        self,
        message: str,
        *,
        file: str = "<unknown>",
        line: int = 0,
        col: int = 0,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.hint = hint
        text = f"{file}:{line}:{col}: {message}"
        if hint:
            text += f" (hint: {hint})"
        super().__init__(text)


class SerializationError(DotdoError):
    """A value cannot be stored as JSON; `path` says where inside the value it sits."""

    def __init__(self, message: str, *, path: str = "$") -> None:
        self.path = path
        super().__init__(f"{message} at {path}" if path != "$" else message)


class StoreError(DotdoError):
    """The database cannot be used: locked, corrupt, of a newer schema, or not dotdo's."""


class StoreWriteError(StoreError):
    """A write was not committed: the disk is full, an I/O error, the database stayed locked
    past `busy_timeout`. Nothing of it was stored. The engine retries its own writes (a run
    goes on from its last checkpoint once the store works again); a call such as `approve`
    or `send` that fails with this did nothing and may simply be retried."""


class StoreUnreachable(StoreError):
    """No database server answers at the URL (refused, unknown host, timed out), or the
    connection was lost. The engine reconnects with backoff when it loses one mid-run."""


class StoreAuthError(StoreError):
    """The database server refused the user, password or database name of the URL."""


class SchemaTooNew(StoreError):
    """The database was written by a newer dotdo (a higher schema version): nothing was
    changed; upgrade dotdo to open it."""


class UnknownStoreURL(StoreError):
    """`--db` / `DOTDO_DB` / `Engine(...)` named a URL whose scheme has no backend (only
    SQLite files and postgresql:// URLs do)."""


class RunNotFound(DotdoError):
    """No run with that id exists in the store."""


class InvalidId(DotdoError):
    """A run id or entity id that dotdo refuses: empty, too long, not printable, or shaped
    like a path (see `docs/security.md`)."""


class RunConflict(DotdoError):
    """A start reuses an existing run id with a different workflow, input or entity id."""

    def __init__(self, message: str, *, run_id: str = "") -> None:
        self.run_id = run_id
        super().__init__(message)


class GraphIntegrityError(DotdoError):
    """A stored graph that must not run: its body does not match its hash, it belongs to
    another workflow, or it lacks a valid signature while the engine has a secret."""

    def __init__(self, message: str, *, graph_hash: str = "") -> None:
        self.graph_hash = graph_hash
        super().__init__(message)


class UnknownWorkflow(DotdoError):
    """A run or a start names a workflow that is not registered on this engine."""


class LeaseLost(DotdoError):
    """Another process owns the run now; this process must stop advancing it."""


class LoopBudgetExceeded(DotdoError):
    """A run executed too much plain code between two durable operations: a loop with no
    step, sleep, wait or approval on its path (`while true:`) ran past the engine's budget
    (`Engine(loop_budget=...)`). The message starts with the loop's `file:line`; the run
    fails (its completed steps are compensated) instead of spinning forever."""

    def __init__(self, message: str, file: str = "", line: int = 0) -> None:
        super().__init__(message, file, line)
        self.file = file
        self.line = line

    def __str__(self) -> str:
        return str(self.args[0])


class PermanentError(Exception):
    """Raise (or subclass) this inside a step to fail it at once, without retries."""


class StepTimeout(DotdoError):
    """One attempt of a step ran past its `timeout`."""


class StepInterrupted(DotdoError):
    """A `try_` attempt was in flight when its process died; at-most-once forbids a rerun."""


class RemoteError(DotdoError):
    """A recorded exception whose class cannot be re-created here; keeps its type and text."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")


class CompensationFailed(DotdoError):
    """An undo step failed for good; `original` is the error that started compensation."""

    def __init__(self, step_id: str, error: BaseException, original: BaseException) -> None:
        self.step_id = step_id
        self.error = error
        self.original = original
        super().__init__(
            f"compensation {step_id!r} failed ({type(error).__name__}: {error}) while undoing "
            f"after {type(original).__name__}: {original}"
        )


class RunFailed(DotdoError):
    """`RunHandle.result()` on a run that ended failed, compensated or cancelled.

    `error` is the original exception (re-created from the store), kept so callers can see
    what went wrong even after compensation ran.
    """

    def __init__(self, run_id: str, status: str, error: BaseException | None) -> None:
        self.run_id = run_id
        self.status = status
        self.error = error
        detail = f": {type(error).__name__}: {error}" if error is not None else ""
        super().__init__(f"run {run_id!r} ended {status}{detail}")


class ScheduleError(DotdoError):
    """A schedule or event pattern that cannot be understood."""


class ApprovalError(DotdoError):
    """An approval cannot be decided: unknown id, not this approver's turn, already settled."""


# ------------------------------------------------------------------------------ .flow
class FlowError(CompileError):
    """A `.flow` file that cannot be loaded; `diagnostics` lists every problem found (each
    a `dotdo.Diagnostic`: path, line, col, message, what was expected)."""

    def __init__(self, diagnostics: Sequence[Any]) -> None:
        self.diagnostics = list(diagnostics)
        first = self.diagnostics[0] if self.diagnostics else None
        super().__init__(
            first.message if first else "error",
            file=first.path if first else "<flow>",
            line=first.line if first else 0,
            col=first.col if first else 0,
            hint=first.expected if first else None,
        )
        count = sum(1 for d in self.diagnostics if d.is_error)
        where = first.path if first else "<flow>"
        summary = f"{count} error{'s' if count != 1 else ''} in {where}"
        rendered = "\n".join(d.render() for d in self.diagnostics)
        Exception.__init__(self, f"{summary}\n{rendered}")


class FlowSyntaxError(FlowError):
    """The file does not parse; it carries exactly one diagnostic."""


class FlowFailure(DotdoError):
    """What `fail "reason"` raises inside a running flow (catchable with `except`)."""


# ---------------------------------------------------------------- cross-DO calls
# They travel as values: the callee encodes them into its answer and the caller re-raises
# the same class, so each takes its message as its only argument (that is how serde
# rebuilds an exception). Mistakes that no retry can fix are also PermanentErrors, so a
# workflow step fails at once instead of backing off three times.
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


# ------------------------------------------------------------------------ testing
class CrashSafetyError(AssertionError):
    """A crash point where the resumed run broke a durability property.

    An AssertionError so that pytest reports it as a test failure, not as an error in the
    test's own machinery.
    """


_PUBLIC_HOME = {
    **dict.fromkeys(
        (
            "EntityError",
            "UnknownEntity",
            "UnknownMethod",
            "ArgumentError",
            "ProtocolError",
            "EntityAuthError",
            "EntityUnavailable",
            "CallConflict",
            "CallIdReused",
            "PermanentRemoteError",
        ),
        "dotdo.entities",
    ),
    "CrashSafetyError": "dotdo.testing",
}
for _name in __all__:
    globals()[_name].__module__ = _PUBLIC_HOME.get(_name, "dotdo")
del _name
