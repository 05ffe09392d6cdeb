"""Telemetry hooks, Prometheus metrics (`dotdo worker --metrics-port`) and logs that carry
run and step ids (JSON with `--log-json`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from dotdo import DO, Engine, PermanentError, approval, step, workflow
from dotdo.engine.logs import JsonFormatter
from dotdo.engine.metrics import PrometheusMetrics, check_metrics_host
from dotdo.engine.telemetry import Observer

TESTS = Path(__file__).resolve().parent
SEEN: list[logging.LogRecord] = []


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        SEEN.append(record)


class Watched(DO):
    flaky = 0

    @step(retries=2, initial_delay=0.0)
    async def wobble(self, n: int) -> int:
        logging.getLogger("app.watched").info("wobbling %s", n)
        Watched.flaky += 1
        if Watched.flaky % 2:
            raise RuntimeError("first try fails")
        return n

    @step(retries=0)
    async def crash(self) -> None:
        raise PermanentError("no")

    @approval(approvers=["boss"])
    def ask(self, n: int) -> dict[str, Any]:
        return {"title": f"n={n}"}

    @workflow
    async def ok(self, n: int) -> int:
        return await self.wobble(n)

    @workflow
    async def bad(self) -> None:
        await self.crash()

    @workflow
    async def asks(self, n: int) -> str:
        decision = await self.ask(n)
        return decision.status


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_runs_steps_retries_waits_and_commits(tmp_path: Path) -> None:
    metrics = PrometheusMetrics()
    async with Engine(tmp_path / "m.db").register(Watched).observe(metrics) as engine:
        assert (await (await engine.start(Watched.ok, 3, run_id="ok")).result(timeout=10)) == 3
        await engine.start(Watched.bad, run_id="bad")
        await engine.wait("bad", timeout=10)
        await engine.start(Watched.asks, 1, run_id="asks")
        await engine.idle("asks", timeout=10)
        await metrics.refresh()  # a scrape on the engine's own loop reports the last reading
        text = generate_latest(metrics.registry).decode()
        assert sample(text, "dotdo_runs_started_total", workflow="Watched.ok") == 1
        assert (
            sample(text, "dotdo_runs_finished_total", workflow="Watched.ok", outcome="completed")
            == 1
        )
        assert (
            sample(text, "dotdo_runs_finished_total", workflow="Watched.bad", outcome="failed") == 1
        )
        assert sample(text, "dotdo_step_retries_total", workflow="Watched.ok") == 1
        assert sample(text, "dotdo_step_seconds_count", step="wobble", outcome="error") == 1
        assert sample(text, "dotdo_step_seconds_count", step="wobble", outcome="ok") == 1
        assert sample(text, "dotdo_waits_total", workflow="Watched.ok", kind="retry") == 1
        assert sample(text, "dotdo_waits_total", workflow="Watched.asks", kind="approval") == 1
        assert sample(text, "dotdo_waiting_runs", kind="approval") == 1
        assert sample(text, "dotdo_waiting_runs", kind="timer") == 0
        assert sample(text, "dotdo_group_commit_size_count") >= 3
        assert sample(text, "dotdo_commit_seconds_count") >= 3
        await engine.start(Watched.asks, 2, run_id="asks-2")
        await engine.idle("asks-2", timeout=10)
        # A scrape from another thread (the /metrics server's) reads the store afresh.
        text = (await asyncio.to_thread(generate_latest, metrics.registry)).decode()
        assert sample(text, "dotdo_waiting_runs", kind="approval") == 2
        await engine.cancel("asks-2")
        pending = await engine.approvals()
        await engine.approve(pending[0].id, by="boss")
        await engine.wait("asks", timeout=10)
        await metrics.refresh()  # a scrape on the engine's own loop reports the last reading
        text = generate_latest(metrics.registry).decode()
        assert sample(text, "dotdo_decisions_total", workflow="Watched.asks") == 1
        assert sample(text, "dotdo_waiting_runs", kind="approval") == 0


async def test_lease_takeovers_are_counted(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    async with Engine(db).register(Watched) as engine:
        await engine.start(Watched.asks, 1, run_id="asks")
        await engine.idle("asks", timeout=10)
    import sqlite3

    conn = sqlite3.connect(db)
    with conn:  # as if a process died holding it mid-run
        conn.execute(
            "UPDATE runs SET status = 'running', lease_owner = 'gone:1:x', lease_until = 0"
        )
    conn.close()
    metrics = PrometheusMetrics()
    async with Engine(db).register(Watched).observe(metrics) as engine:
        await engine.idle("asks", timeout=10)
    assert sample(generate_latest(metrics.registry).decode(), "dotdo_lease_takeovers_total") == 1


async def test_commits_are_timed_alongside_fault_injection(tmp_path: Path) -> None:
    """Both ride the store's one commit hook: observing commits must not replace the faults
    hook, nor the faults hook hide the commits."""
    points: list[str] = []
    metrics = PrometheusMetrics()
    engine = Engine(tmp_path / "m.db", faults=lambda point, run_id: points.append(point))
    async with engine.register(Watched).observe(metrics):
        handle = await engine.start(Watched.asks, 3)
        assert (await engine.idle(handle.run_id, timeout=10)).status == "waiting"
    assert "before_commit" in points and "after_commit" in points
    text = generate_latest(metrics.registry).decode()
    assert sample(text, "dotdo_commit_seconds_count") >= 1
    assert sample(text, "dotdo_group_commit_size_sum") >= 1


async def test_a_failing_observer_never_fails_a_run(tmp_path: Path) -> None:
    class Broken(Observer):
        calls = 0

        def step_start(self, run_id: str, workflow: str, key: str, attempt: int) -> Any:
            Broken.calls += 1
            raise RuntimeError("observer bug")

    Watched.flaky = 1
    async with Engine(tmp_path / "m.db").register(Watched).observe(Broken()) as engine:
        assert await (await engine.start(Watched.ok, 5)).result(timeout=10) == 5
        assert await (await engine.start(Watched.ok, 6)).result(timeout=10) == 6
        assert engine.telemetry.observers == []
    assert Broken.calls == 1  # dropped after its first failure


async def test_metrics_are_served_on_loopback_only(tmp_path: Path) -> None:
    metrics = PrometheusMetrics()
    async with Engine(tmp_path / "m.db").register(Watched).observe(metrics) as engine:
        await (await engine.start(Watched.ok, 2)).result(timeout=10)
        port = metrics.serve(0)
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
        finally:
            metrics.close()
    assert response.status_code == 200
    assert "dotdo_runs_started_total" in response.text
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        with pytest.raises(Exception, match="has no authentication"):
            check_metrics_host(host)


async def test_log_records_carry_run_and_step_ids(tmp_path: Path) -> None:
    keep = _Keep()
    app = logging.getLogger("app.watched")
    app.addHandler(keep)
    app.setLevel(logging.INFO)
    SEEN.clear()
    Watched.flaky = 1
    try:
        async with Engine(tmp_path / "m.db").register(Watched) as engine:
            await (await engine.start(Watched.ok, 4, run_id="logged")).result(timeout=10)
    finally:
        app.removeHandler(keep)
    record = SEEN[0]
    assert (record.run_id, record.step_id, record.attempt) == ("logged", "wobble", 1)  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter().format(record))
    assert line["run_id"] == "logged" and line["step_id"] == "wobble"
    assert line["message"] == "wobbling 4" and line["level"] == "info"
    outside = logging.getLogger("app.watched").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
    assert json.loads(JsonFormatter().format(outside)).get("run_id") is None


def make_old_finished_run(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("FLAKY_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FLAKY_BROKEN", str(tmp_path / "broken"))
    from cli_app.flaky import Depot

    async def run() -> None:
        async with Engine(db).register(Depot) as engine:
            await (await engine.start(Depot.dispatch, "x", run_id="old")).result(timeout=10)
            await engine.store.execute("UPDATE runs SET updated_at = updated_at - 5 * 86400")

    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_serves_metrics_and_logs_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "w.db"
    port = _free_port()
    make_old_finished_run(db, tmp_path, monkeypatch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOTDO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["FLAKY_LOG"] = str(tmp_path / "calls.log")
    env["FLAKY_BROKEN"] = str(tmp_path / "broken")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dotdo.cli",
            "worker",
            "--app",
            "cli_app.flaky",
            "--db",
            str(db),
            "--metrics-port",
            str(port),
            "--log-json",
            "--retain",
            "1d",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert "dotdo_waiting_runs" in body
    finally:
        worker.terminate()
        out, err = worker.communicate(timeout=30)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in out
    assert worker.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {"level": "info", "logger": "dotdo.engine"}.items() <= records[0].items(), err
    assert records[0]["message"] == "retention: removed 1 finished runs"


def test_worker_refuses_a_public_metrics_address(tmp_path: Path) -> None:
    from click.testing import CliRunner

    import dotdo.cli

    result = CliRunner().invoke(
        dotdo.cli.cli,
        [
            "worker",
            "--app",
            "cli_app.flaky",
            "--metrics-port",
            "9",
            "--metrics-host",
            "0.0.0.0",
            "--db",
            str(tmp_path / "w.db"),
        ],
    )
    assert result.exit_code == 2
    assert re.search(r"error: .*refusing to serve metrics on '0.0.0.0'", result.stderr)
    assert not (tmp_path / "w.db").exists()


def test_worker_metrics_without_prometheus_client_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import dotdo.cli

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "dotdo.engine.metrics")
    result = CliRunner().invoke(
        dotdo.cli.cli,
        ["worker", "--app", "cli_app.flaky", "--metrics-port", "9", "--db", str(tmp_path / "w")],
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: --metrics-port needs prometheus-client: pip install 'dotdo[metrics]'"
    )
