"""Issue 10's defects over HTTP on the real local stack, where the local server decides too.

``chalice.test.Client`` never sees what ``chalice local`` itself does with a request (its
route matching of ``//``, methods it has no handler for, oversized request lines and
headers, its access log), so these speak HTTP to a stack started for this module.
"""

from __future__ import annotations

import http.client
from typing import Iterator

import pytest

from tests.e2e.stack import LocalStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(tmp_path_factory.mktemp("hardening") / "state").start()
    yield running
    running.stop()


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
