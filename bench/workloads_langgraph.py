"""The LangGraph peer: the same workloads as StateGraphs checkpointed by AsyncSqliteSaver.

Run by bench/run.py in its own process; it is never imported by the orchestrator, so the
benchmark runs without LangGraph installed.

    python bench/workloads_langgraph.py throughput --runs 200 --steps 10 --reps 3
    python bench/workloads_langgraph.py sequential --steps 1000 --reps 3
    python bench/workloads_langgraph.py resume-setup --db PATH --history 1000   # exits on purpose
    python bench/workloads_langgraph.py resume-measure --db PATH --history 1000

Every graph is compiled with an `AsyncSqliteSaver` on one aiosqlite connection per process
(the documented async setup) and invoked with `durability="sync"`: each superstep's writes
and checkpoint are committed before the next node starts. The connection is opened here,
`PRAGMA journal_mode = WAL` and `PRAGMA synchronous = FULL` are executed on it and read back
(the saver's own setup() also sets WAL and leaves synchronous alone), then handed to
`AsyncSqliteSaver(conn)`: the same WAL + synchronous=FULL as dotdo and the fsync line.
Nodes are `async` and do nothing but return the state's counter plus one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypedDict

import aiosqlite
from _common import (
    CRASH_EXIT,
    RESUME_RUN_ID,
    cpu_seconds,
    emit,
    fresh_dir,
    median,
    worker_args,
)
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

NOOP_CALLS = 0
"""How many times a `noop` node body ran in this process (a resumed run must not re-run any)."""
MARKS: list[tuple[float, float]] = []
"""(perf_counter(), cpu_seconds()) at the start of each `mark` node body."""


class State(TypedDict):
    i: int
    """Incremented by every no-op node: the final value proves how many of them ran."""
    approval: str
    """Set by the `gate` node from the value its interrupt() was resumed with."""


async def noop(state: State) -> dict[str, Any]:
    global NOOP_CALLS
    NOOP_CALLS += 1
    return {"i": state["i"] + 1}


async def gate(state: State) -> dict[str, Any]:
    """Pauses the run (human-in-the-loop); on resume it runs again and interrupt() returns."""
    return {"approval": interrupt("approve?")}


async def mark(state: State) -> dict[str, Any]:
    """Runs only once `gate`'s writes are committed: its start ends the resume timing."""
    MARKS.append((time.perf_counter(), cpu_seconds()))
    return {}


def chain_graph(steps: int) -> StateGraph[State]:
    """throughput: `steps` distinct no-op nodes in a line, START -> n0 -> ... -> END."""
    builder = StateGraph(State)
    previous = START
    for k in range(steps):
        builder.add_node(f"n{k}", noop)
        builder.add_edge(previous, f"n{k}")
        previous = f"n{k}"
    builder.add_edge(previous, END)
    return builder


def loop_graph(steps: int, *, then_gate: bool = False) -> StateGraph[State]:
    """sequential and resume: one no-op node that loops back to itself `steps` times.

    With `then_gate` the loop exits to `gate` (an interrupt) and then `mark`, as in the
    other peers' `resumable` workflow.
    """
    builder = StateGraph(State)
    builder.add_node("noop", noop)
    after = END
    if then_gate:
        builder.add_node("gate", gate)
        builder.add_node("mark", mark)
        builder.add_edge("gate", "mark")
        builder.add_edge("mark", END)
        after = "gate"

    def route(state: State) -> str:
        return "noop" if state["i"] < steps else after

    builder.add_edge(START, "noop" if steps > 0 else after)
    builder.add_conditional_edges("noop", route, ["noop", after])
    return builder


def config(thread_id: str, steps: int) -> dict[str, Any]:
    # LangGraph counts supersteps against recursion_limit; leave room above the loop.
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": steps + 100}


async def connect(db: Path) -> aiosqlite.Connection:
    """An aiosqlite connection in WAL + synchronous=FULL, verified, for AsyncSqliteSaver."""
    conn = await aiosqlite.connect(db)
    async with conn.execute("PRAGMA journal_mode = WAL") as cur:
        mode = (await cur.fetchone() or ("?",))[0]
    await conn.execute("PRAGMA synchronous = FULL")
    async with conn.execute("PRAGMA synchronous") as cur:
        sync = (await cur.fetchone() or (-1,))[0]
    if mode != "wal" or sync != 2:
        await conn.close()
        raise RuntimeError(f"LangGraph's SQLite file runs journal={mode} synchronous={sync}")
    return conn


def node_checkpoints(db: Path) -> dict[str, int]:
    """Checkpoints written after a node ran (metadata source 'loop', step >= 1), per thread.

    Step -1 is the input checkpoint and step 0 the one after START; each node's superstep
    adds exactly one more.
    """
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT thread_id, COUNT(*) FROM checkpoints WHERE "
            "json_extract(metadata, '$.source') = 'loop' AND json_extract(metadata, '$.step') >= 1 "
            "GROUP BY thread_id"
        ).fetchall()
        return {str(thread): int(count) for thread, count in rows}
    finally:
        conn.close()


# ------------------------------------------------------------- throughput
async def throughput_once(db: Path, runs: int, steps: int) -> dict[str, Any]:
    conn = await connect(db)
    try:
        graph = chain_graph(steps).compile(checkpointer=AsyncSqliteSaver(conn))
        cpu0, started = cpu_seconds(), time.perf_counter()
        results = await asyncio.gather(
            *(
                graph.ainvoke({"i": 0, "approval": ""}, config(f"t{k}", steps), durability="sync")
                for k in range(runs)
            )
        )
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    finally:
        await conn.close()
    assert all(r["i"] == steps for r in results), "a thread returned the wrong value"
    durable = node_checkpoints(db)
    assert len(durable) == runs and set(durable.values()) == {steps}, "missing checkpoints"
    return {
        "seconds": elapsed,
        "steps_per_s": runs * steps / elapsed,
        "cpu_seconds": cpu,
        "cpu_us_per_step": cpu / (runs * steps) * 1e6,
    }


async def sequential_once(db: Path, runs: int, steps: int) -> dict[str, Any]:
    conn = await connect(db)
    try:
        graph = loop_graph(steps).compile(checkpointer=AsyncSqliteSaver(conn))
        cpu0, started = cpu_seconds(), time.perf_counter()
        result = await graph.ainvoke(
            {"i": 0, "approval": ""}, config("seq", steps), durability="sync"
        )
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    finally:
        await conn.close()
    assert result["i"] == steps
    durable = node_checkpoints(db)
    assert durable == {"seq": steps}, f"{durable} node checkpoints, expected {steps}"
    return {
        "seconds": elapsed,
        "steps_per_s": steps / elapsed,
        "cpu_seconds": cpu,
        "cpu_us_per_step": cpu / steps * 1e6,
    }


def repeat(kind: str, args: Any) -> None:
    """Warm-up, then `reps` measured repetitions, each on a fresh database."""
    once = throughput_once if kind == "throughput" else sequential_once
    runs = args.runs if kind == "throughput" else 1

    def one(label: str) -> dict[str, Any]:
        directory = fresh_dir(args.tmp, f"langgraph-{kind}-{label}")
        try:
            return asyncio.run(once(directory / "langgraph.sqlite", runs, args.steps))
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    warmup = [one("warmup") for _ in range(args.warmup)]
    reps = [one(f"rep{i}") for i in range(args.reps)]
    emit(
        {
            "peer": "langgraph",
            "workload": kind,
            "runs": runs,
            "steps_per_run": args.steps,
            "warmup": warmup,
            "reps": reps,
            "median_steps_per_s": median([r["steps_per_s"] for r in reps]),
        }
    )


# ----------------------------------------------------------------- resume
async def resume_setup(db: Path, history: int) -> None:
    """Run `history` no-op nodes, reach `gate`'s interrupt(), then die without closing.

    With durability="sync", ainvoke returns the interrupt only after the checkpoint that
    records it is committed; os._exit then ends the process as a crash would (no close, no
    WAL checkpoint), leaving the paused run on disk for a fresh process to resume.
    """
    conn = await connect(db)
    graph = loop_graph(history, then_gate=True).compile(checkpointer=AsyncSqliteSaver(conn))
    result = await graph.ainvoke(
        {"i": 0, "approval": ""}, config(RESUME_RUN_ID, history), durability="sync"
    )
    if result.get("i") != history or "__interrupt__" not in result:
        raise SystemExit(f"the run did not stop at its interrupt: {result!r}")
    os._exit(CRASH_EXIT)


async def resume_measure(db: Path, history: int) -> dict[str, Any]:
    """Reopen the file and resume the paused run; time until the node after the gate starts.

    The graph builder is made before t0 (like the other peers' class definitions). t0 is
    taken just before the aiosqlite connection is opened; then the saver is made, the graph
    compiled (`open_ms` ends here), and `ainvoke(Command(resume=...))` loads the thread's
    latest checkpoint, runs `gate` again (its interrupt() now returns the resume value),
    commits its writes and checkpoint, and starts `mark`, whose first line stamps the end.
    """
    builder = loop_graph(history, then_gate=True)
    cpu0, started = cpu_seconds(), time.perf_counter()
    conn = await connect(db)
    try:
        graph = builder.compile(checkpointer=AsyncSqliteSaver(conn))
        opened = time.perf_counter()
        result = await graph.ainvoke(
            Command(resume="approved"), config(RESUME_RUN_ID, history), durability="sync"
        )
    finally:
        await conn.close()
    assert result["i"] == history and result["approval"] == "approved", result
    assert len(MARKS) == 1, f"mark ran {len(MARKS)} times"
    durable = node_checkpoints(db)
    assert durable == {RESUME_RUN_ID: history + 2}, f"{durable}, expected {history + 2}"
    check = sqlite3.connect(db)
    try:
        (state_bytes,) = check.execute(
            "SELECT length(checkpoint) FROM checkpoints WHERE thread_id = ? "
            "ORDER BY checkpoint_id DESC LIMIT 1",
            (RESUME_RUN_ID,),
        ).fetchone()
    finally:
        check.close()
    return {
        "next_step_ms": (MARKS[0][0] - started) * 1000,
        "open_ms": (opened - started) * 1000,
        "cpu_ms": (MARKS[0][1] - cpu0) * 1000,
        "replayed_steps": NOOP_CALLS,
        "history": history,
        "state_bytes": state_bytes,
    }


def main() -> None:
    args = worker_args(__doc__ or "")
    if args.workload in ("throughput", "sequential"):
        repeat(args.workload, args)
    elif args.workload == "resume-setup":
        asyncio.run(resume_setup(Path(args.db), args.history))
    else:
        result = asyncio.run(resume_measure(Path(args.db), args.history))
        emit({"peer": "langgraph", "workload": "resume", "version": version("langgraph"), **result})


if __name__ == "__main__":
    main()
