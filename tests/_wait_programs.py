"""Generated workflows that hibernate, for tests/test_properties_waits.py.

A program is data: the main workflow's operations (steps with drawn outcomes, compensable
steps, sends, sleeps, approvals, event waits, recorded `now()`, under if/for/try), the `@on`
handlers (exact and wildcard patterns) and the `@every` schedules of one DO class, plus the
input. `render` turns it into Python source; the test imports that from a real file (the
compiler reads source with inspect). A script is data too: what the outside world does while
the runs hibernate (move the virtual clock, send an event, decide an approval).

The generated code reports every step execution here (EXEC), so the test can count them.

`play` runs a scenario on a virtual clock: start the main run, each script action, then a
drain that jumps the clock to every timer still pending; between actions it waits until the
engine has settled (no run task, nothing due, every event dispatched, every schedule fired),
so an action always meets the same state. With a crash point it survives the one crash as a
new process would (a fresh Engine on the same file) and finishes the script there. It
returns the `World` the play left: the database's runs, journals, outbox, approvals, waits
and schedules, the step log, the script's observations and the clock's stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import textwrap
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from dotdo import ApprovalError, Engine
from dotdo.engine import serde
from dotdo.testing import CrashAt, SimulatedCrash, VirtualClock

EXEC: list[tuple[str, str, int]] = []
"""Every execution of a step body: (run id, step key, attempt)."""
BOOKED: list[tuple[str, int]] = []
"""Compensable steps of the main run whose body succeeded, with the value their undo gets."""
UNDONE: list[int] = []
"""Undo executions, in order, by the value they received."""
PLAN: dict[str, tuple[str, int]] = {}
"""Outcome of each site: ("ok", 0), ("flaky", k), ("slow", k) (retried after 45 s) or
("fail", 0)."""


def reset() -> None:
    EXEC.clear()
    BOOKED.clear()
    UNDONE.clear()


EVENTS = ("Pay.done", "Pay.failed", "Ship.done")
"""The event names programs and scripts send; `k` in the data is what waits match on."""
PATTERNS = {
    "Pay.done": "on.Pay.done",
    "*.done": 'on["*"].done',
    "Pay.*": 'on.Pay["*"]',
    "*.failed": 'on["*"].failed',
    "*.*": 'on["*"]["*"]',
    "Ship.done": "on.Ship.done",
}
"""Handler patterns and how the generated source spells them."""
SCHEDULES = {
    "every(15).minutes": 900,
    "every(1).hours": 3600,
    "every(40).minutes": 2400,
    'every.day.at("2am")': None,
}
"""Schedule decorators and their period in seconds (None: daily at 02:00 UTC)."""
APPROVERS = ("ann", "bob", "cy")
START_ISO = "2030-01-01T00:00:00+00:00"
"""The virtual clock's start; `sleep_until` targets are offsets from it."""

Outcome = st.sampled_from(
    [("ok", 0), ("ok", 0), ("ok", 0), ("flaky", 1), ("flaky", 2), ("slow", 1), ("fail", 0)]
)
Handler = st.sampled_from([("ok", 0), ("ok", 0), ("flaky", 1), ("slow", 1), ("fail", 0)])


@dataclass
class Program:
    ops: list[Any]
    handlers: list[tuple[str, tuple[str, int], bool]] = field(default_factory=list)
    """(pattern, outcome of its step, whether it sleeps 60 s and runs a second step)."""
    schedules: list[tuple[str, tuple[str, int]]] = field(default_factory=list)
    start: int = 0


# ---------------------------------------------------------------------- strategies
def _leaves(weights: dict[str, int]) -> st.SearchStrategy[Any]:
    kinds: dict[str, st.SearchStrategy[Any]] = {
        "step": st.tuples(st.just("step"), Outcome),
        "book": st.tuples(st.just("book"), Outcome),
        "send": st.tuples(st.just("send"), st.integers(0, 2), st.integers(1, 2)),
        "sleep": st.tuples(st.just("sleep"), st.sampled_from([0, 30, 600, 3600])),
        "until": st.tuples(st.just("until"), st.sampled_from([0, 900, 7200])),
        "approval": st.tuples(
            st.just("approval"),
            st.sampled_from(["inline", "method"]),
            st.lists(st.sampled_from(APPROVERS), min_size=1, max_size=3, unique=True),
            st.sampled_from([None, None, 300, 3600, 86400]),
        ),
        "wait": st.tuples(
            st.just("wait"),
            st.integers(0, 2),
            st.sampled_from([None, 1, 2]),
            st.sampled_from([None, 120, 1800]),
        ),
        "now": st.tuples(st.just("now")),
    }
    pool = [kinds[k] for k, w in weights.items() for _ in range(w)]
    return st.one_of(*pool)


def ops(weights: dict[str, int], depth: int = 0, width: int = 4) -> st.SearchStrategy[list[Any]]:
    leaf = _leaves(weights)
    if depth >= 1:
        return st.lists(leaf, min_size=1, max_size=2)
    sub = ops(weights, depth + 1)
    node = st.one_of(
        leaf,
        leaf,
        leaf,
        st.tuples(st.just("if"), sub, sub),
        st.tuples(st.just("for"), st.integers(1, 2), sub),
        st.tuples(st.just("try"), sub, sub),
    )
    return st.lists(node, min_size=1, max_size=width)


def programs(
    weights: dict[str, int],
    *,
    handlers: tuple[int, int] = (0, 0),
    schedules: tuple[int, int] = (0, 0),
    require: str | None = None,
    width: int = 4,
) -> st.SearchStrategy[Program]:
    """Programs of the given leaf mix; `require` puts at least one leaf of that kind in."""

    @st.composite
    def build(draw: st.DrawFn) -> Program:
        body = draw(ops(weights, width=width))
        if require is not None and not _has(body, require):
            extra = draw(_leaves({require: 1}))
            body.insert(draw(st.integers(0, len(body))), extra)
        patterns = draw(
            st.lists(st.sampled_from(sorted(PATTERNS)), min_size=handlers[0],
                     max_size=handlers[1], unique=True)
        )  # fmt: skip
        hs = [(p, draw(Handler), draw(st.booleans())) for p in patterns]
        specs = draw(
            st.lists(st.sampled_from(sorted(SCHEDULES)), min_size=schedules[0],
                     max_size=schedules[1], unique=True)
        )  # fmt: skip
        ss = [(s, draw(Handler)) for s in specs]
        return Program(body, hs, ss, draw(st.integers(0, 5)))

    return build()


def _has(body: list[Any], kind: str) -> bool:
    for op in body:
        if op[0] == kind:
            return True
        if op[0] in ("if", "try") and (_has(op[1], kind) or _has(op[2], kind)):
            return True
        if op[0] == "for" and _has(op[2], kind):
            return True
    return False


def scripts(
    weights: dict[str, int],
    *,
    min_size: int = 0,
    max_size: int = 6,
    jumps: tuple[int, ...] = (20, 60, 300, 900, 3600, 14400),
) -> st.SearchStrategy[list[Any]]:
    """What the world does, in order, each time every run has settled."""
    kinds: dict[str, st.SearchStrategy[Any]] = {
        "advance": st.tuples(st.just("advance"), st.sampled_from(jumps)),
        "send": st.tuples(st.just("send"), st.integers(0, 2), st.integers(1, 2)),
        "decide": st.tuples(
            st.just("decide"),
            st.sampled_from(["approve", "approve", "reject", "wrong", "again"]),
        ),
    }
    pool = [kinds[k] for k, w in weights.items() for _ in range(w)]
    return st.lists(st.one_of(*pool), min_size=min_size, max_size=max_size)


# ------------------------------------------------------------------------ rendering
_HEADER = """
from datetime import datetime, timedelta

from dotdo import DO, PermanentError, approval, compensate, current_step, every, on, step, workflow
from _wait_programs import BOOKED, EXEC, PLAN, START_ISO, UNDONE

START = datetime.fromisoformat(START_ISO)
CODES = {"approved": 1, "rejected": 2, "expired": 3}


def _act(sid):
    ctx = current_step()
    EXEC.append((ctx.run_id, ctx.step_id, ctx.attempt))
    kind, k = PLAN[sid.split("-")[0]]
    if kind == "fail":
        raise PermanentError("failed " + sid)
    if kind in ("flaky", "slow") and ctx.attempt <= k:
        raise ConnectionError("transient " + sid)
    return len(sid)


class Gen(DO):
    @step(retries=2, initial_delay=0)
    async def work(self, sid, acc):
        return acc + _act(sid)

    @step(retries=2, initial_delay=45)
    async def slow(self, sid, acc):
        return acc + _act(sid)

    @step(retries=2, initial_delay=0)
    async def book(self, sid, acc):
        value = acc + _act(sid)
        BOOKED.append((sid, value))
        return value

    @compensate(book)
    async def unbook(self, value):
        UNDONE.append(value)
"""


class _Renderer:
    def __init__(self) -> None:
        self.plan: dict[str, tuple[str, int]] = {}
        self.methods: list[str] = []
        self.sites = 0

    def site(self, kind: str) -> str:
        self.sites += 1
        return f"{kind}{self.sites}"

    def body(self, ops: list[Any], indent: int, loops: list[str]) -> list[str]:
        pad = "    " * indent
        out: list[str] = []
        for op in ops:
            kind = op[0]
            site = self.site(kind)
            sid = " + ".join([repr(site), *(f'"-" + str({v})' for v in loops)])
            if kind in ("step", "book"):
                self.plan[site] = op[1]
                method = {"step": "slow" if op[1][0] == "slow" else "work", "book": "book"}[kind]
                out.append(f"{pad}acc = await self.{method}({sid}, acc)")
            elif kind == "send":
                data = f'{{"tag": {sid}, "k": {op[2]}, "v": acc % 5}}'
                out.append(f"{pad}self.send({EVENTS[op[1]]!r}, {data})")
            elif kind == "sleep":
                out.append(f"{pad}await self.sleep(timedelta(seconds={op[1]}))")
            elif kind == "until":
                out.append(f"{pad}await self.sleep_until(START + timedelta(seconds={op[1]}))")
            elif kind == "now":
                out.append(f"{pad}acc = acc + int((self.now() - START).total_seconds()) % 97")
            elif kind == "approval":
                out.extend(self.approval(op, pad, sid, site))
            elif kind == "wait":
                match = "None" if op[2] is None else f'{{"k": {op[2]}}}'
                out.append(
                    f"{pad}evt = await self.wait_for_event({EVENTS[op[1]]!r}, match={match}, "
                    f"timeout={op[3]})"
                )
                out.append(f'{pad}log.append(None if evt is None else evt.data["tag"])')
                out.append(f'{pad}acc = acc + (0 if evt is None else evt.data["v"])')
            elif kind == "if":
                out.append(f"{pad}if acc % 2 == 0:")
                out.extend(self.body(op[1], indent + 1, loops))
                out.append(f"{pad}else:")
                out.extend(self.body(op[2], indent + 1, loops))
            elif kind == "for":
                var = f"i{self.sites}_{len(loops)}"
                out.append(f"{pad}for {var} in range({op[1]}):")
                out.extend(self.body(op[2], indent + 1, [*loops, var]))
            elif kind == "try":
                out.append(f"{pad}try:")
                out.extend(self.body(op[1], indent + 1, loops))
                out.append(f"{pad}except PermanentError:")
                out.append(f"{pad}    acc = acc + 1000")
                out.extend(self.body(op[2], indent + 1, loops))
        return out or [f"{pad}pass"]

    def approval(self, op: Any, pad: str, sid: str, site: str) -> list[str]:
        _, form, approvers, deadline = op
        when = "None" if deadline is None else f"timedelta(seconds={deadline})"
        if form == "inline":
            call = (
                f"self.approval_flow.request_approval(title={sid}, approvers={approvers!r}, "
                f"deadline={when})"
            )
        else:
            options = f"approvers={approvers!r}" + (
                "" if deadline is None else f", deadline={when}"
            )
            self.methods.append(
                f"    @approval({options})\n"
                f"    def {site}(self, acc):\n"
                f'        return {{"title": {site!r}, "amount": float(acc)}}\n'
            )
            call = f"self.{site}(acc)"
        return [
            f"{pad}a = await {call}",
            f"{pad}log.append([a.status, [d.by for d in a.decisions]])",
            f"{pad}acc = acc + CODES[a.status]",
        ]


def render(program: Program) -> tuple[str, dict[str, tuple[str, int]]]:
    """The module source of `program`, and the outcome plan of its sites."""
    r = _Renderer()
    lines = r.body(program.ops, 2, [])
    parts = [textwrap.dedent(_HEADER), *r.methods]
    parts.append("    @workflow\n    async def wf(self, acc):\n        log = []")
    parts.append("\n".join([*lines, "        return [acc, log]", ""]))
    for i, (pattern, outcome, sleeps) in enumerate(program.handlers):
        r.plan[f"h{i}"] = outcome
        method = "slow" if outcome[0] == "slow" else "work"
        tail = ""
        if sleeps:
            tail = (
                "        await self.sleep(60)\n"
                f'        acc = await self.work("h{i}" + "-again", acc)\n'
            )
        parts.append(
            f"    @{PATTERNS[pattern]}\n"
            f"    async def h{i}(self, event):\n"
            f'        acc = await self.{method}("h{i}", event.data["v"])\n'
            f"{tail}"
            "        return acc\n"
        )
    for i, (spec, outcome) in enumerate(program.schedules):
        r.plan[f"t{i}"] = outcome
        method = "slow" if outcome[0] == "slow" else "work"
        parts.append(
            f"    @{spec}\n"
            f"    async def t{i}(self):\n"
            f'        acc = await self.{method}("t{i}", 1)\n'
            f'        return await self.work("t{i}" + "-again", acc)\n'
        )
    return "\n".join(parts), r.plan


# ------------------------------------------------------------------------- playing
MAIN = "main"
START = datetime.fromisoformat(START_ISO)


class Faults:
    """CrashAt(n), noting which runs had a step executed but not committed when it fired:
    only those may execute a step once more after the restart. (A generated step's body has
    no await, so it runs whole between its before_step and after_step boundaries.)"""

    def __init__(self, n: int) -> None:
        self.crash = CrashAt(n)
        self.executed: set[str] = set()
        self.in_flight: set[str] = set()

    def __call__(self, point: str, run_id: str) -> None:
        if point == "after_step":
            self.executed.add(run_id)
        elif point == "after_commit":
            self.executed.discard(run_id)
        try:
            self.crash(point, run_id)
        except SimulatedCrash:
            self.in_flight = set(self.executed)
            raise


@dataclass
class World:
    """What one play of a scenario left in its database and in the step log."""

    runs: dict[str, tuple[str, str, Any, Any]]
    rows: dict[str, list[tuple[str, str, int | None, int]]]
    outbox: list[tuple[int, str | None, str, Any]]
    approvals: list[tuple[Any, ...]]
    waits: list[tuple[Any, ...]]
    schedules: list[tuple[Any, ...]]
    execs: list[tuple[str, str, int]]
    booked: list[tuple[str, int]]
    undone: list[int]
    script: list[Any]
    times: list[float]
    in_flight: set[str] = field(default_factory=set)
    crash: tuple[int, Any, int] = (0, None, 0)
    """(n, the boundary it hit or None, boundaries the play passed through)."""
    crashed_in: str = ""
    """The action (start, advance, send, decide, drain) the crash cut into."""

    def completed(self, run_id: str) -> list[str]:
        return [key for key, status, _, _ in self.rows.get(run_id, []) if status == "completed"]

    def of(self, workflow: str) -> set[str]:
        return {run_id for run_id, (wf, *_) in self.runs.items() if wf == workflow}


class Player:
    """Plays one scenario: start the main run, the script, the drain; survives one crash."""

    def __init__(self, db: Path, cls: Any, program: Program, faults: Faults) -> None:
        self.db, self.cls, self.program, self.faults = db, cls, program, faults
        self.clock = VirtualClock(START)
        self.times = [self.clock.now()]
        handlers = [f"on:Gen.h{i}" for i in range(len(program.handlers))]
        self.cursors = ["waits", *handlers]
        self.crashed_in = ""
        self.peek: sqlite3.Connection

    async def open(self, faults: Faults | None) -> Engine:
        if not self.db.exists():  # a copy of a migrated file opens faster than a new one
            shutil.copyfile(await _template(self.db.parent), self.db)
        engine = Engine(
            self.db, clock=self.clock, faults=faults, poll_seconds=0.05, synchronous="NORMAL"
        )
        engine.register(self.cls)
        await engine.open()
        return engine

    async def play(self, script: list[Any]) -> list[Any]:
        engine = await self.open(self.faults)
        # Polls read the file directly: a read through the engine's reader costs a thread hop
        # and queues behind the timer loop's own reads.
        self.peek = sqlite3.connect(self.db, isolation_level=None)
        results: list[Any] = []
        try:
            for i, action in enumerate([("start",), *script, ("drain",)]):
                outcome: Any = None
                while True:
                    try:
                        if outcome is None:
                            outcome = await self.apply(engine, i, action)
                        await self.settle(engine)
                        break
                    except BaseException as exc:
                        engine = await self.restart(engine, exc)
                        self.crashed_in = action[0]
                results.append(outcome)
        finally:
            self.peek.close()
            await engine.close()
        return results

    async def restart(self, engine: Engine, exc: BaseException) -> Engine:
        """The process died: a fresh engine (no faults) opens the same file."""
        if engine.faults is None or not (
            isinstance(exc, SimulatedCrash) or engine._crashed is not None
        ):
            raise exc
        if engine._crashed is None:  # the crash reached the caller first (approve, send)
            await engine._crash(exc)
        store = engine._store
        await engine.close()
        assert store is not None and store._writer is None and store._reader is None, (
            "the dead engine left its database connections open"
        )
        return await self.open(None)

    async def apply(self, engine: Engine, i: int, action: Any) -> Any:
        kind = action[0]
        if kind == "start":
            await engine.start(self.cls.wf, self.program.start, run_id=MAIN)
        elif kind == "advance":
            self.clock.advance(action[1])
            self.times.append(self.clock.now())
        elif kind == "send":
            tag = f"x{i}"
            # Its own sends (the engine's Approval.* events have no run id either).
            mine = [
                e.data
                for e in await engine.store.sent_events()
                if e.run_id is None and not e.name.startswith("Approval.")
            ]
            if all(serde.loads(d)["tag"] != tag for d in mine):  # a retry: not twice
                await engine.send(EVENTS[action[1]], {"tag": tag, "k": action[2], "v": i})
        elif kind == "decide":
            return await self.decide(engine, f"d{i}", action[1])
        elif kind == "drain":
            await self.drain(engine)
        return action

    async def decide(self, engine: Engine, note: str, how: str) -> Any:
        everything = await engine.approvals(status=None, limit=1000)
        for a in everything:
            for d in a.decisions:
                if d.comment == note:  # taken before the crash cut the call short
                    return ("decide", how, a.id, d.by, d.decision)
        pending = [a for a in everything if a.status == "pending"]
        settled = [a for a in everything if a.status != "pending"]
        if how in ("approve", "reject"):
            if not pending:
                return ("decide", how, None)
            a = pending[0]
            by = a.waiting_on
            if how == "approve":
                await engine.approve(a.id, by=by, comment=note)
            else:
                await engine.reject(a.id, by=by, reason=note)
            return ("decide", how, a.id, by, {"approve": "approved", "reject": "rejected"}[how])
        target = pending[0] if how == "wrong" and pending else None
        if how == "again" and settled:
            target = settled[-1]
        if target is None:
            return ("decide", how, None)
        if how == "wrong":
            others = [x for x in target.approvers if x != target.waiting_on]
            by = others[0] if others else "mallory"
        else:
            by = target.decisions[-1].by if target.decisions else target.approvers[0]
        before = await engine.get_approval(target.id)
        try:
            if len(note) % 2:
                await engine.approve(target.id, by=by, comment=note)
            else:
                await engine.reject(target.id, by=by, reason=note)
        except ApprovalError as refused:
            assert await engine.get_approval(target.id) == before, f"{target.id} changed"
            return ("decide", how, target.id, by, "refused", str(refused))
        raise AssertionError(f"{how}: {by} decided {target.id} ({before.status}) and was heard")

    async def drain(self, engine: Engine) -> None:
        """Jump to each timer a run still waits on (retries, sleeps, deadlines, timeouts)."""
        for _ in range(60):
            await self.settle(engine)
            (wake,) = self.peek.execute(
                "SELECT MIN(wake_at) FROM runs WHERE status = 'waiting'"
            ).fetchone()
            if wake is None:
                return
            self.clock.advance(max(wake - self.clock.now(), 0.0))
            self.times.append(self.clock.now())
        raise AssertionError("runs still wait on timers after 60 jumps of the clock")

    async def settle(self, engine: Engine) -> None:
        """Until no task runs and nothing is due, undelivered or unfired. Everything the engine
        does next on its own shows as one of these (a claimed or new run is 'running')."""
        limit = time.monotonic() + 20
        while True:
            if engine._crashed is not None:
                raise engine._crashed
            assert time.monotonic() < limit, "the runs did not settle"
            if engine._active:
                await asyncio.wait(list(engine._active.values()), timeout=0.5)
            elif self.pending():
                engine._kick.set()  # the timer loop has work: due runs, events, schedules
                await asyncio.sleep(0.0005)
            else:
                return

    def pending(self) -> bool:
        marks = ",".join(f":c{i}" for i in range(len(self.cursors)))
        due, known, top, seen = self.peek.execute(
            "SELECT (SELECT COUNT(*) FROM runs WHERE status = 'running' OR (status = 'waiting' "
            "AND wake_at <= :now)) + (SELECT COUNT(*) FROM schedules WHERE next_fire <= :now) "
            "AS due, (SELECT COUNT(*) FROM schedules) AS known, "
            "(SELECT COALESCE(MAX(id), 0) FROM outbox) AS top, "
            f"(SELECT COUNT(*) FROM cursors WHERE name IN ({marks}) AND last_id >= "
            "(SELECT COALESCE(MAX(id), 0) FROM outbox)) AS seen",
            {"now": self.clock.now(), **{f"c{i}": c for i, c in enumerate(self.cursors)}},
        ).fetchone()
        unseen = top > 0 and seen < len(self.cursors)
        return bool(due or known < len(self.program.schedules) or unseen)


async def _template(directory: Path) -> Path:
    path = directory / "template.db"
    if not path.exists():
        async with Engine(path):
            pass
    return path


def read_world(db: Path, script: list[Any], times: list[float], faults: Faults) -> World:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        runs = {
            r[0]: (r[1], r[2], _load(r[3]), _error(r[4]))
            for r in conn.execute("SELECT run_id, workflow, status, result, error FROM runs")
        }
        rows: dict[str, list[tuple[str, str, int | None, int]]] = {}
        for run_id, *row in conn.execute(
            "SELECT run_id, step_key, status, seq, attempts FROM steps "
            "ORDER BY run_id, seq IS NULL, seq, started_at"
        ):
            rows.setdefault(run_id, []).append(tuple(row))  # type: ignore[arg-type]
        outbox = [
            (i, r, e, serde.loads(d))
            for i, r, e, d in conn.execute("SELECT id, run_id, event, data FROM outbox ORDER BY id")
        ]
        approvals = []
        for (body,) in conn.execute("SELECT body FROM approvals ORDER BY id"):
            a = serde.loads(body)
            decisions = [(d.by, d.decision, d.comment, d.at.timestamp()) for d in a.decisions]
            deadline = a.deadline.timestamp() if a.deadline else None
            approvals.append((a.id, a.status, a.approvers, a.level, decisions, deadline))
        waits = list(
            conn.execute(
                "SELECT run_id, step_key, event, match, event_id FROM waits "
                "ORDER BY run_id, step_key"
            )
        )
        schedules = list(conn.execute("SELECT * FROM schedules ORDER BY name"))
    return World(
        runs, rows, outbox, approvals, waits, schedules, list(EXEC), list(BOOKED),
        list(UNDONE), script, times, faults.in_flight,
    )  # fmt: skip


def _load(text: str | None) -> Any:
    return None if text is None else serde.loads(text)


def _error(text: str | None) -> tuple[str, str] | None:
    error = _load(text)
    return None if error is None else (type(error).__name__, str(error))


async def play(db: Path, cls: Any, program: Program, script: list[Any], n: int) -> World:
    reset()
    faults = Faults(n)
    player = Player(db, cls, program, faults)
    results = await player.play(script)
    world = read_world(db, results, player.times, faults)
    trace = faults.crash.trace
    if faults.crash.fired:  # the dead engine committed nothing after its crash
        assert ("after_commit", trace[n][1]) not in trace[n + 1 :], trace[n:]
    world.crash = (n, trace[n] if faults.crash.fired else None, len(trace))
    world.crashed_in = player.crashed_in
    return world
