"""Issue 10's defects over HTTP on the real local stack, where the local server decides too.

``chalice.test.Client`` never sees what ``chalice local`` itself does with a request (its
route matching of ``//``, methods it has no handler for, oversized request lines and
headers, its access log), so these speak HTTP to a stack started for this module.
"""

from __future__ import annotations

import http.client
import json
from typing import Iterator

import pytest

from tests.e2e.stack import LocalStack, cli
from tests.samples import SEED_ORDER

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(tmp_path_factory.mktemp("hardening") / "state").start()
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
