"""Shared fixtures: an isolated environment, moto DynamoDB, a movable clock, an API client.

The environment is fixed here, before any ``chalicelib`` import, because the models
read their table names when imported.  Nothing here patches code: the clock is
swapped through ``chalicelib.runtime.configure``.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

_STATE = Path(tempfile.mkdtemp(prefix="keyturn-tests-"))
for name in [n for n in os.environ if n.startswith(("AWS_", "KEYTURN_"))]:
    del os.environ[name]
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "KEYTURN_STAGE": "test", "KEYTURN_TABLE_PREFIX": "keyturn-test-", "KEYTURN_SECRETS_SOURCE": "file",
    "KEYTURN_LOCAL_DIR": str(_STATE),
})

import pytest  # noqa: E402
from chalice.test import Client  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from moto import mock_aws  # noqa: E402

from chalicelib import keystore, models, runtime, users  # noqa: E402

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
