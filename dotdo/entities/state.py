"""An entity instance's persisted state: its `State` model, new, loaded and saved.

A new instance starts from `State()`; the store keeps the model's JSON. Kept apart from the
host so that the `Entity` class (a new instance's `state`) and the host (loading and saving
it around a call) share one definition.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dotdo.errors import EntityError

__all__ = ["dump_state", "initial_state", "load_state"]


def initial_state(cls: type[Any]) -> BaseModel | None:
    """A new instance's state: `State()`, which needs a default for every field."""
    model = cls.State
    if model is None:
        return None
    try:
        fresh: BaseModel = model()
        return fresh
    except Exception as exc:
        raise EntityError(
            f"{cls.__name__}.State cannot be created empty ({exc.__class__.__name__}: {exc}); "
            "give every field a default"
        ) from None


def load_state(cls: type[Any], text: str | None) -> Any:
    if cls.State is None:
        return None
    if text is None or text == "null":
        return initial_state(cls)
    return cls.State.model_validate_json(text)


def dump_state(cls: type[Any], state: Any) -> str:
    model = cls.State
    if model is None:
        return "null"
    checked: BaseModel = state if isinstance(state, model) else model.model_validate(state)
    return checked.model_dump_json()
