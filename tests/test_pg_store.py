"""The PostgreSQL store on its own: bad input, migrations, fencing, SKIP LOCKED claims,
group commit, LISTEN/NOTIFY wake-ups and reconnection. The same operations on both
backends are checked by the store contract suite; these are what only PostgreSQL has."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from dotdo.engine.leases import new_owner, release_owner
from dotdo.engine.store.interface import (
    Checkpoint,
    ClaimRequest,
    JournalRow,
    RunToCreate,
    StoreOptions,
)
from dotdo.engine.store.location import locate, redact
from dotdo.engine.store.postgres.schema import SCHEMA_VERSION
from dotdo.engine.store.postgres.store import PostgresStore
from dotdo.errors import (
    LeaseLost,
    SchemaTooNew,
    StoreAuthError,
    StoreError,
    StoreUnreachable,
    UnknownStoreURL,
)


def _store(url: str, **kw: object) -> PostgresStore:
    return PostgresStore(url, StoreOptions(owner=new_owner(), **kw))  # type: ignore[arg-type]


def _run(run_id: str, ttl: float = 30.0) -> RunToCreate:
    return RunToCreate(
        run_id=run_id,
        workflow="W.flow",
        entity_id="e",
        graph_hash="g1",
        graph_name="W.flow",
        graph_body='{"name": "W.flow", "nodes": {}}',
        module="m",
        node="start",
        state='{"b": 1, "a": 2}',
        input="[]",
        lease_until=time.time() + ttl,
        now=time.time(),
    )


async def _sql(url: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


# ----------------------------------------------------------------------- bad input
def test_unknown_scheme_is_refused_before_anything_is_opened(tmp_path) -> None:
    for url in ("mysql://u@h/db", "mongodb://x", "postgresq://typo@h/db", "http://h/"):
        with pytest.raises(UnknownStoreURL, match="unknown database URL scheme"):
            locate(url)
    assert locate("app.db").backend == "sqlite"
    assert locate("sqlite:///rel.db").target == "rel.db"
    assert locate("sqlite:////abs/x.db").target == "/abs/x.db"
    assert locate("postgres://u@h/db").backend == "postgres"
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert list(tmp_path.iterdir()) == []


async def test_unreachable_server_is_one_line() -> None:
    store = _store("postgresql://postgres:pw@127.0.0.1:1/postgres")
    with pytest.raises(StoreUnreachable) as info:
        await store.open()
    text = str(info.value)
    assert "connection refused" in text and "\n" not in text and "pw" not in text


async def test_wrong_credentials_are_one_line(pg_server: str) -> None:
    url = pg_server.replace("postgres@", "no_such_role_dotdo@", 1)
    with pytest.raises(StoreAuthError, match="refused the credentials"):
        await _store(url).open()


async def test_missing_database_and_schema_are_one_line(pg_server: str) -> None:
    base = pg_server.rsplit("/", 1)[0]
    with pytest.raises(StoreError, match="does not exist"):
        await _store(f"{base}/no_such_db_dotdo").open()
    with pytest.raises(StoreError, match="schema of its search_path does not exist"):
        await _store(f"{pg_server}?search_path=no_such_schema_dotdo").open()


async def test_newer_schema_is_refused_and_left_alone(pg_url: str) -> None:
    store = _store(pg_url)
    await store.open()
    await store.close()
    await _sql(pg_url, "UPDATE meta SET value = $1 WHERE key = 'schema_version'", "99")
    with pytest.raises(SchemaTooNew, match="schema version 99, newer"):
        await _store(pg_url).open()
    assert await _sql(pg_url, "SELECT value FROM meta WHERE key = 'schema_version'") == "99"


async def test_foreign_tables_are_refused(pg_url: str) -> None:
    await _sql(pg_url, "CREATE TABLE invoices (id int)")
    with pytest.raises(StoreError, match="not a dotdo database"):
        await _store(pg_url).open()
    assert (
        await _sql(
            pg_url,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        == 1
    )


# ---------------------------------------------------------------------- migrations
async def test_workers_opening_together_migrate_once(pg_url: str) -> None:
    stores = [_store(pg_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert await _sql(pg_url, "SELECT value FROM meta WHERE key = 'schema_version'") == str(
            SCHEMA_VERSION
        )
        ids = {await s.db_id() for s in stores}
        assert len(ids) == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))


# ------------------------------------------------------------ values, fencing, claims
async def test_values_keep_their_exact_text_and_are_queryable(pg_url: str) -> None:
    store = _store(pg_url)
    await store.open()
    try:
        await store.create_run(_run("r1"))
        run = await store.load_run("r1")
        assert run is not None and run.state == '{"b": 1, "a": 2}'  # key order kept
        assert await _sql(pg_url, "SELECT state->>'a' FROM runs WHERE run_id = 'r1'") == "2"
    finally:
        await store.close()


async def test_a_taken_over_run_refuses_its_old_owners_writes(pg_url: str) -> None:
    a, b = _store(pg_url), _store(pg_url)
    await a.open()
    await b.open()
    try:
        made = await a.create_run(_run("r1", ttl=-1))  # already expired
        assert made.lease is not None
        leases = await b.claim_runs(ClaimRequest(ttl=30, workflows=("W.flow",), status="running"))
        assert [(x.run_id, x.epoch) for x in leases] == [("r1", 2)]
        stale = Checkpoint(
            lease=made.lease,
            status="running",
            node="n2",
            state="{}",
            steps_done=1,
            now=time.time(),
            journal=[JournalRow("s1", "completed", 1, value="1", seq=1)],
            sends=[("late", "null")],
        )
        with pytest.raises(LeaseLost):
            await a.checkpoint(stale)
        assert await b.journal("r1") == [] and await b.sent_events() == []
        assert (await b.load_run("r1")).node == "start"  # type: ignore[union-attr]
        with pytest.raises(LeaseLost):
            await a.subscribe(made.lease, "w", "ev", None, lambda e, m: True)
        assert not await a.fail_run(made.lease, '"x"', time.time())
    finally:
        await a.close()
        await b.close()


async def test_concurrent_claims_never_take_the_same_run(pg_url: str) -> None:
    stores = [_store(pg_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        for i in range(120):
            await stores[0].create_run(_run(f"r{i:03}", ttl=-1))
        request = ClaimRequest(ttl=30, workflows=("W.flow",), status="running")
        claimed: list[str] = []
        for _ in range(3):
            rounds = await asyncio.gather(*(s.claim_runs(request) for s in stores[1:]))
            claimed += [x.run_id for got in rounds for x in got]
        assert sorted(claimed) == [f"r{i:03}" for i in range(120)]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_dead_owner_on_this_host_is_taken_over_before_expiry(pg_url: str) -> None:
    a, b = _store(pg_url), _store(pg_url)
    await a.open()
    await b.open()
    try:
        await a.create_run(_run("r1", ttl=300))
        request = ClaimRequest(ttl=30, workflows=("W.flow",), status="running")
        assert await b.claim_runs(request) == []
        release_owner(a.owner)  # this process's engine "a" is gone (a simulated crash)
        assert [x.run_id for x in await b.claim_runs(request)] == ["r1"]
    finally:
        await a.close()
        await b.close()


# ------------------------------------------------------------------- group commit
async def test_concurrent_checkpoints_share_transactions(pg_url: str) -> None:
    store = _store(pg_url)
    await store.open()
    try:
        made = [await store.create_run(_run(f"r{i}")) for i in range(50)]
        before = store.batches

        async def advance(lease) -> None:  # type: ignore[no-untyped-def]
            for step in range(3):
                await store.checkpoint(
                    Checkpoint(
                        lease=lease,
                        status="running",
                        node=f"n{step}",
                        state="{}",
                        steps_done=step + 1,
                        now=time.time(),
                        journal=[JournalRow(f"s{step}", "completed", 1, value="1", seq=step)],
                    )
                )

        await asyncio.gather(*(advance(m.lease) for m in made))
        assert store.committed >= 150
        assert store.batches - before < 150 / 5  # many checkpoints per transaction
        assert await _sql(pg_url, "SELECT count(*) FROM steps") == 150
    finally:
        await store.close()


# --------------------------------------------------------------------- wake-ups
async def test_a_published_event_notifies_the_other_workers(pg_url: str) -> None:
    a, b = _store(pg_url), _store(pg_url)
    await a.open()
    await b.open()
    try:
        deadline = time.monotonic() + 5
        while not b.listening and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        changed = asyncio.Event()
        b.watch(changed.set)
        started = time.monotonic()
        await a.publish("paid", '{"n": 1}', time.time())
        await asyncio.wait_for(changed.wait(), timeout=2)
        assert time.monotonic() - started < 0.5
    finally:
        await a.close()
        await b.close()


async def test_a_lost_connection_fails_one_batch_then_reconnects(pg_url: str) -> None:
    store = _store(pg_url)
    await store.open()
    try:
        await store.create_run(_run("r1"))
        pid = store._writer.get_server_pid()  # type: ignore[union-attr]
        await _sql(pg_url, "SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.1)
        outcome: list[object] = []
        for i in range(2, 6):
            try:
                outcome.append((await store.create_run(_run(f"r{i}"))).created)
            except StoreError as exc:  # the batch on the dead connection: a store fault
                outcome.append(type(exc).__name__)
        assert outcome[-1] is True and outcome.count(True) >= 3
        assert await _sql(pg_url, "SELECT count(*) FROM runs") == 1 + outcome.count(True)
    finally:
        await store.close()


async def test_a_writer_that_dies_of_a_bug_fails_its_writes_instead_of_hanging(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker hung at close once: its writer task had ended, so the write releasing its
    leases waited forever. Were the writer to die of a bug (here: the fault bookkeeping
    raising while a lost connection is handled), the batch in flight and every later write
    fail with the cause instead."""
    store = _store(pg_url)
    await store.open()
    try:
        await store.create_run(_run("r1"))

        def broken(exc: BaseException) -> BaseException:
            raise RuntimeError("a bug in the fault path")

        async def failing_commit(*args: object) -> object:
            raise RuntimeError("the batch failed")

        monkeypatch.setattr(store.health, "failed", broken)
        monkeypatch.setattr(store, "_commit", failing_commit)
        with pytest.raises(StoreError, match="writer stopped"):
            await asyncio.wait_for(store.create_run(_run("r2")), timeout=10)
        with pytest.raises(StoreError, match="writer stopped"):
            await asyncio.wait_for(store.create_run(_run("r3")), timeout=10)
    finally:
        await asyncio.wait_for(store.close(), timeout=30)
