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


def test_every_public_error_lives_in_errors_and_names_its_public_home() -> None:
    import importlib
    import inspect

    import dotdo.errors

    errors = {id(getattr(dotdo.errors, n)) for n in dotdo.errors.__all__}
    defined = {
        f"{module.__name__}.{name}"
        for module in [importlib.import_module(m) for m in _dotdo_modules()]
        for name in getattr(module, "__all__", ())
        if isinstance(value := getattr(module, name), type)
        and issubclass(value, Exception)
        and id(value) not in errors
    }
    # Signals that never leave their package: each is turned into something else there.
    internal = {
        "dotdo.cli.common.CliError",  # one line on stderr and an exit code
        "dotdo.dsl.flow.grammar.BadIndent",  # a positioned Diagnostic of the parser
        "dotdo.console.state.Refused",  # an HTTP error page or JSON error of the console
    }
    assert defined == internal, f"errors defined outside dotdo/errors.py: {sorted(defined)}"
    for name in dotdo.errors.__all__:
        cls = getattr(dotdo.errors, name)
        assert inspect.isclass(cls) and issubclass(cls, Exception), name
        home = importlib.import_module(cls.__module__)
        assert getattr(home, name) is cls, f"{name} is not importable from {cls.__module__}"
        assert name in home.__all__, f"{name} is not in {cls.__module__}.__all__"


def _dotdo_modules() -> list[str]:
    import pkgutil

    import dotdo

    return [
        m.name
        for m in pkgutil.walk_packages(dotdo.__path__, "dotdo.")
        if m.name not in ("dotdo.errors", "dotdo.cli.__main__")
    ]
