"""Users and the login lockout (5 failures in 5 minutes lock the account for 5 minutes).

Every login attempt is counted *before* its password is checked, with one conditional
update, so a burst of parallel guesses cannot all be checked against the hash before
the first failure is recorded: at most ``LOCKOUT_FAILURES`` guesses per window are
ever verified.  A correct password clears the count, but only if no lock was set in
the meantime.  Unknown usernames, locked accounts and wrong passwords cost the same
(one BatchGetItem, one conditional UpdateItem, one TransactWriteItems, one scrypt
computation with the same parameters), so neither the answer nor the work tells whether
a user exists or is locked; ``tests/test_api_hardening.py`` compares the requests.
"""

from __future__ import annotations

import base64
import uuid
from enum import StrEnum

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from chalicelib import audit, errors, passwords, runtime
from chalicelib.models import AuditHead, User, condition_failed, connection

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


def _read(username: str) -> tuple[User | None, AuditHead | None]:
    """The user and its audit chain's head, in one request (consistent reads); None for what is absent."""
    from chalicelib.activations import batch_get

    user_get = User.get_operation_kwargs_from_class(username)
    head_get = audit.head_key(entity_of(username))
    found = batch_get(connection().dispatch, {
        user_get["TableName"]: {"Keys": [user_get["Key"]], "ConsistentRead": True},
        head_get["TableName"]: {"Keys": [head_get["Key"]], "ConsistentRead": True},
    })
    users = found.get(user_get["TableName"], [])
    heads = found.get(head_get["TableName"], [])
    return (User.from_raw_data(users[0]) if users else None), audit.head_from_raw(heads[0] if heads else None)


def _reserve_attempt(username: str, now: int, user: User | None, attempt_id: str) -> User | None:
    """Count one attempt, tagged ``attempt_id``, in one conditional update; the user as updated, or None.

    Not counted (None): an unknown account (the update's condition needs the item), a
    locked one, one out of attempts in its window (which this locks), or one whose window
    a parallel attempt changed since it was read.  Every case is the same one request.
    """
    not_locked = User.locked_until <= now
    in_window = User.failed_window_start > now - LOCKOUT_WINDOW_MS
    if user is not None and int(user.failed_window_start) <= now - LOCKOUT_WINDOW_MS:  # a new window
        return _try(username, [User.failed_logins.set(1), User.failed_window_start.set(now),
                               User.pending_logins.set({attempt_id})], not_locked & ~in_window)
    if user is not None and int(user.locked_until) <= now and int(user.failed_logins) >= LOCKOUT_FAILURES:
        # Out of attempts in this window (a burst): lock, whoever gets here first; nothing counted.
        _try(username, [User.locked_until.set(now + LOCKOUT_MS), User.failed_logins.set(0),
                        User.failed_window_start.set(0)], not_locked & (User.failed_logins >= LOCKOUT_FAILURES))
        return None
    # The window's next attempt; the condition refuses unknown and locked accounts.
    return _try(username, [User.failed_logins.add(1), User.pending_logins.add({attempt_id})],
                not_locked & in_window & (User.failed_logins < LOCKOUT_FAILURES))


def _record_failure(username: str, now: int, attempt_id: str, attempt: User | None, head: AuditHead | None) -> None:
    """Decide a failed attempt in one transaction: the user's update and its audit record, or nothing.

    The transaction is sent for every failed login, counted or not, so an unknown user,
    a locked one and a wrong password cost the same requests.  Its condition is that
    this attempt was counted (its id is pending): for an attempt that was not, DynamoDB
    cancels it and nothing is written, so no chain is started for a name nobody has and
    a locked account's refusals add no records.  The fifth counted failure locks.
    """
    locks = attempt is not None and int(attempt.failed_logins) >= LOCKOUT_FAILURES
    actions: list[Action] = [User.pending_logins.delete({attempt_id})]
    if locks:
        actions += [User.locked_until.set(now + LOCKOUT_MS), User.failed_logins.set(0),
                    User.failed_window_start.set(0)]
    this_attempt_was_counted = User.pending_logins.contains(attempt_id)
    # The failure was counted before the password was checked (see above); its record
    # says what it came to.
    try:
        audit.transact(entity_of(username), "login-locked" if locks else "login-failed",
                       {"failedLogins": int(attempt.failed_logins) if attempt is not None else 0},
                       lambda transaction: transaction.update(User(username), actions=actions,
                                                              condition=this_attempt_was_counted),
                       head=head, refusal_expected=attempt is None)
    except TransactWriteError:
        if attempt is not None:
            raise


RESERVE_RETRIES = 3  # reads again after losing a race with a parallel login of the same user


def authenticate(username: str, password: str) -> User:
    """The user these credentials belong to, or :class:`errors.BadCredentials`.

    Every failed login, whatever the reason, is the same three requests (the user and
    its audit head read together; the attempt counted; the failure decided, see
    :func:`_record_failure`) and one scrypt computation.  Only a login that races
    another login of the same existing, unlocked user reads and counts again.
    """
    if not username or len(username) > MAX_USERNAME:
        passwords.burn_time(password)
        raise errors.BadCredentials()
    now = runtime.now_ms()
    user, head = _read(username)
    attempt_id = base64.urlsafe_b64encode(runtime.random_bytes(16)).decode()
    attempt = _reserve_attempt(username, now, user, attempt_id)
    for _ in range(RESERVE_RETRIES):
        # A parallel login of this user moved its window between the read and the update (two
        # logins after a success both open a new one): read it again, so the loser's password is
        # still checked and its attempt still counted.  Unknown and locked accounts never retry.
        if attempt is not None or user is None or int(user.locked_until) > now:
            break
        user, head = _read(username)
        if user is None or int(user.locked_until) > now:
            break
        attempt = _reserve_attempt(username, now, user, attempt_id)
    if user is None or attempt is None:
        passwords.burn_time(password)
        right = False
    else:
        right = passwords.verify_password(password, user.password_hash)
    if not right:
        _record_failure(username, now, attempt_id, attempt, head)
        raise errors.BadCredentials()
    assert user is not None
    cleared = _try(username, [User.failed_logins.set(0), User.failed_window_start.set(0),
                              User.pending_logins.delete({attempt_id})], User.locked_until <= now)
    if cleared is None:  # locked by parallel failures while this password was being checked
        raise errors.BadCredentials()
    return user
