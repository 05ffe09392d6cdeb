"""The caller's side on an engine: routing, durable calls and sends, the entity outbox.

Each engine gets one `Entities` (`entities_of(engine)`): its local host (the DO classes
registered on the engine, state in the engine's file), its remote routes
(`remote(engine, "Inventory", url)`) and the dispatcher of its outbox.

A compiled `await self.Inventory(w).reserve(items)` is a step whose callable is
`call_from_step`: it sends the chain under the step's idempotency key, qualified with the
database's identity (`<db_id>:run_id:step`, see identity.py), which is the callee's call id,
so the engine's retries and a resumed run after a crash reach a callee that answers the
recorded result instead of applying the call again, and a caller on another database with
the same run id never shares it.

Answers are decoded as network data whether the callee is local or remote (`_answer`).

A fire-and-forget `self.User(id).notify(...)` is a step whose callable is `send_from_step`:
it writes the message into `entity_outbox`, keyed by the same call id, and the
message becomes deliverable when the run's journal records that step, i.e. in the
transaction of the run's next checkpoint. A run that never gets there never sends it; one
that crashes and runs the step again writes the same key, which is ignored. Delivery is at
least once (retried with backoff until the callee answers); the call id makes it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from dotdo.engine import serde
from dotdo.engine.context import StepContext, current_step
from dotdo.engine.engine import Engine
from dotdo.engine.faults import Outage
from dotdo.engine.store.interface import (
    FINISHED,
    ChangeFeed,
    EntitySend,
    Lease,
    PendingSend,
    Store,
)
from dotdo.entities.host import EntityHost, _digest
from dotdo.entities.identity import qualified
from dotdo.entities.messages import (
    Item,
    build_batch,
    claim_chain,
    decode_results,
    encode_request,
)
from dotdo.entities.sinks import EagerSink
from dotdo.entities.state import load_state
from dotdo.entities.stubs import Stub, StubFactory, capture
from dotdo.entities.surface import trust_answers
from dotdo.entities.transport import LocalRoute, RemoteRoute, Route
from dotdo.errors import (
    ArgumentError,
    CallIdReused,
    EntityAuthError,
    EntityError,
    EntityUnavailable,
    PermanentRemoteError,
    ProtocolError,
    RemoteError,
    SerializationError,
    UnknownEntity,
    UnknownMethod,
)

__all__ = [
    "Entities",
    "call_from_step",
    "engine_for",
    "entities_of",
    "remote",
    "send_from_step",
    "step_sink",
]

log = logging.getLogger("dotdo.entities")

_RUNTIMES: weakref.WeakKeyDictionary[Engine, Entities] = weakref.WeakKeyDictionary()


def entities_of(engine: Engine) -> Entities:
    """The entity runtime of `engine` (created on first use)."""
    found = _RUNTIMES.get(engine)
    if found is None:
        found = _RUNTIMES[engine] = Entities(engine)
    found.start()
    return found


def remote(
    engine: Engine,
    target: str | type[Any],
    url: str,
    *,
    token: str | None = None,
    timeout: float = 30.0,
) -> Entities:
    """Route calls to DO class `target` (a class or its name) from `engine` to the
    `dotdo serve` at `url`."""
    return entities_of(engine).remote(target, url, token=token, timeout=timeout)


class Entities:
    """Routes, local host and outbox of one engine."""

    poll_seconds = 0.25
    max_backoff = 300.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.host = EntityHost(
            self,
            store=lambda: engine.store,
            classes=self.hosted,
            now=engine.clock.now,
        )
        self._local = LocalRoute(self.host)
        self._routes: dict[str, RemoteRoute] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._delivering: asyncio.Lock | None = None
        self._db_id: str | None = None

    def __repr__(self) -> str:
        return f"<Entities of {self.engine.path}: hosted {sorted(self.hosted())}>"

    # ------------------------------------------------------------------- routing
    def remote(
        self,
        target: str | type[Any],
        url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> Entities:
        """Send calls to DO class `target` (a class or its name) to `url` (a `dotdo serve`);
        `token` or $DOTDO_TOKEN.

        Answers decode as network data: to JSON values and the data classes the class
        declares in its annotations, when this process has the class (passed here, or
        defined under that name), else those this engine's own classes declare.
        """
        name = target if isinstance(target, str) else target.__name__
        if not name[:1].isupper() or not name.isidentifier():
            raise ValueError(f"entity class names are capitalised identifiers, not {name!r}")
        fresh = RemoteRoute(url, token=token, timeout=timeout)
        for route in self._routes.values():
            if route.same_server(fresh):
                fresh = route  # one connection pool per server
                break
        self._routes[name] = fresh
        trust_answers(target)
        return self

    @property
    def routes(self) -> dict[str, str]:
        """Class name -> URL of every remote route."""
        return {name: route.url for name, route in self._routes.items()}

    def hosted(self) -> Mapping[str, type[Any]]:
        """The DO classes this engine hosts: those registered on it."""
        classes: dict[str, type[Any]] = getattr(self.engine, "_classes", {})
        return classes

    def route(self, name: str) -> Route:
        if name in self.hosted():
            return self._local
        found = self._routes.get(name)
        if found is None:
            raise UnknownEntity(
                f"no DO class named {name!r} is registered on this engine or routed to a "
                f"server: engine.register({name}), or dotdo.entities.remote(engine, "
                f"{name!r}, url)"
            )
        return found

    def __getattr__(self, name: str) -> StubFactory:
        """`entities.Counter("c").increment()`: an ad-hoc call (fresh call id) from outside."""
        if name[:1].isupper():
            return StubFactory(name, _CallerSink(self))
        raise AttributeError(name)

    # --------------------------------------------------------------------- calls
    async def call(self, stub: Stub, *, call_id: str | None = None) -> Any:
        """Send `stub`'s chain in one round trip and return its result (or raise its error).

        `call_id` names the call among this database's calls (the id sent is qualified with
        the database's identity); a fresh one is made if none is given.
        """
        claim_chain(stub)  # before awaiting anything: an eager sink would send it on its own
        return await self.send_call(stub, await self.qualify(call_id or uuid.uuid4().hex))

    async def send_call(self, stub: Stub, call_id: str) -> Any:
        """`call` with a complete call id (see dotdo.entities.identity)."""
        self.start()
        items, pull = await self.build(stub, call_id)
        request = encode_request(items, [pull])
        response = await self.route(stub.target[0]).send(request)
        return _answer(decode_results(response), pull)

    async def db_id(self) -> str:
        """The identity of this engine's database, which starts every call id it sends."""
        if self._db_id is None:
            self._db_id = await self.engine.store.db_id()
        return self._db_id

    async def qualify(self, local: str) -> str:
        return qualified(await self.db_id(), local)

    async def build(self, stub: Stub, call_id: str) -> tuple[list[Item], int]:
        """The batch for `stub` (see `build_batch`): arguments routed to the same place as
        the chain travel with it; others are called first."""
        here = self.route(stub.target[0]).key
        return await build_batch(
            stub,
            call_id,
            together=lambda s: self.route(s.target[0]).key == here,
            elsewhere=self.send_call,
        )

    # ----------------------------------------------------------------------- sends
    async def enqueue(
        self,
        stub: Stub,
        *,
        call_id: str,
        gate: tuple[str, str] | None = None,
        epoch: int | None = None,
    ) -> None:
        """Queue a fire-and-forget call; with `gate` (run id, step key) it is deliverable once
        that run's journal records that step."""
        items, pull = await self.build(stub, call_id)
        body = json.dumps(encode_request(items, [pull]), separators=(",", ":"))
        now = self.engine.clock.now()
        run_id, step_key = gate if gate is not None else (None, None)
        await self.engine.store.enqueue_send(
            EntitySend(
                call_id,
                stub.target[0],
                body,
                now,
                run_id=run_id,
                step_key=step_key,
                lease=None if run_id is None or epoch is None else Lease(run_id, epoch),
            )
        )
        self.start()
        self.kick()

    async def deliver_pending(self) -> int:
        """Deliver every due outbox message once; returns how many still wait on their run."""
        if self._delivering is None:
            self._delivering = asyncio.Lock()
        async with self._delivering:
            store = self.engine.store
            rows = await store.due_sends(self.engine.clock.now(), 500)
            limit = asyncio.Semaphore(32)

            async def one(row: PendingSend) -> bool:
                async with limit:
                    return await self._deliver(store, row)

            waiting = await asyncio.gather(*(one(r) for r in rows))
            return sum(waiting)

    async def _deliver(self, store: Store, row: PendingSend) -> bool:
        call_id = row.call_id
        if row.run_id is not None:
            # The run first: a run seen finished has committed its journal for good, so a
            # step row still missing after that is never coming.
            run = await store.run_status(row.run_id)
            step = await store.step_status(row.run_id, row.step_key or "")
            if step != "completed":
                if run is not None and run not in FINISHED:
                    return True  # not committed yet: the run's next checkpoint decides
                await self._settle(call_id, "dropped", "the sending run ended without it")
                return False
        request = json.loads(row.request)
        try:
            response = await self.route(row.cls).send(request)
            outcome = decode_results(response)[request["pull"][0]]
            refused = None if outcome[0] else _error_of(outcome[1])
            if isinstance(refused, EntityUnavailable):
                raise refused  # the callee applied nothing (its store failed, say): not sent
        except (UnknownMethod, ArgumentError, CallIdReused) as exc:  # refused for good
            await self._settle(call_id, "error", f"{type(exc).__name__}: {exc}")
            log.warning("entity send %s was refused: %s", call_id, exc)
            return False
        except (EntityUnavailable, EntityAuthError, UnknownEntity, ProtocolError, KeyError) as exc:
            attempts = row.attempts + 1
            delay = min(2.0 ** min(attempts, 16), self.max_backoff)
            await store.retry_send(
                call_id, attempts, self.engine.clock.now() + delay, f"{type(exc).__name__}: {exc}"
            )
            log.info("entity send %s not delivered (%s); retrying in %.0fs", call_id, exc, delay)
            return False
        ok, data = outcome
        error = None
        if not ok:
            value = _error_of(data)
            error = f"{type(value).__name__}: {value}"
            log.warning("entity send %s was delivered and failed: %s", call_id, error)
        await self._settle(call_id, "ok" if ok else "error", error)
        return False

    async def _settle(self, call_id: str, outcome: str, error: str | None) -> None:
        await self.engine.store.settle_send(call_id, outcome, error, self.engine.clock.now())

    async def outbox(self) -> list[dict[str, Any]]:
        """Every queued send and its fate (outcome None: not delivered yet)."""
        return [dataclasses.asdict(r) for r in await self.engine.store.entity_sends()]

    # --------------------------------------------------------------- background
    def start(self) -> None:
        """Run the outbox dispatcher while the engine is open (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        if not self._engine_open():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._dispatch(), name="dotdo-entity-outbox")

    def kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _engine_open(self) -> bool:
        engine = self.engine
        return (
            getattr(engine, "_store", None) is not None
            and not getattr(engine, "_closing", False)
            and getattr(engine, "_crashed", None) is None
        )

    def alive(self) -> bool:
        """The engine is not dying (a simulated crash stops everything it runs)."""
        engine = self.engine
        return getattr(engine, "_crashed", None) is None and getattr(engine, "_dying", None) is None

    async def _dispatch(self) -> None:
        wake = self._wake
        assert wake is not None
        outage = Outage("entity outbox dispatch")  # store faults: logged once, by the store
        store = self.engine.store
        feed = store if isinstance(store, ChangeFeed) else None
        if feed is not None:
            feed.watch(wake.set)  # a send queued by another worker wakes this loop at once
        try:
            while self._engine_open():
                waiting, pause = 0, 0.0
                try:
                    waiting = await self.deliver_pending()
                    outage.over()
                except Exception as exc:
                    if not self._engine_open():
                        break
                    pause = outage.failed(exc)
                except BaseException:
                    if not self._engine_open():  # a simulated crash of the engine
                        break
                    raise
                idle = self.poll_seconds
                if feed is not None and feed.listening:
                    idle = max(idle, self.engine.idle_poll())
                wait = 0.01 if waiting else max(idle, pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
                wake.clear()
        finally:
            if feed is not None:
                feed.unwatch(wake.set)
            await self._close_routes()

    async def _close_routes(self) -> None:
        for route in self._routes.values():
            with contextlib.suppress(Exception):
                await route.aclose()

    async def aclose(self) -> None:
        """Stop the dispatcher and close HTTP connections (the engine's close does not yet)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._close_routes()

    # ------------------------------------------------------------------ reading
    async def state(self, name: str, entity_id: str | int) -> Any:
        """The stored state of a hosted instance (its `State`, default if never called)."""
        text = await self.engine.store.entity_state(name, str(entity_id))
        cls = self.hosted().get(name)
        if cls is None:
            return None if text is None else json.loads(text)
        return load_state(cls, text)

    async def prune(self, *, older_than: float) -> int:
        """Forget call results recorded more than `older_than` seconds ago; a retry with such
        an old call id would then run again, so keep it longer than any retry takes."""
        cutoff = self.engine.clock.now() - older_than
        return await self.engine.store.prune_calls(cutoff)


def _answer(outcomes: dict[int, tuple[bool, Any]], pull: int) -> Any:
    """The result of the pulled chain, or its error raised.

    Answers are network data, even from this process's own host: they decode only to JSON
    values and registered data classes, and an error only to an `Exception` (a registered
    class, else RemoteError). A callee cannot make its caller raise KeyboardInterrupt,
    SystemExit, CancelledError or any other BaseException.
    """
    if pull not in outcomes:
        raise ProtocolError("the answer has no result for the call")
    ok, data = outcomes[pull]
    if not ok:
        raise _error_of(data)
    try:
        return serde.decode(data, wire=True)
    except SerializationError as exc:
        raise ProtocolError(
            f"the answer cannot be decoded here: {exc} (the caller decodes the data classes "
            "its own classes declare; route the class with remote(engine, TheClass, url), "
            "or annotate the workflow's variables' types)"
        ) from None


def _error_of(data: Any) -> Exception:
    """The exception an error record stands for (RemoteError when it is not one here;
    PermanentRemoteError when the callee marked it permanent)."""
    try:
        value = serde.decode(data, wire=True)
    except SerializationError as exc:
        return RemoteError("unreadable error", str(exc))
    if not isinstance(value, Exception):
        return RemoteError("not an error", repr(value)[:500])
    if type(value) is RemoteError and isinstance(data, dict) and data.get("permanent") is True:
        return PermanentRemoteError(value.type_name, value.message)
    return value


# -------------------------------------------------------------- from workflow steps
def engine_for(instance: Any) -> Engine | None:
    """The engine running the step that is executing now (on `instance`), if any: the
    engine puts itself in the step's context."""
    try:
        engine = current_step().engine
    except LookupError:
        return None
    return engine if isinstance(engine, Engine) else None


def _stub_of(instance: Any, chain: Callable[[], Any]) -> tuple[Entities, StepContext, Stub]:
    ctx = current_step()
    engine = engine_for(instance)
    if engine is None:
        raise EntityError(
            f"cannot find the engine running step {ctx.step_id!r} of run {ctx.run_id!r}"
        )
    stub = capture(chain)
    if not isinstance(stub, Stub):
        raise TypeError(f"an entity step must build a stub, got {type(stub).__name__}")
    return entities_of(engine), ctx, stub


async def call_from_step(instance: Any, chain: Callable[[], Any]) -> Any:
    """A compiled `await self.Noun(id)...`: one round trip under the step's idempotency key."""
    entities, ctx, stub = _stub_of(instance, chain)
    return await entities.send_call(stub, await entities.qualify(ctx.idempotency_key))


async def send_from_step(instance: Any, chain: Callable[[], Any]) -> None:
    """A compiled fire-and-forget `self.Noun(id).method(...)` statement: queue it."""
    entities, ctx, stub = _stub_of(instance, chain)
    call_id = await entities.qualify(ctx.idempotency_key)
    await entities.enqueue(stub, call_id=call_id, gate=(ctx.run_id, ctx.step_id), epoch=ctx.epoch)


_STEP_CALLS: weakref.WeakKeyDictionary[StepContext, Counter[str]] = weakref.WeakKeyDictionary()


def step_sink(origin: Any) -> EagerSink | None:
    """Stubs made inside a running engine step (a `@step` body, a `self.do` function)."""
    try:
        ctx = current_step()
    except LookupError:
        return None
    engine = engine_for(origin)
    if engine is None:
        return None
    return _StepSink(entities_of(engine), ctx)


class _StepSink(EagerSink):
    """Calls from inside a step: ids derive from the step's key and the chain's content, so
    the step's next attempt reaches callees that already applied them as repeats."""

    def __init__(self, entities: Entities, ctx: StepContext) -> None:
        self.entities = entities
        self.ctx = ctx

    async def send(self, stub: Stub) -> Any:
        seen = _STEP_CALLS.setdefault(self.ctx, Counter())
        digest = _digest(stub)
        seen[digest] += 1
        call_id = f"{self.ctx.idempotency_key}/{digest}:{seen[digest]}"
        return await self.entities.call(stub, call_id=call_id)  # qualified by the database


class _CallerSink(EagerSink):
    """`entities.Noun(id)...` used directly: each send is a new call (fresh call id)."""

    def __init__(self, entities: Entities) -> None:
        self.entities = entities

    async def send(self, stub: Stub) -> Any:
        return await self.entities.call(stub)
