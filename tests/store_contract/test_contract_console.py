"""Store contract: the console's operations (people, spent links, meta made once, the
inbox, keyset pages of runs, counts) and the approval events written with an approval."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from _contract_rows import checkpoint, new_run

from dotdo.engine.store.interface import (
    ApprovalChange,
    NewApproval,
    RunFilter,
    Store,
    StoredUser,
    Waker,
)

WAKER_TTL = 30.0


def body(run_id: str, priority: str = "normal", kind: str = "approval") -> str:
    return json.dumps({"v": {"id": run_id, "priority": priority, "type": kind}})


async def asking(
    store: Store,
    run_id: str,
    approver: str,
    *,
    deadline: float | None = None,
    priority: str = "normal",
    event: tuple[str, str] | None = None,
    created: float | None = None,
) -> None:
    lease = (await store.create_run(new_run(run_id))).lease
    assert lease is not None
    row = NewApproval(f"{run_id}/ok", run_id, approver, deadline, body(run_id, priority), event)
    await store.checkpoint(
        checkpoint(lease, status="waiting", approval=row, release=True, now=created)
    )


async def test_users_are_put_read_and_removed_with_their_names_and_tokens(
    open_store: Any,
) -> None:
    store: Store = await open_store()
    await store.put_user(StoredUser("ana", "approver", ("finance", "ana"), "hash-1"), 1.0)
    await store.put_user(StoredUser("bo", "viewer", ()), 1.0)
    await store.add_token("digest-ana", "ana", 2.0)
    assert await store.user("ana") == StoredUser("ana", "approver", ("ana", "finance"), "hash-1")
    assert await store.user_by_token("digest-ana") == await store.user("ana")
    assert await store.user_by_token("digest-other") is None
    assert await store.user("nobody") is None
    # Replacing keeps the stored password when none is given, and replaces the names.
    await store.put_user(StoredUser("ana", "operator", ("ops",)), 3.0)
    assert await store.user("ana") == StoredUser("ana", "operator", ("ops",), "hash-1")
    assert [u.name for u in await store.users()] == ["ana", "bo"]
    assert await store.remove_user("ana") is True
    assert await store.remove_user("ana") is False
    assert await store.user_by_token("digest-ana") is None
    assert [u.name for u in await store.users()] == ["bo"]


async def test_a_nonce_is_spent_once_and_forgotten_after_its_expiry(open_store: Any) -> None:
    store: Store = await open_store()
    assert await store.spend_nonce("n1", 10.0, 20.0) is True
    assert await store.spend_nonce("n1", 11.0, 20.0) is False  # a replay
    racing = await asyncio.gather(*(store.spend_nonce("n2", 12.0, 30.0) for _ in range(5)))
    assert sorted(racing) == [False, False, False, False, True]
    assert await store.spend_nonce("n1", 25.0, 40.0) is True  # expired: forgotten


async def test_meta_default_keeps_the_first_value(open_store: Any) -> None:
    first: Store = await open_store("a")
    second: Store = await open_store("b")
    made = await asyncio.gather(first.meta_default("k", "one"), second.meta_default("k", "two"))
    assert made[0] == made[1] and made[0] in ("one", "two")
    assert await first.meta_default("k", "three") == made[0]
    assert await second.get_meta("k") == made[0]


async def test_the_inbox_lists_its_names_pending_approvals_most_urgent_first(
    open_store: Any,
) -> None:
    store: Store = await open_store()
    now = time.time()
    await asking(store, "low", "finance", priority="low")
    await asking(store, "later", "finance", deadline=now + 900)
    await asking(store, "sooner", "finance", deadline=now + 60)
    await asking(store, "urgent", "ana", priority="urgent")
    await asking(store, "gone", "finance", deadline=now - 1)  # past its deadline
    await asking(store, "other", "ops")

    async def ids(names: tuple[str, ...], **query: Any) -> list[str]:
        found = await store.inbox(names, **{"now": now, "kind": None, "limit": 10, **query})
        return [a.run_id for a in found]

    assert await ids(("ana", "finance")) == ["urgent", "sooner", "later", "low"]
    assert await ids(("ana", "finance"), limit=2) == ["urgent", "sooner"]
    assert await ids(("finance",), kind="cascade") == []
    assert await ids(()) == []
    assert [a.id for a in await store.run_approvals("gone")] == ["gone/ok"]


async def test_runs_pages_by_keyset_newest_first_with_filters(open_store: Any) -> None:
    store: Store = await open_store()
    for i in range(7):
        await store.create_run(new_run(f"run-{i}", now=100.0 + i // 2))  # ties share a stamp
    await store.create_run(new_run("other-1", workflow="Other.run", now=200.0))
    seen: list[str] = []
    after: tuple[float, str] | None = None
    while True:
        page = await store.runs_page(RunFilter(workflow="Flow.run"), after=after, limit=3)
        seen += [r.run_id for r in page[:3]]
        if len(page) <= 3:
            break
        after = (page[2].created_at, page[2].run_id)
    assert seen == ["run-6", "run-4", "run-5", "run-2", "run-3", "run-0", "run-1"]
    prefixed = await store.runs_page(RunFilter(prefix="other"), after=None, limit=10)
    assert [r.run_id for r in prefixed] == ["other-1"]
    window = await store.runs_page(RunFilter(since=101.0, until=103.0), after=None, limit=10)
    assert [r.run_id for r in window] == ["run-4", "run-5", "run-2", "run-3"]
    assert await store.status_counts(None) == {"running": 8}
    assert await store.status_counts("Other.run") == {"running": 1}


async def test_approval_events_are_written_with_the_approval_once(open_store: Any) -> None:
    store: Store = await open_store()
    await asking(store, "r", "boss", event=("Approval.requested", '{"n": 1}'))
    lease = await store.wake("r", Waker(WAKER_TTL, frozenset({"Flow.run"}), time.time()))
    assert lease is not None  # replayed: the same question again, not a second event
    again = NewApproval("r/ok", "r", "boss", None, body("r"), ("Approval.requested", '{"n": 2}'))
    await store.checkpoint(checkpoint(lease, status="waiting", approval=again, release=True))

    def decide(stored: str | None) -> tuple[ApprovalChange, None]:
        return ApprovalChange("approved", None, "{}", event=("Approval.decided", "{}")), None

    waker = Waker(WAKER_TTL, frozenset({"Flow.run"}), time.time(), may_claim=False)
    await store.decide_approval("r/ok", decide, waker)
    events = [(e.name, e.data, e.run_id) for e in await store.sent_events()]
    assert [(n, r) for n, _, r in events] == [
        ("Approval.requested", None),
        ("Approval.decided", None),
    ]
    assert json.loads(events[0][1]) == {"n": 1}
