"""Call identity: a call id names one request of one caller, and the callee holds it to that.

The callee applies each call id once and answers a repeat with the recorded result, so a call
id must never be shared by two different calls, or one of them is silently lost:

- every database has a random identity, `meta.db_id` (created with the schema, migration 4),
  and every call id a database's engine sends starts with it. Two callers on two databases
  that both have a run `order-1` therefore never share an id (a copied database file shares
  its identity: do not run a copy and its original as two callers of the same callee);
- after it come the run id and the step key (`<db>:order-1:Inventory.reserve`, the step's
  idempotency key, iteration-qualified in loops), then `#n` for the n-th chain pipelined as an
  argument, `/<chain digest>:<n>` for the n-th such call from a step body, and
  `<callee db>:<parent>/call:<digest>:<n>` for calls an entity method makes;
- the callee records with each applied id its target (class, instance), its chain as text
  (`reserve(…)`) and a digest of its hops and arguments as they travelled. A repeat must
  match all of them; one that does not is refused with `CallIdReused` (HTTP 409) and is
  never answered with the other call's result.
"""

from __future__ import annotations

import hashlib
from typing import Any

from dotdo.errors import CallIdReused

__all__ = ["check_repeat", "derived", "qualified"]

_LONG = 200


def qualified(db_id: str, local: str) -> str:
    """A call id this database sends: its identity, then what names the call locally."""
    return f"{db_id}:{local}"


def derived(db_id: str, parent: str, kind: str, digest: str, n: int) -> str:
    """The id of the n-th call with this chain digest made while running call `parent`."""
    if len(parent) > _LONG:  # keep ids bounded however deep calls nest
        parent = hashlib.sha256(parent.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{db_id}:{parent}/{kind}:{digest}:{n}"


def check_repeat(
    call_id: str,
    recorded: tuple[Any, Any, Any, Any],
    target: tuple[str, str],
    chain: str,
    digest: str,
) -> None:
    """Refuse a call id whose recorded call (class, instance, chain, digest) is another."""
    cls, key, was_chain, was_digest = recorded
    then = f"{cls}({key!r}).{was_chain}"
    now = f"{target[0]}({target[1]!r}).{chain}"
    if (cls, key) != target or (was_chain is not None and was_chain != chain):
        raise CallIdReused(
            f"call id {call_id!r} was already applied to {then}; it cannot now be {now}"
        )
    if was_digest is not None and was_digest != digest:
        raise CallIdReused(
            f"call id {call_id!r} was already applied to {then} with other arguments; a "
            "repeat must send the same request"
        )
