"""`PostgresStore`: the `Store` protocol on one PostgreSQL database (or schema).

The connections, the group-commit writer, LISTEN/NOTIFY and reconnection are `Database`'s;
each operation is a function of the module that holds its tables (runs, events, approvals,
entities), so this class only routes. Nothing outside `dotdo.engine.store` runs SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from dotdo.engine.store.interface import (
    AppliedCall,
    ApprovalChange,
    CallRecord,
    ClaimRequest,
    CommitOutcome,
    EntitySend,
    EventFilter,
    HistoryEntry,
    Lease,
    PendingSend,
    PruneFilter,
    Repin,
    RetryToCreate,
    RunExport,
    RunFilter,
    RunToCreate,
    SendRecord,
    StartOutcome,
    StoredApproval,
    StoredEntity,
    StoredEvent,
    StoredRun,
    StoredSchedule,
    StoredStep,
    StoredUser,
    StoredWait,
    StoreOptions,
    UnfinishedRun,
    Waker,
)
from dotdo.engine.store.postgres import (
    approvals,
    console_reads,
    entities,
    events,
    operations,
    people,
    runs,
)
from dotdo.engine.store.postgres.database import Database
from dotdo.errors import StoreError

__all__ = ["PostgresStore"]

T = TypeVar("T")


class PostgresStore(Database):
    """All persistence of one engine in one PostgreSQL schema, shared with every other
    worker using it (see `dotdo.engine.store.interface` for what each operation guarantees).
    """

    claim_batch = 100
    """Most runs one claim takes: workers ticking together share a backlog."""

    def __init__(self, url: str, options: StoreOptions) -> None:
        super().__init__(
            url,
            owner=options.owner,
            synchronous=options.synchronous,
            read_only=options.read_only,
            commit_hook=options.commit_hook,
        )
        self.path = self.where
        self._graphs: set[str] = set()

    # ---------------------------------------------------------------------- meta
    async def get_meta(self, key: str) -> str | None:
        value = await self.fetch_value("SELECT value FROM meta WHERE key = $1", key)
        return None if value is None else str(value)

    async def db_id(self) -> str:
        found = await self.get_meta("db_id")
        if found is None:
            raise StoreError(f"{self.path} has no database identity")
        return found

    # ---------------------------------------------------------------------- runs
    async def create_run(self, new: RunToCreate) -> StartOutcome:
        return await runs.create_run(self, new, self._graphs)

    async def load_run(self, run_id: str) -> StoredRun | None:
        return await runs.load_run(self, run_id)

    async def run_status(self, run_id: str) -> str | None:
        value = await self.fetch_value("SELECT status FROM runs WHERE run_id = $1", run_id)
        return None if value is None else str(value)

    async def graph_body(self, graph_hash: str) -> str | None:
        value = await self.fetch_value("SELECT body::text FROM graphs WHERE hash = $1", graph_hash)
        return None if value is None else str(value)

    async def fail_run(self, lease: Lease, error: str, now: float) -> bool:
        return await runs.fail_run(self, lease, error, now)

    async def request_cancel(self, run_id: str, error: str, now: float) -> bool:
        return await runs.request_cancel(self, run_id, error, now)

    async def claim_runs(self, request: ClaimRequest) -> list[Lease]:
        return await runs.claim_runs(self, request, self.claim_batch)

    async def renew_leases(self, ttl: float) -> list[str]:
        return await runs.renew_leases(self, ttl)

    async def release_leases(self) -> None:
        await runs.release_leases(self)

    async def held_runs(self) -> list[str]:
        return await runs.held_runs(self)

    async def any_due(self, now: float) -> bool:
        return await runs.any_due(self, now)

    async def next_wake(self) -> float | None:
        return await runs.next_wake(self)

    async def journal(self, run_id: str) -> list[StoredStep]:
        return await runs.journal(self, run_id)

    async def step_status(self, run_id: str, key: str) -> str | None:
        value = await self.fetch_value(
            "SELECT status FROM steps WHERE run_id = $1 AND step_key = $2", run_id, key
        )
        return None if value is None else str(value)

    async def list_runs(
        self, *, status: str | None, workflow: str | None, limit: int
    ) -> list[StoredRun]:
        return await runs.list_runs(self, status, workflow, limit)

    # --------------------------------------------------------------------- waits
    async def subscribe(
        self, lease: Lease, key: str, event: str, match: str | None, fits: EventFilter
    ) -> StoredEvent | None:
        return await events.subscribe(self, lease, key, event, match, fits)

    async def wait(self, run_id: str, key: str) -> StoredWait | None:
        return await events.wait(self, run_id, key)

    async def open_wait(self, run_id: str) -> StoredWait | None:
        return await events.open_wait(self, run_id)

    async def time_out_wait(self, lease: Lease, key: str) -> None:
        await events.time_out_wait(self, lease, key)

    async def wake(self, run_id: str, waker: Waker) -> Lease | None:
        return await self.write(lambda conn: runs.wake(conn, self, run_id, waker))

    async def fitting_events(self, run_id: str, event: str, since: float) -> list[StoredEvent]:
        return await events.fitting_events(self, run_id, event, since)

    # -------------------------------------------------------------------- events
    async def publish(self, name: str, data: str, now: float) -> int:
        return await events.publish(self, name, data, now)

    async def event(self, event_id: int) -> StoredEvent | None:
        return await events.event(self, event_id)

    async def newest_event_id(self) -> int:
        return await events.newest_event_id(self)

    async def events_after(self, last_id: int, limit: int) -> list[StoredEvent]:
        return await events.events_after(self, last_id, limit)

    async def sent_events(self, run_id: str | None = None) -> list[StoredEvent]:
        return await events.sent_events(self, run_id)

    async def deliver_to_waits(self, fits: EventFilter, waker: Waker) -> list[Lease]:
        return await events.deliver_to_waits(self, fits, waker)

    async def cursor(self, name: str) -> int:
        return await events.cursor(self, name)

    async def advance_cursor(self, name: str, last_id: int) -> None:
        await events.advance_cursor(self, name, last_id)

    # ----------------------------------------------------------------- approvals
    async def approval(self, approval_id: str) -> StoredApproval | None:
        return await approvals.approval(self, approval_id)

    async def pending_approvals(self, run_id: str) -> list[StoredApproval]:
        return await approvals.pending_approvals(self, run_id)

    async def list_approvals(
        self, *, status: str | None, approver: str | None, now: float, limit: int
    ) -> list[StoredApproval]:
        return await approvals.list_approvals(self, status, approver, now, limit)

    async def expire_approval(self, approval_id: str, body: str, now: float) -> None:
        await approvals.expire_approval(self, approval_id, body, now)

    async def withdraw_approvals(
        self, run_id: str, rewrite: Callable[[str], str], now: float
    ) -> None:
        await approvals.withdraw_approvals(self, run_id, rewrite, now)

    async def decide_approval(
        self,
        approval_id: str,
        decide: Callable[[str | None], tuple[ApprovalChange, T]],
        waker: Waker,
    ) -> tuple[T, Lease | None]:
        return await approvals.decide_approval(self, approval_id, decide, waker)

    # ----------------------------------------------------------------- schedules
    async def schedule(self, name: str) -> StoredSchedule | None:
        return await approvals.schedule(self, name)

    async def set_schedule(self, name: str, spec: str, next_fire: float) -> None:
        await approvals.set_schedule(self, name, spec, next_fire)

    async def schedule_fired(self, name: str, fire: float, next_fire: float) -> None:
        await approvals.schedule_fired(self, name, fire, next_fire)

    # ------------------------------------------------------------- console reads
    async def inbox(
        self, names: Sequence[str], *, now: float, kind: str | None, limit: int
    ) -> list[StoredApproval]:
        return await console_reads.inbox(self, names, now, kind, limit)

    async def run_approvals(self, run_id: str) -> list[StoredApproval]:
        return await console_reads.run_approvals(self, run_id)

    async def runs_page(
        self, filters: RunFilter, *, after: tuple[float, str] | None, limit: int
    ) -> list[StoredRun]:
        return await console_reads.runs_page(self, filters, after, limit)

    async def status_counts(self, workflow: str | None) -> dict[str, int]:
        return await console_reads.status_counts(self, workflow)

    async def schedules(self) -> list[StoredSchedule]:
        return await console_reads.schedules(self)

    # -------------------------------------------------------------------- people
    async def put_user(self, user: StoredUser, now: float) -> None:
        await people.put_user(self, user, now)

    async def remove_user(self, name: str) -> bool:
        return await people.remove_user(self, name)

    async def user(self, name: str) -> StoredUser | None:
        return await people.user(self, name)

    async def user_by_token(self, digest: str) -> StoredUser | None:
        return await people.user_by_token(self, digest)

    async def users(self) -> list[StoredUser]:
        return await people.users(self)

    async def add_token(self, digest: str, user: str, now: float) -> None:
        await people.add_token(self, digest, user, now)

    async def meta_default(self, key: str, value: str) -> str:
        return await people.meta_default(self, key, value)

    async def spend_nonce(self, nonce: str, now: float, expires_at: float) -> bool:
        return await people.spend_nonce(self, nonce, now, expires_at)

    # ------------------------------------------------------------------ entities
    async def entity_state(self, cls: str, entity_id: str) -> str | None:
        return await entities.entity_state(self, cls, entity_id)

    async def recorded_calls(self, call_ids: Sequence[str]) -> list[CallRecord]:
        return await entities.recorded_calls(self, call_ids)

    async def load_call(
        self, call_id: str, cls: str, entity_id: str
    ) -> tuple[CallRecord | None, StoredEntity | None]:
        return await entities.load_call(self, call_id, cls, entity_id)

    async def commit_call(self, call: AppliedCall) -> CommitOutcome:
        return await entities.commit_call(self, call)

    async def enqueue_send(self, send: EntitySend) -> None:
        await entities.enqueue_send(self, send)

    async def due_sends(self, now: float, limit: int) -> list[PendingSend]:
        return await entities.due_sends(self, now, limit)

    async def retry_send(self, call_id: str, attempts: int, next_try: float, error: str) -> None:
        await entities.retry_send(self, call_id, attempts, next_try, error)

    async def settle_send(self, call_id: str, outcome: str, error: str | None, now: float) -> None:
        await entities.settle_send(self, call_id, outcome, error, now)

    async def entity_sends(self) -> list[SendRecord]:
        return await entities.entity_sends(self)

    async def prune_calls(self, before: float) -> int:
        return await entities.prune_calls(self, before)

    # ---------------------------------------------------------------- operations
    async def create_retry(self, retry: RetryToCreate) -> StartOutcome:
        return await operations.create_retry(self, retry, self._graphs)

    async def reused_results(self, run_id: str) -> dict[str, str | None]:
        return await operations.reused_results(self, run_id)

    async def history(self, run_id: str) -> list[HistoryEntry]:
        return await operations.history(self, run_id)

    async def prunable_runs(self, where: PruneFilter, limit: int) -> list[str]:
        return await operations.prunable_runs(self, where, limit)

    async def delete_runs(self, run_ids: Sequence[str], where: PruneFilter) -> list[str]:
        return await operations.delete_runs(self, run_ids, where)

    async def prune_unowned(self, before: float) -> None:
        await operations.prune_unowned(self, before)

    async def export_run(self, run_id: str) -> RunExport | None:
        return await operations.export_run(self, run_id)

    async def unfinished_runs(self, workflows: Sequence[str] | None) -> list[UnfinishedRun]:
        return await operations.unfinished_runs(self, workflows)

    async def repin_run(self, repin: Repin) -> bool:
        return await operations.repin_run(self, repin)

    async def set_trace(self, run_id: str, traceparent: str) -> None:
        await operations.set_trace(self, run_id, traceparent)

    async def waiting_by_kind(self) -> dict[str, int]:
        return await operations.waiting_by_kind(self)

    async def graphs_with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        return await operations.graphs_with_prefix(self, prefix)

    async def graph_hashes(self, name: str, limit: int) -> list[str]:
        return await operations.graph_hashes(self, name, limit)
