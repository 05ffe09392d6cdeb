"""The console's pages and JSON API, in-process: inbox, decisions, chains, groups, cascades,
runs with keyset pagination, run pages, operators' actions, bad input, and the engine's
Approval.requested / Approval.decided events with a mailed signed link."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import console_app
import pytest
from console_support import PASSWORD, Console, csrf_of

from dotdo.engine import people
from dotdo.errors import ApprovalError


async def _order(console: Console, run_id: str, amount: float = 100.0, title: str = "PO") -> str:
    await console.engine.start(console_app.Purchases.order, amount, title=title, run_id=run_id)
    await console.engine.idle(run_id, timeout=10)
    return f"{run_id}/po_chain"


async def _decide(console: Console, client: object, approval: str, **data: str) -> object:
    token = await console.csrf(client)  # type: ignore[arg-type]
    return await client.post(  # type: ignore[attr-defined]
        f"/approvals/{approval}/decide", data={"csrf": token, **data}
    )


async def test_the_inbox_lists_what_waits_on_that_person_only(console: Console) -> None:
    await _order(console, "a1", title="Chairs")
    await _order(console, "a2", title="Desks")
    await console.engine.start(console_app.Purchases.budget, 7.0, run_id="b1")
    await console.engine.idle("b1", timeout=10)
    alice = await console.login("alice")
    page = (await alice.get("/inbox")).text
    assert "Chairs" in page and "Desks" in page and "budget 7.0" not in page
    fin = await console.login("fin")
    page = (await fin.get("/inbox")).text
    assert "budget 7.0" in page and "Chairs" not in page
    dan = await console.login("dan")  # director: level 2, not yet his turn
    assert "Nothing waits on you" in (await dan.get("/inbox")).text
    api = (await alice.get("/api/approvals")).json()["approvals"]
    assert sorted(a["id"] for a in api) == ["a1/po_chain", "a2/po_chain"]


async def test_the_inbox_sorts_by_priority_then_deadline(console: Console) -> None:
    await console.engine.start(console_app.Purchases.budget, 1.0, run_id="low")
    await console.engine.idle("low", timeout=10)
    await people.add_user(
        console.engine.store,
        "both",
        role="approver",
        names=["manager", "finance"],
        password=PASSWORD,
        now=time.time(),
    )
    await _order(console, "high")
    client = await console.login("both")
    ids = [a["id"] for a in (await client.get("/api/approvals")).json()["approvals"]]
    assert ids == ["high/po_chain", "low/finance_ok"]  # high priority first, low last
    only = (await client.get("/api/approvals", params={"type": "cascade"})).json()
    assert only["approvals"] == []


async def test_a_chain_passes_level_by_level_and_the_run_moves_on(console: Console) -> None:
    approval = await _order(console, "c1", 900.0)
    alice = await console.login("alice")
    first = await _decide(console, alice, approval, decision="approve", comment="fine by me")
    assert first.status_code == 303
    dan = await console.login("dan")
    page = (await dan.get("/inbox")).text
    assert "c1/po_chain" in page
    assert (await console.engine.get_run("c1")).status == "waiting"
    second = await _decide(console, dan, approval, decision="approve")
    assert second.status_code == 303
    info = await console.engine.wait("c1", timeout=10)
    assert info.status == "completed" and info.result == "placed 900.0"
    decided = await console.engine.get_approval(approval)
    assert [(d.by, d.user, d.comment) for d in decided.decisions] == [
        ("manager", "alice", "fine by me"),
        ("director", "dan", None),
    ]
    page = (await dan.get(f"/approvals/{approval}")).text
    assert 'id="outcome"' in page and 'id="approve"' not in page and "fine by me" in page


async def test_a_rejection_needs_a_reason(console: Console) -> None:
    approval = await _order(console, "r1")
    alice = await console.login("alice")
    for reason in ("", "   "):
        refused = await _decide(console, alice, approval, decision="reject", reason=reason)
        assert refused.status_code == 400 and "needs a reason" in refused.text
    assert (await console.engine.get_approval(approval)).status == "pending"
    token = await console.csrf(alice)
    api = await alice.post(
        f"/api/approvals/{approval}/decide",
        json={"decision": "reject"},
        headers={"x-csrf-token": token},
    )
    assert api.status_code == 400
    done = await _decide(console, alice, approval, decision="reject", reason="too dear")
    assert done.status_code == 303
    info = await console.engine.wait("r1", timeout=10)
    assert info.result == "rejected: too dear"


async def test_any_member_of_a_group_decides_and_the_decision_records_who(
    console: Console,
) -> None:
    await console.engine.start(console_app.Purchases.budget, 3.0, run_id="g1")
    await console.engine.idle("g1", timeout=10)
    fin = await console.login("fin")  # acts as the group "finance"
    assert (await _decide(console, fin, "g1/finance_ok", decision="approve")).status_code == 303
    decision = (await console.engine.get_approval("g1/finance_ok")).decisions[0]
    assert (decision.by, decision.user) == ("finance", "fin")
    # The engine API (and so `dotdo approve --as fin`) accepts a member by user name too.
    await console.engine.start(console_app.Purchases.budget, 4.0, run_id="g2")
    await console.engine.idle("g2", timeout=10)
    with pytest.raises(ApprovalError, match="may not decide"):
        await console.engine.approve("g2/finance_ok", by="alice")
    decided = await console.engine.approve("g2/finance_ok", by="fin")
    assert (decided.decisions[0].by, decided.decisions[0].user) == ("finance", "fin")


async def test_a_cascade_human_task_is_answered_with_a_value(console: Console) -> None:
    await console.engine.start(console_app.Purchases.categorize, "stapler", run_id="k1")
    await console.engine.idle("k1", timeout=10)
    olga = await console.login("olga")  # acts as "human"
    (task,) = (await olga.get("/api/approvals", params={"type": "cascade"})).json()["approvals"]
    page = (await olga.get(f"/approvals/{task['id']}")).text
    assert "Earlier tiers" in page and "misc" in page and 'id="value"' in page
    answered = await _decide(console, olga, task["id"], decision="approve", value='"office"')
    assert answered.status_code == 303
    assert (await console.engine.wait("k1", timeout=10)).result == "office"


async def test_a_cascade_human_tier_names_its_reviewer_group(console: Console) -> None:
    await console.engine.start(console_app.Purchases.triage, "invoice", run_id="k2")
    await console.engine.idle("k2", timeout=10)
    olga = await console.login("olga")  # acts as "human": not this task's reviewer
    assert (await olga.get("/api/approvals", params={"type": "cascade"})).json()["approvals"] == []
    fin = await console.login("fin")
    (task,) = (await fin.get("/api/approvals", params={"type": "cascade"})).json()["approvals"]
    assert task["approvers"] == ["finance"]
    answered = await _decide(console, fin, task["id"], decision="approve", value='"tax"')
    assert answered.status_code == 303
    assert (await console.engine.wait("k2", timeout=10)).result == "tax"
    decision = (await console.engine.get_approval(task["id"])).decisions[0]
    assert (decision.by, decision.user, decision.value) == ("finance", "fin", "tax")


async def test_decided_and_expired_approvals_show_their_outcome(console: Console) -> None:
    await console.engine.start(console_app.Purchases.hurried, 2.0, run_id="e1")
    await console.engine.idle("e1", timeout=10)
    alice = await console.login("alice")
    await asyncio.sleep(1.1)
    page = (await alice.get("/approvals/e1/quick")).text
    assert "expired" in page and 'id="approve"' not in page
    late = await _decide(console, alice, "e1/quick", decision="approve")
    assert late.status_code == 409 and "expired" in late.text


async def test_runs_list_pages_by_keyset_with_filters_and_counts(console: Console) -> None:
    for i in range(7):
        await _order(console, f"p{i}")
    await console.engine.start(console_app.Purchases.broken, 1.0, run_id="x-broken")
    await console.engine.wait("x-broken", timeout=10)
    vic = await console.login("vic")
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": "3", **({"after": after} if after else {})}
        page = (await vic.get("/api/runs", params=params)).json()
        seen += [r["run_id"] for r in page["runs"]]
        after = page["next"]
        if after is None:
            break
    assert len(seen) == len(set(seen))
    mine = sorted(r for r in seen if not r.startswith("Mailer."))  # the handler's runs too
    assert mine == sorted([f"p{i}" for i in range(7)] + ["x-broken"])
    orders = (await vic.get("/api/runs", params={"workflow": "Purchases.order"})).json()
    assert orders["counts"] == {"waiting": 7}
    assert page["counts"]["failed"] == 1
    failed = (await vic.get("/api/runs", params={"status": "failed"})).json()["runs"]
    assert [r["run_id"] for r in failed] == ["x-broken"]
    assert failed[0]["error"]["type"] == "ValueError"
    prefixed = (await vic.get("/api/runs", params={"prefix": "p"})).json()["runs"]
    assert len(prefixed) == 7
    html = (await vic.get("/runs", params={"status": "waiting"})).text
    assert "p3" in html and "x-broken" not in html
    future = (await vic.get("/api/runs", params={"since": str(time.time() + 60)})).json()
    assert future["runs"] == []


async def test_the_run_page_shows_input_journal_error_and_diagram(console: Console) -> None:
    await console.engine.start(console_app.Purchases.broken, 9.0, run_id="f1")
    await console.engine.wait("f1", timeout=10)
    vic = await console.login("vic")
    page = (await vic.get("/runs/f1")).text
    assert "cannot place 9.0" in page and "ValueError" in page and "&#34;amount&#34;: 9.0" in page
    assert 'id="journal"' in page and "/runs/f1/diagram" in page
    diagram = await vic.get("/runs/f1/diagram")
    assert diagram.status_code == 200 and diagram.headers["content-type"].startswith(
        ("image/svg+xml", "text/plain")
    )


async def test_operators_cancel_and_send_others_may_not(console: Console) -> None:
    await _order(console, "o1")
    alice = await console.login("alice")
    token = await console.csrf(alice)
    assert (await alice.post("/runs/o1/cancel", data={"csrf": token})).status_code == 403
    api = await alice.post("/api/events", json={"name": "X.y"}, headers={"x-csrf-token": token})
    assert api.status_code == 403
    olga = await console.login("olga")
    token = await console.csrf(olga, "/runs/o1")
    assert (await olga.post("/runs/o1/cancel", data={"csrf": token})).status_code == 303
    assert (await console.engine.get_run("o1")).status == "cancelled"
    sent = await olga.post(
        "/api/events",
        json={"name": "Order.paid", "data": {"n": 1}},
        headers={"x-csrf-token": token},
    )
    assert sent.status_code == 200 and sent.json()["id"] > 0
    bad = await olga.post("/api/events", json={"name": ""}, headers={"x-csrf-token": token})
    assert bad.status_code == 400


async def test_bad_input_gets_a_4xx_with_a_message(console: Console) -> None:
    approval = await _order(console, "b1")
    alice = await console.login("alice")
    token = await console.csrf(alice)
    for path in ("/runs/nope", "/approvals/nope/x", "/runs/..%2F..", "/no/such/page"):
        page = await alice.get(path)
        assert page.status_code == 404 and "Traceback" not in page.text, path
    assert (await alice.get("/api/runs/nope")).json() == {"error": "no run with id 'nope'"}
    huge = await alice.post(
        f"/approvals/{approval}/decide",
        data={"csrf": token, "decision": "approve", "comment": "x" * 100_000},
    )
    assert huge.status_code == 400 and "larger than" in huge.text
    headers = {"x-csrf-token": token, "content-type": "application/json"}
    for body in (b"{not json", b"\xff\xfe", b"[1, 2]", b'{"decision": "maybe"}'):
        response = await alice.post(
            f"/api/approvals/{approval}/decide", content=body, headers=headers
        )
        assert response.status_code == 400 and "error" in response.json(), body
    for params in ({"limit": "0"}, {"limit": "x"}, {"status": "odd"}, {"after": "zz"}):
        assert (await alice.get("/api/runs", params=params)).status_code == 400, params
    not_form = await alice.post(
        f"/approvals/{approval}/decide", content=b"{}", headers={"content-type": "application/json"}
    )
    assert not_form.status_code == 400
    assert (await console.engine.get_approval(approval)).status == "pending"


async def test_approval_events_are_sent_and_a_handler_mails_a_signed_link(
    console: Console,
) -> None:
    approval = await _order(console, "m1", 50.0)
    for _ in range(200):
        if console_app.MAILBOX:
            break
        await asyncio.sleep(0.02)
    (mail,) = console_app.MAILBOX
    assert mail["to"] == "manager" and mail["approval_id"] == approval
    browser = console.client()
    opened = await browser.get(mail["url"].removeprefix("http://console"))
    assert opened.status_code == 303
    page = await browser.get(opened.headers["location"])
    await browser.post(
        f"/approvals/{approval}/decide", data={"csrf": csrf_of(page.text), "decision": "approve"}
    )
    events = [name for name, _ in await console.engine.outbox()]
    assert events.count("Approval.requested") == 1 and events.count("Approval.decided") == 1
    decided = [data for name, data in await console.engine.outbox() if name == "Approval.decided"]
    assert decided[0]["decided_by"] == "manager" and decided[0]["waiting_on"] == "director"


def test_dotdo_users_add_list_remove(tmp_path: Path) -> None:
    db = str(tmp_path / "u.db")
    env = {**os.environ, "DOTDO_PASSWORD": "long enough pw"}

    def dotdo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dotdo.cli", *args, "--db", db],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    added = dotdo(
        "users", "add", "erin", "--role", "operator", "--as", "ops", "--as", "finance", "--token"
    )
    assert added.returncode == 0, added.stderr
    assert "acts as ops, finance" in added.stdout and "dotdo_" in added.stdout
    listed = dotdo("users", "list")
    assert "erin" in listed.stdout and "operator" in listed.stdout and "finance" in listed.stdout
    bad = dotdo("users", "add", "x", "--role", "root")
    assert bad.returncode == 2
    short = subprocess.run(
        [sys.executable, "-m", "dotdo.cli", "users", "add", "y", "--db", db],
        capture_output=True,
        text=True,
        env={**env, "DOTDO_PASSWORD": "short"},
        timeout=60,
    )
    assert short.returncode == 2 and "8 characters" in short.stderr
    assert dotdo("users", "remove", "erin").returncode == 0
    missing = dotdo("users", "remove", "erin")
    assert missing.returncode == 1 and "no user named" in missing.stderr


async def test_the_links_example_mails_each_level_of_the_chain(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from examples import console_links

    console_links.OUTBOX.clear()
    mails = await console_links.main(tmp_path / "links.db")
    assert [m.split("\n")[0] for m in mails] == ["To: manager", "To: finance"]
    assert all("/link/" in m for m in mails)
