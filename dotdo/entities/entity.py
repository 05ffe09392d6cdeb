"""`Entity`: an addressable instance with persisted state, the base of every DO class.

A DO class is also an entity type: an instance is addressed by class name and id, keeps a
pydantic `State`, and names other instances as `self.Inventory(id)` (a stub). That part
lives here, in the entity layer, so that the entity machinery (the host, the surface a peer
may call, plain mode) works on entities without knowing what a workflow is; `dotdo.DO`
adds the workflow API on top. The class sits at the top of this package because making a
stub needs all of it: the step's runtime inside an engine, plain mode outside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel

from dotdo.entities import registry
from dotdo.entities.plain import plain_sink
from dotdo.entities.runtime import call_from_step, send_from_step, step_sink
from dotdo.entities.state import initial_state
from dotdo.entities.stubs import Sink, StubFactory, context_sink

__all__ = ["Entity"]


class Entity:
    """An addressable instance: `entity_id`, its `State`, stubs to other instances."""

    __dotdo_base__: ClassVar[bool] = True
    """dotdo's own machinery, not the app's: never offered to callers, its annotations not
    the app's types. Read from each class's own namespace, so subclasses are the app's."""
    __dotdo_entity__: ClassVar[bool] = True
    State: ClassVar[type[BaseModel] | None] = None
    """The pydantic model of an instance's persisted state (`State = InventoryState`, or a
    nested `class State(BaseModel)`); every field needs a default, since a new instance
    starts from `State()`. None: the entity keeps no state."""

    def __init__(self, entity_id: str = "default", *, run_id: str | None = None) -> None:
        self.entity_id = entity_id
        self.run_id = run_id

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        registry.register(cls)

    def __getattr__(self, name: str) -> Any:
        """`self.Inventory(id)`: a stub for another instance (see `dotdo.entities`)."""
        if name[:1].isupper():
            sink: Sink | None = context_sink() or step_sink(self)
            return StubFactory(name, sink or plain_sink(self))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def state(self) -> Any:
        """This instance's `State`, loaded for an entity call and saved with its result."""
        found = self.__dict__.get("_dotdo_state")
        if found is None and type(self).State is not None:
            found = self.__dict__["_dotdo_state"] = initial_state(type(self))
        return found

    @state.setter
    def state(self, value: Any) -> None:
        self.__dict__["_dotdo_state"] = value

    async def __dotdo_call__(self, chain: Callable[[], Any]) -> Any:
        """Target of a compiled `await self.Inventory(id).reserve(...)` step: send the chain."""
        return await call_from_step(self, chain)

    async def __dotdo_send__(self, chain: Callable[[], Any]) -> None:
        """Target of a compiled fire-and-forget `self.User(id).notify(...)` statement."""
        await send_from_step(self, chain)
