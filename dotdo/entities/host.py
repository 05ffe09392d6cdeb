"""The callee's side: run pushed chains on DO instances whose state lives in SQLite.

A batch is checked whole before anything runs: every chain against its class's remote
surface (chains.py), every call id against the calls already recorded (identity.py); any
refusal raises, and the server turns it into a 400 or 409.

One call on one instance: take the instance's lock (calls to one instance run one at a time
in this process; calls to different instances run side by side and their commits share the
store's group transactions), look the call id up (a call already applied answers with its
recorded result and runs nothing, if it is the same request; another request under that id
is CallIdReused), load the state, run the chain, then in ONE transaction save the state,
record the result (with the request's target, chain and digest) under the call id and queue
the sends the method made. If that
transaction fails (a full disk), the call answers `EntityUnavailable`: nothing was applied,
and a retry with the same call id is safe.
That transaction also checks the state's version, so a second process hosting the same
instance on the same file cannot interleave a lost update: the loser runs the call again on
the fresh state. A chain that raises saves nothing and records nothing, so the caller's
retry (same call id) runs it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dotdo.engine import serde
from dotdo.engine.faults import is_store_fault
from dotdo.engine.serde import JSONValue
from dotdo.engine.store.interface import AppliedCall, CallRecord, EntitySend, Store
from dotdo.entities.chains import Plan, check_chain, run_chain
from dotdo.entities.identity import check_repeat, derived
from dotdo.entities.messages import (
    ImportRef,
    Item,
    Outcome,
    decode_request,
    encode_error,
    encode_request,
    encode_results,
)
from dotdo.entities.state import dump_state, load_state
from dotdo.entities.stubs import Stub, host_sink
from dotdo.entities.surface import surface_of
from dotdo.errors import (
    CallConflict,
    CallIdReused,
    EntityError,
    EntityUnavailable,
    ProtocolError,
    SerializationError,
    UnknownEntity,
)

if TYPE_CHECKING:
    from dotdo.entities.runtime import Entities

__all__ = ["EntityHost", "dump_state", "load_state"]

log = logging.getLogger("dotdo.entities")

MAX_CONFLICTS = 50


class EntityHost:
    """Runs chains on the DO classes an engine hosts, against that engine's store."""

    def __init__(
        self,
        runtime: Entities,
        *,
        store: Callable[[], Store],
        classes: Callable[[], Mapping[str, type[Any]]],
        now: Callable[[], float],
    ) -> None:
        self.runtime = runtime
        self._store = store
        self._classes = classes
        self._now = now
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self.applied = 0
        """Calls run and committed by this host (deduplicated repeats not counted)."""

    # --------------------------------------------------------------------- batches
    async def handle(self, request: Any) -> dict[str, JSONValue]:
        """Answer one request message (a JSON object).

        A batch is one logical call of its caller, so what is wrong with any of it refuses
        all of it before anything runs, by raising: ProtocolError (malformed), UnknownEntity,
        UnknownMethod, ArgumentError (HTTP 400), CallIdReused (409). Errors once chains run
        are answers.
        """
        classes = self._classes()
        for cls in classes.values():
            surface_of(cls)  # registers the data classes its annotations declare
        items, pull = decode_request(request)
        plans = _plan(items, classes)
        await self._check_ids(items, plans)
        outcomes = await self.execute(items, plans)
        return encode_results(outcomes, pull)

    async def execute(self, items: list[Item], plans: dict[int, Plan]) -> dict[int, Outcome]:
        """Run every checked chain of a batch; a chain waits for the imports it uses."""
        tasks: dict[int, asyncio.Task[Outcome]] = {}
        for item in items:
            deps = {i: tasks[i] for i in item.refs()}
            tasks[item.id] = asyncio.ensure_future(self._run_item(item, plans[item.id], deps))
        await asyncio.gather(*tasks.values())
        return {ident: task.result() for ident, task in tasks.items()}

    async def _check_ids(self, items: list[Item], plans: dict[int, Plan]) -> None:
        """Refuse a batch that reuses an applied call id for another request (before
        running anything; `apply` checks again under the instance's lock)."""
        writes = [item for item in items if plans[item.id].method is not None]
        if len({item.call for item in writes}) != len(writes):
            raise ProtocolError("two chains of one message that call methods share a call id")
        for start in range(0, len(writes), 500):
            chunk = writes[start : start + 500]
            rows = await self._store().recorded_calls([item.call for item in chunk])
            recorded = {row.call_id: row for row in rows}
            for item in chunk:
                row = recorded.get(item.call)
                if row is not None:
                    found = (row.cls, row.id, row.chain, row.digest)
                    check_repeat(item.call, found, (item.cls, item.key), item.chain, item.digest)

    async def _run_item(
        self, item: Item, plan: Plan, deps: dict[int, asyncio.Task[Outcome]]
    ) -> Outcome:
        values: dict[int, Any] = {}
        for ident, task in deps.items():
            ok, data = await task
            if not ok:
                return False, data  # an error at any hop rejects every dependent with it
            values[ident] = serde.decode(data, wire=True)
        if values:  # imports are arguments: the call is always the chain's second hop
            call = plan.ops[1]
            plan = plan.with_call(_swap(list(call[1]), values), _swap(dict(call[2]), values))
        try:
            return await self.apply(item, plan)
        except Exception as exc:  # a bug of ours must still answer, as a value
            if is_store_fault(exc):  # nothing was applied (the store logs the fault once)
                unavailable = EntityUnavailable(f"the call could not be saved: {exc}")
                return False, encode_error(unavailable)
            log.exception("entity call %s failed inside the host", item.call)
            return False, encode_error(exc)

    # ----------------------------------------------------------------- one call
    async def apply(self, item: Item, plan: Plan) -> Outcome:
        """Run one checked chain on one instance, exactly once per call id.

        A chain without a call (`User(id).profile.email`, or the bare instance: its state)
        is a read: it runs on the committed state and records nothing.
        """
        cls, key, call_id = plan.surface.cls, item.key, item.call
        name = cls.__name__
        async with self._lock(name, key):
            store = self._store()
            if plan.method is None:
                return await self._read(cls, key, plan)
            db = await self.runtime.db_id()
            for _ in range(MAX_CONFLICTS):
                record, entity = await store.load_call(call_id, name, key)
                if record is not None:  # applied before: answer again, if the same
                    try:
                        return _repeated(record, item)
                    except CallIdReused as exc:
                        return False, encode_error(exc)
                version = None if entity is None else entity.version
                instance = cls(key)
                sink = _HostSink(self.runtime, db, call_id, (name, key))
                try:
                    instance.state = load_state(cls, None if entity is None else entity.state)
                    with host_sink(sink):
                        value = await run_chain(instance, plan, resolve=sink.resolve_arg)
                    encoded = _encode_result(cls, plan.ops, value)
                    state = dump_state(cls, instance.state)
                    sends = await sink.outgoing()
                except BaseException as exc:
                    return self._failed(exc)
                now = self._now()
                outcome = await store.commit_call(
                    AppliedCall(
                        call_id=item.call,
                        cls=item.cls,
                        id=item.key,
                        chain=item.chain,
                        digest=item.digest,
                        result=json.dumps(encoded),
                        state=state,
                        version=version,
                        now=now,
                        sends=[EntitySend(c, target, body, now) for c, target, body in sends],
                    )
                )
                if outcome == "conflict":
                    continue  # the version moved between loading and saving: run it again
                if isinstance(outcome, CallRecord):
                    try:  # the same id, committed meanwhile by another
                        return _repeated(outcome, item)
                    except CallIdReused as exc:
                        return False, encode_error(exc)
                self.applied += 1
                if sends:
                    self.runtime.kick()
                return True, encoded
            return False, encode_error(
                CallConflict(f"{name}({key!r}) kept changing under call {call_id!r}; not applied")
            )

    async def _read(self, cls: type[Any], key: str, plan: Plan) -> Outcome:
        text = await self._store().entity_state(cls.__name__, key)
        instance = cls(key)
        # A read is not deduplicated, so calls it makes (a property returning a stub) must
        # not share ids with those of an earlier read either.
        db = await self.runtime.db_id()
        sink = _HostSink(self.runtime, db, f"read:{uuid.uuid4().hex}", (cls.__name__, key))
        try:
            instance.state = load_state(cls, text)
            with host_sink(sink):
                value = await run_chain(instance, plan, resolve=sink.resolve_arg)
            return True, _encode_result(cls, plan.ops, value)
        except BaseException as exc:
            return self._failed(exc)

    def _failed(self, exc: BaseException) -> Outcome:
        """A chain raised: its error is the answer (the caller decodes it as network data).

        Whatever the method raised, a KeyboardInterrupt, SystemExit or CancelledError of its
        own included, is the callee's failure, not the caller's nor this host's: it goes
        back as an error record (the caller sees RemoteError). Only this task being
        cancelled, or this engine dying (a simulated crash), goes through.
        """
        if not isinstance(exc, Exception):
            if isinstance(exc, asyncio.CancelledError):
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise exc
            elif not self.runtime.alive():
                raise exc
        return False, encode_error(exc)

    def _lock(self, cls: str, key: str) -> _Held:
        return _Held(self._locks, (cls, key))


class _Held:
    """A per-instance lock that disappears when nobody holds or waits for it."""

    def __init__(
        self, locks: dict[tuple[str, str], tuple[asyncio.Lock, int]], key: tuple[str, str]
    ) -> None:
        self.locks = locks
        self.key = key

    async def __aenter__(self) -> None:
        lock, users = self.locks.get(self.key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self.locks[self.key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.locks[self.key][0].release()
        self._release_user()

    def _release_user(self) -> None:
        lock, users = self.locks[self.key]
        if users <= 1:
            del self.locks[self.key]
        else:
            self.locks[self.key] = (lock, users - 1)


def _repeated(record: CallRecord, item: Item) -> Outcome:
    """The answer to a call id applied before: its result, if it is the same request
    (else CallIdReused)."""
    found = (record.cls, record.id, record.chain, record.digest)
    check_repeat(item.call, found, (item.cls, item.key), item.chain, item.digest)
    result: JSONValue = json.loads(record.result)
    return True, result


def _plan(items: list[Item], classes: Mapping[str, type[Any]]) -> dict[int, Plan]:
    """Check every chain of a batch against its class's remote surface."""
    plans: dict[int, Plan] = {}
    for item in items:
        cls = classes.get(item.cls)
        if cls is None:
            known = ", ".join(sorted(classes)) or "none"
            raise UnknownEntity(f"no DO class named {item.cls!r} is hosted here (hosted: {known})")
        plans[item.id] = check_chain(cls, item.ops)
    return plans


def _encode_result(cls: type[Any], ops: list[Any], value: Any) -> JSONValue:
    try:
        return serde.encode(value)
    except SerializationError as exc:
        names = ".".join([cls.__name__, *(str(op[1]) for op in ops if op[0] == "get")])
        raise EntityError(f"{names} returned a value that cannot be sent back: {exc}") from None


def _swap(value: Any, values: dict[int, Any]) -> Any:
    if isinstance(value, ImportRef):
        return values[value.id]
    if isinstance(value, list):
        return [_swap(v, values) for v in value]
    if isinstance(value, tuple):
        return tuple(_swap(v, values) for v in value)
    if isinstance(value, dict):
        return {k: _swap(v, values) for k, v in value.items()}
    return value


# ----------------------------------------------------- calls made by entity methods
@dataclass
class _HostSink:
    """Stubs made inside an entity method: awaited ones go out now, others at commit.

    Their call ids derive from this database's identity, the enclosing call's id and the
    chain's content (plus an occurrence count), so when the enclosing call runs again after
    a failure, its nested calls reuse their ids and the callees do not apply them twice.
    """

    runtime: Entities
    db: str
    parent: str
    here: tuple[str, str]
    pending: list[Stub] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)

    def extended(self, stub: Stub) -> None:
        if stub.ops[-1][0] == "call":
            self.pending.append(stub)

    async def resolve(self, stub: Stub) -> Any:
        stub.claim()
        self._check(stub)
        return await self.runtime.send_call(stub, self.derive(stub, "call"))

    async def resolve_arg(self, value: Any) -> Any:
        return value

    def derive(self, stub: Stub, kind: str) -> str:
        digest = _digest(stub)
        self.seen[digest] += 1
        return derived(self.db, self.parent, kind, digest, self.seen[digest])

    def _check(self, stub: Stub) -> None:
        if stub.target == self.here:
            raise EntityError(
                f"{stub!r} calls the instance that is running it, which would wait for its "
                "own lock: call the method directly"
            )

    async def outgoing(self) -> list[tuple[str, str, str]]:
        """The un-awaited calls: (call id, class, request) rows for the outbox."""
        open_ = [s for s in self.pending if not s._claimed]
        covered: set[int] = set()
        for stub in open_:
            node = stub._parent
            while node is not None:
                covered.add(id(node))
                node = node._parent
        rows: list[tuple[str, str, str]] = []
        for stub in open_:
            if id(stub) in covered:
                continue  # a longer un-awaited chain carries this call
            self._check(stub)
            items, pull = await self.runtime.build(stub, self.derive(stub, "send"))
            rows.append((items[-1].call, stub.target[0], _request_text(items, pull)))
        return rows


def _request_text(items: list[Item], pull: int) -> str:
    return json.dumps(encode_request(items, [pull]), separators=(",", ":"))


def _digest(stub: Stub) -> str:
    try:
        text = json.dumps(serde.encode([stub.target, [_plain_op(op) for op in stub.ops]]))
    except (SerializationError, TypeError):
        text = repr(stub)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain_op(op: Any) -> Any:
    if op[0] != "call":
        return list(op)
    return ["call", [_plain_arg(a) for a in op[1]], {k: _plain_arg(v) for k, v in op[2].items()}]


def _plain_arg(value: Any) -> Any:
    if isinstance(value, Stub):
        return ["$stub", list(value.target), [_plain_op(op) for op in value.ops]]
    return value
