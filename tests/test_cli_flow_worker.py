"""`.flow` runs under `dotdo worker --app FILE.flow`, and decided by `dotdo approve` from
another process: the worker drives flows exactly like Python workflows, and several --app
(flow files and modules) share one worker. Real subprocesses, bounded waits."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import dotdo.cli
from dotdo import Engine, RunInfo

TESTS = Path(__file__).resolve().parent

REVIEW = """\
# A review: a durable timer, a person's approval, another timer.

workflow review(n: int) -> dict:
    sleep 1s
    decision = approval "sign":
        title: "review {n}"
        approvers: ["boss"]
    sleep 1s
    return {status: decision.status, n: n}
"""

NAP = """\
workflow nap() -> str:
    sleep 1s
    return "rested"
"""


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    (tmp_path / "review.flow").write_text(REVIEW)
    (tmp_path / "nap.flow").write_text(NAP)
    return tmp_path


@pytest.fixture(autouse=True)
def _logger() -> Iterator[None]:
    logger = logging.getLogger("dotdo")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOTDO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


def dotdo_sub(cwd: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dotdo.cli", *args, "--db", str(db)],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _until(db: Path, check: str, run_id: str, proc: subprocess.Popen[str]) -> RunInfo:
    """Poll the store (read-only) until the run is `check` ("finished" or "asking")."""
    deadline = time.monotonic() + 30
    async with Engine(db, read_only=True) as reader:
        while time.monotonic() < deadline:
            info = await reader.get_run(run_id)
            if check == "finished" and info.finished:
                return info
            if check == "asking" and [a for a in await reader.approvals() if a.run_id == run_id]:
                return info
            assert proc.poll() is None, proc.communicate()
            await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never got {check} under the worker")


async def test_worker_drives_flow_runs_decided_from_another_process(
    flows: Path, tmp_path: Path
) -> None:
    db = tmp_path / "flows.db"
    started = dotdo_sub(flows, db, "run", "review.flow", "--input", '{"n": 3}', "--run-id", "f1")
    assert started.returncode == 0, started.stderr
    assert "run f1 waiting until" in started.stdout  # on its first timer
    assert dotdo_sub(flows, db, "run", "nap.flow", "--run-id", "n1").returncode == 0
    refund = ["run", "cli_app.shop:Shop.refund", "--input", '{"amount": 5}', "--run-id", "p1"]
    assert dotdo_sub(flows, db, *refund).returncode == 0

    apps = ["--app", "review.flow", "--app", "nap.flow", "--app", "cli_app.shop"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "dotdo.cli", "worker", *apps, "--db", str(db)],
        cwd=flows,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        nap = await _until(db, "finished", "n1", worker)  # a timer fired by the worker
        assert (nap.status, nap.result) == ("completed", "rested")
        await _until(db, "asking", "f1", worker)  # past its first timer, at the approval
        for approval_id, who in (("f1/sign", "boss"), ("p1/sign_off", "manager")):
            decided = dotdo_sub(flows, db, "approve", approval_id, "--as", who)  # no --app
            assert decided.returncode == 0, decided.stderr
            assert "is due; a worker with its code resumes it" in decided.stdout
        review = await _until(db, "finished", "f1", worker)
        assert review.status == "completed", review.error
        assert review.result == {"status": "approved", "n": 3}
        paid = await _until(db, "finished", "p1", worker)
        assert (paid.status, paid.result) == ("completed", "approved")
    finally:
        worker.send_signal(signal.SIGINT)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    first = out.strip().splitlines()[0]
    assert "registered from review.flow, nap.flow, cli_app.shop" in first


def dotdo_cmd(*args: str | Path) -> Result:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


def test_approve_with_a_flow_app_drives_the_run_here(
    flows: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(flows)
    (flows / "ask.flow").write_text(
        textwrap.dedent(
            """\
            workflow ask(n: int) -> dict:
                decision = approval "sign":
                    title: "ask {n}"
                    approvers: ["boss"]
                return {status: decision.status, reason: decision.rejection_reason}
            """
        )
    )
    db = tmp_path / "ask.db"
    for run_id in ("a1", "a2"):
        started = dotdo_cmd(
            "run", "ask.flow", "--input", '{"n": 1}', "--run-id", run_id, "--db", db
        )
        assert started.exit_code == 0, started.stderr
        assert f"run {run_id} waiting for approval {run_id}/sign" in started.stdout
    approved = dotdo_cmd("approve", "a1/sign", "--as", "boss", "--app", "ask.flow", "--db", db)
    assert approved.exit_code == 0, approved.stderr
    assert 'run a1 completed: {"status":"approved","reason":null}' in approved.stdout
    rejected = dotdo_cmd(
        "reject", "a2/sign", "--as", "boss", "--reason", "no", "--app", "ask.flow", "--db", db
    )
    assert rejected.exit_code == 0, rejected.stderr
    assert json.loads(rejected.stdout.split("completed: ", 1)[1]) == {
        "status": "rejected",
        "reason": "no",
    }


def test_worker_refuses_a_missing_or_broken_flow_in_one_line(flows: Path, tmp_path: Path) -> None:
    (flows / "broken.flow").write_text("workflow broken(:\n")
    db = tmp_path / "w.db"
    for app, code in (("missing.flow", 2), ("broken.flow", 1)):
        done = dotdo_sub(flows, db, "worker", "--app", app)
        assert done.returncode == code, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert not db.exists()
