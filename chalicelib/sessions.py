"""Login sessions: 256-bit ids stored only as a hash, idle (sliding) expiry.

A request with a known session that expired less than a day ago is told
``Login Timeout`` (440); an unknown id, or one expired longer ago, is an
``Invalid session ID`` (401).  DynamoDB's TTL removes items lazily, so expiry is
always decided here from the stored times, never from the item's presence.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib import errors, runtime, users
from chalicelib.config import current
from chalicelib.models import Session, condition_failed

GRACE_MS = 24 * 3600 * 1000  # how long an expired session still answers 440
PROVIDERS = ("Local", "ActiveDirectory", "vIDM")
LOCAL_PROVIDER = "Local"


@dataclass(frozen=True)
class NewSession:
    user_id: str
    session_id: str
    ttl: int


def _purge_time(expires_at_ms: int) -> datetime:
    return datetime.fromtimestamp((expires_at_ms + GRACE_MS) / 1000, tz=timezone.utc)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def login(username: str, password: str, provider: str) -> NewSession:
    """Check the credentials and open a session.  Only ``Local`` users exist here."""
    if provider != LOCAL_PROVIDER:
        raise errors.BadCredentials()
    user = users.authenticate(username, password)
    ttl = current().session_ttl
    session_id = base64.urlsafe_b64encode(runtime.random_bytes(32)).rstrip(b"=").decode()
    now = runtime.now_ms()
    expires_at = now + ttl * 1000
    Session(_hash(session_id), user_id=user.user_id, username=user.username, ttl_seconds=ttl,
            created_at=now, refreshed_at=now, expires_at=expires_at,
            purge_at=_purge_time(expires_at)).save()
    return NewSession(user.user_id, session_id, ttl)


def authenticate(session_id: str | None) -> Session:
    """The live session for ``session_id``, refreshed when due; else 401/440 errors.

    One consistent read per request; one write at most every min(60 s, ttl/10).
    """
    if not session_id:
        raise errors.InvalidSession()
    try:
        session = Session.get(_hash(session_id), consistent_read=True)
    except DoesNotExist:
        raise errors.InvalidSession() from None
    now = runtime.now_ms()
    if now >= session.expires_at:
        if now >= session.expires_at + GRACE_MS:
            raise errors.InvalidSession()
        raise errors.SessionExpired()
    ttl = current().session_ttl
    refresh_after_ms = max(1, min(60, ttl // 10)) * 1000
    if now - session.refreshed_at >= refresh_after_ms:
        refresh(session, now, ttl)
    return session


def refresh(session: Session, now: int, ttl: int) -> None:
    """Slide the expiry to ``ttl`` from ``now``; :class:`errors.InvalidSession` if logged out meanwhile.

    Conditional, because an UpdateItem on a deleted key would re-create the session.
    """
    expires_at = now + ttl * 1000
    try:
        session.update(condition=Session.token_hash.exists(), actions=[
            Session.refreshed_at.set(now), Session.expires_at.set(expires_at),
            Session.ttl_seconds.set(ttl), Session.purge_at.set(_purge_time(expires_at)),
        ])
    except UpdateError as exc:
        if condition_failed(exc):
            raise errors.InvalidSession() from None
        raise


def logout(session_id: str) -> None:
    Session(_hash(session_id)).delete()


def bearer_token(header: str | None) -> str | None:
    """The session id in ``Authorization: Bearer <id>``; one pair of quotes is stripped."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header[len("Bearer "):]
    if len(token) >= 2 and token[0] == token[-1] == '"':
        token = token[1:-1]
    return token or None
