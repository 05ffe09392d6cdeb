"""Every error dotdo raises on purpose.

User mistakes (bad workflow code, unknown run ids, a locked database) surface as a subclass of
`DotdoError`, so the CLI can print one line instead of a traceback and callers can catch the
whole family at once.
"""

from __future__ import annotations

__all__ = [
    "CompensationFailed",
    "CompileError",
    "DotdoError",
    "GraphIntegrityError",
    "InvalidId",
    "LeaseLost",
    "LoopBudgetExceeded",
    "PermanentError",
    "RemoteError",
    "RunConflict",
    "RunFailed",
    "RunNotFound",
    "SerializationError",
    "StepInterrupted",
    "StepTimeout",
    "StoreError",
    "StoreWriteError",
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
