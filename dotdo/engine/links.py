"""Signed approval links: a URL that opens one decision page for one approver, no password.

A link carries `approval id, approver, expiry, nonce`, signed with HMAC-SHA256 under the
database's console key (`people.console_key`). The console checks the signature and expiry
and spends the nonce on first use (`people.spend_link`), so a link works once; it opens the
page only, and the decision is still a POST with a CSRF token, so link previewers in mail
clients cannot approve. Pure functions: no clock, no store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from dotdo.errors import ApprovalError

__all__ = ["LinkClaim", "link_url", "read_link", "sign_link"]


@dataclass(frozen=True)
class LinkClaim:
    approval_id: str
    approver: str
    expires_at: float
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, b"link:" + payload.encode(), hashlib.sha256).digest())


def sign_link(key: bytes, approval_id: str, approver: str, expires_at: float) -> str:
    body = {"a": approval_id, "u": approver, "e": round(expires_at, 3)}
    body["n"] = secrets.token_urlsafe(12)
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_mac(key, payload)}"


def link_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/link/{quote(token, safe='')}"


def read_link(key: bytes, token: str, now: float) -> LinkClaim:
    """The claim a token makes, once its signature and expiry check out; else ApprovalError
    saying which (malformed, signature, expired)."""
    if len(token) > 2000 or token.count(".") != 1:
        raise ApprovalError("this link is malformed")
    payload, mac = token.split(".")
    if not hmac.compare_digest(mac.encode(), _mac(key, payload).encode()):
        raise ApprovalError("this link's signature does not match (altered or not ours)")
    try:
        body = json.loads(_unb64(payload))
        claim = LinkClaim(str(body["a"]), str(body["u"]), float(body["e"]), str(body["n"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ApprovalError("this link is malformed") from exc
    if now >= claim.expires_at:
        raise ApprovalError("this link has expired")
    return claim
