"""Which classes are entity types: the class registry plain mode resolves names with, and
the line between dotdo's own base classes and the app's.

It sits at the bottom of the package, so that the surface, plain mode and the server can
ask "is this an entity class, and which of its members are the app's?" without importing
the `Entity` class (which sits at the top: it makes stubs, which need all the rest).
"""

from __future__ import annotations

from typing import Any

__all__ = ["base_names", "by_name", "is_base", "is_entity_class", "register"]

_BY_NAME: dict[str, type[Any]] = {}
"""Every entity class by name, the latest definition winning: how plain mode finds the
target of `self.Inventory(id)` without an engine."""


def register(cls: type[Any]) -> None:
    if not is_base(cls):
        _BY_NAME[cls.__name__] = cls


def by_name(name: str) -> type[Any] | None:
    """The latest entity class defined with this name in this process."""
    return _BY_NAME.get(name)


def is_entity_class(value: object) -> bool:
    """An app's entity class (a DO subclass), not one of dotdo's base classes."""
    return (
        isinstance(value, type)
        and bool(getattr(value, "__dotdo_entity__", False))
        and not is_base(value)
    )


def is_base(klass: type) -> bool:
    """`object` and dotdo's own base classes (`Entity`, `DO`), which mark themselves."""
    return klass is object or bool(vars(klass).get("__dotdo_base__", False))


def base_names(cls: type) -> frozenset[str]:
    """Names dotdo's base classes (and object) define: never offered, even overridden."""
    return frozenset(name for klass in cls.__mro__ if is_base(klass) for name in vars(klass))
