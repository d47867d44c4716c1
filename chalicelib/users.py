"""Users and the login lockout (5 failures in 5 minutes lock the account for 5 minutes)."""

from __future__ import annotations

import uuid

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib import errors, passwords, runtime
from chalicelib.models import User

LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW_MS = 5 * 60 * 1000
LOCKOUT_MS = 5 * 60 * 1000
_RETRIES = 5


def get(username: str) -> User | None:
    try:
        return User.get(username, consistent_read=True)
    except DoesNotExist:
        return None


def set_password(username: str, password: str) -> User:
    """Create ``username`` or reset its password; either way its lock is cleared.

    ``make run`` calls this to seed ``admin`` at every start.
    """
    if not username or not password:
        raise ValueError("username and password must not be empty")
    password_hash = passwords.hash_password(password)
    for _ in range(_RETRIES):
        user = get(username)
        if user is None:
            user = User(username, user_id=str(uuid.uuid4()), password_hash=password_hash,
                        created_at=runtime.now_ms())
        else:
            user.password_hash = password_hash
            user.failed_logins = 0
            user.failed_window_start = 0
            user.locked_until = 0
        try:
            user.save()  # conditional on the version read (or on absence)
            return user
        except PutError as exc:
            if not _is_conditional_failure(exc):
                raise
    raise RuntimeError(f"user {username!r} kept changing while its password was set")


def authenticate(username: str, password: str) -> User:
    """The user these credentials belong to, or :class:`errors.BadCredentials`.

    A locked or unknown account costs the same scrypt work as a wrong password and
    gives the same answer, so neither can be told apart from outside.
    """
    now = runtime.now_ms()
    user = get(username)
    if user is None or user.locked_until > now:
        passwords.burn_time(password)
        raise errors.BadCredentials()
    if not passwords.verify_password(password, user.password_hash):
        _record_failure(user, now)
        raise errors.BadCredentials()
    if user.failed_logins:
        _update(user, lambda u: [User.failed_logins.set(0), User.failed_window_start.set(0)])
    return user


def _record_failure(user: User, now: int) -> None:
    def actions(u: User) -> list:
        if now - u.failed_window_start > LOCKOUT_WINDOW_MS:
            count, window_start = 1, now
        else:
            count, window_start = u.failed_logins + 1, u.failed_window_start
        if count >= LOCKOUT_FAILURES:
            return [User.failed_logins.set(0), User.failed_window_start.set(0),
                    User.locked_until.set(now + LOCKOUT_MS)]
        return [User.failed_logins.set(count), User.failed_window_start.set(window_start)]

    _update(user, actions)


def _update(user: User, actions) -> None:  # type: ignore[no-untyped-def]
    """Apply ``actions(user)`` conditional on the version read; re-read and retry on a race."""
    for _ in range(_RETRIES):
        try:
            user.update(actions=actions(user))
            return
        except UpdateError as exc:
            if not _is_conditional_failure(exc):
                raise
            fresh = get(user.username)
            if fresh is None:
                return
            user = fresh
    raise RuntimeError(f"user {user.username!r} kept changing")


def _is_conditional_failure(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"
