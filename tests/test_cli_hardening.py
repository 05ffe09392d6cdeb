"""Bad input from the command line and odd databases: one line, a clear exit, nothing left
behind. Run ids and entity ids, a start that reuses a run id, deep and huge JSON, `--db`
paths that are not database files, read-only databases (opened `mode=ro`), approvals past
their deadline (expired on read), and `send --app`.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import dotdo.cli
from dotdo import ApprovalError, Engine, InvalidId, RunConflict, StoreError
from dotdo.testing import CrashAt, SimulatedCrash

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from cli_app.desk import Desk  # noqa: E402
from cli_app.shop import Order, Shop  # noqa: E402

CHECKOUT = "cli_app.shop:Shop.checkout"
ORDER = json.dumps({"order": {"id": "o1", "amount": 2.5, "qty": 2}})


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(TESTS)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("CLI_APP_COUNTER", str(tmp_path / "steps.log"))
    for name in ("DOTDO_DB", "DOTDO_DEBUG", "DOTDO_SECRET"):
        monkeypatch.delenv(name, raising=False)
    logger = logging.getLogger("dotdo")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


def dotdo_cmd(*args: str | Path) -> Result:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


def one_line(result: Result, *, code: int, contains: str = "") -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    assert "unexpected" not in lines[0], lines[0]
    assert contains in lines[0], lines[0]
    assert len(lines[0]) < 700, "an error line stays readable"
    return lines[0]


# ----------------------------------------------------------------------------- run ids
BAD_IDS = {
    "empty": "",
    "too long": "r" * 201,
    "huge": "r" * 100_000,
    "newline": "a\nb",
    "carriage return": "a\rb",
    "space": "a b",
    "tab": "a\tb",
    "nul": "a\x00b",
    "escape": "a\x1b[31mred",
    "bidi override": "a\u202eb",
    "zero width": "a\u200bb",
    "slash": "a/b",
    "backslash": "a\\b",
    "dot dot": "..",
    "traversal": "../../etc/passwd",
    "dots inside": "a..b",
}
GOOD_IDS = [
    "r" * 200,
    "po-42",
    "Shop.checkout@2024-01-01T09:00:00Z",  # a schedule's fire
    "Shop.on_placed:123",  # an event handler's run
    "events.on_placed:7",  # ... of a .flow file
    "0f8fa5c3b1e54a7d9a8f2b7c6d5e4f3a",  # uuid4().hex
    "a.b_c-d:e@f+g=h",
    "заказ-7",
    ".",
]


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
async def test_start_refuses_bad_run_and_entity_ids(tmp_path: Path, bad: str) -> None:
    async with Engine(tmp_path / "ids.db").register(Shop) as engine:
        with pytest.raises(InvalidId, match="run id"):
            await engine.start(Shop.checkout, Order(id="x", amount=1), run_id=bad)
        with pytest.raises(InvalidId, match="entity id"):
            await engine.start(Shop.checkout, Order(id="x", amount=1), run_id="ok", entity_id=bad)
        assert await engine.runs() == []


async def test_start_accepts_the_ids_the_engine_and_users_make(tmp_path: Path) -> None:
    async with Engine(tmp_path / "ids.db").register(Shop) as engine:
        for run_id in GOOD_IDS:
            handle = await engine.start(Shop.checkout, Order(id="x", amount=1), run_id=run_id)
            assert (await handle.result(timeout=10)).total == 1
        with pytest.raises(InvalidId, match="must be a string"):
            await engine.start(Shop.checkout, Order(id="x", amount=1), run_id=7)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a/b", "a\nb", "r" * 100_000, "a\x1b[2J", ".."])
def test_cli_refuses_bad_run_ids_in_one_line(db: Path, bad: str) -> None:
    one_line(dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", bad, "--db", db), code=2)
    assert not db.exists(), "a refused run id creates nothing"
    assert dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--run-id", "ok", "--db", db).exit_code == 0
    for command in (["status", bad], ["cancel", bad], ["render", "x", "--run", bad, "-o", "x.dot"]):
        line = one_line(dotdo_cmd(*command, "--db", db), code=2, contains="run id")
        assert "\n" not in line and "\x1b" not in line


@pytest.mark.parametrize(
    "args",
    [
        ["approve", "a\nb/step", "--as", "boss"],
        ["approve", "nostep", "--as", "boss"],
        ["approve", "r/" + "k" * 1000, "--as", "boss"],
        ["approve", "r/step", "--as", "bo\nss"],
        ["approve", "r/step", "--as", "b" * 1000],
        ["reject", "../x/step", "--as", "boss", "--reason", "no"],
        ["send", "e" * 100_000],
    ],
    ids=["run-newline", "no-step", "long-step", "as-newline", "as-long", "traversal", "event"],
)
def test_cli_refuses_bad_approval_ids_approvers_and_events(db: Path, args: list[str]) -> None:
    assert dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--db", db).exit_code == 0
    one_line(dotdo_cmd(*args, "--db", db), code=2 if args[0] != "send" else 1)


# ------------------------------------------------------------------------------ conflicts
async def test_a_start_reusing_a_run_id_must_ask_for_the_same_run(tmp_path: Path) -> None:
    async with Engine(tmp_path / "c.db").register(Shop, Desk) as engine:
        first = await engine.start(Desk.echo, {"a": 1, "b": [1, 2]}, run_id="same")
        assert await first.result(timeout=10) == {"a": 1, "b": [1, 2]}
        again = await engine.start(Desk.echo, {"b": [1, 2], "a": 1}, run_id="same")  # key order
        assert again.run_id == "same" and await again.result(timeout=10) == {"a": 1, "b": [1, 2]}
        for other in ({"a": 2, "b": [1, 2]}, {"a": 1.0, "b": [1, 2]}, {"a": 1}, None):
            with pytest.raises(RunConflict, match="run 'same' already exists with a different"):
                await engine.start(Desk.echo, other, run_id="same")
        with pytest.raises(RunConflict, match="run 'same' already exists for entity 'same'"):
            await engine.start(Desk.echo, {"a": 1, "b": [1, 2]}, run_id="same", entity_id="e2")
        with pytest.raises(RunConflict, match=r"as a run of 'Desk\.echo', not of 'Shop\.checkout'"):
            await engine.start(Shop.checkout, Order(id="x", amount=1), run_id="same")
        try:
            await engine.start(Desk.echo, 5, run_id="same")
        except RunConflict as exc:
            assert exc.run_id == "same"
        assert len(await engine.runs()) == 1


def test_cli_run_with_an_existing_id_and_other_input_is_a_conflict(db: Path) -> None:
    args = ["run", CHECKOUT, "--run-id", "po-1", "--db", db]
    assert dotdo_cmd(*args, "--input", ORDER).exit_code == 0
    assert dotdo_cmd(*args, "--input", ORDER).exit_code == 0  # the same input: idempotent
    other = json.dumps({"order": {"id": "o1", "amount": 99, "qty": 2}})
    one_line(dotdo_cmd(*args, "--input", other), code=1, contains="run 'po-1' already exists")


# ------------------------------------------------------------------------- deep and huge
def _nested(depth: int) -> str:
    return '{"data": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [101, 30_000, 1_000_000])
def test_deep_input_and_data_are_one_line(db: Path, depth: int) -> None:
    run = dotdo_cmd("run", "cli_app.desk:Desk.echo", "--input", _nested(depth), "--db", db)
    one_line(run, code=2, contains="--input is nested too deeply")
    assert not db.exists()
    sent = dotdo_cmd("send", "Desk.pinged", "--data", "[" * depth + "]" * depth, "--db", db)
    one_line(sent, code=2, contains="--data is nested too deeply")


def test_nesting_within_the_limit_runs(db: Path) -> None:
    result = dotdo_cmd("run", "cli_app.desk:Desk.echo", "--input", _nested(99), "--db", db)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(_nested(99))["data"]


@pytest.mark.parametrize(
    "text, contains",
    [
        ('{"data": ' + "1" * 5000 + "}", "--input is not usable JSON"),
        ('{"data": 1e999999}', ""),  # inf: stored tagged, printed as JSON allows
        ('{"data": "' + "x" * 100_000 + '"}', ""),
    ],
    ids=["long-int", "inf", "long-string"],
)
def test_huge_values_are_one_line_or_work(db: Path, text: str, contains: str) -> None:
    result = dotdo_cmd("run", "cli_app.desk:Desk.echo", "--input", text, "--db", db)
    if contains:
        one_line(result, code=2, contains=contains)
    else:
        assert result.exit_code == 0, result.stderr


# ------------------------------------------------------------------------- --db paths
def test_dev_null_is_refused_and_nothing_is_created_next_to_it(db: Path) -> None:
    journal = Path("/dev/null-journal")
    existed = journal.exists()
    for args in (
        ["run", CHECKOUT, "--input", ORDER],
        ["status", "r1"],
        ["runs"],
        ["approvals"],
        ["send", "A.b"],
        ["worker", "--app", "cli_app.shop"],
    ):
        one_line(dotdo_cmd(*args, "--db", "/dev/null"), code=1, contains="/dev/null")
    assert journal.exists() == existed
    assert not Path("/dev/null-wal").exists() or existed


def test_odd_paths_are_refused_and_nothing_is_created(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    for path, contains in (
        (fifo, "FIFO"),
        (missing, "does not exist"),
        (tmp_path, "is a directory"),
    ):
        code = 1 if path != tmp_path else 2
        one_line(
            dotdo_cmd("run", CHECKOUT, "--input", ORDER, "--db", path), code=code, contains=contains
        )
        for args in (["runs"], ["status", "r1"]):
            one_line(dotdo_cmd(*args, "--db", path), code=code)
        if path == fifo:
            assert one_line(dotdo_cmd("runs", "--db", path), code=1).endswith(
                f"{fifo} is a FIFO, not a database file"
            )
    assert not (tmp_path / "no").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


async def test_engine_refuses_non_files_too(tmp_path: Path) -> None:
    for path in ("/dev/null", tmp_path, tmp_path / "missing" / "x.db"):
        with pytest.raises(StoreError):
            async with Engine(path):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -------------------------------------------------------------------- read-only databases
def _drop_override() -> None:
    """In the child: give up the capabilities that let root ignore file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _modes_apply() -> dict[str, Any]:
    """Root writes any file whatever its mode: its commands run without that power here."""
    return {"preexec_fn": _drop_override} if os.geteuid() == 0 else {}


def _cli(db: Path, *args: str | Path, cwd: Path = TESTS) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOTDO_")}
    env["PYTHONPATH"] = str(TESTS)
    return subprocess.run(
        [sys.executable, "-m", "dotdo.cli", *map(str, args), "--db", str(db)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **_modes_apply(),
    )


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder whose modes the test changes; made writable again for pytest's cleanup."""
    folder = tmp_path / "ro"
    folder.mkdir()
    probe = subprocess.run(
        [sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"],
        capture_output=True,
        **_modes_apply(),
    )
    folder.chmod(0o555)
    denied = subprocess.run(
        [sys.executable, "-c", f"open({str(folder / 'denied')!r}, 'w')"],
        capture_output=True,
        **_modes_apply(),
    )
    folder.chmod(0o755)
    (folder / "probe").unlink(missing_ok=True)
    if probe.returncode != 0 or denied.returncode == 0:
        pytest.skip("file modes cannot be made to apply to this user here")
    yield folder
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


async def _fill(db: Path) -> None:
    async with Engine(db).register(Shop) as engine:
        await (await engine.start(Shop.checkout, Order(id="o", amount=3), run_id="done")).result()
        await engine.start(Shop.refund, 12, run_id="asks")
        await engine.idle("asks", timeout=10)


def _make_read_only(db: Path, *, folder: bool) -> None:
    db.chmod(0o444)
    if folder:
        db.parent.chmod(0o555)


def _check_reading_works(db: Path) -> None:
    status = _cli(db, "status", "done")
    assert status.returncode == 0, status.stderr
    assert "completed" in status.stdout
    runs = _cli(db, "runs")
    assert runs.returncode == 0 and "done" in runs.stdout and "asks" in runs.stdout, runs.stderr
    approvals = _cli(db, "approvals")
    assert approvals.returncode == 0 and "asks/sign_off" in approvals.stdout, approvals.stderr
    out = db.parent.parent / "drawn.mmd"
    drawn = _cli(db, "render", "x", "--run", "done", "-o", out, cwd=Path("/"))
    assert drawn.returncode == 0, drawn.stderr


@pytest.mark.parametrize("folder", [False, True], ids=["read-only file", "read-only directory"])
def test_a_read_only_database_can_be_read_and_refuses_writes_in_one_line(
    shared_dir: Path, folder: bool
) -> None:
    db = shared_dir / "ro.db"
    asyncio.run(_fill(db))
    before = db.read_bytes()
    _make_read_only(db, folder=folder)
    _check_reading_works(db)
    for args in (
        ["run", CHECKOUT, "--input", ORDER],
        ["approve", "asks/sign_off", "--as", "manager"],
        ["cancel", "asks"],
        ["send", "A.b"],
    ):
        done = _cli(db, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert "read-only" in lines[0] and "unexpected" not in lines[0], lines[0]
    assert db.read_bytes() == before


def test_a_reader_sees_what_a_live_writer_has_only_in_its_wal(shared_dir: Path) -> None:
    """mode=ro, not `immutable`, while a writer has the file open: the WAL is read too."""
    db = shared_dir / "live.db"
    asyncio.run(_fill(db))
    script = (
        "import asyncio, sys\n"
        "from cli_app.shop import Order, Shop\n"
        "from dotdo import Engine\n"
        "async def main():\n"
        "    async with Engine(sys.argv[1]).register(Shop) as e:\n"
        "        await (await e.start(Shop.checkout, Order(id='n', amount=1), run_id='fresh'))"
        ".result()\n"
        "        print('ready', flush=True)\n"
        "        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop("CLI_APP_COUNTER", None)
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        assert Path(f"{db}-wal").stat().st_size > 0
        _make_read_only(db, folder=True)
        shown = _cli(db, "status", "fresh")
        assert shown.returncode == 0, shown.stderr
        assert "completed" in shown.stdout
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(timeout=30)


async def test_a_read_only_engine_never_writes(db: Path) -> None:
    await _fill(db)
    before = {p.name: p.read_bytes() for p in db.parent.glob("cli.db*")}
    async with Engine(db, read_only=True).register(Shop) as engine:
        assert (await engine.get_run("done")).status == "completed"
        assert [a.id for a in await engine.approvals()] == ["asks/sign_off"]
        with pytest.raises(StoreError, match="read-only"):
            await engine.start(Shop.checkout, Order(id="z", amount=1), run_id="z")
        with pytest.raises(StoreError, match="read-only"):
            await engine.approve("asks/sign_off", by="manager")
        with pytest.raises(StoreError, match="read-only"):
            await engine.send("A.b")
    assert {p.name: p.read_bytes() for p in db.parent.glob("cli.db") if p.stat().st_size} == {
        "cli.db": before["cli.db"]
    }
    with pytest.raises(StoreError, match="no dotdo database"):
        async with Engine(db.with_name("missing.db"), read_only=True):
            pass
    assert not db.with_name("missing.db").exists()


# -------------------------------------------------------------------- expired on read
def _expired(db: Path) -> None:
    async def start() -> None:
        async with Engine(db).register(Desk) as engine:
            await engine.start(Desk.ask, 5, run_id="late")
            await engine.idle("late", timeout=10)

    asyncio.run(start())
    time.sleep(1.2)  # past the one-second deadline; no engine with the code is running


def test_an_approval_past_its_deadline_reads_as_expired_before_any_timer_fires(db: Path) -> None:
    _expired(db)
    assert dotdo_cmd("approvals", "--db", db).stdout.strip() == "no approvals"
    listed = dotdo_cmd("approvals", "--status", "expired", "--db", db)
    assert "late/quick" in listed.stdout and "expired" in listed.stdout
    every = dotdo_cmd("approvals", "--status", "all", "--db", db)
    assert "expired" in every.stdout and "pending" not in every.stdout
    status = dotdo_cmd("status", "late", "--db", db)
    assert "late/quick" in status.stdout and "expired" in status.stdout
    refused = dotdo_cmd("approve", "late/quick", "--as", "boss", "--db", db)
    one_line(refused, code=1, contains="approval 'late/quick' is already expired")

    async def engine_view() -> str:
        async with Engine(db) as reader:  # no workflow registered: no timer can fire here
            seen = await reader.get_approval("late/quick")
            assert [a.id for a in await reader.approvals(status="expired")] == ["late/quick"]
            assert await reader.approvals() == []
            assert await reader.approvals(approver="boss") == []
            with pytest.raises(ApprovalError, match="already expired"):
                await reader.reject("late/quick", by="boss", reason="late")
            status: str = seen.status
        async with Engine(db).register(Desk) as worker:  # the timer resumes it as before
            info = await worker.wait("late", timeout=10)
            assert info.result == "expired"
            stored = await worker.get_approval("late/quick")
            assert stored.status == "expired"
        return status

    assert asyncio.run(engine_view()) == "expired"


# -------------------------------------------------------------------------- send --app
def test_send_with_app_delivers_and_drives_here(db: Path) -> None:
    started = dotdo_cmd("run", "cli_app.desk:Desk.listen", "--run-id", "l1", "--db", db)
    assert started.exit_code == 0, started.stderr
    sent = dotdo_cmd(
        "send", "Desk.pinged", "--data", '{"n": 1}', "--app", "cli_app.desk", "--db", db
    )
    assert sent.exit_code == 0, sent.stderr
    assert "delivered" in sent.stdout

    async def check() -> None:
        async with Engine(db, read_only=True) as reader:
            assert (await reader.get_run("l1")).result == {"n": 1}
            handlers = [r for r in await reader.runs() if r.workflow == "Desk.on_ping"]
            assert [r.status for r in handlers] == ["completed"]
            assert handlers[0].result == "noted {'n': 1}"

    asyncio.run(check())


def test_send_without_app_says_a_worker_delivers_it(db: Path) -> None:
    assert dotdo_cmd("run", "cli_app.desk:Desk.listen", "--run-id", "l2", "--db", db).exit_code == 0
    sent = dotdo_cmd("send", "Desk.pinged", "--db", db)
    assert sent.exit_code == 0 and "a worker" in sent.stdout


def test_app_errors_are_one_line(db: Path) -> None:
    for app, contains in (
        ("missing.flow", "no such file: missing.flow"),
        ("no_such_module", "no_such_module"),
        ("cli_app", "defines no DO classes"),
    ):
        for command in (
            ["approve", "r/s", "--as", "x"],
            ["send", "A.b"],
            ["worker"],
            ["cancel", "r"],
        ):
            one_line(dotdo_cmd(*command, "--app", app, "--db", db), code=2, contains=contains)
    assert not db.exists()


async def test_cancel_with_app_stops_an_orphan_in_this_process(tmp_path: Path) -> None:
    """With the run's code, `cancel` adopts a run whose process died and stops it itself."""
    db = tmp_path / "orphan.db"
    crashed = Engine(db, faults=CrashAt(0, points=("after_step",)), lease_seconds=0.2)
    async with crashed:
        await crashed.start(Desk.two, run_id="o1")
        with pytest.raises(SimulatedCrash):
            await crashed.wait("o1")
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("dotdo-run-")]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
    await asyncio.sleep(0.3)  # the dead engine's lease runs out
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOTDO_")}
    env["PYTHONPATH"] = str(TESTS)
    args = ["cancel", "o1", "--app", "cli_app.desk", "--db", str(db)]
    done = subprocess.run(
        [sys.executable, "-m", "dotdo.cli", *args],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "run o1 cancelled"
    async with Engine(db, read_only=True) as reader:
        assert (await reader.get_run("o1")).status == "cancelled"


def test_a_huge_error_line_is_cut_short(db: Path) -> None:
    line = one_line(dotdo_cmd("run", "x" * 100_000 + ":A.b", "--db", db), code=2)
    assert line.endswith("…") and "cannot import 'xxx" in line
