"""Workflows that tests/test_real_kills.py drives in worker processes it SIGKILLs.

Every step (and every undo, and the `try_` probe) first appends one line,
`run_id step_key attempt pid`, to a shared log with a single O_APPEND write(), so the log
counts executions per process even across SIGKILLs (a kill never leaves half a line). Each
step returns a value mixed from the previous one, so a result is only right if every step
ran and was recorded exactly once in order.

`Ledger.chain` (one worker at a time, killed 20 times) mixes the engine's durable paths:
every run has STEPS steps; some sleep durably half-way, some end with an at-most-once
`try_` probe, some fail at the end with a PermanentError and are compensated.
`Relay.relay` (two workers racing on one database) has two segments separated by a durable
sleep, so the due-claim path is raced by both processes.
"""

from __future__ import annotations

import asyncio
import os

from dotdo import DO, PermanentError, StepInterrupted, compensate, current_step, step, workflow

STEPS = 5
SLEEP = 0.2
FALLBACK = 424_242
MOD = 2**61 - 1
LOG: str | None = None
"""The effect log path; the worker sets it from its command line before opening the engine."""


def mix(acc: int, seed: int, i: int) -> int:
    return (acc * 1_000_003 + seed * 7_919 + i + 1) % MOD


def run_id(i: int) -> str:
    return f"run-{i:04d}"


def effect() -> None:
    """Record one execution of the current step: one line, one write()."""
    if LOG is None:
        raise RuntimeError("kill_flows.LOG is not set")
    ctx = current_step()
    line = f"{ctx.run_id} {ctx.step_id} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def pace(seed: int) -> None:
    """A small await, different per run, so steps are in flight when a kill lands."""
    await asyncio.sleep(0.002 + 0.002 * (seed % 5))


# ------------------------------------------------------------------ Ledger (20 kills)
def kind(seed: int) -> str:
    """What a run does after its steps (`chain` tests the same conditions inline); a run
    also sleeps durably after its second step when seed % 4 == 1."""
    if seed % 10 == 3:
        return "try"
    if seed % 10 == 7:
        return "compensate"
    return "plain"


def work_keys() -> list[str]:
    return [f"work[{i}]" for i in range(1, STEPS + 1)]


def plan(seed: int) -> list[str]:
    """The step keys a run executes, in execution order."""
    keys = work_keys()
    if kind(seed) == "try":
        keys.append("probe")
    elif kind(seed) == "compensate":
        keys += ["boom"] + [f"compensate:{k}" for k in reversed(work_keys())]
    return keys


def chained(seed: int) -> int:
    acc = seed
    for i in range(STEPS):
        acc = mix(acc, seed, i)
    return acc


def probe_value(seed: int) -> int:
    return seed * 3 + 1


def expected(seed: int, *, probe_ran: bool = True) -> int:
    """A completed run's result; a `try` run whose probe was interrupted used FALLBACK."""
    acc = chained(seed)
    if kind(seed) == "try":
        acc = mix(acc, probe_value(seed) if probe_ran else FALLBACK, 99)
    return acc


class Ledger(DO):
    @step
    async def work(self, seed: int, i: int, acc: int) -> int:
        effect()
        await pace(seed)
        return mix(acc, seed, i)

    @compensate(work)
    async def unwork(self, value: int) -> int:
        effect()
        await asyncio.sleep(0.002)
        return value % 1000

    async def probe(self, seed: int) -> int:
        effect()
        await pace(seed)
        return probe_value(seed)

    @step
    async def boom(self, seed: int) -> int:
        effect()
        raise PermanentError(f"declined {seed}")

    @workflow
    async def chain(self, seed: int) -> int:
        acc = seed
        for i in range(STEPS):
            acc = await self.work(seed, i, acc)
            if i == 1 and seed % 4 == 1:
                await self.sleep(SLEEP)
        if seed % 10 == 3:
            try:
                extra = await self.try_(self.probe, seed)
            except StepInterrupted:
                extra = FALLBACK
            acc = mix(acc, extra, 99)
        if seed % 10 == 7:
            await self.boom(seed)
        return acc


# ------------------------------------------------------------- Relay (two workers)
RELAY_STEPS = 5
RELAY_SLEEP = 0.3
SEGMENTS = (("hop[1]", "hop[2]"), ("hop[3]", "hop[4]", "hop[5]"))
"""Keys before and after the durable sleep: each segment is advanced by one claim."""


def relay_keys() -> list[str]:
    return [f"hop[{i}]" for i in range(1, RELAY_STEPS + 1)]


def relay_expected(seed: int) -> int:
    acc = seed
    for i in range(RELAY_STEPS):
        acc = mix(acc, seed, i)
    return acc


class Relay(DO):
    @step
    async def hop(self, seed: int, i: int, acc: int) -> int:
        effect()
        await pace(seed)
        return mix(acc, seed, i)

    @workflow
    async def relay(self, seed: int) -> int:
        acc = seed
        for i in range(RELAY_STEPS):
            acc = await self.hop(seed, i, acc)
            if i == 1:
                await self.sleep(RELAY_SLEEP)
        return acc


FLOWS = {"ledger": (Ledger, Ledger.chain), "relay": (Relay, Relay.relay)}
