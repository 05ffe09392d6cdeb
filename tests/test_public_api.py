"""The public surface is a contract: this pins it, so a change to it is deliberate."""

import dotdo

EXPECTED = {
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
}


def test_all_is_pinned() -> None:
    assert set(dotdo.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    for name in dotdo.__all__:
        assert hasattr(dotdo, name), name


def test_contract_names_from_architecture() -> None:
    # The names ARCHITECTURE.md's example imports.
    from dotdo import DO, Engine, approval, compensate, every, on, step, workflow  # noqa: F401


def test_errors_share_one_base() -> None:
    for name in dotdo.__all__:
        value = getattr(dotdo, name)
        if isinstance(value, type) and issubclass(value, Exception) and name != "PermanentError":
            assert issubclass(value, dotdo.DotdoError), name


def test_testing_api_is_pinned() -> None:
    import dotdo.testing

    assert set(dotdo.testing.__all__) == {
        "BOUNDARIES",
        "Approve",
        "CrashAt",
        "CrashReport",
        "CrashSafetyError",
        "Expire",
        "Reject",
        "Send",
        "SimulatedCrash",
        "VirtualClock",
        "Waiting",
        "assert_crash_safe",
    }
    for name in dotdo.testing.__all__:
        assert hasattr(dotdo.testing, name), name
