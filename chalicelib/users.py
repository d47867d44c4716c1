"""Users and the login lockout (5 failures in 5 minutes lock the account for 5 minutes).

Every login attempt is counted *before* its password is checked, with one conditional
update, so a burst of parallel guesses cannot all be checked against the hash before
the first failure is recorded: at most ``LOCKOUT_FAILURES`` guesses per window are
ever verified.  A correct password clears the count, but only if no lock was set in
the meantime.  Unknown usernames cost the same (a GetItem, a failed conditional
update, the scrypt work), so answers and timing do not tell whether a user exists.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from chalicelib import audit, errors, passwords, runtime
from chalicelib.models import User, condition_failed

LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW_MS = 5 * 60 * 1000
LOCKOUT_MS = 5 * 60 * 1000
MAX_USERNAME = 128


def get(username: str) -> User | None:
    try:
        return User.get(username, consistent_read=True)
    except DoesNotExist:
        return None


class UserCode(StrEnum):
    """Codes of the operators' user errors.

    They belong in ``errors.Code``; they live here until that module gains them, and
    the two classes below say so to mypy with one ignore each.
    """

    USER_EXISTS = "user_exists"
    UNKNOWN_USER = "unknown_user"


class UserExists(errors.KeyturnError):
    """``add_user`` of a username that is taken: refused, so nobody's password is replaced by mistake."""

    code = UserCode.USER_EXISTS  # type: ignore[assignment]
    message = "User already exists."

    def __init__(self, username: str) -> None:
        super().__init__(f"User {username!r} already exists; reset-password gives it a new password.",
                         detail={"field": "username"})


class UnknownUser(errors.KeyturnError):
    """``reset_password`` of a username nobody has: refused rather than creating a user by a typo."""

    code = UserCode.UNKNOWN_USER  # type: ignore[assignment]
    message = "Unknown user."

    def __init__(self, username: str) -> None:
        super().__init__(f"Unknown user {username!r}; add-user creates it.", detail={"field": "username"})


def _check_credentials(username: str, password: str) -> None:
    if not username or len(username) > MAX_USERNAME or not password:
        raise ValueError(f"username (1-{MAX_USERNAME} characters) and password must not be empty")


def _new_password(password: str) -> list[Action]:
    """The actions that set a password and clear any lockout, whoever calls them."""
    return [User.password_hash.set(passwords.hash_password(password)),
            User.failed_logins.set(0), User.failed_window_start.set(0), User.locked_until.set(0)]


def set_password(username: str, password: str) -> User:
    """Create ``username`` or reset its password; either way its lock is cleared.

    One upsert, so it is safe to run at every ``make run`` start (seeding ``admin``).
    """
    _check_credentials(username, password)
    actions = [*_new_password(password), User.user_id.set(User.user_id | str(uuid.uuid4())),
               User.created_at.set(User.created_at | runtime.now_ms())]
    audit.transact(entity_of(username), "password-set", {},
                   lambda transaction: transaction.update(User(username), actions=actions))
    return _stored(username)


def entity_of(username: str) -> str:
    return f"user#{username}"


def _stored(username: str) -> User:
    found = get(username)
    if found is None:  # deleted in the instant since it was written: nothing else deletes users
        raise UnknownUser(username)
    return found


def add_user(username: str, password: str) -> User:
    """Create a user that does not exist yet, or :class:`UserExists`.

    One conditional put: of two operators adding the same name at once exactly one
    succeeds, and an existing user's password and id are never overwritten (that is
    :func:`reset_password`'s job, asked for by name).
    """
    _check_credentials(username, password)
    user = User(username, user_id=str(uuid.uuid4()), password_hash=passwords.hash_password(password),
                failed_logins=0, failed_window_start=0, locked_until=0, created_at=runtime.now_ms())
    try:
        audit.transact(entity_of(username), "user-added", {"userId": user.user_id},
                       lambda transaction: transaction.save(user, condition=User.username.does_not_exist()))
    except TransactWriteError as exc:
        if audit.change_reasons(exc, deletes_and_puts=1)[:1] == ["ConditionalCheckFailed"]:
            raise UserExists(username) from None
        raise
    return user


def reset_password(username: str, password: str) -> User:
    """Give an existing user a new password and clear its lockout, or :class:`UnknownUser`.

    One conditional update (the user must exist), so a mistyped name is an error
    instead of a new account nobody asked for.
    """
    _check_credentials(username, password)
    try:
        audit.transact(entity_of(username), "password-reset", {}, lambda transaction: transaction.update(
            User(username), actions=_new_password(password), condition=User.username.exists()))
    except TransactWriteError as exc:
        if audit.change_reasons(exc, deletes_and_puts=0)[:1] == ["ConditionalCheckFailed"]:
            raise UnknownUser(username) from None
        raise
    return _stored(username)


def _try(username: str, actions: list[Action], condition: Condition) -> User | None:
    """Apply ``actions`` if ``condition`` holds; the updated user, or None when it did not."""
    user = User(username)
    try:
        user.update(actions=actions, condition=User.username.exists() & condition)
    except UpdateError as exc:
        if condition_failed(exc):
            return None
        raise
    return user


def _reserve_attempt(username: str, now: int, known: bool) -> User | None:
    """Count one attempt; None when the account is unknown, locked, or out of attempts."""
    not_locked = User.locked_until <= now
    in_window = User.failed_window_start > now - LOCKOUT_WINDOW_MS
    counted = _try(username, [User.failed_logins.add(1)],
                   not_locked & in_window & (User.failed_logins < LOCKOUT_FAILURES))
    if counted is not None or not known:
        return counted
    restarted = _try(username, [User.failed_logins.set(1), User.failed_window_start.set(now)],
                     not_locked & ~in_window)
    if restarted is not None:
        return restarted
    # Out of attempts in this window: lock (once, whoever gets here first).
    _try(username, [User.locked_until.set(now + LOCKOUT_MS), User.failed_logins.set(0),
                    User.failed_window_start.set(0)],
         not_locked & (User.failed_logins >= LOCKOUT_FAILURES))
    return None


def authenticate(username: str, password: str) -> User:
    """The user these credentials belong to, or :class:`errors.BadCredentials`."""
    if not username or len(username) > MAX_USERNAME:
        passwords.burn_time(password)
        raise errors.BadCredentials()
    now = runtime.now_ms()
    user = get(username)
    attempt = _reserve_attempt(username, now, known=user is not None)
    if user is None or attempt is None:
        passwords.burn_time(password)
        raise errors.BadCredentials()
    if not passwords.verify_password(password, user.password_hash):
        locked = attempt.failed_logins >= LOCKOUT_FAILURES and _try(
            username, [User.locked_until.set(now + LOCKOUT_MS), User.failed_logins.set(0),
                       User.failed_window_start.set(0)], User.locked_until <= now) is not None
        # The failure was counted before the password was checked (see above); its record
        # says what it came to.  Unknown usernames get none: no chain for names nobody has.
        audit.append(entity_of(username), "login-locked" if locked else "login-failed",
                     {"failedLogins": int(attempt.failed_logins)})
        raise errors.BadCredentials()
    cleared = _try(username, [User.failed_logins.set(0), User.failed_window_start.set(0)], User.locked_until <= now)
    if cleared is None:  # locked by parallel failures while this password was being checked
        raise errors.BadCredentials()
    return user
