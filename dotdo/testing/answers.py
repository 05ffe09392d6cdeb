"""Scripted answers to a run's waits, so `assert_crash_safe` can drive approvals and events.

A workflow that waits for a person or an event cannot be replayed by the crash checker on its
own: something must answer. The answers have to be the same in the clean reference run and in
every crashed-and-resumed run, or the comparison means nothing. So an answer is chosen by
*which wait* asks (its journal key and, for approval chains, its level), never by the order of
the checker's polling, and whether a wait still needs one is read from the database, never
remembered: a decision or an event the dead engine committed is not given twice, one it did
not commit is given again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from dotdo.engine import serde
from dotdo.engine.engine import Engine
from dotdo.engine.models import Approval
from dotdo.engine.records import RunInfo
from dotdo.engine.store.interface import Store
from dotdo.engine.waits import _fits

__all__ = ["Answer", "Approve", "Expire", "Reject", "Respond", "Send", "Waiting"]


@dataclass(frozen=True)
class Waiting:
    """What a hibernated run waits for, as the checker shows it to `respond`."""

    kind: Literal["approval", "event"]
    key: str
    """The wait's journal key: stable across crashes, so it can choose the answer."""
    deadline: datetime | None
    """When the wait gives up by itself (approval deadline, event timeout), if ever."""
    approval: Approval | None = None
    """For approvals: the request (title, amount, approvers, `level`, `waiting_on`)."""
    event: str | None = None
    """For event waits: the event name awaited."""
    match: dict[str, Any] | None = None
    """For event waits: the fields the event's data must equal."""

    @property
    def level(self) -> int:
        """Which approver of a chain is asked (0 for event waits)."""
        return self.approval.level if self.approval is not None else 0


@dataclass(frozen=True)
class Approve:
    """Approve the pending level; `by` defaults to the approver whose turn it is."""

    by: str | None = None
    comment: str | None = None
    value: Any = None


@dataclass(frozen=True)
class Reject:
    """Reject the pending level with a reason; `by` defaults to the approver whose turn it is."""

    reason: str
    by: str | None = None


@dataclass(frozen=True)
class Send:
    """Send the event the run waits for, with `data` (which must fit the wait's match)."""

    data: Any = None


@dataclass(frozen=True)
class Expire:
    """Let the wait run out: the virtual clock jumps to its deadline or timeout."""


Answer = Approve | Reject | Send | Expire
Respond = Callable[[Waiting], Answer] | Sequence[Answer]
"""A function of the wait, or answers given in order, one to each new wait (or level)."""


class Responder:
    """Chooses answers for one checked case (one database), across its crash and resume."""

    def __init__(self, respond: Respond) -> None:
        self._respond = respond
        self._given: dict[tuple[str, int], Answer] = {}

    def answer(self, waiting: Waiting) -> Answer:
        slot = (waiting.key, waiting.level)
        if slot not in self._given:
            if callable(self._respond):
                chosen = self._respond(waiting)
            else:
                if len(self._given) >= len(self._respond):
                    raise LookupError(
                        f"no answer left for {describe(waiting)}: respond= has "
                        f"{len(self._respond)} answer(s), all given to earlier waits"
                    )
                chosen = self._respond[len(self._given)]
            if not isinstance(chosen, Approve | Reject | Send | Expire):
                raise TypeError(
                    f"respond gave {chosen!r} for {describe(waiting)}; expected Approve, "
                    "Reject, Send or Expire"
                )
            self._given[slot] = chosen
        return self._given[slot]


def describe(waiting: Waiting) -> str:
    if waiting.approval is not None:
        return f"approval {waiting.key!r} (waiting on {waiting.approval.waiting_on!r})"
    match = f" matching {waiting.match}" if waiting.match else ""
    return f"event wait {waiting.key!r} for {waiting.event!r}{match}"


async def current_wait(store: Store, info: RunInfo) -> tuple[Waiting | None, bool]:
    """The wait a hibernated run stands at, and whether an answer to it is still in transit.

    In transit: an event that fits the wait is in the outbox but not delivered yet (the
    dispatcher runs on the engine's next tick), so sending another would be a second answer.
    """
    if info.status != "waiting":
        return None, False
    pending_approvals = await store.pending_approvals(info.run_id)
    if pending_approvals:
        approval = serde.loads(pending_approvals[0].body)
        assert isinstance(approval, Approval)
        key = approval.id.removeprefix(f"{info.run_id}/")
        return Waiting("approval", key, approval.deadline, approval=approval), False
    wait = await store.open_wait(info.run_id)
    if wait is None:
        return None, False
    match = json.loads(wait.match) if wait.match else None
    waiting = Waiting("event", wait.key, info.wake_at, event=wait.event, match=match)
    pending = await store.fitting_events(info.run_id, wait.event, wait.since)
    in_transit = any(_fits(serde.loads(e.data), match) for e in pending)
    if not in_transit:
        # The two reads above are not one snapshot: the dispatcher may have handed the wait
        # its event between them (the event then looks neither open nor pending). A wait's
        # event only ever goes from none to taken, so a wait still open now had nothing.
        still = await store.wait(info.run_id, wait.key)
        in_transit = still is None or still.event_id is not None
    return waiting, in_transit


async def give(engine: Engine, waiting: Waiting, answer: Answer) -> None:
    """Apply an answer that is not a jump in time; refusals raise ValueError with the reason."""
    if isinstance(answer, Approve | Reject):
        if waiting.approval is None:
            raise ValueError(f"{type(answer).__name__} given to {describe(waiting)}")
        by = answer.by or waiting.approval.waiting_on or ""
        if isinstance(answer, Approve):
            await engine.approve(
                waiting.approval.id, by=by, comment=answer.comment, value=answer.value
            )
        else:
            await engine.reject(waiting.approval.id, by=by, reason=answer.reason)
    elif isinstance(answer, Send):
        if waiting.event is None:
            raise ValueError(f"Send given to {describe(waiting)}")
        if not _fits(answer.data, waiting.match):
            # It would never be delivered, and the run would wait for ever.
            raise ValueError(f"Send({answer.data!r}) does not fit {describe(waiting)}")
        await engine.send(waiting.event, answer.data)
