"""Differential tests of the workflow compiler: plain Python versus the engine.

Every workflow here runs twice: once as ordinary Python (`await Cls("e").wf(...)`, where steps
are plain method calls) and once compiled, on an engine over a fresh SQLite file. Both runs must
agree on the return value (or the exception's type and message), on the order of step calls and
on the events sent. Each test exercises one construct with durable operations inside it.

The engine side runs twice: straight through, and once more with every engine killed right
after its first commit and a fresh engine resuming the run from the store, so each run also
goes through its persisted state (only the locals the compiler keeps live) at every checkpoint.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from dotdo import DO, CompileError, Engine, RunFailed, StepRecord, compensate, step, workflow
from dotdo.testing import CrashAt, SimulatedCrash

# ----------------------------------------------------------------------------- harness

CALLS: list[Any] = []
"""Every step (and traced helper) appends here; the harness clears it before each run."""

_db_counter = itertools.count()


class Order(BaseModel):
    id: str
    amount: float


class Receipt(BaseModel):
    order_id: str
    total: float
    lines: list[str] = []


class AppError(Exception):
    """A module-level exception class, so the store can re-create it by its path."""


class Steps(DO):
    """Shared steps; the workflow classes of the tests subclass it."""

    @step(retries=0)
    async def s(self, x: Any) -> Any:
        CALLS.append(x)
        return x

    @step(retries=0)
    async def inc(self, x: int) -> int:
        CALLS.append(("inc", x))
        return x + 1

    @step(retries=0)
    async def pair(self, x: int) -> tuple[int, int]:
        CALLS.append(("pair", x))
        return x, x * 10

    @step(retries=0)
    async def boom(self, msg: str = "bad") -> None:
        CALLS.append(("boom", msg))
        raise ValueError(msg)

    @step(retries=0)
    async def raise_kind(self, kind: str) -> str:
        CALLS.append(("raise", kind))
        if kind == "value":
            raise ValueError("v")
        if kind == "key":
            raise KeyError("k")
        if kind == "type":
            raise TypeError("t")
        if kind == "app":
            raise AppError("a")
        return "none"

    def note(self, x: Any) -> Any:
        """A plain helper (not a step) that leaves a mark in the trace."""
        CALLS.append(("note", x))
        return x

    def fail_plain(self, x: Any) -> Any:
        CALLS.append(("fail_plain", x))
        raise KeyError(x)


@dataclass
class Outcome:
    """What one execution produced, in a form both modes can be compared on."""

    value: Any = None
    error: tuple[type[BaseException], str] | None = None
    trace: list[Any] = field(default_factory=list)
    sent: list[tuple[str, Any]] = field(default_factory=list)


@dataclass
class EngineRun:
    outcome: Outcome
    status: str
    run_id: str
    journal: list[StepRecord]

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.journal if r.status == "completed"]


async def run_plain(cls: type[DO], wf: str, *args: Any, **kwargs: Any) -> Outcome:
    CALLS.clear()
    instance = cls("e")
    out = Outcome()
    try:
        out.value = await getattr(instance, wf)(*args, **kwargs)
    except Exception as exc:
        out.error = (type(exc), str(exc))
    out.trace = list(CALLS)
    out.sent = list(instance.sent)
    return out


async def run_engine(db_dir: Path, cls: type[DO], wf: str, *args: Any, **kwargs: Any) -> EngineRun:
    CALLS.clear()
    path = db_dir / f"run{next(_db_counter)}.db"
    async with Engine(path) as engine:
        engine.register(cls)
        handle = await engine.start(getattr(cls, wf), *args, **kwargs)
        out = Outcome()
        try:
            out.value = await handle.result(timeout=20)
        except RunFailed as failed:
            assert failed.error is not None
            out.error = (type(failed.error), str(failed.error))
        out.trace = list(CALLS)
        out.sent = await engine.outbox(handle.run_id)
        status = await handle.status()
        journal = await engine.journal(handle.run_id)
    return EngineRun(out, status, handle.run_id, journal)


async def run_engine_resuming(
    db_dir: Path, cls: type[DO], wf: str, *args: Any, **kwargs: Any
) -> EngineRun:
    """Like run_engine, but every engine dies right after its first commit.

    Each fresh engine resumes the run from what the previous one persisted, so the run goes
    through the stored state (only the locals the compiler keeps) at every checkpoint.
    Crashing only after commits means no step runs twice, so the trace must not change.
    """
    CALLS.clear()
    path = db_dir / f"resume{next(_db_counter)}.db"
    run_id = f"resume-{next(_db_counter)}"
    started = False
    out = Outcome()
    for _ in range(500):
        engine = Engine(path, faults=CrashAt(0, points=("after_commit",)))
        engine.register(cls)  # before opening, so that opening recovers the run
        async with engine:
            try:
                if not started:
                    started = True
                    await engine.start(getattr(cls, wf), *args, run_id=run_id, **kwargs)
                out.value = await engine.handle(run_id).result(timeout=20)
            except SimulatedCrash:
                continue
            except RunFailed as failed:
                assert failed.error is not None
                out.error = (type(failed.error), str(failed.error))
        break
    else:
        raise AssertionError("the run never finished across 500 resumed engines")
    out.trace = list(CALLS)
    async with Engine(path) as engine:
        out.sent = await engine.outbox(run_id)
        status = (await engine.get_run(run_id)).status
        journal = await engine.journal(run_id)
    return EngineRun(out, status, run_id, journal)


def _uses_try(cls: type[DO], wf: str) -> bool:
    graph = getattr(cls, wf).graph
    return any(getattr(node, "mode", None) == "try" for node in graph.nodes.values())


async def differential(
    db_dir: Path,
    cls: type[DO],
    wf: str,
    *args: Any,
    failed_status: str = "failed",
    resume: bool = True,
    **kwargs: Any,
) -> EngineRun:
    """Run both ways and assert they agree; return the engine run for further checks.

    With `resume` (the default), the engine run is repeated resuming from the store at every
    checkpoint; a workflow with `try_` is not (a crash after a `try_` started fails it, by
    contract).
    """
    plain = await run_plain(cls, wf, *args, **kwargs)
    runs = [await run_engine(db_dir, cls, wf, *args, **kwargs)]
    if resume and not _uses_try(cls, wf):
        runs.append(await run_engine_resuming(db_dir, cls, wf, *args, **kwargs))
    for run in runs:
        assert run.outcome.error == plain.error
        assert run.outcome.value == plain.value
        assert type(run.outcome.value) is type(plain.value)
        assert run.outcome.trace == plain.trace
        assert run.outcome.sent == plain.sent
        assert run.status == ("completed" if plain.error is None else failed_status)
    if len(runs) == 2:
        assert runs[1].keys == runs[0].keys
    return runs[0]


def load_module(directory: Path, source: str) -> Any:
    """Import `source` from a real file (the compiler reads workflows with inspect)."""
    name = f"_dotdo_lowering_case_{next(_module_counter)}_{uuid.uuid4().hex[:8]}"
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_module_counter = itertools.count()
sys.modules.setdefault("tests_lowering_steps", sys.modules[__name__])


# --------------------------------------------------------------------------- if / elif


@pytest.mark.parametrize("x", [0, 1, 2, 7, 10])
async def test_if_elif_else_with_durable_tests_and_branches(tmp_path: Path, x: int) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> str:
            if await self.s(x) > 5:
                r = await self.s("big")
            elif await self.s(x % 2) == 1:
                r = await self.s("odd")
                r += "!"
            else:
                r = "even"
                await self.s(r)
            await self.s(("after", r))
            return r

    await differential(tmp_path, W, "wf", x)


@pytest.mark.parametrize("flag", [True, False])
async def test_if_without_else_durable_branch(tmp_path: Path, flag: bool) -> None:
    class W(Steps):
        @workflow
        async def wf(self, flag: bool) -> int:
            n = 1
            if flag:
                n = await self.inc(n)
                n = await self.inc(n)
            return n

    await differential(tmp_path, W, "wf", flag)


@pytest.mark.parametrize("x", [1, 4])
async def test_conditional_expression_with_await_in_its_test(tmp_path: Path, x: int) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> str:
            label = "high" if await self.s(x) > 2 else "low"
            return label

    await differential(tmp_path, W, "wf", x)


# ------------------------------------------------------------------------------ while


@pytest.mark.parametrize("limit", [0, 1, 3])
async def test_while_with_durable_condition_and_body(tmp_path: Path, limit: int) -> None:
    class W(Steps):
        @workflow
        async def wf(self, limit: int) -> list[int]:
            n = 0
            seen = []
            while await self.s(n) < limit:
                n = await self.inc(n)
                seen.append(n)
            return seen

    await differential(tmp_path, W, "wf", limit)


# Regression: a durable call in a while condition is hoisted outside the loop scope, so every
# evaluation gets the same step id (journal keeps one row, same idempotency key)
async def test_while_condition_step_ids_are_qualified_by_iteration(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> int:
            n = 0
            while await self.s(n) < 3:
                n += 1
            return n

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.trace == [0, 1, 2, 3]
    assert len(run.keys) == 4
    assert len(set(run.keys)) == 4


@pytest.mark.parametrize("stop", [2, 99])
async def test_while_break_continue_else(tmp_path: Path, stop: int) -> None:
    class W(Steps):
        @workflow
        async def wf(self, stop: int) -> tuple[int, list[Any]]:
            n = 0
            out = []
            while n < 5:
                n = await self.inc(n)
                if n % 2 == 1:
                    continue
                if n == stop:
                    out.append(await self.s(("stop", n)))
                    break
                out.append(n)
            else:
                out.append(await self.s("else"))
            await self.s("after")
            return n, out

    await differential(tmp_path, W, "wf", stop)


async def test_while_true_with_break_after_steps(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> int:
            n = 0
            while True:
                n = await self.inc(n)
                if n >= 3:
                    break
            return n

    await differential(tmp_path, W, "wf")


# -------------------------------------------------------------------------------- for


async def test_for_over_list(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, items: list[str]) -> list[str]:
            out = []
            for item in items:
                out.append(await self.s(item.upper()))
            return out

    run = await differential(tmp_path, W, "wf", ["a", "b", "c"])
    assert run.keys == ["s[1]", "s[2]", "s[3]"]


async def test_for_over_range_keeps_target_after_loop(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, n: int) -> tuple[int, int]:
            total = 0
            for i in range(n):
                total += await self.s(i)
            return total, i

    await differential(tmp_path, W, "wf", 4)


async def test_for_over_empty_range_leaves_target_unbound(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, n: int) -> int:
            for i in range(n):
                await self.s(i)
            return i

    await differential(tmp_path, W, "wf", 0)


async def test_for_over_dict_items_with_tuple_target(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, prices: dict[str, int]) -> dict[str, int]:
            doubled = {}
            for name, price in prices.items():
                doubled[name] = await self.s(price * 2)
            for key in prices:
                await self.s(key)
            return doubled

    await differential(tmp_path, W, "wf", {"x": 1, "y": 2, "z": 3})


async def test_for_with_nested_tuple_unpacking_target(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> list[Any]:
            out = []
            for i, (a, *rest) in enumerate([(1, 2, 3), (4,), (5, 6)]):
                out.append(await self.s((i, a, rest)))
            return out

    await differential(tmp_path, W, "wf")


@pytest.mark.parametrize("stop", ["c", "zz"])
async def test_for_break_continue_else(tmp_path: Path, stop: str) -> None:
    class W(Steps):
        @workflow
        async def wf(self, stop: str) -> list[Any]:
            out = []
            for ch in "abcde":
                if ch == "b":
                    continue
                got = await self.s(ch)
                if got == stop:
                    break
                out.append(got)
            else:
                out.append(await self.s("no-break"))
            return out

    await differential(tmp_path, W, "wf", stop)


async def test_nested_for_loops_with_durable_calls_in_both_levels(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> list[Any]:
            out = []
            for i in range(2):
                out.append(await self.s(("outer", i)))
                for j in range(3):
                    if j == 1:
                        continue
                    out.append(await self.inc(i * 10 + j))
            return out

    run = await differential(tmp_path, W, "wf")
    assert run.keys == [
        "s[1]",
        "inc[1][1]",
        "inc[1][3]",
        "s[2]",
        "inc[2][1]",
        "inc[2][3]",
    ]
    assert len(set(run.keys)) == len(run.keys)


async def test_nested_while_in_for_step_ids_unique(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> int:
            total = 0
            for i in range(3):
                k = 0
                while k < i:
                    k = await self.inc(k)
                    total += k
            return total

    run = await differential(tmp_path, W, "wf")
    assert len(run.keys) == 3
    assert len(set(run.keys)) == 3
    assert all(key.startswith("inc[") and key.count("[") == 2 for key in run.keys)


# Regression: a lowered `for` iterates a snapshot `list(iterable)`, so items the body appends to
# the list it iterates are skipped (plain Python visits them)
async def test_for_over_list_mutated_in_body(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> list[int]:
            xs = [1, 2]
            out = []
            for x in xs:
                out.append(await self.s(x))
                if x < 10:
                    xs.append(x + 10)
            return out

    await differential(tmp_path, W, "wf")


@pytest.mark.parametrize("target", [2, 5])
async def test_return_inside_loop_after_durable_call(tmp_path: Path, target: int) -> None:
    class W(Steps):
        @workflow
        async def wf(self, target: int) -> Any:
            for x in range(4):
                v = await self.s(x)
                if v == target:
                    return ("found", v)
            await self.s("not-found")
            return None

    await differential(tmp_path, W, "wf", target)


# ------------------------------------------------------------------------- try/except


async def test_except_catches_step_error_and_uses_it(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                await self.boom("card declined")
                await self.s("unreached")
            except ValueError as e:
                msg = await self.s(f"caught {e}")
                return f"{type(e).__name__}: {msg}"
            return "no error"

    await differential(tmp_path, W, "wf")


@pytest.mark.parametrize(
    "kind",
    [
        "value",
        "key",
        "type",
        "app",
        "none",
    ],
)
async def test_except_multiple_handlers(tmp_path: Path, kind: str) -> None:
    class W(Steps):
        @workflow
        async def wf(self, kind: str) -> str:
            try:
                got = await self.raise_kind(kind)
            except KeyError:
                got = await self.s("key handler")
            except (TypeError, ValueError) as e:
                got = await self.s(f"tuple handler {e}")
            except Exception as e:
                got = await self.s(f"generic {type(e).__name__}")
            return got

    await differential(tmp_path, W, "wf", kind)


async def test_except_no_matching_handler_reraises(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                await self.boom("unhandled")
            except KeyError:
                await self.s("wrong handler")
            return "done"

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.error == (ValueError, "unhandled")


async def test_bare_raise_in_handler_reraises(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                await self.boom("again")
            except ValueError:
                await self.s("logging")
                raise
            return "done"

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.error == (ValueError, "again")


async def test_bare_except_catches_everything(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                await self.raise_kind("app")
            except KeyError:
                return "key"
            except:  # noqa: E722
                return await self.s("bare")
            return "none"

    await differential(tmp_path, W, "wf")


async def test_exception_from_plain_code_in_try_body(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, d: dict[str, int]) -> Any:
            try:
                first = await self.s(1)
                value = d["missing"] + first
                await self.s("unreached")
            except KeyError as e:
                value = await self.s(("missing", str(e)))
            return value

    await differential(tmp_path, W, "wf", {"present": 1})


# Regression: plain statements at the end of a try body are flushed after the try scope closes,
# so its except handlers do not cover them (and `__exc` is undefined)
async def test_exception_from_trailing_plain_code_in_try_body(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, d: dict[str, int]) -> Any:
            try:
                first = await self.s(1)
                value = d["missing"] + first
            except KeyError:
                value = await self.s("default")
            return value

    await differential(tmp_path, W, "wf", {})


# Regression: plain statements at the end of a try body are not covered by its except handlers
# (a try whose body is all plain code never reaches its handlers)
async def test_plain_try_body_with_durable_handler(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, d: dict[str, int]) -> Any:
            try:
                value = d["k"]
            except KeyError:
                value = await self.s("default")
            return value

    await differential(tmp_path, W, "wf", {"k": 1})
    await differential(tmp_path, W, "wf", {})


async def test_exception_in_step_arguments_is_caught(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            d = {}
            try:
                await self.s(d["nope"])
            except KeyError:
                return await self.s("handled")
            return "no"

    await differential(tmp_path, W, "wf")


@pytest.mark.parametrize("kind", ["value", "none"])
async def test_try_else(tmp_path: Path, kind: str) -> None:
    class W(Steps):
        @workflow
        async def wf(self, kind: str) -> list[Any]:
            out = []
            try:
                out.append(await self.raise_kind(kind))
            except ValueError:
                out.append(await self.s("handler"))
            else:
                out.append(await self.s("else"))
            out.append(await self.s("after"))
            return out

    await differential(tmp_path, W, "wf", kind)


async def test_try_else_without_exception_runs_else(tmp_path: Path) -> None:
    """The no-exception path only: it does not touch the except dispatch."""

    class W(Steps):
        @workflow
        async def wf(self) -> list[Any]:
            out = []
            try:
                out.append(await self.s("body"))
            except ValueError:
                out.append("handler")
            else:
                out.append(await self.s("else"))
            return out

    await differential(tmp_path, W, "wf")


async def test_exception_in_try_else_is_not_caught_by_its_handlers(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                try:
                    await self.s("body")
                except ValueError:
                    return "inner handler"
                else:
                    await self.boom("from else")
            except ValueError as e:
                return await self.s(f"outer {e}")
            return "none"

    await differential(tmp_path, W, "wf")


async def test_try_finally_return_inside_try(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                v = await self.s("body")
                return v + "-returned"
            finally:
                await self.s("finally")
            await self.s("unreached")

    await differential(tmp_path, W, "wf")


async def test_break_and_continue_inside_try_finally_inside_loop(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> list[Any]:
            out = []
            for i in range(5):
                try:
                    await self.s(i)
                    if i == 1:
                        continue
                    if i == 3:
                        break
                    out.append(i)
                finally:
                    out.append(await self.s(("fin", i)))
            return out

    await differential(tmp_path, W, "wf")


async def test_continue_inside_try_finally_in_while(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> int:
            n = 0
            while n < 4:
                n += 1
                try:
                    if n % 2:
                        continue
                    await self.s(n)
                finally:
                    await self.s(("f", n))
            else:
                await self.s("else")
            return n

    await differential(tmp_path, W, "wf")


async def test_return_inside_finally_overrides(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> int:
            try:
                await self.s(1)
                return 1
            finally:
                await self.s(2)
                return 2  # noqa: B012

    await differential(tmp_path, W, "wf")


async def test_return_inside_finally_swallows_exception(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                await self.boom("lost")
            finally:
                return await self.s("finally wins")  # noqa: B012

    await differential(tmp_path, W, "wf")


async def test_exception_through_try_finally_without_handler(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                await self.boom("passes through")
            finally:
                await self.s("cleanup")
            return "unreached"

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.trace == [("boom", "passes through"), "cleanup"]


async def test_exception_in_except_handler_goes_through_finally(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                await self.boom("first")
            except ValueError:
                await self.s("handler")
                raise AppError("from handler")  # noqa: B904
            finally:
                await self.s("finally")
            return "unreached"

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.error == (AppError, "from handler")


async def test_nested_try_finally_return_passes_both(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                try:
                    await self.s("body")
                    return "inner"
                finally:
                    await self.s("inner finally")
            finally:
                await self.s("outer finally")
            return "unreached"

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.trace == ["body", "inner finally", "outer finally"]


async def test_break_through_nested_finally_blocks(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> list[Any]:
            out = []
            for i in range(3):
                try:
                    try:
                        await self.s(i)
                        if i == 1:
                            break
                    finally:
                        out.append(await self.s(("inner", i)))
                finally:
                    out.append(await self.s(("outer", i)))
            out.append(await self.s("after"))
            return out

    await differential(tmp_path, W, "wf")


async def test_try_except_inside_loop_continues(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> list[Any]:
            out = []
            for kind in ["none", "value", "none", "key"]:
                try:
                    out.append(await self.raise_kind(kind))
                except ValueError:
                    out.append("skipped")
                    continue
                except KeyError:
                    break
                out.append(await self.s(("ok", kind)))
            return out

    await differential(tmp_path, W, "wf")


# Regression: the `as` name of an except handler stays bound after the handler (Python unbinds
# it) and except dispatch reads an undefined `__exc`
async def test_except_name_is_unbound_after_the_handler(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            try:
                await self.boom("x")
            except ValueError as e:
                await self.s(str(e))
            return repr(e)  # noqa: F821

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.error is not None and run.outcome.error[0] is UnboundLocalError


async def test_plain_try_except_inside_a_block(tmp_path: Path) -> None:
    """A try statement without durable calls stays Python inside one block."""

    class W(Steps):
        @workflow
        async def wf(self, text: str) -> Any:
            n = await self.s(len(text))
            try:
                value = int(text)
            except ValueError as err:
                value = -n
                reason = str(err)
            else:
                reason = "ok"
            finally:
                n += 1
            await self.s((value, reason, n))
            return value, reason, n

    await differential(tmp_path, W, "wf", "12")
    await differential(tmp_path, W, "wf", "x1")


# ------------------------------------------------------------------------- returns


@pytest.mark.parametrize("x", [0, 1, 2])
async def test_return_inside_plain_if_after_steps(tmp_path: Path, x: int) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> int:
            y = await self.s(x)
            if y == 1:
                return 100
            for k in range(3):
                if k == y:
                    return k * 10
            await self.s("end")
            return -1

    await differential(tmp_path, W, "wf", x)


async def test_return_await_and_implicit_none(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def direct(self, x: int) -> int:
            return await self.inc(x)

        @workflow
        async def falls_off(self, x: int) -> None:
            await self.inc(x)

        @workflow
        async def bare_return(self, x: int) -> None:
            await self.inc(x)
            if x:
                return
            await self.inc(x)

    await differential(tmp_path, W, "direct", 4)
    await differential(tmp_path, W, "falls_off", 4)
    await differential(tmp_path, W, "bare_return", 0)
    await differential(tmp_path, W, "bare_return", 1)


# Regression: a workflow that can never reach its end (it always raises) fails to compile:
# 'internal lowering error: unreachable code' (the end node), at col 0
async def test_workflow_that_always_raises(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> None:
            await self.s(1)
            raise AppError("always")

    await differential(tmp_path, W, "wf")


# Regression: a finally that always raises after a return in the try makes the end node
# unreachable: 'internal lowering error: unreachable code'
async def test_raise_in_finally_overrides_return(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            try:
                await self.s(1)
                return 1
            finally:
                await self.s(2)
                raise AppError("from finally")

    await differential(tmp_path, W, "wf")


async def test_dead_code_after_return_is_ignored(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> int:
            await self.s(1)
            return 1
            await self.s(2)  # never runs
            return 2

    await differential(tmp_path, W, "wf")


# ----------------------------------------------------------------------- expressions


async def test_durable_call_nested_in_durable_arguments(tmp_path: Path) -> None:
    class W(Steps):
        def double(self, x: int) -> int:
            CALLS.append(("double", x))
            return x * 2

        @workflow
        async def wf(self, x: int) -> int:
            y = await self.do(self.double, await self.do(self.double, x))
            z = await self.inc(await self.inc(await self.s(y)))
            return z

    run = await differential(tmp_path, W, "wf", 3)
    assert len(set(run.keys)) == 5


async def test_operands_of_binary_expression_run_in_order(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> str:
            x = (await self.s("a")) + (await self.s("b")) + (await self.s("c"))
            return x

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.trace == ["a", "b", "c"]


# Regression: hoisting evaluates durable calls before the plain sub-expressions to their left,
# so a step runs that plain Python never reaches
async def test_plain_operand_left_of_durable_call_runs_first(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            x = self.fail_plain("left") + await self.s("right")
            return x

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.trace == [("fail_plain", "left")]


async def test_awaits_in_displays_calls_subscripts_and_fstrings(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            d = {"a": await self.s(1), "b": [await self.s(2), await self.s(3)]}
            e = dict(k=await self.s("kw"))
            xs = [10, 20, 30]
            picked = xs[await self.s(2)]
            text = f"v={await self.s('f')}!"
            return d, e, picked, text

    await differential(tmp_path, W, "wf")


async def test_await_in_if_condition_with_boolean_operators(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> str:
            if (await self.s(x) > 2 and x < 10) or x == 0:
                return "yes"
            if not await self.s(x - 1):
                return "zero"
            return "no"

    for x in (0, 1, 3, 12):
        await differential(tmp_path, W, "wf", x)


async def test_augmented_assignment_with_step_result(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, n: int) -> tuple[int, list[int]]:
            total = 0
            parts = []
            for i in range(n):
                total += await self.inc(i)
                parts += [await self.s(i)]
            total *= await self.s(2)
            return total, parts

    await differential(tmp_path, W, "wf", 3)


async def test_tuple_unpacking_and_other_targets(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> Any:
            a, b = await self.pair(x)
            (c, d), e = await self.pair(a + 1), await self.s("e")
            first = second = await self.inc(b)
            box = {}
            box["k"] = await self.s("boxed")
            typed: int = await self.inc(d)
            return a, b, c, d, e, first, second, box, typed

    await differential(tmp_path, W, "wf", 2)


async def test_assert_with_durable_call(tmp_path: Path) -> None:
    # Loaded from a file of its own: pytest rewrites `assert` in this module (plain mode
    # would then see pytest's message), while the compiler reads the original source.
    module = load_module(
        tmp_path,
        """
        from tests_lowering_steps import Steps
        from dotdo import workflow

        class W(Steps):
            @workflow
            async def wf(self, x):
                assert await self.s(x) > 0, f"x must be positive, got {x}"
                return x
        """,
    )
    await differential(tmp_path, module.W, "wf", 3)
    run = await differential(tmp_path, module.W, "wf", -3)
    assert run.outcome.error == (AssertionError, "x must be positive, got -3")


# Regression: an annotated assignment to a local in a block is rewritten to `__L__['x']: T = v`
# with simple=1 (TypeError: AnnAssign with simple non-Name target)
async def test_annotated_assignment_in_block(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> Any:
            y = await self.s(x)
            out: list[int] = [y]
            count: int  # noqa: F842
            out.append(await self.inc(y))
            return out

    await differential(tmp_path, W, "wf", 1)


async def test_annotated_assignment_of_a_step_result(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> Any:
            y: int = await self.inc(x)
            return y

    await differential(tmp_path, W, "wf", 1)


async def test_lambda_passed_to_do_captures_locals(tmp_path: Path) -> None:
    class W(Steps):
        def validate(self, order: dict[str, Any]) -> bool:
            CALLS.append(("validate", order["id"]))
            return bool(order["amount"] > 0)

        def total(self, a: int, b: int, *, c: int = 0) -> int:
            CALLS.append(("total", a, b, c))
            return a + b + c

        @workflow
        async def wf(self, order: dict[str, Any]) -> Any:
            ok = await self.do(lambda: self.validate(order), step_id="validate")
            factor = 3
            scaled = await self.do(lambda: order["amount"] * factor)
            t = await self.do(self.total, 1, 2, c=await self.s(4))
            return ok, scaled, t

    run = await differential(tmp_path, W, "wf", {"id": "o1", "amount": 5})
    assert "validate" in run.keys


async def test_comprehension_and_lambda_in_block_read_locals(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, xs: list[int]) -> Any:
            k = await self.s(3)
            i = 100
            scaled = [x * k for x in xs if x != k]
            table = {x: [y + k for y in range(x)] for x in xs}
            ordered = sorted(xs, key=lambda v: (v % k, -v))
            gen_total = sum(x + i for x in xs)
            await self.s((scaled, ordered))
            return scaled, table, ordered, gen_total, i

    await differential(tmp_path, W, "wf", [1, 2, 3, 4])


async def test_walrus_in_blocks_and_conditions(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, xs: list[int]) -> Any:
            if (n := len(xs)) > 2:
                await self.s(("long", n))
            doubled = [y := v * 2 for v in xs]
            if (r := await self.s(n)) > 1:
                r += 1
            while (m := await self.s(n)) > 3:
                n -= 1
            return n, doubled, y, r, m

    await differential(tmp_path, W, "wf", [1, 2, 3, 4, 5])


# Regression: a local holding a nested def (or lambda, or module) is checkpointed and fails the
# run with SerializationError at the next durable call
async def test_nested_def_helper_used_before_next_durable_call(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> int:
            base = await self.s(x)

            def helper(a: int) -> int:
                return a * 2 + base

            y = helper(x)
            await self.s(y)
            return y

    await differential(tmp_path, W, "wf", 5)


# Regression: a local holding a lambda is checkpointed and fails the run with SerializationError
# at the next durable call
async def test_lambda_bound_to_local_then_durable_call(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> int:
            twice = lambda v: v * 2  # noqa: E731
            y = twice(x)
            await self.s(y)
            return y

    await differential(tmp_path, W, "wf", 5)


# Regression: `import` inside a workflow binds a module local that is checkpointed and fails the
# run with SerializationError
async def test_import_inside_workflow(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: float) -> int:
            import math

            y = math.floor(x)
            await self.s(y)
            return y

    await differential(tmp_path, W, "wf", 2.5)


# Regression: a local holding classes (here a tuple of exception types) is checkpointed and
# fails the run with SerializationError
async def test_local_holding_exception_classes(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, text: str) -> Any:
            expected = (KeyError, ValueError)
            await self.s(text)
            try:
                return int(text)
            except expected:
                return -1

    await differential(tmp_path, W, "wf", "x")


async def test_nested_def_deleted_before_durable_call(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> int:
            base = await self.s(x)

            def helper(a: int) -> int:
                return a * 2 + base

            y = helper(x)
            del helper
            await self.s(y)
            return y

    await differential(tmp_path, W, "wf", 5)


@pytest.mark.parametrize("use_after", [False, True])
async def test_del_of_a_local(tmp_path: Path, use_after: bool) -> None:
    class W(Steps):
        @workflow
        async def wf(self, use_after: bool) -> Any:
            tmp = await self.s("scratch")
            keep = tmp + "!"
            del tmp
            await self.s(keep)
            if use_after:
                return tmp  # noqa: F821
            return keep

    run = await differential(tmp_path, W, "wf", use_after)
    if use_after:
        assert run.outcome.error is not None and run.outcome.error[0] is UnboundLocalError


async def test_unbound_local_read_raises_in_both_modes(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, flag: bool) -> int:
            if flag:
                x = await self.s(1)
            await self.s(2)
            return x

    run = await differential(tmp_path, W, "wf", False)
    assert run.outcome.error is not None
    assert run.outcome.error[0] is UnboundLocalError
    await differential(tmp_path, W, "wf", True)


# ---------------------------------------------------------------- pydantic and values


async def test_pydantic_arguments_and_results_are_typed(tmp_path: Path) -> None:
    class W(Steps):
        @step(retries=0)
        async def price(self, order: Order) -> Receipt:
            CALLS.append(("price", type(order).__name__, order.id))
            return Receipt(order_id=order.id, total=order.amount * 2)

        @workflow
        async def wf(self, order: Order) -> Receipt:
            receipt = await self.price(order)
            assert isinstance(receipt, Receipt)
            receipt.lines.append(await self.s(f"{receipt.order_id}:{receipt.total}"))
            again = await self.price(Order(id=order.id + "-2", amount=receipt.total))
            return Receipt(order_id=again.order_id, total=again.total, lines=receipt.lines)

    order = Order(id="o1", amount=2.5)
    run = await differential(tmp_path, W, "wf", order)
    assert isinstance(run.outcome.value, Receipt)
    assert run.outcome.value.total == 10.0
    # Started with a plain dict, the engine converts it to the annotated model.
    by_dict = await run_engine(tmp_path, W, "wf", {"id": "o1", "amount": 2.5})
    assert by_dict.outcome.value == run.outcome.value
    assert by_dict.outcome.trace == run.outcome.trace


async def test_workflow_parameters_defaults_and_keywords(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, a: int, b: int = 2, *rest, c: int = 3, **extra) -> Any:
            got = await self.s((a, b, rest, c, sorted(extra.items())))
            return got

    await differential(tmp_path, W, "wf", 1)
    await differential(tmp_path, W, "wf", 1, 5, 6, 7, c=8, d=9)


# Regression: bind_inputs coerces a whole *args tuple / **kwargs dict to the per-item annotation
# (`*rest: int` -> ValidationError on ())
async def test_annotated_varargs_parameters(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, a: int, *rest: int, **extra: int) -> Any:
            return await self.s((a, rest, sorted(extra.items())))

    await differential(tmp_path, W, "wf", 1, 2, 3, d=4)


async def test_self_parameter_with_another_name(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(me, x: int) -> int:
            y = await me.inc(x)
            me.send("renamed", y)
            return await me.do(me.note, y)

    await differential(tmp_path, W, "wf", 1)


async def test_recorded_values_are_stable(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            t = self.now()
            u = self.uuid()
            r = self.random()
            await self.s("between")
            t2 = self.now()
            return t, t, u, u, r, r, t2 >= t

    plain = await run_plain(W, "wf")
    for run in [
        await run_engine(tmp_path, W, "wf"),
        await run_engine_resuming(tmp_path, W, "wf"),  # values read back from the store
    ]:
        assert run.status == "completed"
        assert run.outcome.trace == plain.trace == ["between"]
        t, t_again, u, u_again, r, r_again, ordered = run.outcome.value
        assert t == t_again and u == u_again and r == r_again and ordered
        assert isinstance(t, datetime) and isinstance(u, uuid.UUID) and isinstance(r, float)
        assert t.tzinfo is not None
        recorded = {rec.key: rec.value for rec in run.journal}
        assert recorded["now"] == t
        assert recorded["uuid"] == u
        assert recorded["random"] == r
        assert len(run.keys) == 5  # now, uuid, random, s, now again


async def test_recorded_value_in_loop_and_expression(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            seen = []
            for _ in range(3):
                seen.append(self.random() < 2)
                await self.s("tick")
            stamp = f"{self.uuid()}"
            return seen, len(stamp)

    run = await differential(tmp_path, W, "wf")
    assert len(set(run.keys)) == len(run.keys) == 7


async def test_send_ends_up_in_outbox_in_order(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, n: int) -> int:
            self.send("Flow.started", {"n": n})
            total = 0
            for i in range(n):
                total += await self.inc(i)
                self.send("Flow.tick", total)
                if i == 1:
                    self.send("Flow.second", None)
            self.send("Flow.done")
            return total

    run = await differential(tmp_path, W, "wf", 3)
    assert [name for name, _ in run.outcome.sent] == [
        "Flow.started",
        "Flow.tick",
        "Flow.tick",
        "Flow.second",
        "Flow.tick",
        "Flow.done",
    ]


async def test_send_before_failure_is_kept(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> None:
            self.send("before", 1)
            await self.boom("stop")
            self.send("after", 2)

    await differential(tmp_path, W, "wf")


async def test_closure_variable_of_the_test_function(tmp_path: Path) -> None:
    factor = 7
    labels = {"a": "alpha"}

    class W(Steps):
        @workflow
        async def wf(self, x: int) -> Any:
            y = await self.s(x * factor)
            if y > factor:
                y = await self.inc(y)
            return y, labels["a"]

    await differential(tmp_path, W, "wf", 2)


async def test_module_global_read_in_workflow(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> int:
            await self.s(len(CALLS))
            return len(_GLOBAL_TABLE)

    await differential(tmp_path, W, "wf")


_GLOBAL_TABLE = {"x": 1, "y": 2}


# ----------------------------------------------------------- failures, try_, sleep


async def test_uncaught_step_error_fails_the_run(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> None:
            await self.s("first")
            await self.raise_kind("app")
            await self.s("unreached")

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.error == (AppError, "a")
    assert [r.status for r in run.journal] == ["completed", "failed"]


async def test_error_in_plain_code_fails_the_run(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, x: int) -> float:
            y = await self.s(x)
            return 10 / y

    await differential(tmp_path, W, "wf", 0)


async def test_compensation_runs_and_status_is_compensated(tmp_path: Path) -> None:
    class W(Steps):
        @step(retries=0)
        async def reserve(self, item: str) -> str:
            CALLS.append(("reserve", item))
            return f"res-{item}"

        @compensate(reserve, retries=0)
        async def release(self, token: str) -> None:
            CALLS.append(("release", token))

        @workflow
        async def wf(self) -> None:
            for item in ["a", "b"]:
                await self.reserve(item)
            await self.boom("no stock")

    plain = await run_plain(W, "wf")
    undo = [("release", "res-b"), ("release", "res-a")]
    for run in [
        await run_engine(tmp_path, W, "wf"),
        await run_engine_resuming(tmp_path, W, "wf"),  # the undo stack comes from the store
    ]:
        assert run.status == "compensated"
        assert run.outcome.error == plain.error == (ValueError, "no stock")
        assert run.outcome.trace == [*plain.trace, *undo]


async def test_try_and_do_with_options_and_kwargs(tmp_path: Path) -> None:
    class W(Steps):
        def combine(self, a: int, *, b: int) -> int:
            CALLS.append(("combine", a, b))
            return a * b

        @workflow
        async def wf(self) -> Any:
            x = await self.do(self.combine, 2, b=3, step_id="combine-once", retries=0)
            y = await self.try_(self.combine, x, b=2, timeout=5)
            z = await self.try_(self.note, "quick")
            return x, y, z

    run = await differential(tmp_path, W, "wf")
    assert "combine-once" in run.keys


async def test_sleep_is_a_durable_timer(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            await self.s("before")
            got = await self.sleep(0.01)
            await self.s("after")
            return got

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.trace == ["before", "after"]


async def test_statements_between_durable_calls_keep_one_block(tmp_path: Path) -> None:
    """Straight-line code between two steps is one block node, in source order."""

    class W(Steps):
        @workflow
        async def wf(self, x: int) -> int:
            a = await self.s(x)
            b = a + 1
            c = b * 2
            self.note(c)
            d = await self.s(c)
            return d

    run = await differential(tmp_path, W, "wf", 1)
    blocks = [n for n in W.wf.graph.nodes.values() if n.kind == "block"]
    assert [len(b.code) for b in blocks] == [3, 1]
    assert run.outcome.value == 4


# ------------------------------------------------------ generated programs (Hypothesis)

_MAX_DEPTH = 2


def _ops(depth: int, allow_exc: bool) -> st.SearchStrategy[list[Any]]:
    """A random block of operations over the integer accumulator `acc`."""
    leaves = [
        st.tuples(st.just("add"), st.integers(-3, 5)),
        st.tuples(st.just("bump"), st.integers(1, 3)),
        st.tuples(st.just("send")),
        st.tuples(st.just("now")),
        st.tuples(st.just("return_if"), st.integers(3, 12)),
        st.tuples(st.just("jump_if"), st.sampled_from(["break", "continue"]), st.integers(2, 4)),
    ]
    leaves += [
        st.tuples(st.just("save"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("use"), st.integers(0, 2)),
        st.tuples(st.just("box")),
    ]
    if allow_exc:
        leaves.append(st.tuples(st.just("check"), st.integers(2, 4)))
        leaves.append(st.tuples(st.just("raise_if"), st.integers(3, 5)))
    leaf = st.one_of(*leaves)
    if depth >= _MAX_DEPTH:
        return st.lists(leaf, min_size=1, max_size=3)
    inner = st.deferred(lambda: _ops(depth + 1, allow_exc))
    compound = [
        st.tuples(st.just("parity"), st.booleans(), inner, inner),
        st.tuples(st.just("for"), st.integers(0, 3), inner),
        st.tuples(st.just("while"), st.integers(0, 3), st.booleans(), inner),
        st.tuples(st.just("finally"), inner, inner),
    ]
    if allow_exc:
        compound.append(st.tuples(st.just("try"), inner, inner, st.booleans(), st.booleans()))
    size = (2, 6) if depth == 0 else (1, 3)
    return st.lists(st.one_of(leaf, *compound), min_size=size[0], max_size=size[1])


def _render(ops: list[Any], indent: int, depth: int, in_loop: bool) -> list[str]:
    pad = "    " * indent
    lines: list[str] = []
    for op in ops:
        kind = op[0]
        if kind == "add":
            lines.append(f"{pad}acc = await self.add(acc, {op[1]})")
        elif kind == "bump":
            lines.append(f"{pad}acc += await self.add(0, {op[1]})")
        elif kind == "send":
            lines.append(f'{pad}self.send("acc", acc)')
        elif kind == "now":
            lines.append(f"{pad}stamp = self.now()")
        elif kind == "save":
            if op[2]:
                lines.append(f"{pad}if acc % 2:")
                lines.append(f"{pad}    v{op[1]} = acc * 2")
            else:
                lines.append(f"{pad}v{op[1]} = acc + 1")
        elif kind == "use":
            lines.append(f"{pad}acc += v{op[1]} % 7")
        elif kind == "box":
            lines.append(f"{pad}box.append(acc)")
        elif kind == "check":
            lines.append(f"{pad}await self.check(acc, {op[1]})")
        elif kind == "raise_if":
            lines.append(f"{pad}if acc % {op[1]} == 1:")
            lines.append(f'{pad}    raise ValueError("plain " + str(acc))')
        elif kind == "return_if":
            lines.append(f"{pad}if acc > {op[1]}:")
            lines.append(f"{pad}    return acc * 100 + len(box)")
        elif kind == "jump_if":
            if in_loop:
                lines.append(f"{pad}if acc % {op[2]} == 0:")
                lines.append(f"{pad}    acc += 1")
                lines.append(f"{pad}    {op[1]}")
        elif kind == "parity":
            test = "await self.is_even(acc)" if op[1] else "acc % 2 == 0"
            lines.append(f"{pad}if {test}:")
            lines.extend(_render(op[2], indent + 1, depth + 1, in_loop))
            lines.append(f"{pad}else:")
            lines.extend(_render(op[3], indent + 1, depth + 1, in_loop))
        elif kind == "for":
            var = f"i{depth}_{len(lines)}"
            lines.append(f"{pad}for {var} in range({op[1]}):")
            lines.append(f"{pad}    acc += {var}")
            lines.extend(_render(op[2], indent + 1, depth + 1, True))
            if op[1] == 3:
                lines.append(f"{pad}acc += {var}")  # the loop variable outlives the loop
        elif kind == "while":
            var = f"n{depth}_{len(lines)}"
            lines.append(f"{pad}{var} = 0")
            test = f"await self.below({var}, {op[1]})" if op[2] else f"{var} < {op[1]}"
            lines.append(f"{pad}while {test}:")
            lines.append(f"{pad}    {var} += 1")
            lines.extend(_render(op[3], indent + 1, depth + 1, True))
        elif kind == "finally":
            lines.append(f"{pad}try:")
            lines.extend(_render(op[1], indent + 1, depth + 1, in_loop))
            lines.append(f"{pad}finally:")
            lines.append(f"{pad}    acc = await self.add(acc, 100)")
            lines.extend(_render(op[2], indent + 1, depth + 1, in_loop))
        elif kind == "try":
            lines.append(f"{pad}try:")
            lines.extend(_render(op[1], indent + 1, depth + 1, in_loop))
            lines.append(f"{pad}except ValueError as err:")
            lines.append(f"{pad}    acc = await self.add(acc, len(str(err)))")
            lines.extend(_render(op[2], indent + 1, depth + 1, in_loop))
            if op[4]:
                lines.append(f"{pad}    if acc % 5 == 0:")
                lines.append(f"{pad}        raise")
            if op[3]:
                lines.append(f"{pad}else:")
                lines.append(f"{pad}    acc = await self.add(acc, 1000)")
    return lines or [f"{pad}pass"]


_PROGRAM_HEADER = """
from dotdo import DO, step, workflow
from tests_lowering_steps import CALLS as TRACE


class Generated(DO):
    @step(retries=0)
    async def add(self, a, b):
        TRACE.append(("add", a, b))
        return a + b

    @step(retries=0)
    async def is_even(self, a):
        TRACE.append(("even", a))
        return a % 2 == 0

    @step(retries=0)
    async def below(self, n, k):
        TRACE.append(("below", n, k))
        return n < k

    @step(retries=0)
    async def check(self, a, m):
        TRACE.append(("check", a, m))
        if a % m == 0:
            raise ValueError(f"{a} divisible by {m}")

    @workflow
    async def wf(self, acc):
"""


def _load_program(directory: Path, ops: list[Any]) -> tuple[str, Any]:
    body = _render(ops, 2, 0, False)
    head = ["        box = []"]
    tail = ["        return acc + len(box)", ""]
    source = textwrap.dedent(_PROGRAM_HEADER) + "\n".join([*head, *body, *tail])
    return source, load_module(directory, source)


async def _compare_generated(
    directory: Path, module: Any, start: int, *, unique_keys: bool
) -> None:
    run = await differential(directory, module.Generated, "wf", start)
    if unique_keys:
        # One journal row per step call: a repeated key would have been dropped by the store.
        keys = [k for k in run.keys if k[:3] != "now"]
        assert len(keys) == len(run.outcome.trace), (keys, run.outcome.trace)
        assert len(keys) == len(set(keys)), keys


def _check_program(tmp_path: Path, ops: list[Any], start: int, *, unique_keys: bool) -> None:
    source, module = _load_program(tmp_path, ops)
    try:
        asyncio.run(_compare_generated(tmp_path, module, start, unique_keys=unique_keys))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- generated program ---\n{source}") from None
    finally:
        sys.modules.pop(module.__name__, None)


_SETTINGS = settings(
    max_examples=50,
    derandomize=True,  # the same programs every run: a failure here is never a fluke
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_SETTINGS
@given(ops=_ops(0, allow_exc=False), start=st.integers(-2, 6))
def test_generated_programs_match_plain_python(tmp_path: Path, ops: list[Any], start: int) -> None:
    """Loops, ifs, try/finally, break/continue/return, send, now: result, trace, events."""
    _check_program(tmp_path, ops, start, unique_keys=False)


# Regression: except dispatch reads `__exc`, which codegen treats as a global
@_SETTINGS
@given(ops=_ops(0, allow_exc=True), start=st.integers(-2, 6))
def test_generated_programs_with_exceptions_match_plain_python(
    tmp_path: Path, ops: list[Any], start: int
) -> None:
    """Adds try/except/else, steps and plain code that raise, and bare re-raise."""
    _check_program(tmp_path, ops, start, unique_keys=False)


# Regression: a durable call in a while condition gets the same step id at every evaluation
@_SETTINGS
@given(ops=_ops(0, allow_exc=False), start=st.integers(-2, 6))
def test_generated_programs_have_unique_step_ids(
    tmp_path: Path, ops: list[Any], start: int
) -> None:
    """Every completed journal entry of a run has its own key (its idempotency key)."""
    _check_program(tmp_path, ops, start, unique_keys=True)


async def test_del_of_an_unbound_local(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, flag: bool) -> Any:
            if flag:
                x = await self.s(1)
            await self.s(2)
            del x
            return "deleted"

    run = await differential(tmp_path, W, "wf", False)
    assert run.outcome.error is not None and run.outcome.error[0] is UnboundLocalError
    await differential(tmp_path, W, "wf", True)


async def test_aliased_locals_survive_a_resume(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            a: list[int] = []
            b = a
            await self.s("one")
            await self.s("two")  # a run resumed here decodes `a` and `b` separately
            b.append(1)
            return a, a is b

    await differential(tmp_path, W, "wf")


async def test_local_read_by_handler_when_block_fails_before_reassigning_it(
    tmp_path: Path,
) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            x = 1
            await self.s("a")
            await self.s("b")  # a resumed run restarts here with the locals live here
            try:
                x = self.fail_plain(2)
            except KeyError:
                return await self.s(("handler sees", x))
            return x

    await differential(tmp_path, W, "wf")


async def test_local_read_by_finally_when_block_fails_before_reassigning_it(
    tmp_path: Path,
) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            x = "old"
            await self.s("a")
            await self.s("b")
            try:
                x = self.fail_plain("new")
            finally:
                await self.s(("finally sees", x))

    await differential(tmp_path, W, "wf")


async def test_local_kept_when_continue_skips_its_reassignment(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            x = -1
            for i in range(3):
                await self.s(i)  # a resumed run restarts here with the locals live here
                if i == 2:
                    continue
                x = i * 10
            return await self.s(("after", x))

    await differential(tmp_path, W, "wf")


async def test_local_kept_when_break_skips_its_reassignment(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self, stop: int) -> Any:
            x = -1
            n = 0
            while n < 5:
                n += 1
                await self.s(n)
                if n == stop:
                    break
                x = n
            return await self.s(("after", x))

    await differential(tmp_path, W, "wf", 3)


async def test_evaluation_order_around_hoisted_calls(tmp_path: Path) -> None:
    class W(Steps):
        def combine(self, *args: Any, **kwargs: Any) -> Any:
            CALLS.append(("combine", args, sorted(kwargs.items())))
            return args, sorted(kwargs.items())

        @workflow
        async def wf(self) -> Any:
            xs = [self.note(1), await self.s(2), self.note(3)]
            kw = self.combine(self.note("p"), a=self.note("a"), b=await self.s("b"))
            d: dict[Any, Any] = {}
            d[self.note("key")] = await self.s("value")  # value first, then the target
            chained = self.note(1) < await self.s(2) < self.note(3)
            mixed = (self.note("left") or 0) + await self.s(10)
            return xs, kw, d, chained, mixed

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.trace[:3] == [("note", 1), 2, ("note", 3)]


async def test_augmented_assignment_target_is_evaluated_before_the_value(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            d = {"k": 1}
            d[self.note("k")] += await self.s(5)
            return d

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.trace == [("note", "k"), 5]


async def test_local_read_by_handler_when_its_step_fails(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            x = "old"
            await self.s("a")
            try:
                x = await self.boom("new")  # a resumed run restarts here
            except ValueError:
                return await self.s(("handler sees", x))
            return x

    await differential(tmp_path, W, "wf")


async def test_local_read_by_handler_after_retries_run_out(tmp_path: Path) -> None:
    class W(Steps):
        @step(retries=1, initial_delay=0.01)
        async def flaky(self) -> str:
            CALLS.append("flaky")
            raise ValueError("still down")

        @workflow
        async def wf(self) -> Any:
            x = "old"
            try:
                x = await self.flaky()
            except ValueError:
                return await self.s(("handler sees", x))
            return x

    plain = await run_plain(W, "wf")
    run = await run_engine(tmp_path, W, "wf")  # no crash: the retry wait goes through the store
    assert plain.value == ("handler sees", "old")
    assert run.outcome.error is None
    assert run.outcome.value == plain.value


async def test_local_kept_across_sleep_when_continue_skips_its_reassignment(
    tmp_path: Path,
) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            x = -1
            for i in range(3):
                await self.sleep(0)
                if i == 2:
                    continue
                x = i * 10
            return x

    plain = await run_plain(W, "wf")
    run = await run_engine(tmp_path, W, "wf")  # no crash: each timer wakes the run from the store
    assert plain.value == 10
    assert run.outcome.error is None
    assert run.outcome.value == plain.value


async def test_dict_display_evaluates_key_value_pairs_in_order(tmp_path: Path) -> None:
    class W(Steps):
        @workflow
        async def wf(self) -> Any:
            d = {self.note("k1"): await self.s("v1"), self.note("k2"): await self.s("v2")}
            return d

    run = await differential(tmp_path, W, "wf")
    assert run.outcome.trace == [("note", "k1"), "v1", ("note", "k2"), "v2"]


def test_durable_call_in_a_later_chained_comparison_is_rejected() -> None:
    # Python evaluates `b` in `a < x < b` only when `a < x` holds; like the right side of
    # `and`, a durable call there is refused at compile time rather than run regardless.
    with pytest.raises(CompileError, match="chained comparison") as info:

        class W(Steps):
            @workflow
            async def wf(self) -> Any:
                if 5 < await self.s(1) < await self.s(2):
                    return "between"
                return "outside"

    assert info.value.hint


async def test_plain_operand_is_read_before_a_step_that_mutates_it(tmp_path: Path) -> None:
    class W(Steps):
        @step(retries=0)
        async def bump_first(self, xs: list[int]) -> int:
            CALLS.append(("bump_first", list(xs)))
            xs[0] = 100
            return 0

        @workflow
        async def wf(self) -> Any:
            xs = [1]
            y = xs[0] + await self.bump_first(xs)
            return y

    run = await differential(tmp_path, W, "wf", resume=False)
    assert run.outcome.value == 1
