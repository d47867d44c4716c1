"""Shared fixtures: the test stage bound explicitly, moto DynamoDB, a movable clock, an API client.

The test stage is bound here (``config.bind``), as every entry point binds its own;
``rebind`` changes a setting for one test.  Stray ``AWS_*``/``KEYTURN_*`` variables are
removed so nothing reaches a real account.  Nothing here patches code: the clock is
swapped through ``chalicelib.runtime.configure``.

The API tests' client records, as IAM (action, resource) pairs, every AWS call the API
makes while it handles a request (``IAM_RECORDING``); ``tests/test_iam.py`` checks them
against the API function's policy in ``tooling/iam.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

# Read before the KEYTURN_* variables are removed below: where a pytest run started by
# tests/test_iam.py writes the IAM calls it recorded (JSON, at the end of the session).
RECORD_IAM_CALLS_VARIABLE = "KEYTURN_RECORD_IAM_CALLS"
_RECORD_IAM_CALLS_TO = os.environ.get(RECORD_IAM_CALLS_VARIABLE)

_STATE = Path(tempfile.mkdtemp(prefix="keyturn-tests-"))
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)  # it holds generated secrets
for name in [n for n in os.environ if n.startswith(("AWS_", "KEYTURN_"))]:
    del os.environ[name]
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"})  # for the tests' own boto3 clients

import dataclasses  # noqa: E402

import pytest  # noqa: E402
from chalice.test import Client, HTTPResponse, TestHTTPClient  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from moto import mock_aws  # noqa: E402  (before any client is made: moto hooks clients as they are created)

from chalicelib import aws as aws_clients  # noqa: E402
from chalicelib import config, keystore, models, runtime, users  # noqa: E402

TEST_SETTINGS = config.Settings(stage="test", table_prefix="keyturn-test-", region="us-east-1", local_dir=_STATE,
                                public_base_url="https://license.example.com")  # links' base (chalice.test has no domainName)
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
def client(aws: None, request: pytest.FixtureRequest) -> Iterator[Client]:
    """The API through Chalice's test client; in the API tests it records the API's AWS calls."""
    from app import app

    client_class = RecordingClient if is_api_test_module(request.node.path) else Client
    with client_class(app, stage_name="test") as test_client:
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


# --- the API's AWS calls, as IAM sees them (checked by tests/test_iam.py) ----------------

TESTS_DIR = Path(__file__).resolve().parent
API_TEST_MODULES = "test_api_*.py"  # the tests whose requests are recorded
RECORDED_ACCOUNT, RECORDED_REGION = "123456789012", "us-east-1"  # moto's default account; the test stage's region

_TRANSACT_WRITE_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                           "ConditionCheck": "ConditionCheckItem"}


def is_api_test_module(path: Path) -> bool:
    return path.parent.resolve() == TESTS_DIR and path.match(API_TEST_MODULES)


def api_test_modules() -> list[Path]:
    """Every API test module on disk: the recording is complete only when all of them ran."""
    return sorted(TESTS_DIR.glob(API_TEST_MODULES))


def _table(name: str) -> str:
    return f"arn:aws:dynamodb:{RECORDED_REGION}:{RECORDED_ACCOUNT}:table/{name}"


def _parameter(name: str) -> str:
    return f"arn:aws:ssm:{RECORDED_REGION}:{RECORDED_ACCOUNT}:parameter/{name.lstrip('/')}"


def iam_pairs(service: str, operation: str, api_params: dict[str, Any]) -> set[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs AWS authorises for one API call.

    A transaction or batch is authorised per item (table) by the item's own action, so
    a policy that lacks, say, ``dynamodb:PutItem`` on a table fails a transaction that
    puts into it.  Calls this does not know are kept as ``service:Operation`` on ``*``,
    so the policy check reports them rather than hiding them.
    """
    if service == "dynamodb":
        if operation in ("BatchGetItem", "BatchWriteItem"):
            return {(f"dynamodb:{operation}", _table(name)) for name in api_params.get("RequestItems", {})}
        if operation == "TransactWriteItems":
            return {(f"dynamodb:{_TRANSACT_WRITE_ACTIONS[kind]}", _table(item[kind]["TableName"]))
                    for item in api_params.get("TransactItems", []) for kind in item}
        if operation == "TransactGetItems":
            return {("dynamodb:GetItem", _table(item["Get"]["TableName"]))
                    for item in api_params.get("TransactItems", [])}
        if "TableName" in api_params:
            resource = _table(api_params["TableName"])
            if "IndexName" in api_params:
                resource += f"/index/{api_params['IndexName']}"
            return {(f"dynamodb:{operation}", resource)}
    if service == "sns" and operation == "Publish":
        return {("sns:Publish", api_params.get("TopicArn", "*"))}
    if service == "ssm" and operation == "GetParameter":
        return {("ssm:GetParameter", _parameter(api_params["Name"]))}
    if service == "ssm" and operation == "GetParameters":
        return {("ssm:GetParameters", _parameter(name)) for name in api_params.get("Names", [])}
    return {(f"{service}:{operation}", "*")}


class IamRecording:
    """The IAM pairs the API tests' requests used, and which API tests this session ran."""

    def __init__(self) -> None:
        self.calls: set[tuple[str, str]] = set()
        self.collected: dict[str, Path] = {}  # nodeid -> module, every API test collected (before -k)
        self.ran: set[str] = set()  # nodeids of the API tests that ran (or were skipped) to the end
        self._lock = threading.Lock()

    def observe(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        """A botocore ``before-call`` handler; returns None, so the call goes ahead.

        ``params`` is botocore's request dict: for DynamoDB and SSM (JSON protocols)
        the API parameters are its JSON body.
        """
        service = model.service_model.service_name
        with self._lock:
            self.calls |= iam_pairs(service, model.name, api_parameters(service, params))

    def complete(self) -> bool:
        """True when every API test module was collected whole and every test in it ran."""
        modules = set(self.collected.values())
        return (bool(modules) and modules == set(api_test_modules())
                and set(self.collected) <= self.ran)


IAM_RECORDING = IamRecording()


def api_parameters(service: str, params: dict[str, Any]) -> dict[str, Any]:
    """The API parameters of botocore's request dict: the JSON body (DynamoDB, SSM) or the query form (SNS)."""
    body = params.get("body")
    if service in ("dynamodb", "ssm") and body:
        parsed: dict[str, Any] = json.loads(body)
        return parsed
    if isinstance(body, dict):
        return body
    if isinstance(body, (str, bytes)) and body:
        from urllib.parse import parse_qsl

        text = body.decode() if isinstance(body, bytes) else body
        return dict(parse_qsl(text))
    return {}


FUNCTION_CALLS: dict[str, set[tuple[str, str]]] = {}  # by function (tooling.iam.FUNCTIONS' names)


@contextlib.contextmanager
def as_function(name: str) -> Iterator[None]:
    """Record the AWS calls made inside the block as those of Lambda function ``name``."""
    calls = FUNCTION_CALLS.setdefault(name, set())

    def observe(model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        calls.update(iam_pairs(service, model.name, api_parameters(service, params)))

    aws_clients.observe(observe)
    try:
        yield
    finally:
        aws_clients.unobserve(observe)


class RecordingHTTPClient(TestHTTPClient):
    """Chalice's test HTTP client, recording the AWS calls made while it serves a request.

    Only the request itself is observed, so a test's setup (orders, users, SSM
    parameters it creates directly) never counts as the API's use.
    """

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes = b"") -> HTTPResponse:
        aws_clients.observe(IAM_RECORDING.observe)
        try:
            return super().request(method, path, headers=headers, body=body)
        finally:
            aws_clients.unobserve(IAM_RECORDING.observe)


class RecordingClient(Client):
    @property
    def http(self) -> TestHTTPClient:
        if self._http_client is None:
            self._http_client = RecordingHTTPClient(self._app, self._chalice_config)
        return self._http_client


def pytest_collectreport(report: pytest.CollectReport) -> None:
    for node in report.result:
        if isinstance(node, pytest.Item) and is_api_test_module(node.path):
            IAM_RECORDING.collected[node.nodeid] = node.path.resolve()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid in IAM_RECORDING.collected and (report.when == "call" or report.skipped):
        IAM_RECORDING.ran.add(report.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _RECORD_IAM_CALLS_TO:
        recording = {"complete": IAM_RECORDING.complete(), "calls": sorted(IAM_RECORDING.calls),
                     "functions": {name: sorted(calls) for name, calls in FUNCTION_CALLS.items()}}
        Path(_RECORD_IAM_CALLS_TO).write_text(json.dumps(recording, indent=1) + "\n")
