"""Attacks on the console's boundary: CSRF, forged sessions, signed links, the identity
header, deciding for someone else, binding beyond loopback, login throttling, headers."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import console_app
import pytest
from console_support import PASSWORD, Console, csrf_of

from dotdo.console import ConsoleConfig, create_app
from dotdo.console.security import (
    COOKIE,
    Session,
    Throttle,
    open_session,
    refuse_open_bind,
    seal_session,
)
from dotdo.engine import people
from dotdo.engine.links import sign_link
from dotdo.errors import DotdoError

APPROVAL = "po/po_chain"


async def _waiting(console: Console, run_id: str = "po", amount: float = 5000.0) -> str:
    handle = await console.engine.start(
        console_app.Purchases.order, amount, title="Laptops", run_id=run_id
    )
    await console.engine.idle(handle.run_id, timeout=10)
    return f"{run_id}/po_chain"


async def _status(console: Console, approval_id: str) -> str:
    return (await console.engine.get_approval(approval_id)).status


# ------------------------------------------------------------------------------ CSRF
async def test_a_form_post_without_or_with_a_wrong_csrf_token_is_refused(console: Console) -> None:
    approval = await _waiting(console)
    alice = await console.login("alice")
    other = await console.login("dan")
    foreign = await console.csrf(other)  # a valid token, of another session
    for data in (
        {"decision": "approve"},
        {"decision": "approve", "csrf": ""},
        {"decision": "approve", "csrf": "x" * 43},
        {"decision": "approve", "csrf": foreign},
    ):
        response = await alice.post(f"/approvals/{approval}/decide", data=data)
        assert response.status_code == 403, data
        assert "CSRF" in response.text
    assert await _status(console, approval) == "pending"


async def test_the_api_with_a_cookie_needs_the_csrf_header(console: Console) -> None:
    approval = await _waiting(console)
    alice = await console.login("alice")
    body = {"decision": "approve"}
    refused = await alice.post(f"/api/approvals/{approval}/decide", json=body)
    assert refused.status_code == 403
    token = await console.csrf(alice)
    wrong = await alice.post(
        f"/api/approvals/{approval}/decide", json=body, headers={"x-csrf-token": token[:-2] + "aa"}
    )
    assert wrong.status_code == 403
    assert await _status(console, approval) == "pending"
    ok = await alice.post(
        f"/api/approvals/{approval}/decide", json=body, headers={"x-csrf-token": token}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["decisions"][0]["user"] == "alice"


async def test_login_and_logout_need_csrf_too(console: Console) -> None:
    client = console.client()
    await client.get("/login")
    response = await client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    alice = await console.login("alice")
    assert (await alice.post("/logout", data={"csrf": ""})).status_code == 403
    assert (await alice.get("/inbox")).status_code == 200  # still signed in


# ----------------------------------------------------------------- session forging
def _cookie(client: object) -> str:
    return client.cookies[COOKIE]  # type: ignore[attr-defined]


def _reforge(cookie: str, **changes: object) -> str:
    payload, mac = cookie.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{raw}.{mac}"


async def test_forged_altered_or_expired_session_cookies_sign_no_one_in(console: Console) -> None:
    vic = await console.login("vic")
    real = _cookie(vic)
    key = console.app.state.console.key
    forged = [
        _reforge(real, u="olga"),  # payload changed, MAC kept
        seal_session(b"k" * 32, Session("sid", "olga", None, time.time() + 99)),  # other key
        seal_session(key, Session("sid", "olga", None, time.time() - 1)),  # expired
        "olga",
        real.split(".")[0],
        real + "x",
        "." * 3,
    ]
    for cookie in forged:
        client = console.client()
        client.cookies.set(COOKIE, cookie)
        page = await client.get("/inbox")
        assert page.status_code == 303 and page.headers["location"].startswith("/login"), cookie
        assert (await client.get("/api/me")).status_code == 401
    assert open_session(key, real, time.time()) is not None


async def test_a_removed_users_cookie_stops_working(console: Console) -> None:
    dan = await console.login("dan")
    assert (await dan.get("/api/me")).json()["name"] == "dan"
    assert await people.remove_user(console.engine.store, "dan")
    assert (await dan.get("/api/me")).status_code == 401


async def test_signing_in_gives_a_new_session_id(console: Console) -> None:
    client = console.client()
    await client.get("/login")
    before = open_session(console.app.state.console.key, _cookie(client), time.time())
    page = await client.get("/login")
    await client.post(
        "/login", data={"csrf": csrf_of(page.text), "username": "alice", "password": PASSWORD}
    )
    after = open_session(console.app.state.console.key, _cookie(client), time.time())
    assert before is not None and after is not None
    assert after.sid != before.sid and after.user == "alice"


# ---------------------------------------------------- deciding for someone else
async def test_nobody_decides_for_another_approver(console: Console) -> None:
    approval = await _waiting(console)  # waits on manager (alice)
    for name in ("dan", "fin", "olga", "vic"):
        client = await console.login(name)
        token = await console.csrf(client)
        page = await client.post(
            f"/approvals/{approval}/decide", data={"csrf": token, "decision": "approve"}
        )
        assert page.status_code == 403, name
        api = await client.post(
            f"/api/approvals/{approval}/decide",
            json={"decision": "approve", "as": "manager"},
            headers={"x-csrf-token": token},
        )
        assert api.status_code == 403, name
    alice = await console.login("alice")
    token = await console.csrf(alice)
    claim = await alice.post(
        f"/api/approvals/{approval}/decide",
        json={"decision": "approve", "as": "director"},  # the next level, not the current
        headers={"x-csrf-token": token},
    )
    assert claim.status_code == 403
    assert await _status(console, approval) == "pending"


async def test_the_approve_button_is_only_shown_to_whose_turn_it_is(console: Console) -> None:
    approval = await _waiting(console)
    dan = await console.login("dan")
    page = (await dan.get(f"/approvals/{approval}")).text
    assert 'id="approve"' not in page and "waits on <b>manager</b>" in page
    alice = await console.login("alice")
    assert 'id="approve"' in (await alice.get(f"/approvals/{approval}")).text


# --------------------------------------------------------------------- signed links
async def _link(console: Console, approval: str, approver: str, **kw: object) -> str:
    url = await console.engine.approval_link(approval, approver, base_url="http://x", **kw)
    return url.removeprefix("http://x")


async def test_a_signed_link_works_once(console: Console) -> None:
    approval = await _waiting(console)
    path = await _link(console, approval, "manager")
    browser = console.client()
    opened = await browser.get(path)
    assert opened.status_code == 303 and opened.headers["location"] == f"/approvals/{approval}"
    page = await browser.get(opened.headers["location"])
    assert page.status_code == 200 and 'id="approve"' in page.text
    again = await console.client().get(path)  # forwarded mail, a second click, a replay
    assert again.status_code == 410 and "already used" in again.text
    decided = await browser.post(
        f"/approvals/{approval}/decide",
        data={"csrf": csrf_of(page.text), "decision": "approve", "comment": "via mail"},
    )
    assert decided.status_code == 303
    decision = (await console.engine.get_approval(approval)).decisions[0]
    assert (decision.by, decision.user, decision.comment) == ("manager", "link:manager", "via mail")


async def test_tampered_or_expired_links_are_refused(console: Console) -> None:
    from datetime import timedelta

    approval = await _waiting(console)
    path = await _link(console, approval, "manager")
    token = path.removeprefix("/link/")
    payload, mac = token.split(".")
    other = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other["u"] = "director"
    raw = base64.urlsafe_b64encode(json.dumps(other).encode()).rstrip(b"=").decode()
    for bad in (f"{raw}.{mac}", f"{payload}.{mac[:-2]}xx", payload, "a.b.c", "%00"):
        response = await console.client().get(f"/link/{bad}")
        assert response.status_code in (403, 410), bad
    expired = await _link(console, approval, "manager", ttl=timedelta(seconds=-1))
    response = await console.client().get(expired)
    assert response.status_code == 410 and "expired" in response.text
    foreign = sign_link(b"not-this-database" * 2, approval, "manager", time.time() + 60)
    assert (await console.client().get(f"/link/{foreign}")).status_code == 403
    assert await _status(console, approval) == "pending"


async def test_a_link_opens_its_one_page_and_nothing_else(console: Console) -> None:
    approval = await _waiting(console, "po")
    other = await _waiting(console, "po2")
    browser = console.client()
    await browser.get(await _link(console, approval, "manager"))
    page = await browser.get(f"/approvals/{approval}")
    assert page.status_code == 200
    assert (await browser.get(f"/approvals/{other}")).status_code == 403
    refused = await browser.post(
        f"/approvals/{other}/decide", data={"csrf": csrf_of(page.text), "decision": "approve"}
    )
    assert refused.status_code == 403
    assert (await browser.get("/runs")).status_code == 403
    assert (await browser.get("/api/runs")).status_code == 403
    assert (await browser.get("/runs/po/diagram")).status_code == 200  # its own run's
    assert (await browser.get("/runs/po2/diagram")).status_code == 403
    assert (await browser.get("/runs/po2/live")).status_code == 403
    assert await _status(console, other) == "pending"


async def test_a_link_is_only_made_for_an_approver_of_the_approval(console: Console) -> None:
    approval = await _waiting(console)
    with pytest.raises(DotdoError, match="not an approver"):
        await console.engine.approval_link(approval, "mallory")


# ---------------------------------------------------------------- identity header
async def test_the_identity_header_is_believed_from_loopback_only(console: Console) -> None:
    header = {"X-Forwarded-User": "olga"}
    local = await console.client("127.0.0.1").get("/api/me", headers=header)
    assert local.status_code == 200 and local.json()["name"] == "olga"
    for peer in ("10.0.0.7", "192.168.1.2", "2001:db8::1"):
        remote = await console.client(peer).get("/api/me", headers=header)
        assert remote.status_code == 401, peer
    unknown = await console.client().get("/api/me", headers={"X-Forwarded-User": "mallory"})
    assert unknown.status_code == 403


async def test_without_the_option_the_header_is_ignored(tmp_path: Path) -> None:
    from console_support import add_people, engine_for

    engine = engine_for(tmp_path / "c.db")
    async with engine:
        await add_people(engine)
        app = create_app(engine, ConsoleConfig())
        async with app.router.lifespan_context(app):
            client = Console(engine, app).client()
            response = await client.get("/api/me", headers={"X-Forwarded-User": "olga"})
            assert response.status_code == 401


# --------------------------------------------------------------------------- binding
def test_binding_beyond_loopback_needs_a_user() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.5"):
        assert refuse_open_bind(host, users_exist=False) is not None
        assert refuse_open_bind(host, users_exist=True) is None
    for host in ("127.0.0.1", "::1", "localhost"):
        assert refuse_open_bind(host, users_exist=False) is None


async def test_the_app_refuses_a_public_address_without_users(tmp_path: Path) -> None:
    from console_support import engine_for

    engine = engine_for(tmp_path / "c.db")
    app = create_app(engine, ConsoleConfig(host="0.0.0.0"))
    with pytest.raises(DotdoError, match="without any user"):
        async with app.router.lifespan_context(app):
            pass


def test_dotdo_ui_refuses_a_public_address_without_users(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dotdo.cli",
            "ui",
            "--host",
            "0.0.0.0",
            "--db",
            str(tmp_path / "u.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "without any user" in done.stderr and "Traceback" not in done.stderr


# -------------------------------------------------------------------------- throttle
async def test_failed_logins_are_rate_limited(console: Console) -> None:
    client = console.client()
    for _ in range(5):
        page = await client.get("/login")
        bad = await client.post(
            "/login", data={"csrf": csrf_of(page.text), "username": "alice", "password": "nope"}
        )
        assert bad.status_code == 401
    page = await client.get("/login")
    blocked = await client.post(
        "/login", data={"csrf": csrf_of(page.text), "username": "alice", "password": PASSWORD}
    )
    assert blocked.status_code == 429 and "Too many" in blocked.text
    # Another address trying the same name is throttled too (per name, not only per address).
    elsewhere = console.client("10.1.1.1")
    page = await elsewhere.get("/login")
    again = await elsewhere.post(
        "/login", data={"csrf": csrf_of(page.text), "username": "alice", "password": PASSWORD}
    )
    assert again.status_code == 429


def test_the_throttle_forgets_old_failures() -> None:
    throttle = Throttle(limit=2, window=10)
    keys = ["ip:1", "user:a"]
    throttle.failed(keys, 0.0)
    throttle.failed(keys, 1.0)
    assert throttle.blocked(keys, 2.0) is not None
    assert throttle.blocked(keys, 11.5) is None
    assert throttle.blocked(["ip:2", "user:b"], 2.0) is None


# --------------------------------------------------------------------------- headers
async def test_every_response_carries_the_csp_and_no_framing(console: Console) -> None:
    alice = await console.login("alice")
    for path in ("/login", "/inbox", "/api/runs", "/runs/nope", "/static/htmx.min.js", "/nope"):
        response = await alice.get(path)
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"


async def test_pages_have_no_inline_script(console: Console) -> None:
    await _waiting(console)
    alice = await console.login("alice")
    for path in ("/inbox", f"/approvals/{APPROVAL}", "/runs", "/runs/po", "/schedules"):
        html = (await alice.get(path)).text
        assert "<script>" not in html and " on" + "click=" not in html, path
        assert html.count("<script") == html.count('<script src="/static/'), path


async def test_the_session_cookie_is_httponly_and_samesite(console: Console) -> None:
    response = await console.client().get("/login")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


async def test_no_open_redirect_after_sign_in(console: Console) -> None:
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        client = console.client()
        page = await client.get("/login", params={"next": target})
        response = await client.post(
            "/login",
            data={
                "csrf": csrf_of(page.text),
                "username": "alice",
                "password": PASSWORD,
                "next": target,
            },
        )
        assert response.headers["location"] == "/inbox", target
