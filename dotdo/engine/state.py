"""A run's state as stored: the locals frame, attempts, compensation stack, as JSON.

Each local is encoded on its own so that one that cannot be stored is reported by name and
by the line that assigned it, rather than as an anonymous failure deep inside a dump.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from dotdo.compiler.codegen import Frame
from dotdo.compiler.ir import Graph
from dotdo.engine import serde
from dotdo.engine.interpreter import CompEntry, RunState
from dotdo.engine.workflow import Workflow
from dotdo.errors import DotdoError, SerializationError

__all__ = ["bind_inputs", "decode_state", "dump_error", "encode_state"]


def bind_inputs(wf: Workflow, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Map call arguments to parameter names, each converted to its annotated type."""
    signature = wf.signature()
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise DotdoError(f"bad arguments for {wf.qualname}: {exc}") from None
    bound.apply_defaults()
    hints = wf.type_hints()
    params = list(signature.parameters.values())[1:]
    kinds = {p.name: p.kind for p in params}
    out: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:
        annotation = hints.get(name, inspect.Parameter.empty)
        if kinds.get(name) is inspect.Parameter.VAR_POSITIONAL:
            out[name] = tuple(serde.coerce(v, annotation) for v in value)
        elif kinds.get(name) is inspect.Parameter.VAR_KEYWORD:
            out[name] = {k: serde.coerce(v, annotation) for k, v in value.items()}
        else:
            out[name] = serde.coerce(value, annotation)
    return out


def encode_state(state: RunState, graph: Graph, live: frozenset[str] | None = None) -> str:
    """The run state as JSON; a local that cannot be stored is named with its line.

    With `live`, only those locals are kept: the others are never read again.
    """
    frame: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    owners: dict[int, str] = {}
    for name, value in state.frame.items():
        if live is not None and name not in live:
            continue
        if isinstance(value, list | dict | set | bytearray):
            # Two locals naming one mutable object must still share it after a resume.
            first = owners.setdefault(id(value), name)
            if first != name:
                aliases[name] = first
                continue
        try:
            frame[name] = serde.encode(value)
        except SerializationError as exc:
            line = graph.local_lines.get(name, 0)
            shown = name if not name.startswith("__") else "a temporary value"
            raise SerializationError(
                f"local {shown!r} (assigned at {graph.file}:{line}) holds a "
                f"{type(value).__qualname__}, which cannot be persisted: {exc}"
            ) from None
    body: dict[str, Any] = {
        "frame": frame,
        "attempt": state.attempt,
        "comp": [[c.key, c.method, serde.encode(c.value)] for c in state.comp],
        "compensating": serde.encode(state.compensating) if state.compensating else None,
    }
    if aliases:
        body["aliases"] = aliases
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def decode_state(text: str, node: str) -> RunState:
    """A stored run state; a row of any other shape is a SerializationError, never a crash
    of whatever loop is reading it."""
    try:
        return _decode_state(text, node)
    except SerializationError:
        raise
    except (ValueError, TypeError, KeyError, NameError, AttributeError, RecursionError) as exc:
        raise SerializationError(f"stored run state is malformed ({type(exc).__name__})") from None


def _decode_state(text: str, node: str) -> RunState:
    body = json.loads(text)
    if not isinstance(body, dict) or not isinstance(body.get("frame"), dict):
        raise TypeError("not a state object")
    frame = Frame({k: serde.decode(v) for k, v in body["frame"].items()})
    for name, first in body.get("aliases", {}).items():
        frame[name] = frame[first]
    comp = [CompEntry(key=k, method=m, value=serde.decode(v)) for k, m, v in body["comp"]]
    compensating = body.get("compensating")
    error = serde.decode(compensating) if compensating is not None else None
    return RunState(
        node=node,
        frame=frame,
        attempt=_int(body.get("attempt", 0)),
        comp=comp,
        compensating=error if isinstance(error, BaseException) else None,
    )


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise TypeError("attempt is not a count")
    return value


def dump_error(error: BaseException | None) -> str | None:
    return serde.dumps(error) if error is not None else None
