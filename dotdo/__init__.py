"""dotdo: durable workflows embedded in Python, persisted to one SQLite file.

Decorated `DO` methods compile to an explicit state-machine graph; the engine walks that
graph and checkpoints every durable step, so runs survive crashes without replaying code.
"""

from dotdo.compiler.ir import Graph, Policy
from dotdo.dsl.drawing import render
from dotdo.dsl.flow.checker import check_file, check_files, check_source
from dotdo.dsl.flow.diagnostics import Diagnostic
from dotdo.dsl.flow.formatter import format_file, format_source
from dotdo.dsl.flow.loader import FlowModule, load_flow, load_source
from dotdo.dsl.python.approvals import approval
from dotdo.dsl.python.decorators import compensate, step, workflow
from dotdo.dsl.python.do import DO
from dotdo.dsl.python.triggers import every, on
from dotdo.engine.context import StepContext, current_step
from dotdo.engine.engine import Engine, RunHandle
from dotdo.engine.models import Approval, CascadeResult, Decision, EventRecord
from dotdo.engine.records import RunInfo, StepRecord
from dotdo.errors import (
    ApprovalError,
    CompensationFailed,
    CompileError,
    DotdoError,
    FlowError,
    FlowFailure,
    FlowSyntaxError,
    GraphIntegrityError,
    InvalidId,
    LeaseLost,
    LoopBudgetExceeded,
    PermanentError,
    RemoteError,
    RunConflict,
    RunFailed,
    RunNotFound,
    ScheduleError,
    SchemaTooNew,
    SerializationError,
    StepInterrupted,
    StepTimeout,
    StoreAuthError,
    StoreError,
    StoreUnreachable,
    StoreWriteError,
    UnknownStoreURL,
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
    "Diagnostic",
    "DotdoError",
    "Engine",
    "EventRecord",
    "FlowError",
    "FlowFailure",
    "FlowModule",
    "FlowSyntaxError",
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
    "SchemaTooNew",
    "SerializationError",
    "StepContext",
    "StepInterrupted",
    "StepRecord",
    "StepTimeout",
    "StoreAuthError",
    "StoreError",
    "StoreUnreachable",
    "StoreWriteError",
    "UnknownStoreURL",
    "UnknownWorkflow",
    "__version__",
    "approval",
    "check_file",
    "check_files",
    "check_source",
    "compensate",
    "current_step",
    "every",
    "format_file",
    "format_source",
    "load_flow",
    "load_source",
    "on",
    "render",
    "step",
    "workflow",
]
