"""The console in a real browser: Playwright for Python driving Debian's Chromium.

One server (uvicorn on 127.0.0.1, a free port, in a thread) and one browser for the module;
each person gets a browser context of their own (their own cookies). Outside CI the module
skips, saying why, when Chromium or Playwright is missing; under CI=true it must run.
With DOTDO_SCREENSHOTS=1 the pages are saved to docs/console/ for docs/console.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import console_app
import pytest
from console_support import PASSWORD, LiveServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"


def _why_not() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (make test installs it when root: apt-get install chromium)"
    return None


_REASON = _why_not()
if _REASON is not None:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"browser tests must run under CI: {_REASON}")
    print(f"\nskipping the console browser tests: {_REASON}")
    pytest.skip(_REASON, allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("console") / "browser.db").start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("DOTDO_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        return DOCS
    return tmp_path


def _start(server: LiveServer, method: Any, *args: Any, run_id: str, **kw: Any) -> None:
    async def go(engine: Any) -> None:
        await engine.start(method, *args, run_id=run_id, **kw)
        await engine.idle(run_id, timeout=10)

    server.call(go)


def _login(browser: Browser, server: LiveServer, name: str) -> Page:
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#me")).to_contain_text(name)
    return page


def test_sign_in(browser: Browser, server: LiveServer, shots: Path) -> None:
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    page.goto("/inbox")
    expect(page).to_have_url(re.compile(r"/login"))
    page.screenshot(path=str(shots / "login.png"))
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("wrong password")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/inbox$"))
    expect(page.locator("#me")).to_contain_text("alice")
    context.close()


def test_the_inbox_lists_only_that_persons_waits(
    browser: Browser, server: LiveServer, shots: Path
) -> None:
    _start(server, console_app.Purchases.order, 1200.0, title="Standing desks", run_id="in-1")
    _start(server, console_app.Purchases.budget, 80.0, run_id="in-2")
    alice = _login(browser, server, "alice")
    alice.goto("/inbox")
    expect(alice.locator("#inbox")).to_contain_text("Standing desks")
    expect(alice.locator("#inbox")).not_to_contain_text("budget 80.0")
    alice.screenshot(path=str(shots / "inbox.png"), full_page=True)
    fin = _login(browser, server, "fin")
    fin.goto("/inbox")
    expect(fin.locator("#inbox")).to_contain_text("budget 80.0")
    expect(fin.locator("#inbox")).not_to_contain_text("Standing desks")
    alice.context.close()
    fin.context.close()


def test_approve_with_a_comment_and_watch_the_run_page_advance_live(
    browser: Browser, server: LiveServer, shots: Path
) -> None:
    _start(server, console_app.Purchases.budget, 300.0, run_id="live-1")
    fin = _login(browser, server, "fin")
    watcher = fin.context.new_page()
    watcher.goto("/runs/live-1")
    expect(watcher.locator("#run-status")).to_have_text("waiting")
    watcher.wait_for_timeout(300)  # the SSE stream is connected
    fin.goto("/approvals/live-1/finance_ok")
    fin.screenshot(path=str(shots / "decision.png"), full_page=True)
    fin.fill("#comment", "within budget")
    fin.click("#approve")
    expect(fin.locator("#outcome")).to_contain_text("approved")
    expect(fin.locator("#trail")).to_contain_text("within budget")
    # The other tab was never reloaded: the stream brought the new state.
    expect(watcher.locator("#run-status")).to_have_text("completed", timeout=10_000)
    expect(watcher.locator("#run-result")).to_contain_text("approved")
    watcher.screenshot(path=str(shots / "run.png"), full_page=True)
    fin.context.close()


def test_a_chain_passes_level_by_level_between_two_people(
    browser: Browser, server: LiveServer
) -> None:
    _start(server, console_app.Purchases.order, 5000.0, title="Servers", run_id="chain-1")
    alice = _login(browser, server, "alice")
    dan = _login(browser, server, "dan")
    dan.goto("/inbox")
    expect(dan.locator("#inbox-empty")).to_be_visible()
    alice.goto("/approvals/chain-1/po_chain")
    alice.fill("#comment", "ok at my level")
    alice.click("#approve")
    expect(alice.locator("#not-yours")).to_contain_text("director")
    dan.goto("/inbox")
    dan.click("text=Servers")
    expect(dan.locator("#trail")).to_contain_text("ok at my level")
    dan.click("#approve")
    expect(dan.locator("#outcome")).to_contain_text("approved")
    expect(dan.locator("#run-status")).to_have_text("completed", timeout=10_000)
    alice.context.close()
    dan.context.close()


def test_a_rejection_without_a_reason_is_refused(browser: Browser, server: LiveServer) -> None:
    _start(server, console_app.Purchases.order, 10.0, title="Pens", run_id="rej-1")
    alice = _login(browser, server, "alice")
    alice.goto("/approvals/rej-1/po_chain")
    alice.click("#reject")  # the browser itself refuses: the reason is required
    expect(alice.locator("#approval-status")).to_have_text("pending")
    # And the server refuses too, should the form be bypassed.
    alice.eval_on_selector("#reason", "el => el.removeAttribute('required')")
    alice.click("#reject")
    expect(alice.locator("#decision-error")).to_contain_text("needs a reason")
    alice.fill("#reason", "we have pens")
    alice.click("#reject")
    expect(alice.locator("#outcome")).to_contain_text("we have pens")
    alice.context.close()


def test_a_signed_link_works_once_and_expires(browser: Browser, server: LiveServer) -> None:
    _start(server, console_app.Purchases.budget, 42.0, run_id="link-1")

    def link(ttl: timedelta) -> str:
        async def make(engine: Any) -> str:
            return str(await engine.approval_link("link-1/finance_ok", "finance", ttl=ttl))

        return server.call(make).replace("http://127.0.0.1:8080", server.url)

    url = link(timedelta(hours=1))
    first = browser.new_context().new_page()
    first.goto(url)
    expect(first).to_have_url(re.compile(r"/approvals/link-1/finance_ok$"))
    expect(first.locator("#approve")).to_be_visible()
    second = browser.new_context().new_page()
    second.goto(url)
    expect(second.locator(".error")).to_contain_text("already used")
    first.click("#approve")
    expect(first.locator("#outcome")).to_contain_text("approved")
    expired = browser.new_context().new_page()
    expired.goto(link(timedelta(seconds=-1)))
    expect(expired.locator(".error")).to_contain_text("expired")
    for page in (first, second, expired):
        page.context.close()


def test_a_post_without_csrf_and_a_decision_for_another_are_refused(
    browser: Browser, server: LiveServer
) -> None:
    _start(server, console_app.Purchases.order, 77.0, title="Lamps", run_id="csrf-1")
    alice = _login(browser, server, "alice")
    alice.goto("/approvals/csrf-1/po_chain")
    alice.eval_on_selector("#approve-form input[name=csrf]", "el => el.value = ''")
    alice.click("#approve")
    expect(alice.locator(".error")).to_contain_text("CSRF")
    dan = _login(browser, server, "dan")
    dan.goto("/approvals/csrf-1/po_chain")
    expect(dan.locator("#approve")).to_have_count(0)
    token = dan.locator("input[name=csrf]").first.get_attribute("value")
    forced = dan.request.post(
        "/approvals/csrf-1/po_chain/decide",
        form={"csrf": token or "", "decision": "approve"},
        max_redirects=0,
    )
    assert forced.status == 403 and "may not decide" in forced.text()
    alice.goto("/approvals/csrf-1/po_chain")
    expect(alice.locator("#approval-status")).to_have_text("pending")
    alice.context.close()
    dan.context.close()
