"""The callee's side: run pushed chains on DO instances whose state lives in SQLite.

One call on one instance: take the instance's lock (calls to one instance run one at a time
in this process; calls to different instances run side by side and their commits share the
store's group transactions), look the call id up (a call already applied answers with its
recorded result and runs nothing), load the state, run the chain, then in ONE transaction
save the state, record the result under the call id and queue the sends the method made.
If that transaction fails (a full disk), the call answers `EntityUnavailable`: nothing was
applied, and a retry with the same call id is safe.
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

import aiosqlite
from pydantic import BaseModel

from dotdo.dsl.do import DO
from dotdo.engine import serde
from dotdo.engine._faults import is_store_fault
from dotdo.engine.serde import JSONValue
from dotdo.engine.store import Store
from dotdo.entities.chains import check_ops, run_chain
from dotdo.entities.errors import (
    CallConflict,
    EntityError,
    EntityUnavailable,
    UnknownEntity,
    UnknownMethod,
)
from dotdo.entities.messages import (
    ImportRef,
    Item,
    Outcome,
    decode_request,
    encode_error,
    encode_request,
    encode_results,
)
from dotdo.entities.stubs import Stub, host_sink, initial_state
from dotdo.errors import SerializationError

if TYPE_CHECKING:
    from dotdo.entities.runtime import Entities

__all__ = ["EntityHost", "dump_state", "load_state"]

log = logging.getLogger("dotdo.entities")

MAX_CONFLICTS = 50


_LOAD = (
    "SELECT (SELECT result FROM entity_calls WHERE call_id = ?) AS result, "
    "e.state AS state, e.version AS version "
    "FROM (SELECT ? AS cls, ? AS id) AS k LEFT JOIN entities AS e ON e.cls = k.cls AND e.id = k.id"
)
"""A call's recorded result (if it was applied) and the instance's state, in one read."""


class _Conflict(Exception):
    """The instance's version moved between loading and saving: run the call again."""


def load_state(cls: type[DO], text: str | None) -> Any:
    if cls.State is None:
        return None
    if text is None or text == "null":
        return initial_state(cls)
    return cls.State.model_validate_json(text)


def dump_state(cls: type[DO], state: Any) -> str:
    model = cls.State
    if model is None:
        return "null"
    checked: BaseModel = state if isinstance(state, model) else model.model_validate(state)
    return checked.model_dump_json()


class EntityHost:
    """Runs chains on the DO classes an engine hosts, against that engine's store."""

    def __init__(
        self,
        runtime: Entities,
        *,
        store: Callable[[], Store],
        classes: Callable[[], Mapping[str, type[DO]]],
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
    async def handle(self, request: Any, *, trusted: bool = True) -> dict[str, JSONValue]:
        """Answer one request message (a JSON object); ProtocolError if it is malformed."""
        items, pull = decode_request(request, trusted=trusted)
        outcomes = await self.execute(items)
        return encode_results(outcomes, pull)

    async def execute(self, items: list[Item]) -> dict[int, Outcome]:
        """Run every chain of a batch; a chain waits for the imports its arguments use.

        Mistakes visible before running anything reject the whole batch: a malformed hop
        raises ProtocolError (the message is refused); an unknown class or member is the
        answer of every chain (a batch is one logical call of its caller, and half of it
        applied would be a surprise).
        """
        classes = self._classes()
        try:
            for item in items:
                cls = classes.get(item.cls)
                if cls is None:
                    known = ", ".join(sorted(classes)) or "none"
                    raise UnknownEntity(
                        f"no DO class named {item.cls!r} is hosted here (hosted: {known})"
                    )
                check_ops(cls, item.ops)
        except (UnknownEntity, UnknownMethod) as exc:
            error = encode_error(exc)
            return {item.id: (False, error) for item in items}
        tasks: dict[int, asyncio.Task[Outcome]] = {}
        for item in items:
            deps = {i: tasks[i] for i in item.refs()}
            tasks[item.id] = asyncio.ensure_future(self._run_item(classes[item.cls], item, deps))
        await asyncio.gather(*tasks.values())
        return {ident: task.result() for ident, task in tasks.items()}

    async def _run_item(
        self, cls: type[DO], item: Item, deps: dict[int, asyncio.Task[Outcome]]
    ) -> Outcome:
        values: dict[int, Any] = {}
        for ident, task in deps.items():
            ok, data = await task
            if not ok:
                return False, data  # an error at any hop rejects every dependent with it
            values[ident] = serde.decode(data)
        ops = [_substitute(op, values) for op in item.ops] if values else item.ops
        try:
            return await self.apply(cls, item.key, item.call, ops)
        except Exception as exc:  # a bug of ours must still answer, as a value
            if is_store_fault(exc):  # nothing was applied (the store logs the fault once)
                unavailable = EntityUnavailable(f"the call could not be saved: {exc}")
                return False, encode_error(unavailable)
            log.exception("entity call %s failed inside the host", item.call)
            return False, encode_error(exc)

    # ----------------------------------------------------------------- one call
    async def apply(self, cls: type[DO], key: str, call_id: str, ops: list[Any]) -> Outcome:
        """Run one chain on one instance, exactly once per call id.

        A chain without a call (`User(id).profile.email`, or the bare instance: its state)
        is a read: it runs on the committed state and records nothing.
        """
        name = cls.__name__
        async with self._lock(name, key):
            store = self._store()
            if not any(op[0] == "call" for op in ops):
                return await self._read(cls, key, ops)
            for _ in range(MAX_CONFLICTS):
                row = await store.fetch_one(_LOAD, (call_id, name, key))
                assert row is not None
                if row["result"] is not None:
                    return True, json.loads(row["result"])  # applied before: answer again
                version = None if row["version"] is None else int(row["version"])
                instance = cls(key)
                sink = _HostSink(self.runtime, call_id, (name, key))
                try:
                    instance.state = load_state(cls, row["state"])
                    with host_sink(sink):
                        value = await run_chain(instance, ops, resolve=sink.resolve_arg)
                    encoded = _encode_result(cls, ops, value)
                    state = dump_state(cls, instance.state)
                    sends = await sink.outgoing()
                except Exception as exc:
                    return False, encode_error(exc)
                job = _Commit(name, key, call_id, version, state, encoded, sends, self._now())
                try:
                    found = await store.write(job.run)
                except _Conflict:
                    continue
                if found is not None:
                    return True, found
                self.applied += 1
                if sends:
                    self.runtime.kick()
                return True, encoded
            return False, encode_error(
                CallConflict(f"{name}({key!r}) kept changing under call {call_id!r}; not applied")
            )

    async def _read(self, cls: type[DO], key: str, ops: list[Any]) -> Outcome:
        row = await self._store().fetch_one(
            "SELECT state FROM entities WHERE cls = ? AND id = ?", (cls.__name__, key)
        )
        instance = cls(key)
        # A read is not deduplicated, so calls it makes (a property returning a stub) must
        # not share ids with those of an earlier read either.
        sink = _HostSink(self.runtime, f"read:{uuid.uuid4().hex}", (cls.__name__, key))
        try:
            instance.state = load_state(cls, None if row is None else row["state"])
            with host_sink(sink):
                value = await run_chain(instance, ops, resolve=sink.resolve_arg)
            return True, _encode_result(cls, ops, value)
        except Exception as exc:
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


@dataclass
class _Commit:
    """The one transaction of a call: dedup check, versioned state save, result, sends."""

    cls: str
    key: str
    call_id: str
    version: int | None
    state: str
    result: JSONValue
    sends: list[tuple[str, str, str]]
    now: float

    async def run(self, conn: aiosqlite.Connection) -> JSONValue | None:
        rows = list(
            await conn.execute_fetchall(
                "SELECT result FROM entity_calls WHERE call_id = ?", (self.call_id,)
            )
        )
        if rows:
            found: JSONValue = json.loads(rows[0][0])
            return found
        if self.version is None:
            cursor = await conn.execute(
                "INSERT INTO entities(cls, id, state, version, updated_at) VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT(cls, id) DO NOTHING",
                (self.cls, self.key, self.state, self.now),
            )
        else:
            cursor = await conn.execute(
                "UPDATE entities SET state = ?, version = version + 1, updated_at = ? "
                "WHERE cls = ? AND id = ? AND version = ?",
                (self.state, self.now, self.cls, self.key, self.version),
            )
        if cursor.rowcount != 1:
            raise _Conflict()
        await conn.execute(
            "INSERT INTO entity_calls(call_id, cls, id, result, created_at) VALUES (?, ?, ?, ?, ?)",
            (self.call_id, self.cls, self.key, json.dumps(self.result), self.now),
        )
        if self.sends:
            await conn.executemany(
                "INSERT INTO entity_outbox(call_id, cls, request, created_at, next_try) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(call_id) DO NOTHING",
                [(call, cls, body, self.now, self.now) for call, cls, body in self.sends],
            )
        return None


def _encode_result(cls: type[DO], ops: list[Any], value: Any) -> JSONValue:
    try:
        return serde.encode(value)
    except SerializationError as exc:
        names = ".".join([cls.__name__, *(str(op[1]) for op in ops if op[0] == "get")])
        raise EntityError(f"{names} returned a value that cannot be sent back: {exc}") from None


def _substitute(op: Any, values: dict[int, Any]) -> Any:
    if op[0] != "call":
        return op
    return (
        "call",
        [_swap(a, values) for a in op[1]],
        {k: _swap(v, values) for k, v in op[2].items()},
    )


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

    Their call ids derive from the enclosing call's id and the chain's content (plus an
    occurrence count), so when the enclosing call runs again after a failure, its nested
    calls reuse their ids and the callees do not apply them twice.
    """

    runtime: Entities
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
        return await self.runtime.call(stub, call_id=self.derive(stub, "call"))

    async def resolve_arg(self, value: Any) -> Any:
        return value

    def derive(self, stub: Stub, kind: str) -> str:
        digest = _digest(stub)
        self.seen[digest] += 1
        return f"{self.parent}/{kind}:{digest}:{self.seen[digest]}"

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
