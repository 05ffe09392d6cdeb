"""The console's HTML pages: sign in, inbox, decision page, runs, run page, schedules.

Server-rendered Jinja2; the only scripts are the vendored htmx and its SSE extension (no
inline script, so the CSP forbids all others). Every form carries the session's CSRF token.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from dotdo.console.security import (
    COOKIE,
    SESSION_SECONDS,
    Session,
    csrf_token,
    new_session,
    seal_session,
)
from dotdo.console.state import STATUSES, Caller, ConsoleState, Refused
from dotdo.console.templating import templates
from dotdo.console.views import iso
from dotdo.engine import people
from dotdo.engine.links import read_link
from dotdo.engine.store.interface import RunFilter
from dotdo.errors import ApprovalError

__all__ = ["page_routes", "render", "run_filter"]


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def set_session(request: Request, response: Response, session: Session) -> None:
    state = _state(request)
    response.set_cookie(
        COOKIE,
        seal_session(state.key, session),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def render(
    request: Request,
    caller: Caller,
    name: str,
    context: dict[str, Any],
    status: int = 200,
) -> Response:
    """A page with the caller, their CSRF token, and a session cookie if they had none."""
    state = _state(request)
    session = caller.session
    fresh = session is None
    if session is None:
        session = new_session()
    context = {
        "request": request,
        "me": caller.person,
        "via": caller.via,
        "csrf": csrf_token(state.key, session),
        **context,
    }
    response = templates.TemplateResponse(request, name, context, status_code=status)
    if fresh:
        set_session(request, response, session)
    return response


async def _caller(request: Request, *, page: bool = True) -> Caller:
    return await _state(request).identify(request)


def _login_redirect(request: Request) -> Response:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


async def home(request: Request) -> Response:
    caller = await _caller(request)
    return RedirectResponse("/inbox" if caller.person else "/login", status_code=303)


def _safe_next(value: str | None) -> str:
    """Only a path on this site (never `//evil` or a URL): an open redirect is a phishing aid."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/inbox"
    return value


async def login_page(request: Request) -> Response:
    caller = await _caller(request)
    nxt = _safe_next(request.query_params.get("next"))
    return render(request, caller, "login.html", {"next": nxt, "error": None})


async def login(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    form = await state.form(request)
    state.check_csrf(caller, form.get("csrf"))
    name = form.get("username", "")[:200]
    password = form.get("password", "")[:1000]
    nxt = _safe_next(form.get("next"))
    peer = request.client.host if request.client else "?"
    keys = [f"ip:{peer}", f"user:{name}"]
    now = time.monotonic()
    wait = state.throttle.blocked(keys, now)
    if wait is not None:
        context = {"next": nxt, "error": f"Too many failed sign-ins: try again in {wait:.0f}s."}
        return render(request, caller, "login.html", context, status=429)
    found = await people.user_by_name(state.store, name) if name else None
    if found is None or not people.verify_password(password, found[1]):
        state.throttle.failed(keys, now)
        context = {"next": nxt, "error": "Unknown user name or wrong password."}
        return render(request, caller, "login.html", context, status=401)
    state.throttle.succeeded(keys)
    response = RedirectResponse(nxt, status_code=303)
    set_session(request, response, new_session(user=name))  # a new id: no session fixation
    return response


async def logout(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    form = await state.form(request)
    state.check_csrf(caller, form.get("csrf"))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def link(request: Request) -> Response:
    """A signed link: check it, spend it (once), open its decision page for its approver."""
    state = _state(request)
    caller = await _caller(request)
    token = request.path_params["token"]
    try:
        claim = read_link(state.key, token, state.now())
    except ApprovalError as exc:
        raise Refused(410 if "expired" in str(exc) else 403, f"{exc}.") from None
    if not await people.spend_link(
        state.store, claim.nonce, now=state.now(), expires_at=claim.expires_at
    ):
        raise Refused(410, "this link was already used: ask for a new one, or sign in")
    target = f"/approvals/{quote(claim.approval_id, safe='/')}"
    response = RedirectResponse(target, status_code=303)
    if caller.via == "session" and caller.person and claim.approver in caller.person.names:
        return response  # already signed in as someone who may decide it
    set_session(request, response, new_session(link=(claim.approval_id, claim.approver)))
    return response


async def inbox(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    if caller.person is None:
        return _login_redirect(request)
    if caller.link is not None:
        return RedirectResponse(f"/approvals/{quote(caller.link[0], safe='/')}", status_code=303)
    kind = request.query_params.get("type") or None
    items = await state.inbox(caller.person, kind)
    return render(request, caller, "inbox.html", {"items": items, "kind": kind or ""})


async def approval_page(
    request: Request, *, error: str | None = None, status: int = 200
) -> Response:
    state = _state(request)
    caller = await _caller(request)
    if caller.person is None:
        return _login_redirect(request)
    approval_id = request.path_params["approval_id"]
    approval = await state.approval(caller, approval_id)
    run = await state.run(approval["run_id"])
    turn = approval["waiting_on"]
    may_decide = bool(turn) and caller.person.can_decide and turn in caller.person.names
    context = {
        "a": approval,
        "run": run,
        "may_decide": may_decide,
        "error": error,
        "fields": {k: v for k, v in approval["extra"].items() if k != "candidates"},
    }
    return render(request, caller, "approval.html", context, status=status)


async def decide(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    form = await state.form(request)
    state.check_csrf(caller, form.get("csrf"))
    approval_id = request.path_params["approval_id"]
    value: Any = None
    if "value" in form and form["value"] != "":
        try:
            value = json.loads(form["value"])
        except ValueError:
            value = form["value"]
    try:
        await state.decide(
            caller,
            approval_id,
            decision=form.get("decision", ""),
            comment=form.get("comment"),
            reason=form.get("reason"),
            value=value,
        )
    except Refused as refused:
        if refused.status in (400, 409) and caller.person is not None:
            return await approval_page(request, error=refused.message, status=refused.status)
        raise
    return RedirectResponse(f"/approvals/{quote(approval_id, safe='/')}", status_code=303)


def _time_param(value: str | None, what: str) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise Refused(400, f"{what} must be a date or date and time (ISO 8601)") from None


def run_filter(params: Any) -> RunFilter:
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise Refused(400, f"unknown status {status[:40]!r}: one of {', '.join(STATUSES)}")
    return RunFilter(
        status=status,
        workflow=(params.get("workflow") or None),
        prefix=(params.get("prefix") or None),
        since=_time_param(params.get("since"), "since"),
        until=_time_param(params.get("until"), "until"),
    )


async def runs(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    if caller.person is None:
        return _login_redirect(request)
    state.require(caller)
    params = request.query_params
    filters = run_filter(params)
    rows, cursor = await state.runs(filters, params.get("after"), 50)
    counts = await state.counts(filters.workflow)
    keep = {k: v for k, v in params.items() if k != "after" and v}
    context = {
        "runs": rows,
        "next": cursor,
        "counts": counts,
        "statuses": STATUSES,
        "f": params,
        "keep": keep,
        "workflows": sorted(state.engine.workflows),
    }
    name = "runs_table.html" if request.headers.get("hx-request") else "runs.html"
    return render(request, caller, name, context)


async def run_page(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    if caller.person is None:
        return _login_redirect(request)
    state.require(caller)
    run = await state.run(request.path_params["run_id"])
    return render(request, caller, "run.html", {"run": run})


async def run_cancel(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    form = await state.form(request)
    state.check_csrf(caller, form.get("csrf"))
    run_id = request.path_params["run_id"]
    await state.cancel(caller, run_id)
    return RedirectResponse(f"/runs/{quote(run_id)}", status_code=303)


async def send_event(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    form = await state.form(request)
    state.check_csrf(caller, form.get("csrf"))
    data: Any = None
    if form.get("data"):
        try:
            data = json.loads(form["data"])
        except ValueError:
            raise Refused(400, "the event's data must be JSON") from None
    await state.send(caller, form.get("event", ""), data)
    back = _safe_next(form.get("next"))
    return RedirectResponse(back, status_code=303)


async def schedules(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    if caller.person is None:
        return _login_redirect(request)
    state.require(caller)
    stored = []
    for schedule in await state.store.schedules():
        recent, _ = await state.runs(RunFilter(prefix=f"{schedule.name}@"), None, 5)
        stored.append(
            {"name": schedule.name, "spec": schedule.spec, "runs": recent}
            | {"next_fire_iso": iso(schedule.next_fire)}
        )
    handlers = []
    for name, wf in sorted(state.engine.workflows.items()):
        if wf.trigger is not None:
            rows, _ = await state.runs(RunFilter(prefix=f"{name}:"), None, 5)
            handlers.append({"name": name, "trigger": str(wf.trigger), "runs": rows})
    return render(request, caller, "schedules.html", {"schedules": stored, "handlers": handlers})


page_routes = [
    Route("/", home),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/link/{token}", link),
    Route("/inbox", inbox),
    Route("/approvals/{approval_id:path}/decide", decide, methods=["POST"]),
    Route("/approvals/{approval_id:path}", approval_page),
    Route("/runs", runs),
    Route("/runs/{run_id}/cancel", run_cancel, methods=["POST"]),
    Route("/runs/{run_id}", run_page),
    Route("/events", send_event, methods=["POST"]),
    Route("/schedules", schedules),
]
