"""Run ids and entity ids: what dotdo accepts, and when a second start is the same run.

Ids come from users, command lines and the network, and they travel far: into approval ids
(`run_id/step`), log lines, terminal tables, file names a user may derive from them, URLs.
So an id is refused unless it is 1 to 200 printable characters with no whitespace, no
control or format characters (newlines, bidi overrides), no path separator and no `..`.
The ids the engine makes itself (`uuid4().hex`, `Workflow@2024-01-01T09:00:00Z` for a
schedule's fire, `Workflow:42` for an event handler) all pass.

A start with an existing run id is idempotent only when it asks for the same thing: same
workflow, same entity, same input. Inputs are compared by their stored JSON, parsed and
written back with sorted keys, so the order of keys in a JSON object does not matter but
`1` and `1.0` still differ, as they do to the workflow.
"""

from __future__ import annotations

import json

from dotdo.errors import InvalidId

__all__ = ["MAX_ID_LENGTH", "check_id", "same_json", "shown_id"]

MAX_ID_LENGTH = 200


def shown_id(value: str, limit: int = 60) -> str:
    """An id as an error message quotes it: repr (so control characters show), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_id(value: object, what: str = "run id") -> str:
    """`value` if it is an acceptable id, else InvalidId saying what is wrong with it."""
    if not isinstance(value, str):
        raise InvalidId(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidId(f"{what} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(
            f"{what} {shown_id(value)} is {len(value)} characters long; "
            f"at most {MAX_ID_LENGTH} are allowed"
        )
    for char in value:
        if char.isspace() or not char.isprintable():
            raise InvalidId(
                f"{what} {shown_id(value)} contains {char!r}: ids are printable characters "
                "without spaces, newlines or control characters"
            )
    if "/" in value or "\\" in value or ".." in value:
        raise InvalidId(f"{what} {shown_id(value)} looks like a path: no '/', '\\' or '..'")
    return value


def same_json(stored: str, given: str) -> bool:
    """Whether two stored JSON texts hold the same value (key order aside)."""
    if stored == given:
        return True
    try:
        return _canonical(stored) == _canonical(given)
    except (ValueError, RecursionError):
        return False


def _canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), allow_nan=False)
