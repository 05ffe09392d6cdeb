"""The records that cross the store interface: plain data, JSON text, epoch seconds.

What each holds and the rules each write follows are described here; the operations that
take and return them are `dotdo.engine.store.interface.Store`'s (which re-exports them all).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ACTIVE",
    "FINISHED",
    "AppliedCall",
    "ApprovalChange",
    "CallRecord",
    "Checkpoint",
    "ClaimRequest",
    "CommitOutcome",
    "EntitySend",
    "EventFilter",
    "JournalRow",
    "Lease",
    "NewApproval",
    "PendingSend",
    "RunToCreate",
    "SendRecord",
    "StartOutcome",
    "StoredApproval",
    "StoredEntity",
    "StoredEvent",
    "StoredRun",
    "StoredSchedule",
    "StoredStep",
    "StoredWait",
    "Waker",
]

ACTIVE = ("running", "waiting")
"""Statuses of a run that has not ended."""
FINISHED = ("completed", "failed", "compensated", "cancelled")
"""Statuses of a run that has ended (for good: no write changes them again)."""


# ------------------------------------------------------------------------- leases
@dataclass(frozen=True)
class Lease:
    """The right to advance one run: held by the store's owner at this epoch.

    The epoch grows by one at every claim (a start, a claim of an orphaned or due run, a
    wake-up), so a lease taken over and taken back is still a different lease."""

    run_id: str
    epoch: int


@dataclass(frozen=True)
class ClaimRequest:
    """Which runs `claim_runs` takes: runs in `status` of a workflow in `workflows` whose
    lease is free (no owner, expired, or its owner is certainly dead), not already held by
    this owner, not in `skip`; for `waiting` runs only those due at `due_before`."""

    ttl: float
    """Seconds the new leases last (renewed by `renew_leases`)."""
    workflows: tuple[str, ...]
    status: Literal["running", "waiting"]
    due_before: float | None = None
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Waker:
    """How a waiting run that now has its answer (a decision, an event) is made runnable:
    claimed by this store's owner when `may_claim` and its workflow is in `workflows` and
    its lease is free (the claim returns a `Lease`), else made due at once (`wake_at = now`)
    so an engine that can drive it claims it on its next tick."""

    ttl: float
    workflows: frozenset[str]
    now: float
    may_claim: bool = True


# --------------------------------------------------------------------- writing runs
@dataclass(frozen=True)
class JournalRow:
    """One line of a run's step journal: started (try_), failed attempt, or completed.

    Written by `checkpoint` as an upsert on (run, key); a completed row is never changed."""

    key: str
    status: Literal["started", "completed", "failed"]
    attempts: int
    value: str | None = None
    error: str | None = None
    seq: int | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class NewApproval:
    """An approval request written with the checkpoint that hibernates its run (kept if an
    approval with this id exists: a replay asks the same question again)."""

    id: str
    run_id: str
    approver: str | None
    """Whom it waits on now (the first of the chain)."""
    deadline: float | None
    body: str
    """The whole approval, serde JSON."""
    event: tuple[str, str] | None = None
    """An engine event announcing it (name, JSON data: `Approval.requested`), written to the
    outbox with no run id in the same transaction, only when the approval row is new."""


@dataclass(frozen=True)
class Checkpoint:
    """A run's transition, written atomically with its cause (journal), its sends (the
    outbox) and the approval it now waits for; refused with `LeaseLost` (nothing written)
    unless `lease` is still the run's current lease."""

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    lease: Lease
    """The lease the writer holds (its run id is the run written)."""
    status: str
    node: str
    state: str
    steps_done: int
    now: float
    wake_at: float | None = None
    result: str | None = None
    error: str | None = None
    journal: Sequence[JournalRow] = ()
    sends: Sequence[tuple[str, str]] = ()
    """Events the run sent: (name, serde JSON data), in order."""
    release: bool = False
    """Give up the lease (the run now waits or has finished)."""
    approval: NewApproval | None = None


@dataclass(frozen=True)
class RunToCreate:
    """The rows of a new run: its graph (once per hash), the graph's signature (when the
    engine signs) and the run, leased to the store's owner at epoch 1."""

    run_id: str
    workflow: str
    entity_id: str
    graph_hash: str
    graph_name: str
    graph_body: str
    module: str
    """Where the workflow's code lives (so another process can load it)."""
    node: str
    state: str
    input: str
    lease_until: float
    now: float
    mac: tuple[str, str] | None = None
    """(meta key, signature) to store with the graph, or None."""


@dataclass(frozen=True)
class StartOutcome:
    """What `create_run` did: created the run (and holds `lease`), or found one with this id
    (its workflow, entity and input, for the engine to decide: same run or a conflict)."""

    lease: Lease | None
    existing: tuple[str, str, str] | None = None
    """(workflow, entity_id, input JSON) of the run already stored under this id."""

    @property
    def created(self) -> bool:
        return self.lease is not None


# ---------------------------------------------------------------------- reading runs
@dataclass(frozen=True)
class StoredRun:
    """A run's row as stored (values as JSON text, times as epoch seconds)."""

    run_id: str
    workflow: str
    graph_hash: str
    entity_id: str
    status: str
    node: str
    state: str
    input: str
    result: str | None
    error: str | None
    wake_at: float | None
    lease_owner: str | None
    lease_until: float | None
    lease_epoch: int
    cancel_requested: bool
    steps_done: int
    created_at: float
    updated_at: float
    retry_of: str | None = None
    """The run this one retries (`Store.create_retry`), if it is a retry."""
    trace: str | None = None
    """The W3C traceparent of the run's first stretch (`Store.set_trace`), once stored."""

    @property
    def lease(self) -> Lease:
        return Lease(self.run_id, self.lease_epoch)


@dataclass(frozen=True)
class StoredStep:
    """One journal row as stored."""

    run_id: str
    key: str
    status: str
    attempts: int
    value: str | None
    error: str | None
    seq: int | None
    started_at: float | None
    finished_at: float | None


# ------------------------------------------------------------------ events and waits
@dataclass(frozen=True)
class StoredEvent:
    """An outbox row: an event sent by a run (`run_id`) or from outside (None)."""

    id: int
    name: str
    data: str
    created_at: float
    run_id: str | None = None


@dataclass(frozen=True)
class StoredWait:
    """A run's subscription to an event at one wait (`key`): open while `event_id` is None,
    then the id of the event it took, or -1 when it timed out."""

    run_id: str
    key: str
    event: str
    match: str | None
    """The fields to match, JSON text, or None."""
    since: float
    event_id: int | None


EventFilter = Callable[[StoredEvent, str | None], bool]
"""Whether an event fits a wait's match (JSON text or None): a pure domain rule the store
calls inside the transaction that hands the event to the wait."""


# ------------------------------------------------------------------------- approvals
@dataclass(frozen=True)
class StoredApproval:
    id: str
    run_id: str
    status: str
    body: str


@dataclass(frozen=True)
class ApprovalChange:
    """A decision's new row: written only if the decide callback returned it (a callback
    that raises refuses the decision, nothing written); `wake` makes the run runnable in the
    same transaction (see `Waker`)."""

    status: str
    approver: str | None
    body: str
    wake: bool = False
    event: tuple[str, str] | None = None
    """An engine event announcing the decision (name, JSON data: `Approval.decided`),
    written to the outbox with no run id in the same transaction."""


# ------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class StoredSchedule:
    name: str
    spec: str
    next_fire: float
    last_fire: float | None


# -------------------------------------------------------------------------- entities
@dataclass(frozen=True)
class CallRecord:
    """An applied entity call: its target, chain, digest and result (JSON text)."""

    call_id: str
    cls: str
    id: str
    chain: str | None
    digest: str | None
    result: str


@dataclass(frozen=True)
class StoredEntity:
    """A hosted instance's state (JSON text) and version (optimistic concurrency)."""

    state: str
    version: int


@dataclass(frozen=True)
class EntitySend:
    """A fire-and-forget entity call to deliver; with (run_id, step_key) it is deliverable
    only once that run's journal has completed that step."""

    call_id: str
    cls: str
    request: str
    now: float
    run_id: str | None = None
    step_key: str | None = None
    lease: Lease | None = None
    """The lease of the run whose step queues it (a send from a running step): refused with
    `LeaseLost`, nothing queued, once the run's lease has moved on (added after the first
    version of this interface; None: not fenced)."""


@dataclass(frozen=True)
class AppliedCall:
    """The one transaction of an applied entity call: save the instance's state if its
    version is still `version` (None: it must not exist yet), record the result under the
    call id, queue its sends."""

    call_id: str
    cls: str
    id: str
    chain: str | None
    digest: str | None
    result: str
    state: str
    version: int | None
    now: float
    sends: Sequence[EntitySend] = ()


CommitOutcome = CallRecord | Literal["applied", "conflict"]
"""`commit_call`'s answer: applied; the version moved ("conflict": nothing written, run the
call again); or the call id was recorded meanwhile (its record: nothing written)."""


@dataclass(frozen=True)
class PendingSend:
    call_id: str
    cls: str
    request: str
    run_id: str | None
    step_key: str | None
    attempts: int


@dataclass(frozen=True)
class SendRecord:
    """A queued entity send and its fate (outcome None: not delivered yet)."""

    call_id: str
    cls: str
    run_id: str | None
    step_key: str | None
    attempts: int
    delivered_at: float | None
    outcome: str | None
    error: str | None
