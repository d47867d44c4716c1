"""The real local stack (moto server + chalice local), spoken to over HTTP as the README does."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.e2e.stack import LocalStack, cli, process_exists

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(tmp_path_factory.mktemp("shared") / "state").start()
    yield running
    running.stop()


def mint(stack: LocalStack, *args: str) -> str:
    result = cli(stack.state_dir, "mint-key", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_the_readme_session_survives_a_restart_and_leaves_no_process(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "state").start()
    try:
        session = stack.login()
        auth = {"Authorization": f"Bearer {session}"}
        key = mint(stack, "--type", "OSI", "--count", "10", "--expires", "2099-12-31")
        added = stack.post("/api/v1/licenses", json={"key": key}, headers=auth)
        assert added.status_code == 201, added.text
        license_id = added.json()["license"]["id"]
        listed = stack.get("/api/v1/licenses", headers=auth)
        assert listed.status_code == 200
        assert listed.json()["licenses"][license_id]["configuration"] == "10 Operating System Instances (OSIs)"
        second = stack.post("/api/v1/licenses", json={"key": mint(stack, "--type", "CPU", "--count", "2")},
                            headers=auth).json()["license"]["id"]
        deleted = stack.delete(f"/api/v1/licenses/{second}", headers=auth)
        assert (deleted.status_code, deleted.text) == (200, "")
    finally:
        status = stack.stop()
    assert status == 0
    assert not any(process_exists(pid) for pid in stack.pids()), "a process of the stack survived Ctrl-C"
    assert not (stack.state_dir / "stack.json").exists()

    again = LocalStack(stack.state_dir).start()
    try:
        listed = again.get("/api/v1/licenses", headers=auth)  # the old session survived too
        assert listed.status_code == 200
        assert list(listed.json()["licenses"]) == [license_id]
        assert listed.json()["licenses"][license_id]["licenseKey"] == key
    finally:
        again.stop()
    assert not any(process_exists(pid) for pid in again.pids())


def test_without_a_given_password_one_is_generated_once_and_kept(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "state", admin_password=None, extra_env={"KEYTURN_SESSION_TTL": "120"}).start()
    try:
        password = (stack.state_dir / "admin-password").read_text().strip()
        assert len(password) >= 20 and password in stack.log.read_text()
        response = stack.post("/api/v1/sessions", json={"username": "admin", "password": password,
                                                         "provider": "Local"})
        assert response.json()["ttl"] == 120  # KEYTURN_SESSION_TTL survives chalice local's stage variables
    finally:
        stack.stop()
    again = LocalStack(stack.state_dir, admin_password=None).start()
    try:
        again.login(password)
    finally:
        again.stop()


def test_a_second_stack_on_the_same_state_folder_is_refused(stack: LocalStack, tmp_path: Path) -> None:
    second = LocalStack(stack.state_dir)
    with pytest.raises(RuntimeError, match="another local stack is using"):
        second.start()


def test_concurrent_posts_of_one_key_give_exactly_one_201(stack: LocalStack) -> None:
    auth = {"Authorization": f"Bearer {stack.login()}"}
    key = mint(stack, "--type", "CORE", "--count", "4")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: stack.post("/api/v1/licenses", json={"key": key}, headers=auth).status_code,
                                 range(8)))
    assert sorted(statuses) == [201] + [409] * 7


def test_parallel_guessing_cannot_get_past_the_lockout(stack: LocalStack) -> None:
    created = cli(stack.state_dir, "set-password", "guessme", "--password", "the-right-one")
    assert created.returncode == 0, created.stderr

    def attempt(n: int) -> int:
        password = "the-right-one" if n == 15 else f"guess-{n}"
        return stack.post("/api/v1/sessions", json={"username": "guessme", "password": password,
                                                     "provider": "Local"}).status_code

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(attempt, range(30)))
    assert set(statuses) <= {200, 401} and statuses.count(200) <= 1
    locked = stack.post("/api/v1/sessions", json={"username": "guessme", "password": "the-right-one",
                                                  "provider": "Local"})
    assert locked.status_code == 401  # 29 wrong guesses in a burst lock the account


def test_errors_on_the_wire_are_in_the_vrli_format_with_a_request_id(stack: LocalStack) -> None:
    unauthenticated = stack.get("/api/v1/licenses")
    assert (unauthenticated.status_code, unauthenticated.content) == (401, b"Invalid session ID")
    assert unauthenticated.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert unauthenticated.headers["X-Request-Id"]
    auth = {"Authorization": f"Bearer {stack.login()}"}
    wrong_method = requests_put(stack, "/api/v1/licenses", auth)
    assert (wrong_method.status_code, wrong_method.content) == (405, b'{"errorMessage":"Method not allowed."}')
    form = stack.post("/api/v1/licenses", data={"key": "x"}, headers=auth)  # form-encoded
    assert form.status_code == 415
    assert form.content == b'{"errorMessage":"Unsupported media type.","errorCode":"JSON_FORMAT_ERROR"}'
    bad = stack.post("/api/v1/licenses", data=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["errorCode"] == "JSON_FORMAT_ERROR"


def requests_put(stack: LocalStack, path: str, headers: dict[str, str]) -> "object":
    import requests

    return requests.put(stack.url + path, json={}, headers=headers, timeout=30)


def test_the_cli_documents_mint_key() -> None:
    result = cli(Path("/nonexistent"), "mint-key", "--help")
    assert result.returncode == 0
    for option in ("--type", "--count", "--expires", "OSI", "CPU", "CORE"):
        assert option in result.stdout


def test_the_cli_says_when_the_local_stack_is_not_running(tmp_path: Path) -> None:
    result = cli(tmp_path, "set-password", "someone", "--password", "x")
    assert result.returncode != 0
    assert "make run" in result.stderr
    before_first_start = cli(tmp_path, "mint-key", "--type", "OSI", "--count", "1")
    assert before_first_start.returncode == 1
    assert "no local secrets" in before_first_start.stderr and "Traceback" not in before_first_start.stderr


def test_a_port_already_in_use_is_refused_clearly_and_leaves_nothing_running(stack: LocalStack,
                                                                                tmp_path: Path) -> None:
    second = LocalStack(tmp_path / "state")
    second.port, second.url = stack.port, stack.url  # the shared stack's API holds this port
    with pytest.raises(RuntimeError, match=f"port {stack.port} on 127.0.0.1 is in use"):
        second.start()
    assert second.process is not None and second.process.poll() is not None
    assert stack.get("/api/v1/version").status_code == 200  # the first stack is untouched


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer some-session"}])
def test_an_unknown_route_answers_as_the_deployed_api_gateway_does(stack: LocalStack, headers: dict[str, str]) -> None:
    """Locally as in AWS (the template's Gateway Responses): 404, readable by both APIs' clients."""
    for method, path in (("GET", "/api/v1/nothing-here"), ("POST", "/rest/v2/licenses"), ("GET", "/")):
        response = requests.request(method, stack.url + path, headers=headers, timeout=30)
        assert (response.status_code, response.headers["Content-Type"], response.text) == (
            404, "application/json", '{"errorMessage": "No such resource.", "message": "No such resource."}')


def test_parallel_logins_of_one_user_all_succeed(stack: LocalStack) -> None:
    # Attempts are counted before the password is checked, so at most LOCKOUT_FAILURES (5) logins of
    # one user may be in flight at once (docs/api.md); 4 at a time, each round after a success, when
    # every login opens a new counting window and all but one lose that race.
    body = {"username": "admin", "password": stack.admin_password, "provider": "Local"}
    for _ in range(4):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: stack.post("/api/v1/sessions", json=body).status_code, range(4)))
        assert answers == [200] * 4
