"""dotdo: durable workflows embedded in Python, persisted to one SQLite file.

Decorated `DO` methods compile to an explicit state-machine graph; the engine walks that
graph and checkpoints every durable step, so runs survive crashes without replaying code.
"""

from dotdo.compiler.ir import Graph, Policy
from dotdo.dsl.flow.loader import load_flow
from dotdo.dsl.python.approvals import approval
from dotdo.dsl.python.decorators import compensate, step, workflow
from dotdo.dsl.python.do import DO
from dotdo.dsl.python.triggers import ScheduleError, every, on
from dotdo.engine.context import StepContext, current_step
from dotdo.engine.engine import Engine, RunHandle
from dotdo.engine.models import Approval, CascadeResult, Decision, EventRecord
from dotdo.engine.records import RunInfo, StepRecord
from dotdo.engine.waits import ApprovalError
from dotdo.errors import (
    CompensationFailed,
    CompileError,
    DotdoError,
    GraphIntegrityError,
    InvalidId,
    LeaseLost,
    LoopBudgetExceeded,
    PermanentError,
    RemoteError,
    RunConflict,
    RunFailed,
    RunNotFound,
    SerializationError,
    StepInterrupted,
    StepTimeout,
    StoreError,
    StoreWriteError,
    UnknownWorkflow,
)

__version__ = "0.1.0"

__all__ = [
    "DO",
    "Approval",
    "ApprovalError",
    "CascadeResult",
    "CompensationFailed",
    "CompileError",
    "Decision",
    "DotdoError",
    "Engine",
    "EventRecord",
    "Graph",
    "GraphIntegrityError",
    "InvalidId",
    "LeaseLost",
    "LoopBudgetExceeded",
    "PermanentError",
    "Policy",
    "RemoteError",
    "RunConflict",
    "RunFailed",
    "RunHandle",
    "RunInfo",
    "RunNotFound",
    "ScheduleError",
    "SerializationError",
    "StepContext",
    "StepInterrupted",
    "StepRecord",
    "StepTimeout",
    "StoreError",
    "StoreWriteError",
    "UnknownWorkflow",
    "__version__",
    "approval",
    "compensate",
    "current_step",
    "every",
    "load_flow",
    "on",
    "step",
    "workflow",
]
