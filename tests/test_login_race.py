"""Logins of one user racing each other: a right password is never refused because another login moved first."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib import errors, models, users
from tests.conftest import ADMIN_PASSWORD


def stale_first_read(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """The first read of the user returns what it was; then ``change`` runs, as a parallel login would."""
    real = users._read
    calls = {"n": 0}

    def read(username: str) -> Any:
        found = real(username)
        calls["n"] += 1
        if calls["n"] == 1:
            change()
        return found

    monkeypatch.setattr(users, "_read", read)


def test_a_login_that_loses_the_race_to_start_the_window_still_succeeds(
        admin: models.User, monkeypatch: pytest.MonkeyPatch) -> None:
    # After a success the window is closed; two logins then both try to open a new one.
    other = "attempt-of-the-parallel-login"
    stale_first_read(monkeypatch, lambda: users._reserve_attempt("admin", users.runtime.now_ms(), users._read("admin")[0],
                                                                 other))
    assert users.authenticate("admin", ADMIN_PASSWORD).username == "admin"


def test_a_wrong_password_that_loses_the_race_is_still_counted_once(
        admin: models.User, monkeypatch: pytest.MonkeyPatch) -> None:
    other = "attempt-of-the-parallel-login"
    stale_first_read(monkeypatch, lambda: users._reserve_attempt("admin", users.runtime.now_ms(), users._read("admin")[0],
                                                                 other))
    with pytest.raises(errors.BadCredentials):
        users.authenticate("admin", "wrong")
    stored = models.User.get("admin", consistent_read=True)
    assert (int(stored.failed_logins), set(stored.pending_logins or ())) == (2, {other})
