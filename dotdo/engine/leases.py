"""Who owns a run: lease owner ids and how to tell that an owner has died.

A lease expires after its time-to-live, but waiting that long after a crash is needless when
the owner's death can be seen: same host and its process is gone, or same process and the
engine that held it is closed (a simulated crash in a test). The store applies these rules
when it claims (`dotdo.engine.store`); the rows are its business, the rules are here.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

__all__ = ["is_dead", "lease_is_free", "new_owner", "release_owner"]

_HOST = (os.environ.get("DOTDO_HOST_ID") or socket.gethostname()).replace(":", "_")
"""This machine's id in owner ids. $DOTDO_HOST_ID overrides the host name: set it when two
machines (containers) could share a name, since a dead owner is recognised by its pid only
when its host id is ours; tests set it to make processes look like separate machines."""
_LIVE: set[str] = set()


def new_owner() -> str:
    owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _LIVE.add(owner)
    return owner


def release_owner(owner: str) -> None:
    _LIVE.discard(owner)


def is_dead(owner: str) -> bool:
    """True when `owner` certainly no longer runs anything."""
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in _LIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet still answers kill(0); it is dead."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _claimable(owner: str | None, until: float | None, now: float) -> bool:
    return owner is None or until is None or until < now or is_dead(owner)


def lease_is_free(owner: str | None, until: float | None) -> bool:
    """Whether another owner may take this lease now (none, expired, or its owner died)."""
    return _claimable(owner, until, time.time())
