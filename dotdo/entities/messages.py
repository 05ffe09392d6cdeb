"""The wire format: one batch pushes chains, pulls results; errors travel as values.

In the spirit of Cap'n Web's HTTP batch mode. A request is

    {"v": 1,
     "push": [{"id": 1, "call": "<db id>:run-7:Inventory.reserve",
               "target": ["Inventory", "w1"],
               "ops": [["get", "reserve"], ["call", [<arg>...], {<name>: <arg>}]]}, ...],
     "pull": [1]}

Each pushed chain gets an import id; an argument may be a reference to an earlier import of
the same batch (an `ImportRef`, so `Shipping.schedule(Inventory.reserve(...))` is one round
trip). `call` is the call id the callee deduplicates on. Values are `dotdo.engine.serde`
JSON, so a pydantic model, a datetime or a tuple arrives as itself. The answer is

    {"v": 1, "results": [{"id": 1, "ok": <value>} | {"id": 1, "error": <exception>}]}

with one result per pulled id. A chain that fails rejects every chain that depends on it,
with the same error, in the same answer.

Both directions are network data (docs/security.md): `parse_json` bounds what a body may
be, requests decode with `serde.decode(..., wire=True)` (nothing imported, no code rebuilt,
only registered data classes), and each pushed chain carries the text and digest of its
hops that the callee records with its call id.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dotdo import errors
from dotdo.engine import serde
from dotdo.engine.serde import JSONValue
from dotdo.entities.stubs import Op, Stub, sent_prefix
from dotdo.errors import (
    ArgumentError,
    DotdoError,
    PermanentError,
    ProtocolError,
    SerializationError,
    StepTimeout,
)

__all__ = [
    "MAX_BODY",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_OPS",
    "VERSION",
    "ImportRef",
    "Item",
    "Outcome",
    "build_batch",
    "claim_chain",
    "decode_request",
    "decode_results",
    "describe_ops",
    "encode_error",
    "encode_request",
    "encode_results",
    "parse_json",
]

VERSION = 1
MAX_ITEMS = 1000
MAX_BODY = 8 * 1024 * 1024
MAX_DEPTH = 200
"""Nesting of a message's JSON: far above what values need, far below the stack's limit."""
MAX_OPS = 64
MAX_CALL_ID = 1000
MAX_KEY = 1000

Outcome = tuple[bool, JSONValue]
"""(True, encoded value) or (False, encoded exception)."""


@dataclass(frozen=True)
class ImportRef:
    """An argument that is the result of an earlier chain of the same batch."""

    id: int


# What the wire may name besides the app's own types: import references, and the errors of
# dotdo and of cross-DO calls (so a remote refusal comes back as itself, with its policy).
serde.register_types(
    ImportRef,
    DotdoError,
    PermanentError,
    StepTimeout,
    SerializationError,
    *(
        getattr(errors, name)
        for name in errors.__all__
        if getattr(errors, name).__module__ == "dotdo.entities"
    ),
)


@dataclass
class Item:
    """One pushed chain; `chain` and `digest` (of its hops and arguments as they travel)
    are what the callee records with the call id, to refuse a reused id."""

    id: int
    call: str
    cls: str
    key: str
    ops: list[Op]
    chain: str = ""
    digest: str = ""

    def refs(self) -> set[int]:
        found: set[int] = set()
        for op in self.ops:
            if op[0] == "call":
                _collect(op[1], found)
                _collect(op[2], found)
        return found


def _collect(value: Any, found: set[int]) -> None:
    if isinstance(value, ImportRef):
        found.add(value.id)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _collect(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, found)


# ------------------------------------------------------------------------ requests
async def build_batch(
    stub: Stub,
    call_id: str,
    *,
    together: Callable[[Stub], bool],
    elsewhere: Callable[[Stub, str], Awaitable[Any]],
) -> tuple[list[Item], int]:
    """The batch that sends `stub`: stubs among its arguments become pipelined imports.

    A stub argument that can travel `together` with the chain is pushed before the chain
    that uses it; any other is resolved first by `elsewhere`. Nested call ids derive from
    `call_id` in a fixed order (`call_id#1`, `#2`...), so a retry of the batch reuses them.
    Returns the items and the import id of `stub` itself.
    """
    claim_chain(stub)
    items: list[Item] = []
    counter = itertools.count(1)

    async def lift(value: Any) -> Any:
        if isinstance(value, Stub):
            if sent_prefix(value) is not None:
                return await value  # already on its way: use its answer
            nested = f"{call_id}#{next(counter)}"
            if together(value):
                return ImportRef(await add(value, nested))
            return await elsewhere(value, nested)
        if isinstance(value, list):
            return [await lift(v) for v in value]
        if isinstance(value, tuple):
            return tuple([await lift(v) for v in value])
        if isinstance(value, dict):
            return {k: await lift(v) for k, v in value.items()}
        return value

    async def add(chain: Stub, ident: str) -> int:
        ops: list[Op] = []
        for op in chain.ops:
            if op[0] == "call":
                args = [await lift(a) for a in op[1]]
                kwargs = {k: await lift(v) for k, v in op[2].items()}
                ops.append(("call", args, kwargs))
            else:
                ops.append(op)
        items.append(Item(len(items) + 1, ident, chain.target[0], chain.target[1], ops))
        return len(items)

    pull = await add(stub, call_id)
    return items, pull


def claim_chain(stub: Stub) -> None:
    """Claim every stub among the arguments before anything awaits, so an eager sink does
    not also send one of them on its own while the batch is being built."""
    todo: list[Any] = [stub]
    while todo:
        value = todo.pop()
        if isinstance(value, Stub):
            value.claim()
            for op in value.ops:
                if op[0] == "call":
                    todo.extend(op[1])
                    todo.extend(op[2].values())
        elif isinstance(value, list | tuple):
            todo.extend(value)
        elif isinstance(value, dict):
            todo.extend(value.values())


def encode_request(items: list[Item], pull: list[int]) -> dict[str, JSONValue]:
    """The request as JSON data; an argument that cannot be encoded is an ArgumentError."""
    push: list[JSONValue] = []
    for item in items:
        ops: list[JSONValue] = []
        for op in item.ops:
            if op[0] == "call":
                try:
                    args = serde.encode(list(op[1]))
                    kwargs = serde.encode(dict(op[2]))
                except SerializationError as exc:
                    raise ArgumentError(
                        f"an argument of {_describe(item)} cannot be sent: {exc}"
                    ) from None
                ops.append(["call", args, kwargs])
            elif op[0] == "item":
                try:
                    ops.append(["item", serde.encode(op[1])])
                except SerializationError as exc:
                    raise ArgumentError(
                        f"a key of {_describe(item)} cannot be sent: {exc}"
                    ) from None
            else:
                ops.append([op[0], op[1]])
        push.append({"id": item.id, "call": item.call, "target": [item.cls, item.key], "ops": ops})
    return {"v": VERSION, "push": push, "pull": list(pull)}


def _describe(item: Item) -> str:
    names = [str(op[1]) for op in item.ops if op[0] == "get"]
    return ".".join([item.cls, *names])


def parse_json(body: bytes) -> Any:
    """A message body as JSON data; ProtocolError (never anything else) if it is not one.

    Besides the size cap: nesting deeper than MAX_DEPTH, numbers too long to convert, text
    that is not UTF-8 and lone surrogates (which no database or encoder accepts) are refused.
    """
    if len(body) > MAX_BODY:
        raise ProtocolError(f"the message is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except RecursionError:
        raise ProtocolError(f"the message nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the message body is not JSON: {_short(exc)}") from None
    _check_depth(data)
    if _SURROGATE.search(body):
        _check_text(data)
    return data


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_depth(data: Any) -> None:
    todo: list[tuple[Any, int]] = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if type(value) is list:
            items: Iterable[Any] = value
        elif type(value) is dict:
            items = value.values()
        else:
            continue
        if depth >= MAX_DEPTH:
            raise ProtocolError(f"the message nests deeper than {MAX_DEPTH} levels")
        todo.extend((v, depth + 1) for v in items)


def _check_text(data: Any) -> None:
    todo = [data]
    while todo:
        value = todo.pop()
        if type(value) is str:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ProtocolError("the message has text with a lone surrogate") from None
        elif type(value) is list:
            todo.extend(value)
        elif type(value) is dict:
            todo.extend(value)
            todo.extend(value.values())


def decode_request(data: Any) -> tuple[list[Item], list[int]]:
    """Check the shape of a request and decode its values; ProtocolError says what is wrong.

    Values decode as network data (`serde.decode(..., wire=True)`): JSON values and the data
    classes this process registered, never a function, a class, a module or an exception
    outside `Exception`, and nothing is imported. A request built in this process (the local
    route) is decoded the same way, so a call behaves the same wherever its callee lives.
    """
    try:
        return _decode_request(data)
    except RecursionError:
        raise ProtocolError(f"the message nests deeper than {MAX_DEPTH} levels") from None


def _decode_request(data: Any) -> tuple[list[Item], list[int]]:
    if not isinstance(data, dict):
        raise ProtocolError("a message is a JSON object with 'v', 'push' and 'pull'")
    if data.get("v") != VERSION or type(data.get("v")) is not int:
        raise ProtocolError(f"unsupported message version {_short(data.get('v'))} (this is 1)")
    push, pull = data.get("push"), data.get("pull")
    if not isinstance(push, list) or not isinstance(pull, list):
        raise ProtocolError("'push' and 'pull' must be lists")
    if len(push) > MAX_ITEMS or len(pull) > MAX_ITEMS:
        raise ProtocolError(f"a message pushes and pulls at most {MAX_ITEMS} chains")
    items: list[Item] = []
    seen: set[int] = set()
    for n, raw in enumerate(push):
        if not isinstance(raw, dict):
            raise ProtocolError(f"push[{n}] must be an object")
        ident, call, target, ops = raw.get("id"), raw.get("call"), raw.get("target"), raw.get("ops")
        if type(ident) is not int or ident in seen:
            raise ProtocolError(f"push[{n}].id must be a new integer")
        if not isinstance(call, str) or not call or len(call) > MAX_CALL_ID:
            raise ProtocolError(f"push[{n}].call must be a call id of 1 to {MAX_CALL_ID} chars")
        if (
            not isinstance(target, list)
            or len(target) != 2
            or not all(isinstance(t, str) and 0 < len(t) <= MAX_KEY for t in target)
            or not target[0].isidentifier()
        ):
            raise ProtocolError(f"push[{n}].target must be [class name, instance id]")
        if not isinstance(ops, list) or not all(isinstance(op, list) and op for op in ops):
            raise ProtocolError(f"push[{n}].ops must be a list of hops")
        if len(ops) > MAX_OPS:
            raise ProtocolError(f"push[{n}]: a chain has at most {MAX_OPS} hops")
        try:
            decoded = [_decode_op(op) for op in ops]
        except SerializationError as exc:
            raise ProtocolError(f"push[{n}]: {_short(exc)}") from None
        except ProtocolError as exc:
            raise ProtocolError(f"push[{n}]: {exc}") from None
        item = Item(
            id=ident,
            call=call,
            cls=target[0],
            key=target[1],
            ops=decoded,
            chain=describe_ops(ops),
            digest=_digest(ops),
        )
        missing = item.refs() - seen
        if missing:
            raise ProtocolError(f"push[{n}] refers to imports {sorted(missing)} not pushed before")
        seen.add(ident)
        items.append(item)
    if not all(type(p) is int and p in seen for p in pull):
        raise ProtocolError("'pull' must list ids of pushed chains")
    return items, pull


def _decode_op(op: list[Any]) -> Op:
    kind = op[0]
    if kind == "call" and len(op) == 3:
        args, kwargs = serde.decode(op[1], wire=True), serde.decode(op[2], wire=True)
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ProtocolError("a call hop takes a list of args and an object of kwargs")
        _check_refs(args)
        _check_refs(kwargs)
        return ("call", args, kwargs)
    if kind == "item" and len(op) == 2:
        return ("item", serde.decode(op[1], wire=True))
    if kind == "get" and len(op) == 2:
        return ("get", op[1])
    raise ProtocolError(
        f'a hop is ["get", name], ["item", key] or ["call", args, kwargs], not {_short(op)}'
    )


def _check_refs(value: Any) -> None:
    """Import references are pipelined results: an integer id, and only inside arguments."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, ImportRef):
            if type(item.id) is not int:
                raise ProtocolError(f"an import reference has an integer id, not {_short(item.id)}")
        elif isinstance(item, list | tuple):
            todo.extend(item)
        elif isinstance(item, dict):
            if any(_holds_ref(k) for k in item):
                raise ProtocolError("an import reference cannot be a dict key")
            todo.extend(item.values())
        elif isinstance(item, set | frozenset) and any(_holds_ref(i) for i in item):
            raise ProtocolError("an import reference cannot be a member of a set")


def _holds_ref(value: Any) -> bool:
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, ImportRef):
            return True
        if isinstance(item, tuple | frozenset):
            todo.extend(item)
    return False


def describe_ops(ops: list[Any]) -> str:
    """A chain as text without its values (`reserve(…)`, `profile.email`), for records."""
    text = ""
    for op in ops[:MAX_OPS]:
        kind = op[0] if isinstance(op, list | tuple) and op else None
        if kind == "get" and len(op) == 2 and isinstance(op[1], str):
            text += f".{op[1][:100]}"
        elif kind == "item":
            text += "[…]"
        else:
            text += "(…)"
    return text.lstrip(".")


def _digest(ops: list[Any]) -> str:
    text = json.dumps(ops, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _short(value: object) -> str:
    text = (
        value
        if isinstance(value, str)
        else str(value)
        if isinstance(value, Exception)
        else repr(value)
    )
    return text if len(text) <= 200 else text[:200] + "…"


# ------------------------------------------------------------------------- results
def encode_error(error: BaseException) -> JSONValue:
    """An error as its structured record; a PermanentError is marked so, so that a caller
    that does not have its class still knows not to retry (PermanentRemoteError)."""
    record = serde.encode(error)
    if isinstance(error, PermanentError) and isinstance(record, dict):
        record["permanent"] = True
    return record


def encode_results(outcomes: dict[int, Outcome], pull: list[int]) -> dict[str, JSONValue]:
    results: list[JSONValue] = []
    for ident in pull:
        ok, value = outcomes[ident]
        results.append({"id": ident, "ok" if ok else "error": value})
    return {"v": VERSION, "results": results}


def decode_results(data: Any) -> dict[int, Outcome]:
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ProtocolError("the server's answer is not a dotdo results message")
    results = data.get("results")
    if not isinstance(results, list):
        raise ProtocolError("the server's answer has no results list")
    out: dict[int, Outcome] = {}
    for raw in results:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), int):
            raise ProtocolError("the server's answer has a malformed result")
        if "ok" in raw:
            out[raw["id"]] = (True, raw["ok"])
        elif "error" in raw:
            out[raw["id"]] = (False, raw["error"])
        else:
            raise ProtocolError("a result has neither 'ok' nor 'error'")
    return out
