"""Prometheus metrics for an engine (`pip install 'dotdo[metrics]'`, prometheus-client).

    from dotdo.engine.metrics import PrometheusMetrics
    metrics = PrometheusMetrics()
    engine.observe(metrics)
    metrics.serve(9464)                  # /metrics on 127.0.0.1:9464 (dotdo worker --metrics-port)

Counters and histograms are fed by the engine's telemetry hooks; the number of waiting runs
by kind is read from the store (`Store.waiting_by_kind`), so it counts every process's runs,
not only this one's: a scrape from another thread (the /metrics server) reads it on the
engine's event loop; code scraping on that loop itself calls `await metrics.refresh()` first
(it reports the last reading). Each instance has its own registry, so
several engines in one process do not collide; `registry` is what a host app mounts.
Labels are the workflow, the outcome, and (for steps) the step id without its loop
iterations, so their number stays bounded by the code, not by the data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dotdo.engine.telemetry import Observer
from dotdo.errors import DotdoError

if TYPE_CHECKING:
    from dotdo.engine.shell import Shell

__all__ = ["PrometheusMetrics", "check_metrics_host"]

_LOOPS = re.compile(r"(\[\d+\])+")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def check_metrics_host(host: str) -> str:
    """The metrics endpoint has no authentication: it is served on loopback only."""
    if host not in _LOOPBACK:
        raise DotdoError(
            f"refusing to serve metrics on {host!r}: /metrics has no authentication, so it "
            "binds loopback only (127.0.0.1, ::1); scrape it through a local agent or proxy"
        )
    return host


class _Waiting(Collector):
    """`dotdo_waiting_runs{kind}`, read from the engine's store."""

    def __init__(self) -> None:
        self.shell: Shell | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    async def refresh(self) -> None:
        shell = self.shell
        if shell is None or shell._store is None:
            return
        self.loop = asyncio.get_running_loop()
        self.counts = await shell._store.waiting_by_kind()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "dotdo_waiting_runs", "Runs waiting, by what they wait on", labels=["kind"]
        )
        loop = self.loop
        if loop is not None and loop.is_running() and not _on_loop(loop):
            with self._lock:  # a scrape thread: read on the engine's loop, bounded
                future = asyncio.run_coroutine_threadsafe(self.refresh(), loop)
                try:
                    future.result(timeout=2.0)
                except (concurrent.futures.TimeoutError, Exception):
                    future.cancel()
        for kind, count in sorted(self.counts.items()):
            family.add_metric([kind], count)
        yield family


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class PrometheusMetrics(Observer):
    """Runs started and finished, step latency, retries, waits, decisions, group-commit
    size and latency, lease takeovers, and waiting runs by kind."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.started = Counter("dotdo_runs_started", "Runs started", ["workflow"], registry=r)
        self.finished = Counter(
            "dotdo_runs_finished", "Runs finished", ["workflow", "outcome"], registry=r
        )
        self.steps = Histogram(
            "dotdo_step_seconds",
            "Step attempt latency",
            ["workflow", "step", "outcome"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "dotdo_step_retries", "Step attempts after the first", ["workflow"], registry=r
        )
        self.waits = Counter("dotdo_waits", "Runs parked", ["workflow", "kind"], registry=r)
        self.decisions = Counter(
            "dotdo_decisions", "Waits resolved (decisions, events)", ["workflow"], registry=r
        )
        self.commit_size = Histogram(
            "dotdo_group_commit_size",
            "Checkpoints per group commit",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "dotdo_commit_seconds", "Group commit latency", buckets=_COMMIT_BUCKETS, registry=r
        )
        self.takeovers = Counter(
            "dotdo_lease_takeovers", "Runs taken over from dead owners", registry=r
        )
        self._step_children: dict[tuple[str, str, bool], Any] = {}
        self._waiting = _Waiting()
        r.register(self._waiting)
        self._server: Any = None

    def bind(self, engine: Shell) -> None:
        self._waiting.shell = engine
        try:
            self._waiting.loop = asyncio.get_running_loop()
        except RuntimeError:
            pass  # bound before the loop runs: the first stretch or refresh records it

    async def refresh(self) -> None:
        """Read the waiting runs by kind now (what a scrape on the engine's loop reports)."""
        await self._waiting.refresh()

    def run_started(self, run_id: str, workflow: str) -> None:
        self.started.labels(workflow).inc()

    def stretch_start(self, run_id: str, workflow: str, trace: str | None) -> Any:
        if self._waiting.loop is None:
            self._waiting.loop = asyncio.get_running_loop()
        return workflow

    def stretch_end(self, token: Any, outcome: str) -> None:
        if outcome in ("completed", "failed", "compensated", "cancelled"):
            self.finished.labels(token, outcome).inc()

    def step_start(self, run_id: str, workflow: str, key: str, attempt: int) -> Any:
        if attempt > 1:
            self.retries.labels(workflow).inc()
        return workflow, key

    def step_end(self, token: Any, error: BaseException | None, seconds: float) -> None:
        # Children are looked up once per (workflow, step, outcome): `labels()` costs more
        # than the observation itself, and this runs for every step attempt.
        step = _LOOPS.sub("", token[1]) if "[" in token[1] else token[1]
        key = (token[0], step, error is None)
        child = self._step_children.get(key)
        if child is None:
            child = self.steps.labels(token[0], step, "ok" if error is None else "error")
            self._step_children[key] = child
        child.observe(seconds)

    def waiting(self, run_id: str, workflow: str, kind: str, key: str) -> None:
        self.waits.labels(workflow, kind).inc()

    def decided(self, run_id: str, workflow: str, key: str) -> None:
        self.decisions.labels(workflow).inc()

    def committed(self, size: int, seconds: float) -> None:
        if size:
            self.commit_size.observe(size)
            self.commit_seconds.observe(seconds)

    def took_over(self, count: int) -> None:
        self.takeovers.inc(count)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics on host:port (loopback only) from a daemon thread; returns the
        port (useful with port 0)."""
        addr = check_metrics_host(host)
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
