"""Who owns a run: lease owner ids and how to tell that an owner has died.

A lease expires after its time-to-live, but waiting that long after a crash is needless when
the owner's death can be seen: same host and its process is gone, or same process and the
engine that held it is closed (a simulated crash in a test).
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["is_dead", "new_owner", "release_owner"]

_HOST = socket.gethostname()
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
    return False
