"""What the engine takes from its own database, and on what terms (docs/security.md).

Rows are data written by whoever can write the file. Values decode through `serde`, which
never imports a module nor rebuilds code; this module covers the rest:

- **Graphs.** The `graphs` table is the one place the store holds code: an in-flight run
  keeps executing the graph it pinned even after the app's code changed, so the engine
  compiles that stored body. It does so only after parsing it, recomputing its hash from
  the parsed, canonical form and finding the hash the run pinned, and checking that it is a
  graph of the run's own workflow. With a secret (`Engine(secret=...)` or `DOTDO_SECRET`)
  the engine also signs every graph it stores (an HMAC kept in `meta`) and refuses a stored
  graph without a valid signature, so that a writer of the database cannot make it run a
  graph of their own under a new hash. Nothing in a graph row names a module to import; the
  `graphs.module` column is informational and nothing reads it.
- **Run states.** A decoded state may only stand at a node of its graph and may only name,
  on its compensation stack, undo methods that the graph declares: a row cannot make the
  engine call an arbitrary attribute of the DO instance.
- **Types.** `trust_types_of` tells serde which data classes the registered app uses, so a
  fresh process decodes its rows without importing anything.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import typing
from typing import Any

from dotdo.compiler.ir import Graph, StepNode
from dotdo.engine import serde
from dotdo.engine.interpreter import RunState
from dotdo.engine.workflow import Workflow
from dotdo.errors import GraphIntegrityError, SerializationError

__all__ = [
    "check_mac",
    "check_state",
    "graph_mac",
    "mac_key",
    "secret_bytes",
    "source_of",
    "stored_graph",
    "trust_types_of",
]


# ------------------------------------------------------------------------------ graphs
def secret_bytes(secret: str | bytes | None) -> bytes | None:
    """The signing key: the argument, else $DOTDO_SECRET; None (no signing) when empty."""
    if secret is None:
        secret = os.environ.get("DOTDO_SECRET") or None
    if not secret:
        return None
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def mac_key(graph_hash: str) -> str:
    """The `meta` key holding a graph's signature (no schema change needed)."""
    return f"graph-mac:{graph_hash}"


def graph_mac(secret: bytes, graph: Graph) -> str:
    """HMAC-SHA256 over the graph's canonical JSON (which also fixes its hash)."""
    message = b"dotdo-graph-v1\0" + graph.to_json().encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def stored_graph(body: str | None, graph_hash: str, *, name: str | None, run_id: str) -> Graph:
    """The graph a run pinned, parsed from its stored body and verified against its hash
    (and, when `name` is given, found to belong to that workflow). Never compiles it."""
    where = f"graph {graph_hash} of run {run_id!r}"
    if body is None:
        raise GraphIntegrityError(f"{where} is missing from the store", graph_hash=graph_hash)
    try:
        graph = Graph.from_json(body)
        actual = graph.hash
    except (ValueError, RecursionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GraphIntegrityError(
            f"{where} is not a valid graph ({first}); refusing to run it", graph_hash=graph_hash
        ) from None
    if actual != graph_hash:
        raise GraphIntegrityError(
            f"{where} does not match its hash (the stored body hashes to {actual}): it was "
            "changed after it was stored; refusing to run it",
            graph_hash=graph_hash,
        )
    if name is not None and graph.name != name:
        raise GraphIntegrityError(
            f"{where} is a graph of {graph.name!r}, not of {name!r}; refusing to run it",
            graph_hash=graph_hash,
        )
    return graph


def check_mac(secret: bytes, graph: Graph, mac: str | None, run_id: str) -> None:
    """Refuse a stored graph that this engine's secret did not sign."""
    where = f"graph {graph.hash} of run {run_id!r}"
    if mac is None:
        raise GraphIntegrityError(
            f"{where} is not signed, and this engine has a secret (DOTDO_SECRET): it runs "
            "only stored graphs signed with it; refusing to run it",
            graph_hash=graph.hash,
        )
    if not hmac.compare_digest(mac.encode(), graph_mac(secret, graph).encode()):
        raise GraphIntegrityError(
            f"{where} has a signature that does not match this engine's secret; refusing to run it",
            graph_hash=graph.hash,
        )


def check_state(state: RunState, graph: Graph, run_id: str) -> None:
    """A decoded state that its graph could have produced (see the module docstring)."""
    if state.node not in graph.nodes:
        raise SerializationError(
            f"run {run_id!r} is stored at node {state.node!r}, which its graph does not have"
        )
    undo = {n.compensate for n in graph.nodes.values() if isinstance(n, StepNode)} - {None}
    for entry in state.comp:
        if entry.method not in undo:
            raise SerializationError(
                f"run {run_id!r} has {entry.method!r} on its compensation stack, which its "
                "graph declares as no step's undo"
            )


def source_of(wf: Workflow) -> str:
    """Where this workflow's code lives (a module, or a .flow file), kept in `graphs.module`
    for people reading the database. Nothing imports it: a process that drives the run
    names its code itself (`--app`)."""
    if wf.graph.file.endswith(".flow"):
        return wf.graph.file
    fn = getattr(wf, "fn", None)
    return str(getattr(fn, "__module__", "")) or wf.qualname


# ------------------------------------------------------------------------------- types
def trust_types_of(cls: type, *functions: Any) -> None:
    """Tell serde which data classes this app's rows and answers may name: those its
    annotations use (workflows, steps, entity methods, `State`), and the already-imported
    ones of its own package. Decoding a row then never needs to import anything."""
    if cls is not type(None) and cls.__module__ != "builtins":
        serde.trust_package(cls.__module__)
    found: list[Any] = [getattr(cls, "State", None)]
    members = [  # the app's own members: dotdo's base classes only bring machinery
        v for klass in cls.__mro__ if not _is_dotdo(klass) for v in vars(klass).values()
    ]
    for member in [*members, *functions]:
        wrapped = getattr(member, "fn", None)  # a step or workflow wrapper: its function
        fn = getattr(wrapped or member, "__func__", wrapped or member)
        if not callable(fn) or isinstance(fn, type):
            continue
        module = getattr(fn, "__module__", None)
        if wrapped is not None and isinstance(module, str):
            serde.trust_package(module)  # a .flow step's module, allowed by its sandbox
        hints = getattr(member, "type_hints", None)
        try:
            found.extend((hints() if callable(hints) else typing.get_type_hints(fn)).values())
        except Exception:  # an unresolvable annotation: its types must come from elsewhere
            continue
    serde.register_types(*found)


def _is_dotdo(klass: type) -> bool:
    """`object` and dotdo's base classes (`DO`, `Entity`), which mark themselves so."""
    return klass is object or bool(vars(klass).get("__dotdo_base__", False))
