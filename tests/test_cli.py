"""The `dotdo` command line, checked the way a user meets it: exit codes, one-line errors, what
lands in the store. Most tests go through click's CliRunner (fast, in-process); the ones about
process behaviour (the console entry, the worker's signal handling) use a real subprocess.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import dotdo.cli
import dotdo.cli.app
from dotdo import Engine, RunInfo, __version__
from dotdo.testing import CrashAt, SimulatedCrash

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from cli_app.shop import Order, Receipt, Shop  # noqa: E402

CHECKOUT = "cli_app.shop:Shop.checkout"
ORDER = json.dumps({"order": {"id": "o1", "amount": 2.5, "qty": 2}})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def counter(tmp_path: Path) -> Path:
    return tmp_path / "steps.log"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, counter: Path) -> Iterator[None]:
    """Run from tests/ (so cli_app imports as a user's app would) with a clean environment."""
    monkeypatch.chdir(TESTS)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("CLI_APP_COUNTER", str(counter))
    monkeypatch.delenv("DOTDO_DB", raising=False)
    monkeypatch.delenv("DOTDO_DEBUG", raising=False)
    logger = logging.getLogger("dotdo")  # the CLI sends its records to stderr; put that back
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def dotdo_cmd(*args: str | Path) -> Result:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


def run_info(db: Path, run_id: str) -> RunInfo:
    async def read() -> RunInfo:
        async with Engine(db) as engine:
            return await engine.get_run(run_id)

    return asyncio.run(read())


def assert_one_error_line(result: Result, *, code: int, contains: str = "") -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert contains in lines[0]
    return lines[0]


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOTDO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


# --------------------------------------------------------------------------------- run
def test_run_prints_result_json_and_the_run_completes_in_the_store(db: Path) -> None:
    result = dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "r1", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"order_id": "o1", "total": 5.0}
    assert "r1" in result.stderr
    info = run_info(db, "r1")
    assert info.status == "completed"
    assert info.workflow == "Shop.checkout"


def test_run_with_extra_app_modules(db: Path) -> None:
    result = dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--app", "cli_app.shop", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 5.0


def test_run_is_idempotent_by_run_id(db: Path, counter: Path) -> None:
    first = dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "same", "--db", db)
    second = dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "same", "--db", db)
    assert first.exit_code == second.exit_code == 0
    assert json.loads(first.stdout) == json.loads(second.stdout) == {"order_id": "o1", "total": 5.0}
    assert counter.read_text().split() == ["reserve", "charge"]


def test_run_without_run_id_starts_a_new_run_each_time(db: Path, counter: Path) -> None:
    for _ in range(2):
        assert dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--db", db).exit_code == 0
    assert counter.read_text().split() == ["reserve", "charge"] * 2


def test_run_prints_values_plain_json_cannot_hold(db: Path) -> None:
    result = dotdo_cmd("run", "cli_app.shop:Shop.summary", "--input", '{"label": "L"}', "--db", db)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["label"] == "L"
    assert out["price"] == "1.50"
    assert out["tags"] == ["x"]
    uuid.UUID(out["id"])
    assert datetime.fromisoformat(out["when"]).tzinfo is not None


def test_run_that_fails_prints_status_and_error_and_exits_1(db: Path) -> None:
    result = dotdo_cmd("run", "cli_app.shop:Shop.pay", "--run-id", "p1", "--db", db)
    line = assert_one_error_line(result, code=1, contains="failed")
    assert "card declined" in line
    assert result.stdout == ""
    assert run_info(db, "p1").status == "failed"


def test_run_that_waits_on_a_retry_timer_prints_waiting_and_wake_time(db: Path) -> None:
    result = dotdo_cmd("run", "cli_app.shop:Shop.settle", "--run-id", "s1", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert "s1" in result.stdout and "waiting" in result.stdout
    info = run_info(db, "s1")
    assert info.status == "waiting" and info.wake_at is not None
    assert info.wake_at.strftime("%Y-%m-%dT%H:%M") in result.stdout


def test_run_that_waits_for_an_approval_names_it(db: Path) -> None:
    args = ["run", "cli_app.shop:Shop.refund", "--input", '{"amount": 12}', "--run-id", "a1"]
    result = dotdo_cmd(*args, "--db", db)
    assert result.exit_code == 0, result.stderr
    assert "a1 waiting for approval a1/sign_off" in result.stdout
    assert "by manager" in result.stdout
    assert run_info(db, "a1").status == "waiting"
    shown = dotdo_cmd("status", "a1", "--db", db).stdout
    assert "waiting" in shown and "approval a1/sign_off" in shown


def test_run_with_a_bad_input_field_gives_one_line_naming_the_field(db: Path) -> None:
    bad = json.dumps({"order": {"id": "o1", "amount": "lots"}})
    result = dotdo_cmd("run", CHECKOUT, "--input", bad, "--db", db)
    assert_one_error_line(result, code=2, contains="order.amount")
    assert not db.exists(), "a rejected input must not create anything"


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (["no_such_module:Shop.checkout"], "no_such_module"),
        (["cli_app.shop"], "module:Class.method"),
        (["cli_app.shop:Shop"], "module:Class.method"),
        (["cli_app.shop:Nope.checkout"], "Nope"),
        (["cli_app.shop:Plain.go"], "not a DO"),
        (["cli_app.shop:Shop.reserve"], "not a @workflow"),
        (["missing.flow"], "no such file: missing.flow"),
        ([CHECKOUT, "--input", "{order: 1"], "not valid JSON"),
        ([CHECKOUT, "--input", "[1, 2]"], "JSON object"),
        ([CHECKOUT, "--input", '{"ordr": {}}'], "ordr"),
        ([CHECKOUT, "--input", "{}"], "order"),
        ([], "TARGET"),
        ([CHECKOUT, "--input", ORDER, "--app", "cli_app"], "defines no DO classes"),
        ([CHECKOUT, "--input", ORDER, "--app", "no_such_app"], "no_such_app"),
    ],
)
def test_run_usage_errors_are_one_line_exit_2(db: Path, args: list[str], contains: str) -> None:
    assert_one_error_line(dotdo_cmd("run", *args, "--db", db), code=2, contains=contains)


def test_run_of_a_module_that_fails_to_import(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = dotdo_cmd("run", "cli_app.explodes:X.y", "--db", db)
    line = assert_one_error_line(result, code=1, contains="config file missing")
    assert "DOTDO_DEBUG=1" in line
    monkeypatch.setenv("DOTDO_DEBUG", "1")
    result = dotdo_cmd("run", "cli_app.explodes:X.y", "--db", db)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "explodes.py" in result.stderr


def test_unexpected_errors_are_one_line_unless_debugging(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--db", db)

    def broken(*args: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(dotdo.cli.app, "render_runs", broken)
    line = assert_one_error_line(dotdo_cmd("runs", "--db", db), code=1, contains="KeyError")
    assert line.endswith("(run with DOTDO_DEBUG=1 for a traceback)")
    monkeypatch.setenv("DOTDO_DEBUG", "1")
    result = dotdo_cmd("runs", "--db", db)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr


# ------------------------------------------------------------------------------ status
def test_status_shows_the_run_and_its_journal(db: Path) -> None:
    dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "r1", "--db", db)
    result = dotdo_cmd("status", "r1", "--db", db)
    assert result.exit_code == 0, result.stderr
    for text in ("r1", "Shop.checkout", "completed", "reserve", "charge", "5.0", "steps done"):
        assert text in result.stdout


def test_status_shows_a_failed_steps_error(db: Path) -> None:
    dotdo_cmd("run", "cli_app.shop:Shop.settle", "--run-id", "s1", "--db", db)
    result = dotdo_cmd("status", "s1", "--db", db)
    assert result.exit_code == 0
    for text in ("waiting", "call_bank", "failed", "ConnectionError: bank is down", "wakes"):
        assert text in result.stdout


@pytest.mark.parametrize("command", ["status", "cancel"])
def test_unknown_run_id_is_one_line_exit_1(db: Path, command: str) -> None:
    dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--db", db)
    assert_one_error_line(dotdo_cmd(command, "nope", "--db", db), code=1, contains="'nope'")


@pytest.mark.parametrize("command", [["status", "r1"], ["runs"], ["cancel", "r1"]])
def test_reading_commands_do_not_create_a_database(db: Path, command: list[str]) -> None:
    assert_one_error_line(dotdo_cmd(*command, "--db", db), code=1, contains=str(db))
    assert not db.exists()


# -------------------------------------------------------------------------------- runs
def test_runs_lists_newest_first_and_filters(db: Path) -> None:
    dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "run-a", "--db", db)
    dotdo_cmd("run", "cli_app.shop:Shop.pay", "--run-id", "run-b", "--db", db)
    dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "run-c", "--db", db)

    every = dotdo_cmd("runs", "--db", db).stdout
    assert every.index("run-c") < every.index("run-b") < every.index("run-a")
    failed = dotdo_cmd("runs", "--status", "failed", "--db", db).stdout
    assert "run-b" in failed and "run-a" not in failed and "run-c" not in failed
    checkouts = dotdo_cmd("runs", "--workflow", "Shop.checkout", "--db", db).stdout
    assert "run-a" in checkouts and "run-c" in checkouts and "run-b" not in checkouts
    newest = dotdo_cmd("runs", "--limit", "1", "--db", db).stdout
    assert "run-c" in newest and "run-a" not in newest and "run-b" not in newest
    none = dotdo_cmd("runs", "--status", "cancelled", "--db", db)
    assert none.exit_code == 0 and "no runs" in none.stdout


def test_runs_rejects_an_unknown_status(db: Path) -> None:
    assert_one_error_line(dotdo_cmd("runs", "--status", "done", "--db", db), code=2)


# ------------------------------------------------------------------------------ cancel
def test_cancel_a_run_waiting_on_a_retry_timer(db: Path, counter: Path) -> None:
    started = dotdo_cmd("run", "cli_app.shop:Shop.settle", "--run-id", "s1", "--db", db)
    assert "waiting" in started.stdout
    result = dotdo_cmd("cancel", "s1", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert "cancelled" in result.stdout
    info = run_info(db, "s1")
    assert info.status == "cancelled" and info.wake_at is None
    assert counter.read_text().split() == ["call_bank"]
    assert_one_error_line(dotdo_cmd("cancel", "s1", "--db", db), code=1, contains="already")


# ---------------------------------------------------------------------- db and version
def test_dotdo_db_env_is_honoured(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOTDO_DB", str(db))
    assert dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "e1").exit_code == 0
    assert db.exists() and not (TESTS / "dotdo.db").exists()
    assert "e1" in dotdo_cmd("runs").stdout
    assert dotdo_cmd("status", "e1").exit_code == 0
    other = tmp_path / "other.db"
    assert (
        dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "e2", "--db", other).exit_code == 0
    )
    assert dotdo_cmd("--db", str(other), "status", "e2").exit_code == 0
    assert_one_error_line(dotdo_cmd("status", "e2"), code=1, contains="'e2'")


def test_version() -> None:
    result = dotdo_cmd("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_unknown_command_is_one_line_exit_2() -> None:
    assert_one_error_line(dotdo_cmd("launch"), code=2, contains="launch")


# -------------------------------------------------------------------------- subprocess
def test_subprocess_run_and_bad_input(tmp_path: Path) -> None:
    db = tmp_path / "sub.db"
    base = [sys.executable, "-m", "dotdo.cli"]
    args = ["run", CHECKOUT, "--input", ORDER, "--run-id", "x1", "--db", str(db)]
    env = subprocess_env()
    ok = subprocess.run([*base, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"order_id": "o1", "total": 5.0}

    bad = [*args[:2], "--input", '{"order": {"id": 1, "amount": []}}', "--db", str(db)]
    failed = subprocess.run([*base, *bad], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert failed.returncode == 2
    assert failed.stdout == ""
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "order." in lines[0]


def test_status_reads_runs_whose_result_class_is_not_importable(tmp_path: Path) -> None:
    """Seen from another directory with no app on the path, the stored model is shown raw."""
    db = tmp_path / "s.db"
    assert dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "r1", "--db", db).exit_code == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOTDO_")}
    env.pop("PYTHONPATH", None)
    for args in (["status", "r1"], ["runs"]):
        cmd = [sys.executable, "-m", "dotdo.cli", *args, "--db", str(db)]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "r1" in done.stdout and "completed" in done.stdout


async def test_worker_resumes_a_run_left_by_a_crashed_engine(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    crashed = Engine(db, faults=CrashAt(0, points=("after_step",)), lease_seconds=0.2)
    async with crashed:
        await crashed.start(Shop.checkout, Order(id="w", amount=3), run_id="w1")
        with pytest.raises(SimulatedCrash):
            await crashed.wait("w1")
        await _settle_crash()
    await asyncio.sleep(0.3)  # the dead engine's lease runs out
    async with Engine(db) as reader:
        assert (await reader.get_run("w1")).status == "running"

    cmd = [sys.executable, "-m", "dotdo.cli", "worker", "--app", "cli_app.shop", "--db", str(db)]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = await _wait_finished(db, "w1", proc)
        assert info.status == "completed"
        assert info.result == Receipt(order_id="w", total=3.0)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = out.strip().splitlines()
    assert f"{len(Shop.__dotdo_workflows__)} workflows registered" in lines[0]
    assert "stopped" in lines[-1]


def test_worker_needs_an_app_module(db: Path) -> None:
    assert_one_error_line(dotdo_cmd("worker", "--db", db), code=2, contains="--app")
    assert_one_error_line(
        dotdo_cmd("worker", "--app", "no_such_app", "--db", db), code=2, contains="no_such_app"
    )


async def _settle_crash() -> None:
    """Let the crashed engine's run task finish abandoning the store."""
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("dotdo-run-")]
    if tasks:
        await asyncio.wait(tasks, timeout=5)


async def _wait_finished(db: Path, run_id: str, proc: subprocess.Popen[str]) -> RunInfo:
    deadline = time.monotonic() + 10
    async with Engine(db) as reader:
        while time.monotonic() < deadline:
            info = await reader.get_run(run_id)
            if info.finished:
                return info
            assert proc.poll() is None, proc.communicate()
            await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish under the worker")


# ------------------------------------------------------------------------- core bugs
def test_get_run_works_without_the_result_class(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    assert dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "r1", "--db", db).exit_code == 0
    script = (
        "import asyncio, sys\n"
        "from dotdo import Engine\n"
        "async def main():\n"
        "    async with Engine(sys.argv[1]) as e:\n"
        "        print((await e.get_run('r1')).status)\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(db)], cwd=tmp_path, env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr


async def test_close_after_a_simulated_crash_releases_the_store(tmp_path: Path) -> None:
    def sqlite_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if "_connection_worker" in t.name}

    before = sqlite_threads()
    engine = Engine(tmp_path / "c.db", faults=CrashAt(0))
    try:
        async with engine:
            await engine.start(Shop.checkout, Order(id="c", amount=1), run_id="c1")
            with pytest.raises(SimulatedCrash):
                await engine.wait("c1")
        # A closed connection's thread exits a moment after close() returns: allow for that,
        # but a store left open would keep its threads for good.
        deadline = time.monotonic() + 2.0
        while sqlite_threads() - before and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert sqlite_threads() - before == set(), "close() returned with the store still open"
    finally:
        await _settle_crash()
