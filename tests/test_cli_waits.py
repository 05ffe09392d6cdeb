"""`dotdo approvals | approve | reject | send` through the real command.

A decision drives the run on in the deciding process only when `--app` names the run's code;
without it the run is left due for a worker (the CLI never imports a module a row names).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def dotdo(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOTDO_DB": str(db), "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [sys.executable, "-m", "dotdo.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=TESTS,
        timeout=60,
        check=False,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


def start(db: Path, run_id: str, amount: float = 1200) -> None:
    out = dotdo(
        db,
        "run",
        "cli_app.purchases:Purchases.buy",
        "--input",
        f'{{"amount": {amount}}}',
        "--run-id",
        run_id,
    )
    assert out.returncode == 0, out.stderr
    assert f"waiting for approval {run_id}/po_approval" in out.stdout


APP = ("--app", "cli_app.purchases")


def test_chain_approved_from_the_cli_completes_the_run(db: Path) -> None:
    start(db, "po-1")
    listed = dotdo(db, "approvals", "--as", "manager")
    assert "po-1/po_approval" in listed.stdout
    assert "po-1/po_approval" not in dotdo(db, "approvals", "--as", "director").stdout
    first = dotdo(db, "approve", "po-1/po_approval", "--as", "manager", "--comment", "ok")
    assert first.returncode == 0, first.stderr
    assert "now waits on director" in first.stdout
    second = dotdo(db, "approve", "po-1/po_approval", "--as", "director", *APP)
    assert second.returncode == 0, second.stderr
    assert 'run po-1 completed: {"status":"paid","by":["manager","director"]}' in second.stdout
    status = dotdo(db, "status", "po-1")
    assert "completed" in status.stdout


def test_wrong_approver_and_double_decision_are_one_line_errors(db: Path) -> None:
    start(db, "po-2")
    wrong = dotdo(db, "approve", "po-2/po_approval", "--as", "director")
    assert wrong.returncode == 1
    assert wrong.stderr.strip().count("\n") == 0
    assert "waits on 'manager'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    assert (
        dotdo(db, "reject", "po-2/po_approval", "--as", "manager", "--reason", "no").returncode == 0
    )
    again = dotdo(db, "approve", "po-2/po_approval", "--as", "manager")
    assert again.returncode == 1
    assert "already rejected" in again.stderr
    unknown = dotdo(db, "approve", "nope/x", "--as", "manager")
    assert unknown.returncode == 1
    assert "no approval with id" in unknown.stderr


def test_rejection_reason_reaches_the_workflow(db: Path) -> None:
    start(db, "po-3")
    args = ("reject", "po-3/po_approval", "--as", "manager", "--reason", "over budget", *APP)
    out = dotdo(db, *args)
    assert out.returncode == 0, out.stderr
    assert 'run po-3 completed: {"status":"rejected","reason":"over budget"}' in out.stdout


def test_send_checks_the_event_name_and_json(db: Path) -> None:
    start(db, "po-4")
    assert dotdo(db, "send", "Order.placed", "--data", '{"id": 1}').returncode == 0
    bad = dotdo(db, "send", "bad name!")
    assert bad.returncode == 1
    assert "bad event name" in bad.stderr
    bad_json = dotdo(db, "send", "Order.placed", "--data", "{nope")
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr


def test_a_decision_without_app_leaves_the_run_due_for_a_worker(db: Path) -> None:
    start(db, "po-5")
    assert dotdo(db, "approve", "po-5/po_approval", "--as", "manager").returncode == 0
    last = dotdo(db, "approve", "po-5/po_approval", "--as", "director")
    assert last.returncode == 0, last.stderr
    assert last.stdout.splitlines() == [
        "approval po-5/po_approval approved by director",
        "run po-5 is due; a worker with its code resumes it "
        "(`dotdo worker --app MODULE|FILE.flow`)",
    ]
    assert "waiting" in dotdo(db, "status", "po-5").stdout
    # Another app does not hold the run's code: still left to a worker, and said so.
    start(db, "po-6")
    dotdo(db, "approve", "po-6/po_approval", "--as", "manager")
    other = dotdo(db, "approve", "po-6/po_approval", "--as", "director", "--app", "cli_app.shop")
    assert other.returncode == 0, other.stderr
    assert "run po-6 is due (it is not in --app)" in other.stdout


def test_a_group_member_lists_and_decides_the_groups_approvals(db: Path) -> None:
    """`--as mia`, a console user acting as "manager", lists and decides what waits on
    manager; someone outside the group still sees nothing and is refused."""
    start(db, "po-g")
    start(db, "po-h")
    added = dotdo(db, "users", "add", "mia", "--as", "manager", "--no-password")
    assert added.returncode == 0, added.stderr
    assert dotdo(db, "users", "add", "zed", "--as", "ops", "--no-password").returncode == 0
    listed = dotdo(db, "approvals", "--as", "mia")
    assert "po-g/po_approval" in listed.stdout and "po-h/po_approval" in listed.stdout
    assert listed.stdout.index("po-g/po_approval") < listed.stdout.index("po-h/po_approval")
    assert "no approvals" in dotdo(db, "approvals", "--as", "zed").stdout
    refused = dotdo(db, "approve", "po-g/po_approval", "--as", "zed")
    assert refused.returncode == 1 and "waits on 'manager'" in refused.stderr
    decided = dotdo(db, "approve", "po-g/po_approval", "--as", "mia")
    assert decided.returncode == 0, decided.stderr
    assert "now waits on director" in decided.stdout
    assert "po-g/po_approval" not in dotdo(db, "approvals", "--as", "mia").stdout
    every = dotdo(db, "approvals", "--as", "mia", "--status", "all")
    assert "po-g/po_approval" in every.stdout and "po-h/po_approval" in every.stdout
