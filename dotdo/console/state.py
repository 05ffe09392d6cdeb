"""The console's state and the operations its pages and its JSON API share.

Who is asking (`identify`), what they may see and do, and the reads and decisions behind
every page and endpoint live here once, so a page and its API twin cannot disagree about a
rule. Failures are `Refused` (an HTTP status and one message); the app turns them into an
error page or a JSON error, never a traceback.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.requests import Request

from dotdo.console.diagrams import DiagramCache, overlay_of
from dotdo.console.security import (
    COOKIE,
    Session,
    Throttle,
    is_loopback,
    open_session,
    valid_csrf,
)
from dotdo.console.views import approval_dict, approval_view, run_view, step_view
from dotdo.engine import people
from dotdo.engine.approval_rows import as_seen, parse_approval
from dotdo.engine.engine import Engine
from dotdo.engine.ids import check_id
from dotdo.engine.people import Person
from dotdo.engine.store.interface import RunFilter, Store
from dotdo.errors import ApprovalError, DotdoError

__all__ = ["Caller", "ConsoleConfig", "ConsoleState", "Refused"]

STATUSES = ("running", "waiting", "completed", "failed", "compensated", "cancelled")


class Refused(Exception):
    """A request refused with an HTTP status and a message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ConsoleConfig:
    host: str = "127.0.0.1"
    trust_header: str | None = None
    """A reverse proxy's identity header (e.g. X-Forwarded-User), believed only from a
    loopback peer: the proxy must run on the same machine."""
    base_url: str | None = None
    login_limit: int = 5
    login_window: float = 300.0
    max_body: int = 64 * 1024
    live_seconds: float = 300.0
    """How long one live (SSE) stream stays open before the browser reconnects."""


@dataclass(frozen=True)
class Caller:
    """Who a request comes from and how they proved it."""

    person: Person | None
    session: Session | None
    via: Literal["session", "token", "header", "link", "none"]

    @property
    def link(self) -> tuple[str, str] | None:
        return self.session.link if self.session is not None and self.via == "link" else None


@dataclass
class ConsoleState:
    engine: Engine
    config: ConsoleConfig
    key: bytes = b""
    throttle: Throttle = field(default_factory=Throttle)
    diagrams: DiagramCache = field(default_factory=DiagramCache)

    def __post_init__(self) -> None:
        self.throttle = Throttle(self.config.login_limit, self.config.login_window)

    async def start(self) -> None:
        self.key = await people.console_key(self.engine.store)

    @property
    def store(self) -> Store:
        return self.engine.store

    def now(self) -> float:
        return self.engine.clock.now()

    # -------------------------------------------------------------- identity
    async def identify(self, request: Request) -> Caller:
        session = open_session(self.key, request.cookies.get(COOKIE), time.time())
        auth = request.headers.get("authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token or len(token) > 200:
                raise Refused(401, "Authorization must be `Bearer <token>`")
            person = await people.user_by_token(self.store, token.strip())
            if person is None:
                raise Refused(401, "unknown or revoked API token")
            return Caller(person, None, "token")
        header = self.config.trust_header
        if header and header in request.headers:
            peer = request.client.host if request.client else None
            if is_loopback(peer):
                found = await people.user_by_name(self.store, request.headers[header])
                if found is None:
                    raise Refused(
                        403, f"the proxy's user {request.headers[header][:80]!r} is unknown"
                    )
                return Caller(found[0], session, "header")
            # From anywhere else the header is just text anyone can send: ignored.
        if session is None:
            return Caller(None, None, "none")
        if session.link is not None:
            approver = session.link[1]
            person = Person(name=approver, role="approver", names=(approver,))
            return Caller(person, session, "link")
        if session.user is not None:
            found = await people.user_by_name(self.store, session.user)
            if found is not None:
                return Caller(found[0], session, "session")
        return Caller(None, session, "none")

    def require(self, caller: Caller, *, role: str = "viewer") -> Person:
        if caller.person is None:
            raise Refused(401, "sign in first")
        if caller.via == "link" and role != "approver":
            raise Refused(403, "a signed link opens its one decision page only")
        if role == "approver" and not caller.person.can_decide:
            raise Refused(
                403, f"{caller.person.name} is a {caller.person.role}: deciding needs approver"
            )
        if role == "operator" and not caller.person.can_operate:
            raise Refused(
                403, f"{caller.person.name} is a {caller.person.role}: this needs operator"
            )
        return caller.person

    def check_csrf(self, caller: Caller, given: str | None) -> None:
        """Ambient credentials (a cookie, a proxy header) need the form's CSRF token."""
        if caller.via == "token":
            return
        if not valid_csrf(self.key, caller.session, given):
            raise Refused(403, "missing or wrong CSRF token: reload the page and try again")

    # ------------------------------------------------------------------ input
    async def form(self, request: Request) -> dict[str, str]:
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/x-www-form-urlencoded":
            raise Refused(400, "expected a form (application/x-www-form-urlencoded)")
        body = await self.body(request)
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "the form is not valid URL-encoded UTF-8") from None
        return dict(pairs)

    async def json_body(self, request: Request) -> Any:
        body = await self.body(request)
        try:
            return json.loads(body) if body else {}
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "the body is not valid JSON") from None

    async def body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (
            not declared.isdigit() or int(declared) > self.config.max_body
        ):
            raise Refused(400, f"the body is larger than {self.config.max_body} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.config.max_body:
                raise Refused(400, f"the body is larger than {self.config.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ reads
    async def inbox(self, person: Person, kind: str | None = None) -> list[dict[str, Any]]:
        now = self.now()
        rows = await self.store.inbox(person.names, now=now, kind=kind or None, limit=100)
        return [v for r in rows if (v := approval_view(r.body, now)) is not None]

    async def approval(self, caller: Caller, approval_id: str) -> dict[str, Any]:
        if len(approval_id) > 1000:
            raise Refused(404, "no such approval")
        if caller.link is not None and caller.link[0] != approval_id:
            raise Refused(403, "a signed link opens its one decision page only")
        view = approval_view(await self._approval_body(approval_id), self.now())
        if view is None:
            raise Refused(404, f"no approval with id {approval_id[:200]!r}")
        return view

    async def runs(
        self, filters: RunFilter, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        cursor = None
        if after:
            stamp, _, run_id = after.partition("~")
            try:
                cursor = (float(stamp), run_id)
            except ValueError:
                raise Refused(400, "bad page cursor") from None
        if filters.status is not None and filters.status not in STATUSES:
            raise Refused(
                400, f"unknown status {filters.status[:40]!r}: one of {', '.join(STATUSES)}"
            )
        rows = await self.store.runs_page(filters, after=cursor, limit=limit)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = f"{rows[-1].created_at!r}~{rows[-1].run_id}" if more and rows else None
        return [run_view(r) for r in rows], next_cursor

    async def counts(self, workflow: str | None = None) -> dict[str, int]:
        return await self.store.status_counts(workflow)

    async def run(self, run_id: str) -> dict[str, Any]:
        self._check_run_id(run_id)
        row = await self.store.load_run(run_id)
        if row is None:
            raise Refused(404, f"no run with id {run_id!r}")
        view = run_view(row, with_input=True)
        view["steps"] = [step_view(s) for s in await self.store.journal(run_id)]
        now = self.now()
        view["approvals"] = [
            v for r in await self.store.run_approvals(run_id) if (v := approval_view(r.body, now))
        ]
        return view

    async def _approval_body(self, approval_id: str) -> str | None:
        found = await self.store.approval(approval_id)
        return None if found is None else found.body

    def _check_run_id(self, run_id: str) -> None:
        try:
            check_id(run_id, "run id")
        except DotdoError:
            raise Refused(404, f"no run with id {run_id[:200]!r}") from None

    async def diagram(self, run_id: str, highlight: str | None = None) -> tuple[str, str]:
        self._check_run_id(run_id)
        row = await self.store.load_run(run_id)
        if row is None:
            raise Refused(404, f"no run with id {run_id!r}")
        body = await self.store.graph_body(row.graph_hash)
        try:
            graph = self.diagrams.graph(body, row.graph_hash, row.workflow, run_id)
        except DotdoError as exc:
            raise Refused(409, f"the run's graph cannot be drawn: {exc}") from None
        steps = await self.store.journal(run_id)
        node = None
        if highlight:
            node = next(
                (n.id for n in graph.nodes.values() if getattr(n, "name", None) == highlight),
                None,
            )
            if row.status != "waiting":
                node = None
        overlay = overlay_of(
            graph,
            row.status,
            row.node,
            [(s.key, s.status) for s in steps],
            node,
        )
        return self.diagrams.render(graph, overlay)

    # ----------------------------------------------------------------- writes
    async def decide(
        self,
        caller: Caller,
        approval_id: str,
        *,
        decision: str,
        comment: str | None,
        reason: str | None,
        value: Any = None,
        acting_as: str | None = None,
    ) -> dict[str, Any]:
        person = self.require(caller, role="approver")
        if caller.link is not None and caller.link[0] != approval_id:
            raise Refused(403, "a signed link opens its one decision page only")
        approval = parse_approval(await self._approval_body(approval_id))
        if approval is None:
            raise Refused(404, f"no approval with id {approval_id[:200]!r}")
        approval = as_seen(approval, self.now())
        if approval.status != "pending":
            raise Refused(409, f"approval {approval_id!r} is already {approval.status}")
        turn = approval.approvers[approval.level]
        if acting_as is not None and acting_as != turn:
            raise Refused(403, f"this approval waits on {turn!r}, not {acting_as!r}")
        if not people.acts_as(person, turn):
            raise Refused(
                403,
                f"{person.name} may not decide for {turn!r}: only {turn!r} (or its members) can",
            )
        user = person.name if caller.via != "link" else f"link:{person.name}"
        for text, what in ((comment, "comment"), (reason, "reason")):
            if text is not None and len(text) > 4000:
                raise Refused(400, f"the {what} is longer than 4000 characters")
        try:
            if decision == "approve":
                decided = await self.engine.approve(
                    approval_id, by=turn, comment=comment or None, value=value, user=user
                )
            elif decision == "reject":
                if not reason or not reason.strip():
                    raise Refused(400, "a rejection needs a reason")
                decided = await self.engine.reject(approval_id, by=turn, reason=reason, user=user)
            else:
                raise Refused(400, "decision must be 'approve' or 'reject'")
        except ApprovalError as exc:
            raise Refused(409, str(exc)) from None
        return approval_dict(decided, self.now())

    async def cancel(self, caller: Caller, run_id: str) -> dict[str, Any]:
        self.require(caller, role="operator")
        self._check_run_id(run_id)
        if await self.store.run_status(run_id) is None:
            raise Refused(404, f"no run with id {run_id!r}")
        try:
            await self.engine.cancel(run_id)
        except DotdoError as exc:
            raise Refused(409, str(exc)) from None
        return await self.run(run_id)

    async def send(self, caller: Caller, name: str, data: Any) -> int:
        self.require(caller, role="operator")
        try:
            return await self.engine.send(name, data)
        except DotdoError as exc:
            raise Refused(400, str(exc)) from None
