"""Shared fixtures: the test stage bound explicitly, moto DynamoDB, a movable clock, an API client.

The test stage is bound here (``config.bind``), as every entry point binds its own;
``rebind`` changes a setting for one test.  Stray ``AWS_*``/``KEYTURN_*`` variables are
removed so nothing reaches a real account.  Nothing here patches code: the clock is
swapped through ``chalicelib.runtime.configure``.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

_STATE = Path(tempfile.mkdtemp(prefix="keyturn-tests-"))
for name in [n for n in os.environ if n.startswith(("AWS_", "KEYTURN_"))]:
    del os.environ[name]
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"})  # for the tests' own boto3 clients

import dataclasses  # noqa: E402

import pytest  # noqa: E402
from chalice.test import Client  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from moto import mock_aws  # noqa: E402  (before any client is made: moto hooks clients as they are created)

from chalicelib import config, keystore, models, runtime, users  # noqa: E402

TEST_SETTINGS = config.Settings(stage="test", table_prefix="keyturn-test-", region="us-east-1", local_dir=_STATE)
config.bind(TEST_SETTINGS)
keystore.ensure_local_secrets(_STATE)

# CI runs the property tests on fixed examples, so a red build is reproducible; locally
# they explore new examples on every run (run with CI=true to reproduce CI's).
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

ADMIN_PASSWORD = "correct horse battery staple"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def state_dir() -> Path:
    return _STATE


@pytest.fixture
def rebind() -> Iterator[Callable[..., config.Settings]]:
    """Bind the test stage with some settings changed, for one test."""
    def bind(**changes: object) -> config.Settings:
        return config.bind(dataclasses.replace(TEST_SETTINGS, **changes))

    yield bind
    config.bind(TEST_SETTINGS)


@pytest.fixture(autouse=True)
def clock() -> Iterator[FakeClock]:
    fake = FakeClock(datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc))
    previous = runtime.configure(clock=fake)
    yield fake
    runtime.restore(previous)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        models.create_tables()
        yield


@pytest.fixture
def client(aws: None) -> Iterator[Client]:
    from app import app

    with Client(app, stage_name="test") as test_client:
        yield test_client


@pytest.fixture
def admin(aws: None) -> models.User:
    return users.set_password("admin", ADMIN_PASSWORD)


@pytest.fixture
def session_id(client: Client, admin: models.User) -> str:
    response = client.http.post("/api/v1/sessions", headers={"Content-Type": "application/json"},
                                body=f'{{"username":"admin","password":"{ADMIN_PASSWORD}","provider":"Local"}}')
    assert response.status_code == 200, response.body
    return str(response.json_body["sessionId"])


@pytest.fixture
def auth(session_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {session_id}", "Content-Type": "application/json"}
