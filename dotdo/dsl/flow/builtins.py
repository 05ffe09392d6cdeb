"""What a `.flow` expression may reach: a short list of pure functions, types, errors.

The checker allows calls only to these, to declared steps and to imported types; the code
the compiler generates runs against a namespace built here whose `__builtins__` is this
list and nothing else. So even a mistake in the checker cannot hand a flow `open`,
`__import__` or `getattr`: the names are simply not there at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dotdo.compiler.loop_budget import tick
from dotdo.dsl.flow.diagnostics import FlowFailure
from dotdo.errors import PermanentError, StepInterrupted, StepTimeout

__all__ = [
    "BUILTINS",
    "EXCEPTIONS",
    "INTERNAL_FIELDS",
    "RECORDED",
    "RESERVED",
    "TYPES",
    "Arity",
    "fail_value",
    "iterable",
    "runtime_namespace",
]


def _lower(text: str) -> str:
    return str(text).lower()


def _upper(text: str) -> str:
    return str(text).upper()


@dataclass(frozen=True)
class Arity:
    """How a builtin may be called: positional counts and the keyword names it takes."""

    fn: Callable[..., Any]
    min: int
    max: int | None
    keywords: frozenset[str] = frozenset()
    doc: str = ""


BUILTINS: dict[str, Arity] = {
    "abs": Arity(abs, 1, 1, doc="absolute value"),
    "all": Arity(all, 1, 1, doc="true when every item is true"),
    "any": Arity(any, 1, 1, doc="true when some item is true"),
    "bool": Arity(bool, 0, 1, doc="true or false"),
    "dict": Arity(dict, 0, 1, doc="a copy of a dict"),
    "float": Arity(float, 0, 1, doc="a decimal number"),
    "int": Arity(int, 0, 2, doc="a whole number"),
    "len": Arity(len, 1, 1, doc="number of items (or characters)"),
    "list": Arity(list, 0, 1, doc="a list of the items"),
    "lower": Arity(_lower, 1, 1, doc="text in lower case"),
    "max": Arity(max, 1, None, frozenset({"default"}), doc="largest item or argument"),
    "min": Arity(min, 1, None, frozenset({"default"}), doc="smallest item or argument"),
    "range": Arity(range, 1, 3, doc="the numbers from start to stop"),
    "round": Arity(round, 1, 2, frozenset({"ndigits"}), doc="rounded number"),
    "sorted": Arity(sorted, 1, 1, frozenset({"reverse"}), doc="a sorted list"),
    "str": Arity(str, 0, 1, doc="text"),
    "sum": Arity(sum, 1, 2, frozenset({"start"}), doc="total of the items"),
    "upper": Arity(_upper, 1, 1, doc="text in upper case"),
}
"""Pure functions an expression may call; the whole run-time builtins of a flow."""

RECORDED = {"now": "the current time", "uuid": "a fresh UUID", "random": "a number in [0, 1)"}
"""Nondeterministic values: recorded once (a RecordNode), so a resumed run sees the same."""

TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
    "datetime": datetime,
    "Any": Any,
    "null": type(None),
}
"""Type names usable in parameter and return annotations without an import."""

EXCEPTIONS: dict[str, type[BaseException]] = {
    "Error": Exception,
    "FlowFailure": FlowFailure,
    "PermanentError": PermanentError,
    "StepTimeout": StepTimeout,
    "StepInterrupted": StepInterrupted,
}
"""Errors an `except` may name without an import (`Error` catches any error)."""

RESERVED = frozenset({"self", "timedelta"}) | set(RECORDED)
"""Names the generated code relies on (`self`, `timedelta`) or gives a meaning to."""


INTERNAL_FIELDS = frozenset(
    {
        "tb_frame",
        "tb_next",
        "f_back",
        "f_builtins",
        "f_code",
        "f_globals",
        "f_locals",
        "gi_code",
        "gi_frame",
        "cr_code",
        "cr_frame",
        "ag_code",
        "ag_frame",
        "co_code",
        "func_globals",
        "mro",
    }
)
"""Fields without underscores that still lead to interpreter internals (frames, code,
module globals). No value a flow can build has them; refusing them is cheap insurance."""


def fail_value(value: object) -> BaseException:
    """What `fail <value>` raises: the value itself when it is an error, else FlowFailure."""
    if isinstance(value, BaseException):
        return value
    return FlowFailure(str(value))


def iterable(value: Any) -> Any:
    """What a `for` loop over `value` walks: sequences in place, anything else as a list."""
    return value if type(value) in (list, tuple, range, str) else list(value)


def runtime_namespace(types: Mapping[str, Any]) -> dict[str, Any]:
    """Globals for a flow's compiled node code: builtins, types, errors, a few helpers."""
    namespace: dict[str, Any] = {"__builtins__": {n: a.fn for n, a in BUILTINS.items()}}
    namespace.update(EXCEPTIONS)
    namespace.update(types)
    namespace["timedelta"] = timedelta
    namespace["__flow_fail"] = fail_value
    namespace["__flow_isinstance"] = isinstance
    namespace["__flow_iter"] = iterable
    namespace["__flow_tick"] = tick
    return namespace
