"""Entities in one process: compiling entity calls, state, one writer per instance,
durable cross-DO calls and sends, crashes on the caller's side, plain mode, bad calls."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_entities_support import (
    ALL,
    APPLIED,
    Counter,
    Flows,
    Stateless,
    User,
    eventually,
)

from dotdo import DO, CompileError, Engine, PermanentError, RunFailed, step, workflow
from dotdo.compiler.ir import StepNode
from dotdo.entities import (
    ArgumentError,
    Stub,
    UnknownEntity,
    UnknownMethod,
    entities_of,
    plain_entity,
    reset_plain,
)
from dotdo.errors import EntityError
from dotdo.testing import CrashAt, SimulatedCrash


@pytest.fixture(autouse=True)
def _clean() -> None:
    APPLIED.clear()
    reset_plain()


def engine_at(tmp_path: Path, **kwargs: object) -> Engine:
    return Engine(tmp_path / "db.sqlite", **kwargs).register(*ALL)  # type: ignore[arg-type]


# ===================================================================== compiling
def steps_of(wf: object) -> list[StepNode]:
    graph = wf.graph  # type: ignore[attr-defined]
    return [n for n in graph.nodes.values() if isinstance(n, StepNode)]


def test_entity_calls_compile_to_named_durable_steps() -> None:
    steps = steps_of(Flows.bump_twice)
    assert [s.name for s in steps] == ["Counter.increment", "Counter.increment_2"]
    assert all(s.mode == "do" and s.policy.retries == 3 for s in steps)
    assert steps[0].call == "self.__dotdo_call__"
    assert steps[0].args == ["lambda: self.Counter(key).increment()"]
    assert [s.name for s in steps_of(Flows.lead_email)] == ["User.org.teams.members.email"]
    assert [s.name for s in steps_of(Flows.email_hop_by_hop)] == [
        "User",
        "User.profile",
        "User.profile.email",
    ]


def test_a_statement_compiles_to_a_send_step() -> None:
    (send,) = steps_of(Flows.announce)
    assert send.name == "User.notify" and send.call == "self.__dotdo_send__"
    assert send.result is None


def test_the_diagram_shows_entity_steps() -> None:
    from dotdo.compiler.render import to_mermaid

    text = to_mermaid(Flows.bump_twice.graph)
    assert "Counter.increment" in text


def test_awaits_inside_entity_arguments_are_hoisted_first() -> None:
    class Nested(DO):
        async def total(self) -> int:
            return 2

        @workflow
        async def go(self, key: str) -> int:
            return await self.Counter(key).add(await self.do(self.total))

    names = [s.name for s in steps_of(Nested.go)]
    assert names == ["total", "Counter.add"]


def test_a_stub_cannot_be_kept_in_a_local() -> None:
    with pytest.raises(CompileError, match="names another DO"):

        class Keeps(DO):
            @workflow
            async def go(self) -> None:
                user = self.User("u")
                await self.do(print, user)


def test_a_send_must_end_in_a_call() -> None:
    with pytest.raises(CompileError, match="must end in a method call"):

        class Reads(DO):
            @workflow
            async def go(self) -> None:
                self.User("u").profile  # noqa: B018


def test_capitalised_names_the_class_defines_are_not_entities() -> None:
    class Shop(DO):
        class Helper:
            def __init__(self, x: int) -> None:
                self.x = x

        @workflow
        async def go(self) -> int:
            helper = self.Helper(3)
            return helper.x

    assert not steps_of(Shop.go)


# ======================================================================= engine
async def test_state_is_loaded_for_a_call_and_saved_with_its_result(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        result = await (await engine.start(Flows.bump_twice, "c1")).result(timeout=5)
        assert result == [1, 11]
        entities = entities_of(engine)
        assert (await entities.state("Counter", "c1")).n == 11
        rows = await engine.store.fetch("SELECT call_id, result FROM entity_calls ORDER BY 1")
        assert len(rows) == 2  # each applied call recorded with its result
    async with engine_at(tmp_path) as engine:  # state outlives the process
        assert (await entities_of(engine).state("Counter", "c1")).n == 11
        assert await entities_of(engine).Counter("c1").value == 11


async def test_a_stateless_entity_answers(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        assert await entities_of(engine).Stateless("s").ping() == "pong s"


async def test_fifty_concurrent_calls_to_one_instance_lose_no_update(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        handles = [await engine.start(Flows.bump, "hot") for _ in range(60)]
        results = [await h.result(timeout=20) for h in handles]
        assert sorted(results) == list(range(1, 61))  # each saw a distinct count
        assert (await entities_of(engine).state("Counter", "hot")).n == 60
    assert APPLIED["increment:hot"] == 60


async def test_calls_to_one_instance_run_one_at_a_time(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        entities = entities_of(engine)
        begun = time.monotonic()
        starts = await asyncio.gather(*(entities.Counter("one").hold(0.1) for _ in range(5)))
        elapsed = time.monotonic() - begun
        gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:], strict=False)]
    assert elapsed >= 0.5
    assert min(gaps) >= 0.09  # each began after the previous one finished


async def test_calls_to_different_instances_run_in_parallel(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        entities = entities_of(engine)
        begun = time.monotonic()
        await asyncio.gather(*(entities.Counter(f"p{i}").hold(0.3) for i in range(10)))
        elapsed = time.monotonic() - begun
        for i in range(10):
            assert (await entities.state("Counter", f"p{i}")).n == 1
    assert elapsed < 1.5  # serial would take 3s


async def test_two_engines_on_one_file_serialise_through_the_version(tmp_path: Path) -> None:
    # Two hosts of the same instance: the in-process lock cannot help, the version check does.
    first, second = engine_at(tmp_path), engine_at(tmp_path)
    async with first, second:
        a, b = entities_of(first), entities_of(second)
        calls = [x.Counter("shared").increment() for _ in range(25) for x in (a, b)]
        await asyncio.gather(*calls)
        assert (await a.state("Counter", "shared")).n == 50


async def test_the_same_call_id_is_applied_once(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        entities = entities_of(engine)
        # (Stubs are built right before sending: an un-awaited call would go out on its own.)
        answers = [
            await entities.call(entities.Counter("d").increment(by=5), call_id="fixed-id")
            for _ in range(3)
        ]
        assert answers == [5, 5, 5]
        assert (await entities.state("Counter", "d")).n == 5
    assert APPLIED["increment:d"] == 1


async def test_a_failed_call_changes_nothing_and_records_nothing(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        entities = entities_of(engine)
        await entities.Counter("f").increment()
        with pytest.raises(ValueError, match="boom"):
            await entities.call(entities.Counter("f").explode(), call_id="x")
        assert (await entities.state("Counter", "f")).n == 1
        row = await engine.store.fetch_one("SELECT 1 FROM entity_calls WHERE call_id = 'x'")
        assert row is None  # so a retry runs it again


async def test_a_failing_callee_is_retried_then_fails_the_run(tmp_path: Path) -> None:
    from dotdo.testing import VirtualClock

    clock = VirtualClock()
    async with engine_at(tmp_path, clock=clock) as engine:
        handle = await engine.start(Flows.failing, "ff", run_id="ff")
        await clock.run_for(20, step=1)
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        journal = {r.key: r for r in await engine.journal("ff")}
        assert (await entities_of(engine).state("Counter", "ff")).n == 0
    assert isinstance(failed.value.error, ValueError)
    assert journal["Counter.explode"].attempts == 4  # the default policy: 3 retries


async def test_a_permanent_error_of_the_callee_fails_at_once(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        handle = await engine.start(Flows.refused, "r", run_id="r")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        (record,) = await engine.journal("r")
    assert isinstance(failed.value.error, PermanentError) and record.attempts == 1


@pytest.mark.parametrize(
    ("flow", "args", "error", "text"),
    [
        (Flows.unknown_class, (), UnknownEntity, "Nobody"),
        (Flows.unknown_method, ("k",), UnknownMethod, "missing"),
        (Flows.bad_argument, ("k",), ArgumentError, "cannot be sent"),
    ],
    ids=["unknown-class", "unknown-method", "unserialisable-argument"],
)
async def test_bad_calls_fail_clearly_and_change_nothing(
    tmp_path: Path, flow: object, args: tuple[str, ...], error: type, text: str
) -> None:
    async with engine_at(tmp_path) as engine:
        handle = await engine.start(flow, *args, run_id="bad")  # type: ignore[arg-type]
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=5)
        (record,) = await engine.journal("bad")
        assert await engine.store.fetch("SELECT * FROM entities") == []
        assert await engine.store.fetch("SELECT * FROM entity_calls") == []
    assert isinstance(failed.value.error, error) and text in str(failed.value.error)
    assert record.attempts == 1  # permanent: not retried


@pytest.mark.parametrize("hop", ["_private", "bump_self", "do", "entity_id", "State"])
async def test_only_the_members_a_class_offers_are_reachable(tmp_path: Path, hop: str) -> None:
    async with engine_at(tmp_path) as engine:
        entities = entities_of(engine)
        stub = Stub(entities.Counter("c").sink, "Counter", "c", (("get", hop), ("call", (), {})))
        with pytest.raises(UnknownMethod):
            await entities.call(stub)
        assert await engine.store.fetch("SELECT * FROM entities") == []


async def test_a_loop_gives_each_iteration_its_own_call(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        handle = await engine.start(Flows.looped, ["a", "a", "b"], run_id="loop")
        assert await handle.result(timeout=5) == 1 + 2 + 1
        keys = [r.key for r in await engine.journal("loop")]
    assert keys == ["Counter.increment[1]", "Counter.increment[2]", "Counter.increment[3]"]


# ========================================================================= crashes
async def test_a_caller_crash_after_the_call_does_not_apply_it_twice(tmp_path: Path) -> None:
    crash = CrashAt(0, points=("after_step",), run_id="cc")
    async with engine_at(tmp_path, faults=crash) as engine:
        handle = await engine.start(Flows.bump_twice, "cc", run_id="cc")
        with pytest.raises(SimulatedCrash):
            await handle.result(timeout=5)
    assert crash.fired and APPLIED["increment:cc"] == 1  # applied; the journal never knew
    async with engine_at(tmp_path) as engine:
        assert await engine.handle("cc").result(timeout=5) == [1, 11]
        assert (await entities_of(engine).state("Counter", "cc")).n == 11
        assert entities_of(engine).host.applied == 1  # only the second call ran here
    assert APPLIED["increment:cc"] == 2


async def test_a_send_recorded_just_before_a_crash_is_delivered_after_it(tmp_path: Path) -> None:
    crash = CrashAt(0, points=("after_commit",), run_id="ac")
    async with engine_at(tmp_path, faults=crash) as engine:
        handle = await engine.start(Flows.announce_then_wait, "u3", "hey", run_id="ac")
        with pytest.raises(SimulatedCrash):
            await handle.result(timeout=5)
    async with engine_at(tmp_path) as engine:
        entities = entities_of(engine)  # (until Engine.open starts the dispatcher itself)

        async def delivered() -> bool:
            return (await entities.state("User", "u3")).inbox == ["hey"]

        await eventually(delivered, what="the send after the restart")
        await entities.deliver_pending()
        assert (await entities.state("User", "u3")).inbox == ["hey"]
        applied = await engine.store.fetch("SELECT call_id FROM entity_calls")
        db = await entities.db_id()  # call ids start with the caller database's identity
        assert [r["call_id"] for r in applied] == [f"{db}:ac:User.notify"]
    # The method body may have run twice (the crashed engine's dispatcher can start a delivery
    # whose commit then fails); it was applied once.
    assert APPLIED["notify:u3"] >= 1


TRIES: dict[str, int] = {}


class Stepper(DO):
    @step(retries=2, initial_delay=0.01)
    async def bump_then_fail(self, key: str) -> int:
        n: int = await self.Counter(key).increment()  # from inside a step body
        TRIES[key] = TRIES.get(key, 0) + 1
        if TRIES[key] == 1:
            raise RuntimeError("flaky after the call")
        return n

    @workflow
    async def go(self, key: str) -> int:
        return await self.bump_then_fail(key)


async def test_a_retried_step_does_not_repeat_its_entity_calls(tmp_path: Path) -> None:
    async with Engine(tmp_path / "db.sqlite").register(Stepper, Counter) as engine:
        assert await (await engine.start(Stepper.go, "st")).result(timeout=5) == 1
        assert (await entities_of(engine).state("Counter", "st")).n == 1
    assert TRIES["st"] == 2 and APPLIED["increment:st"] == 1


# ========================================================================== sends
async def test_a_send_is_delivered_once(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        for run_id in ("s", "s1"):
            handle = await engine.start(Flows.announce, "u", "hello", run_id=run_id)
            assert await handle.result(timeout=5) == "sent"
        entities = entities_of(engine)

        async def delivered() -> bool:
            # the callee's state commits before the outbox records the delivery
            rows = await entities.outbox()
            inbox = (await entities.state("User", "u")).inbox
            return inbox == ["hello", "hello"] and all(r["outcome"] for r in rows)

        await eventually(delivered, what="the sends")
        outbox = await entities.outbox()
        assert [r["outcome"] for r in outbox] == ["ok", "ok"]
        db = await entities.db_id()  # call ids start with the caller database's identity
        assert {r["call_id"] for r in outbox} == {f"{db}:s:User.notify", f"{db}:s1:User.notify"}
        await entities.deliver_pending()  # nothing left to deliver, nothing applied again
    assert APPLIED["notify:u"] == 2


async def test_a_send_waits_for_the_runs_checkpoint(tmp_path: Path) -> None:
    # Crash after the send step ran but before the checkpoint recording it committed:
    # the queued message must not be delivered, and the resumed run queues it only once.
    crash = CrashAt(0, points=("before_commit",), run_id="w")
    async with engine_at(tmp_path, faults=crash) as engine:
        handle = await engine.start(Flows.announce_then_wait, "u2", "hi", run_id="w")
        with pytest.raises(SimulatedCrash):
            await handle.result(timeout=5)
    async with engine_at(tmp_path) as engine:
        entities = entities_of(engine)
        rows = await entities.outbox()
        assert len(rows) <= 1 and all(r["outcome"] is None for r in rows)
        assert (await entities.state("User", "u2")).inbox == []
        # The fresh engine resumes the run, which reaches its sleep: the send is recorded.
        await eventually(lambda: _status_is(engine, "w", "waiting"), what="the run to checkpoint")

        async def delivered() -> bool:
            return (await entities.state("User", "u2")).inbox == ["hi"]

        await eventually(delivered, what="the send after the checkpoint")
    assert APPLIED["notify:u2"] == 1


async def _status_is(engine: Engine, run_id: str, status: str) -> bool:
    return (await engine.get_run(run_id)).status == status


async def test_an_entity_method_can_call_and_send(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        entities = entities_of(engine)
        assert await entities.call(entities.User("a").relay("b", "x"), call_id="r") == "b has 1"
        await entities.call(entities.User("a").relay("b", "x"), call_id="r")  # a repeat

        async def both() -> bool:
            return len((await entities.state("User", "b")).inbox) == 2

        await eventually(both, what="the relayed send")
        assert (await entities.state("User", "b")).inbox == ["relayed: x", "and again: x"]
    assert APPLIED["notify:b"] == 2


async def test_an_entity_method_that_fails_sends_nothing(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        entities = entities_of(engine)
        with pytest.raises(ValueError, match="after queueing"):
            await entities.User("a").relay_then_fail("b")
        await entities.deliver_pending()
        assert await entities.outbox() == []


async def test_a_workflow_on_an_entity_cannot_call_itself_through_a_stub(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        # A workflow step is not inside the entity's lock, so this is allowed and works.
        assert await (await engine.start(Counter.bump_self, entity_id="me")).result(timeout=5) == 1
        with pytest.raises(EntityError, match="own lock"):

            class Loop(DO):
                async def again(self) -> None:
                    await self.Loop(self.entity_id).again()

            engine.register(Loop)
            await entities_of(engine).Loop("x").again()


# ===================================================================== plain mode
async def test_plain_mode_calls_the_target_in_process() -> None:
    flows = Flows("plain")
    assert await flows.bump_twice("k") == [1, 11]
    assert await flows.email("u") == "ada@example.com"
    assert await flows.lead_email("u", "core") == "g@x.io"
    assert await flows.announce("u", "yo") == "sent"
    await asyncio.sleep(0.01)  # the send goes out on the next loop turn
    assert plain_entity(User, "u").state.inbox == ["yo"]
    assert plain_entity(Counter, "k").state.n == 11
    with pytest.raises(ValueError):
        await flows.failing("k")
    assert plain_entity(Counter, "k").state.n == 11  # the failed call changed nothing
    with pytest.raises(UnknownMethod):
        await flows.unknown_method("k")
    with pytest.raises(ArgumentError):
        await flows.bad_argument("k")


async def test_plain_mode_serialises_calls_to_one_instance() -> None:
    counter = Stateless("x")
    await asyncio.gather(*(counter.Counter("hot").increment() for _ in range(50)))
    assert plain_entity(Counter, "hot").state.n == 50


async def test_plain_entities_keep_their_state_per_id() -> None:
    user = User("u")
    await user.User("other").rename("o@x.io")
    assert await user.User("other").profile.email == "o@x.io"
    assert await user.User("third").profile.email == "ada@example.com"


def test_a_stub_is_not_a_value() -> None:
    stub = Stub(entities_sink(), "User", "u")
    with pytest.raises(TypeError, match="forget `await`"):
        bool(stub.profile)
    with pytest.raises(TypeError):
        list(stub)
    assert repr(stub.profile.email) == "<stub User('u').profile.email>"


def entities_sink() -> object:
    from dotdo.entities.stubs import _CAPTURE

    return _CAPTURE


def test_state_must_be_creatable_empty() -> None:
    from pydantic import BaseModel

    class Needy(BaseModel):
        required: int

    class Strict(DO):
        State = Needy

    with pytest.raises(EntityError, match="give every field a default"):
        _ = Strict("x").state
