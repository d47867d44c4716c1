"""Issue 10's defects over HTTP on the real local stack, where the local server decides too.

``chalice.test.Client`` never sees what ``chalice local`` itself does with a request (its
route matching of ``//``, methods it has no handler for, oversized request lines and
headers, its access log), so these speak HTTP to a stack started for this module.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Iterator

import pytest

from tests.e2e.stack import LocalStack, cli
from tests.samples import SEED_ORDER

pytestmark = pytest.mark.e2e
RATE_LIMIT = 5  # activation attempts per key per minute on this module's stack (the local stage has none by default)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(tmp_path_factory.mktemp("hardening") / "state",
                         extra_env={"KEYTURN_ACTIVATION_RATE_LIMIT": str(RATE_LIMIT)}).start()
    yield running
    running.stop()


def create_order(stack: LocalStack, **changes: object) -> str:
    result = cli(stack.state_dir, "create-order", "-", stdin=json.dumps({**SEED_ORDER, **changes}))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def raw(stack: LocalStack, method: str, path: str, headers: dict[str, str] | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as written (``requests`` would normalise ``//`` and methods)."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_empty_license_id_over_http_is_404(stack: LocalStack, method: str) -> None:
    auth = {"Authorization": f"Bearer {stack.login()}"}
    status, _, body = raw(stack, method, "/api/v1/licenses//", auth)
    assert (status, body) == (404, b'{"errorMessage":"License not found."}')


def test_links_name_the_local_server_whatever_host_the_client_sends(stack: LocalStack) -> None:
    key = create_order(stack)
    evil = {"Host": "evil.example", "X-Forwarded-Proto": "javascript"}
    status, headers, _ = raw(stack, "PUT", f"/rest/v1/licenses/{key}/Q1VTVE9NPWE=", evil)
    assert (status, headers["Location"]) == (202, f"{stack.url}/rest/v1/license-queue/{key}/Q1VTVE9NPWE=")
    status, _, body = raw(stack, "GET", f"/rest/v1/license-orders/{key}", evil)
    assert (status, json.loads(body)["_links"]) == (200, {"self": {"href": f"{stack.url}/rest/v1/license-orders/{key}"}})


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "FOO"])
@pytest.mark.parametrize(("path", "allow", "body"), [
    ("/api/v1/licenses", "POST, GET", b'{"errorMessage":"Method not allowed."}'),
    ("/rest/v1/signing-keys", "GET", b'{"message":"Method not allowed."}'),
])
def test_a_method_the_local_server_does_not_know_is_405_in_the_apis_format(
        stack: LocalStack, method: str, path: str, allow: str, body: bytes) -> None:
    status, headers, answered = raw(stack, method, path)
    assert (status, answered) == (405, body)
    assert sorted(headers["Allow"].split(", ")) == sorted(allow.split(", "))
    assert headers["Content-Type"] == ("application/json" if path.startswith("/api/") else "application/hal+json")


def test_an_unknown_method_on_an_unknown_path_is_the_unknown_route_404(stack: LocalStack) -> None:
    status, _, answered = raw(stack, "TRACE", "/no/such/route")
    assert (status, json.loads(answered)) == (404, {"errorMessage": "No such resource.", "message": "No such resource."})


def test_an_oversized_url_is_414_in_json_not_an_html_page(stack: LocalStack) -> None:
    status, headers, answered = raw(stack, "GET", "/rest/v1/license-orders/" + "A" * 70_000)
    assert (status, headers["Content-Type"]) == (414, "application/json")
    assert json.loads(answered) == {"errorMessage": "The request URL is too long.",
                                    "message": "The request URL is too long."}


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/version", {"errorMessage": "The request headers are too large."}),
    ("/rest/v1/signing-keys", {"message": "The request headers are too large."}),
])
def test_oversized_headers_are_431_in_the_apis_format(stack: LocalStack, path: str, body: dict[str, str]) -> None:
    status, _, answered = raw(stack, "GET", path, {"X-Big": "x" * 70_000})
    assert (status, json.loads(answered)) == (431, body)
    status, _, answered = raw(stack, "GET", path, {f"X-Many-{n}": "x" for n in range(120)})
    assert (status, json.loads(answered)) == (431, body)


def test_the_access_log_masks_activation_keys(stack: LocalStack) -> None:
    key = create_order(stack)
    offset = stack.log.stat().st_size
    assert raw(stack, "PUT", f"/rest/v1/licenses/{key}/Q1VTVE9NPWE=")[0] == 202
    assert raw(stack, "GET", f"/rest/v1/licenses/{key.lower()}/Q1VTVE9NPWE=")[0] == 200
    logged = stack.output(offset)
    assert "/rest/v1/licenses/" in logged  # the access log lines are there, with the key masked
    assert key not in logged and key.lower() not in logged
    assert f"/rest/v1/licenses/{key[:4]}…(23)/Q1VTVE9NPWE=" in logged


def test_activation_attempts_over_the_limit_set_for_make_run_are_429(stack: LocalStack) -> None:
    for _ in range(2):  # the count starts again each minute: a run that spans two minutes is repeated once
        minute = time.time() // 60
        key = create_order(stack)
        answers = [raw(stack, "PUT", f"/rest/v1/licenses/{key}/Q1VTVE9NPWE=") for _ in range(RATE_LIMIT + 1)]
        if time.time() // 60 == minute:
            break
    assert [status for status, _, _ in answers] == [202] * RATE_LIMIT + [429]
    status, headers, body = answers[-1]
    assert (body, headers["Content-Type"]) == (b'{"message":"Too many activation attempts."}', "application/hal+json")
    assert 1 <= int(headers["Retry-After"]) <= 60
