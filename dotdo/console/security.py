"""The console's security primitives: signed session cookies, CSRF tokens, login throttling,
the bind rule and the response headers. Pure except for the throttle's memory.

A session cookie is `payload.mac`: base64 JSON (`sid`, `user` or the approval a signed link
opened, `exp`) and an HMAC-SHA256 under the database's console key. Nothing in a cookie is
believed without the MAC, and the user it names is read again from the database on every
request (a removed user's cookie stops working at once). The CSRF token of a form is an HMAC
of the session id, so a page of another origin can neither read nor forge it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HEADERS",
    "LOOPBACK",
    "Session",
    "Throttle",
    "csrf_token",
    "is_loopback",
    "open_session",
    "refuse_open_bind",
    "seal_session",
    "valid_csrf",
]

COOKIE = "dotdo_session"
SESSION_SECONDS = 12 * 3600

HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
"""On every response: no inline scripts, no framing, and no Referer (a link's token must
not leak to another site)."""

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_open_bind(host: str, users_exist: bool) -> str | None:
    """Why the console may not bind `host`, or None: beyond loopback it needs users."""
    if is_loopback(host) or users_exist:
        return None
    return (
        f"refusing to serve the console on {host} without any user: anyone who reaches it "
        "could decide approvals. Add one with `dotdo users add NAME --role ...`, or bind "
        "127.0.0.1"
    )


@dataclass(frozen=True)
class Session:
    sid: str
    user: str | None = None
    link: tuple[str, str] | None = None
    """(approval id, approver) for a session a signed link opened: that page only."""
    exp: float = 0.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(key: bytes, purpose: str, payload: str) -> str:
    return _b64(hmac.new(key, f"{purpose}:{payload}".encode(), hashlib.sha256).digest())


def new_session(user: str | None = None, link: tuple[str, str] | None = None) -> Session:
    return Session(secrets.token_urlsafe(18), user, link, time.time() + SESSION_SECONDS)


def seal_session(key: bytes, session: Session) -> str:
    body: dict[str, Any] = {"s": session.sid, "e": round(session.exp)}
    if session.user is not None:
        body["u"] = session.user
    if session.link is not None:
        body["l"] = list(session.link)
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_mac(key, 'session', payload)}"


def open_session(key: bytes, cookie: str | None, now: float) -> Session | None:
    """The session a cookie holds, or None (absent, forged, altered, expired or malformed)."""
    if not cookie or len(cookie) > 4096 or cookie.count(".") != 1:
        return None
    payload, mac = cookie.split(".")
    if not hmac.compare_digest(mac.encode(), _mac(key, "session", payload).encode()):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        session = Session(
            sid=str(body["s"]),
            user=str(body["u"]) if "u" in body else None,
            link=(str(body["l"][0]), str(body["l"][1])) if "l" in body else None,
            exp=float(body["e"]),
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    return session if now < session.exp else None


def csrf_token(key: bytes, session: Session) -> str:
    return _mac(key, "csrf", session.sid)


def valid_csrf(key: bytes, session: Session | None, given: str | None) -> bool:
    if session is None or not given:
        return False
    return hmac.compare_digest(given.encode(), csrf_token(key, session).encode())


@dataclass
class Throttle:
    """Failed logins per client address and per user name: after `limit` failures within
    `window` seconds, further attempts are refused (429) until the oldest ages out."""

    limit: int = 5
    window: float = 300.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str, now: float) -> deque[float]:
        seen = self._failures.setdefault(key, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if not seen:
            self._failures.pop(key, None)
        return seen

    def blocked(self, keys: list[str], now: float) -> float | None:
        """Seconds until an attempt is allowed again, or None when it is allowed now."""
        waits = [
            seen[0] + self.window - now
            for key in keys
            if len(seen := self._recent(key, now)) >= self.limit
        ]
        return max(waits) if waits else None

    def failed(self, keys: list[str], now: float) -> None:
        if len(self._failures) > 100_000:  # bounded memory under a spray of names
            self._failures.clear()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, keys: list[str]) -> None:
        for key in keys[1:]:  # the address keeps its failures; the user's are forgiven
            self._failures.pop(key, None)
