"""The store interface: every read and write of dotdo's durable state, as domain operations.

The engine, the entities layer, the CLI and the testing tools persist and read through this
`Store` protocol only; SQL lives behind it (`dotdo.engine.store.sqlite` is the first
implementation). A second backend is one new implementation of this protocol, checked by the
same contract suite (tests/store_contract), not edits across the engine.

Values cross it as data: the records (defined in rows.py, re-exported here) hold plain
strings, numbers and JSON text (the engine encodes with `dotdo.engine.serde` before it writes
and decodes after it reads), so an implementation never imports the engine's models.

Guarantees every implementation gives (the contract suite checks them):

- **Atomic writes.** Each write operation commits all of its rows or none. `checkpoint` in
  particular writes a run's new state with its cause (journal rows), its sends (outbox) and
  its new wait (an approval row) in one transaction. An operation returns only after its
  transaction committed (durably, as the backend's synchronous setting says); a failed
  transaction raises `StoreWriteError` (a store fault: retryable, nothing written).
- **Group commit.** Concurrent writes may share one transaction (one fsync), each still
  atomic: a write that fails its own check (a `LeaseLost`, a `RunConflict`, an approval that
  cannot be decided) writes nothing and does not undo the others.
- **Leases and fencing.** A runnable run is advanced by the one engine holding its lease
  (`lease_owner`, `lease_until`). Each claim or takeover increments the run's lease *epoch*
  and returns it in a `Lease`; every write an owner makes on behalf of a run (`checkpoint`,
  `fail_run`, `subscribe`, `time_out_wait`) carries that `Lease` and is refused, writing
  nothing, with `LeaseLost` when the run's owner or epoch changed since. So an engine that
  was paused past its lease expiry and wakes up cannot write over the run's new owner.
- **Reads see committed data** and never wait for the writer.
- **Nothing is decoded by the store** except what a domain rule passed in as a callback needs
  (`EventFilter`, approval decisions); callbacks are pure and run inside the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar, runtime_checkable

from dotdo.engine.store.console_rows import PRIORITY_ORDER, RunFilter, StoredUser
from dotdo.engine.store.op_rows import (
    REUSED,
    HistoryEntry,
    PruneFilter,
    Repin,
    RetryToCreate,
    RunExport,
    UnfinishedRun,
)
from dotdo.engine.store.rows import (
    ACTIVE,
    FINISHED,
    AppliedCall,
    ApprovalChange,
    CallRecord,
    Checkpoint,
    ClaimRequest,
    CommitOutcome,
    EntitySend,
    EventFilter,
    JournalRow,
    Lease,
    NewApproval,
    PendingSend,
    RunToCreate,
    SendRecord,
    StartOutcome,
    StoredApproval,
    StoredEntity,
    StoredEvent,
    StoredRun,
    StoredSchedule,
    StoredStep,
    StoredWait,
    Waker,
)

if TYPE_CHECKING:
    from dotdo.engine.store.health import WriteHealth

__all__ = [
    "ACTIVE",
    "FINISHED",
    "PRIORITY_ORDER",
    "REUSED",
    "AppliedCall",
    "ApprovalChange",
    "CallRecord",
    "ChangeFeed",
    "Checkpoint",
    "ClaimRequest",
    "CommitOutcome",
    "EntitySend",
    "EventFilter",
    "HistoryEntry",
    "JournalRow",
    "Lease",
    "NewApproval",
    "PendingSend",
    "PruneFilter",
    "Repin",
    "RetryToCreate",
    "RunExport",
    "RunFilter",
    "RunToCreate",
    "SendRecord",
    "StartOutcome",
    "Store",
    "StoreFactory",
    "StoreOptions",
    "StoredApproval",
    "StoredEntity",
    "StoredEvent",
    "StoredRun",
    "StoredSchedule",
    "StoredStep",
    "StoredUser",
    "StoredWait",
    "UnfinishedRun",
    "Waker",
]

T = TypeVar("T")


# ----------------------------------------------------------------------------- store
@runtime_checkable
class Store(Protocol):
    """All persistence of one engine. Open it, write and read through it, close it.

    An instance belongs to one owner (the engine's lease owner id): claims take leases for
    it, and owner writes are checked against it and their `Lease`. Every method raises
    `StoreError` when the store is not open, and every write raises `StoreError` on a store
    opened read-only.
    """

    path: str
    """Where the data lives (a file path, a URL), for messages."""
    owner: str
    read_only: bool
    health: WriteHealth
    """Whether writes work now (`writable`), and the log of outages."""
    batches: int
    """Transactions committed so far (group commit: fewer than writes)."""
    committed: int
    """Checkpoints committed so far."""

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Connect and migrate to the current schema (refusing a foreign database or a
        newer schema with one clear `StoreError`, nothing changed). Read-only: no
        migration, and a schema other than the current one is refused."""
        ...

    async def close(self) -> None:
        """Finish queued writes, then close. Safe to call twice."""
        ...

    async def abandon(self, error: BaseException) -> None:
        """Stop at once, committing nothing more (a simulated crash); pending and later
        writes raise `error`. Safe to call again."""
        ...

    # ----------------------------------------------------------------------- meta
    async def db_id(self) -> str:
        """The database's random identity (made with its schema; starts every entity call
        id this database sends)."""
        ...

    async def get_meta(self, key: str) -> str | None: ...

    # ----------------------------------------------------------------------- runs
    async def create_run(self, new: RunToCreate) -> StartOutcome:
        """Write a new run (and its graph, signature) in one transaction, leased to this
        owner at epoch 1; when a run with this id exists, write no run and report it."""
        ...

    async def load_run(self, run_id: str) -> StoredRun | None: ...

    async def run_status(self, run_id: str) -> str | None: ...

    async def graph_body(self, graph_hash: str) -> str | None:
        """The stored graph (canonical JSON) a run pinned."""
        ...

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Persist a transition atomically; returns once committed. Raises `LeaseLost`
        (nothing written: no state, journal, outbox or approval row) unless this owner still
        holds `checkpoint.lease`. With `release` the lease is given up in the same write."""
        ...

    async def fail_run(self, lease: Lease, error: str, now: float) -> bool:
        """End a run this owner holds as failed (it cannot be loaded by this code) and
        release it; False (nothing written) if the lease is no longer this owner's."""
        ...

    async def request_cancel(self, run_id: str, error: str, now: float) -> bool:
        """Mark the run to be cancelled (its owner stops at its next boundary); if no one
        holds its lease, cancel it now in the same transaction (status cancelled, `error`).
        Returns whether it was cancelled now."""
        ...

    # --------------------------------------------------------------------- leases
    async def claim_runs(self, request: ClaimRequest) -> list[Lease]:
        """Take the lease of every run `request` selects, atomically (two owners never
        claim the same run); a claimed waiting run becomes running and keeps its wake time,
        so a crash right after the claim still knows its timer fired. Each claim increments
        the run's epoch."""
        ...

    async def renew_leases(self, ttl: float) -> list[str]:
        """Extend this owner's leases to now + ttl; returns its runs that someone asked to
        cancel. Does not change epochs."""
        ...

    async def release_leases(self) -> None:
        """Hand every lease of this owner back (a clean shutdown), so another process may
        take over at once."""
        ...

    async def held_runs(self) -> list[str]:
        """Running runs whose lease this owner holds."""
        ...

    # --------------------------------------------------------------------- timers
    async def any_due(self, now: float) -> bool:
        """Whether a waiting run's wake time has come (a read: an idle engine polls with
        it without opening write transactions)."""
        ...

    async def next_wake(self) -> float | None:
        """The earliest wake time of a waiting run."""
        ...

    # -------------------------------------------------------------------- journal
    async def journal(self, run_id: str) -> list[StoredStep]:
        """A run's steps in the order they completed (failed and started ones last)."""
        ...

    async def step_status(self, run_id: str, key: str) -> str | None: ...

    # ---------------------------------------------------------------------- waits
    async def subscribe(
        self, lease: Lease, key: str, event: str, match: str | None, fits: EventFilter
    ) -> StoredEvent | None:
        """Register the run's wait for `event` at `key` and, in the same transaction, hand
        it an event that came first: the one this wait already took (a replay), else the
        oldest fitting event sent since the run was created that this run has not taken.
        Returns that event or None. `LeaseLost` (nothing written) if the lease changed."""
        ...

    async def wait(self, run_id: str, key: str) -> StoredWait | None: ...

    async def open_wait(self, run_id: str) -> StoredWait | None:
        """The run's wait that has no event yet, if any."""
        ...

    async def time_out_wait(self, lease: Lease, key: str) -> None:
        """Close the run's open wait at `key` as timed out (event_id -1), unless an event
        took it first. `LeaseLost` if the lease changed."""
        ...

    async def wake(self, run_id: str, waker: Waker) -> Lease | None:
        """Make a waiting run runnable (see `Waker`); the lease if this owner claimed it,
        None if the run is not waiting or another engine must claim it."""
        ...

    async def fitting_events(self, run_id: str, event: str, since: float) -> list[StoredEvent]:
        """Events named `event` sent at or after `since` that this run's waits have not
        taken, oldest first (what its inbox still holds for a wait)."""
        ...

    # --------------------------------------------------------------------- events
    async def publish(self, name: str, data: str, now: float) -> int:
        """Append an event from outside any run; returns its id (ids only grow)."""
        ...

    async def event(self, event_id: int) -> StoredEvent | None: ...

    async def newest_event_id(self) -> int:
        """The highest event id (0 when none)."""
        ...

    async def events_after(self, last_id: int, limit: int) -> list[StoredEvent]: ...

    async def sent_events(self, run_id: str | None = None) -> list[StoredEvent]:
        """Every event (or one run's), in the order written."""
        ...

    async def deliver_to_waits(self, fits: EventFilter, waker: Waker) -> list[Lease]:
        """Hand each event newer than the delivery cursor to the open waits it fits (a run
        takes one event once; an event sent before a wait's `since` is not its), wake those
        runs (`Waker`) and advance the cursor, all in one transaction. Returns the leases
        this owner took."""
        ...

    async def cursor(self, name: str) -> int:
        """A handler's delivery cursor (the last event id it saw; 0 when new)."""
        ...

    async def advance_cursor(self, name: str, last_id: int) -> None:
        """Move a cursor forward to `last_id` (never back)."""
        ...

    # ------------------------------------------------------------------ approvals
    async def approval(self, approval_id: str) -> StoredApproval | None: ...

    async def pending_approvals(self, run_id: str) -> list[StoredApproval]:
        """The run's pending approvals, oldest first."""
        ...

    async def list_approvals(
        self, *, status: str | None, approver: str | None, now: float, limit: int
    ) -> list[StoredApproval]:
        """Approvals oldest first by status as seen at `now`: "pending" excludes those past
        their deadline (and with `approver`, only those waiting on them), "expired" includes
        pending ones past it; limit < 0: all."""
        ...

    async def expire_approval(self, approval_id: str, body: str, now: float) -> None:
        """Mark a pending approval expired (no effect once it is decided)."""
        ...

    async def withdraw_approvals(
        self, run_id: str, rewrite: Callable[[str], str], now: float
    ) -> None:
        """Withdraw the run's pending approvals (its body rewritten by `rewrite`)."""
        ...

    async def decide_approval(
        self,
        approval_id: str,
        decide: Callable[[str | None], tuple[ApprovalChange, T]],
        waker: Waker,
    ) -> tuple[T, Lease | None]:
        """Read the approval's body (None if absent) under the write lock, apply `decide`
        and write its change, waking the run when it says so, in one transaction. When
        `decide` raises, nothing is written and its error propagates."""
        ...

    # ------------------------------------------------------------------ schedules
    async def schedule(self, name: str) -> StoredSchedule | None: ...

    async def set_schedule(self, name: str, spec: str, next_fire: float) -> None:
        """Create a schedule cursor or reset it for a new spec."""
        ...

    async def schedule_fired(self, name: str, fire: float, next_fire: float) -> None: ...

    # ------------------------------------------------------------------- entities
    async def entity_state(self, cls: str, entity_id: str) -> str | None: ...

    async def recorded_calls(self, call_ids: Sequence[str]) -> list[CallRecord]:
        """The applied calls among `call_ids`."""
        ...

    async def load_call(
        self, call_id: str, cls: str, entity_id: str
    ) -> tuple[CallRecord | None, StoredEntity | None]:
        """One read: the call's record if it was applied, and the instance's state."""
        ...

    async def commit_call(self, call: AppliedCall) -> CommitOutcome:
        """Apply an entity call atomically (see `AppliedCall`, `CommitOutcome`)."""
        ...

    async def enqueue_send(self, send: EntitySend) -> None:
        """Queue a fire-and-forget call (kept once per call id)."""
        ...

    async def due_sends(self, now: float, limit: int) -> list[PendingSend]:
        """Undelivered sends due at `now`, oldest first."""
        ...

    async def retry_send(
        self, call_id: str, attempts: int, next_try: float, error: str
    ) -> None: ...

    async def settle_send(self, call_id: str, outcome: str, error: str | None, now: float) -> None:
        """Record a send's fate: "ok", "error" or "dropped"."""
        ...

    async def entity_sends(self) -> list[SendRecord]: ...

    async def prune_calls(self, before: float) -> int:
        """Forget call records older than `before`; returns how many."""
        ...

    # -------------------------------------------------------------------- listing
    async def list_runs(
        self, *, status: str | None, workflow: str | None, limit: int
    ) -> list[StoredRun]:
        """Runs, newest first."""
        ...

    # ----------------------------------------------------------------- operations
    # Operating a database (docs/operations.md, docs/upgrades.md): none of these is on the
    # hot path of a run except `reused_results` (a retry's resume) and `set_trace`.
    async def create_retry(self, retry: RetryToCreate) -> StartOutcome:
        """Write a retry in one transaction: the new run (as `create_run`, leased to this
        owner at epoch 1) linked to the run it retries, its reused journal rows, and the
        history line on both runs. When the new run id is taken, nothing is written and the
        existing run is reported (`StartOutcome.existing`)."""
        ...

    async def reused_results(self, run_id: str) -> dict[str, str | None]:
        """The copied results a retried run has not used yet: value JSON by step key."""
        ...

    async def history(self, run_id: str) -> list[HistoryEntry]:
        """The run's recorded operations (retries, upgrades), oldest first."""
        ...

    async def prunable_runs(self, where: PruneFilter, limit: int) -> list[str]:
        """Up to `limit` ids of runs `where` selects, least recently updated first."""
        ...

    async def delete_runs(self, run_ids: Sequence[str], where: PruneFilter) -> list[str]:
        """Remove those of `run_ids` that `where` still selects (a run that changed since
        it was listed is kept), with their journal, waits, decided approvals, delivered
        entity sends, dispatched events and history, in one transaction; returns the ids
        removed. A pending approval or an undelivered send is never removed."""
        ...

    async def prune_unowned(self, before: float) -> None:
        """Remove the age-bound records tied to no run: entity call records and dispatched
        events sent from outside any run (that no wait took) older than `before`."""
        ...

    async def export_run(self, run_id: str) -> RunExport | None:
        """Everything stored about one run (see `RunExport`); None when there is no run."""
        ...

    async def unfinished_runs(self, workflows: Sequence[str] | None) -> list[UnfinishedRun]:
        """Every running or waiting run (of `workflows`, default all), by run id."""
        ...

    async def repin_run(self, repin: Repin) -> bool:
        """Move a parked run onto another graph (see `Repin`); False, nothing written,
        when it is no longer parked on the old graph or someone holds it."""
        ...

    async def set_trace(self, run_id: str, traceparent: str) -> None:
        """Store the run's trace (its first stretch's W3C traceparent) unless it has one."""
        ...

    async def waiting_by_kind(self) -> dict[str, int]:
        """Waiting runs (of every process) by what they wait on: "approval" (a pending
        approval), "event" (an open event wait) or "timer" (a sleep, a retry's backoff)."""
        ...

    async def graphs_with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """(hash, body) of every stored graph whose hash starts with `prefix` (hex)."""
        ...

    async def graph_hashes(self, name: str, limit: int) -> list[str]:
        """The hashes of graphs stored for a workflow graph `name`, newest first."""

    # ------------------------------------------------------------ console reads
    async def inbox(
        self, names: Sequence[str], *, now: float, kind: str | None, limit: int
    ) -> list[StoredApproval]:
        """Approvals pending on any of `names` and not past their deadline (of type `kind`
        if given): most urgent first (`PRIORITY_ORDER`), then by deadline (none last), then
        oldest. Reads only those names' pending rows (an index), however many approvals."""
        ...

    async def run_approvals(self, run_id: str) -> list[StoredApproval]:
        """All of a run's approvals, whatever their status, oldest first."""
        ...

    async def runs_page(
        self, filters: RunFilter, *, after: tuple[float, str] | None, limit: int
    ) -> list[StoredRun]:
        """One page of runs, newest first (ties by run id): `after` is the (created_at,
        run_id) of the previous page's last row (a keyset: no OFFSET, fast at any depth).
        Returns up to `limit + 1` runs; one more than `limit` says there is a next page."""
        ...

    async def status_counts(self, workflow: str | None) -> dict[str, int]:
        """How many runs (of `workflow`, if given) have each status."""
        ...

    async def schedules(self) -> list[StoredSchedule]:
        """Every schedule cursor, by name."""
        ...

    # ------------------------------------------------------------------- people
    async def put_user(self, user: StoredUser, now: float) -> None:
        """Create or replace a user with exactly `user.names`, in one transaction; a None
        password keeps the one stored (a new user then has none)."""
        ...

    async def remove_user(self, name: str) -> bool:
        """Remove a user with their names and tokens; False when there was none."""
        ...

    async def user(self, name: str) -> StoredUser | None: ...

    async def user_by_token(self, digest: str) -> StoredUser | None:
        """The user holding the API token with this digest (tokens are stored as digests)."""
        ...

    async def users(self) -> list[StoredUser]:
        """Every user, by name."""
        ...

    async def add_token(self, digest: str, user: str, now: float) -> None:
        """Store an API token's digest for `user`."""
        ...

    async def meta_default(self, key: str, value: str) -> str:
        """The value kept under `key`, storing `value` first when there is none (atomic:
        processes racing to make it all get the one stored)."""
        ...

    async def spend_nonce(self, nonce: str, now: float, expires_at: float) -> bool:
        """Mark a single-use nonce (a signed link's) spent until `expires_at`; False when
        it was spent before (a replay). Forgets nonces whose expiry passed."""
        ...


@runtime_checkable
class ChangeFeed(Protocol):
    """A store that tells its engine at once when another process changed something the
    engine may act on: a run made due or released, an event, an entity send (PostgreSQL:
    LISTEN/NOTIFY, sent inside the committing transaction). While `listening`, the engine
    polls only as a slow fallback; without a feed (or while it is down) it polls every
    `poll_seconds`."""

    listening: bool

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the event loop) on every change notification, and once
        whenever the feed (re)connects (changes may have been missed while it was down)."""
        ...

    def unwatch(self, callback: Callable[[], None]) -> None: ...


@dataclass(frozen=True)
class StoreOptions:
    """The settings an engine gives its store, whatever the backend."""

    owner: str
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    busy_timeout: float = 5.0
    read_only: bool = False
    commit_hook: Callable[[str, Sequence[str]], None] | None = field(default=None)
    """Called as hook("before_commit" | "after_commit", run_ids) around each group commit
    (fault injection in tests)."""


StoreFactory = Callable[[str, StoreOptions], Store]
"""Makes an unopened store for a location (a SQLite path; a backend's URL) with these
options: how `Engine.open` gets its store (`dotdo.engine.store.make_store` picks the
backend by the location's form)."""
