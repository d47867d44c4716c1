"""Defects found by trying Keyturn as an attacker would (issue 10), each pinned by the exact answer.

Through ``chalice.test.Client``; ``tests/e2e/test_hardening_stack.py`` repeats the ones
the local server itself decides (``//`` paths, unknown methods, oversized requests) over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any, Callable

import pytest
from chalice.test import Client

from chalicelib import aws as aws_clients
from chalicelib import config, models, orders
from tests.conftest import ADMIN_PASSWORD, FakeClock
from tests.samples import SEED_ORDER, order, segment

NOT_FOUND = b'{"errorMessage":"License not found."}'


# --- empty ids are a 404, never an empty DynamoDB key --------------------------------

@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_empty_license_id_is_404_not_a_500(client: Client, auth: dict[str, str], method: str) -> None:
    response = client.http.request(method, "/api/v1/licenses//", headers=auth)
    assert (response.status_code, response.body) == (404, NOT_FOUND)


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    ("GET", "/rest/v1/licenses//Q1VTVE9NPWE=", 404, "Invalid activation key specified."),
    ("DELETE", "/rest/v1/licenses//Q1VTVE9NPWE=", 404, "Invalid activation key specified."),
    ("PUT", "/rest/v1/licenses//Q1VTVE9NPWE=", 400, "Invalid activation key specified."),
    ("GET", "/rest/v1/license-queue//Q1VTVE9NPWE=", 404, "Invalid activation key specified."),
    ("GET", "/rest/v1/license-errors//Q1VTVE9NPWE=", 404, "Invalid activation key specified."),
])
def test_an_empty_activation_key_is_the_unknown_key_answer(client: Client, method: str, path: str, status: int,
                                                           message: str) -> None:
    response = client.http.request(method, path)
    assert (response.status_code, response.json_body) == (status, {"message": message})


@pytest.mark.parametrize("path", ["/rest/v1/license-queue/{key}//", "/rest/v1/licenses/{key}//"])
def test_an_empty_host_id_segment_is_a_format_error(client: Client, path: str) -> None:
    key = orders.create_order(order(SEED_ORDER)).activation_key
    response = client.http.request("GET", path.format(key=key))
    assert (response.status_code, response.json_body) == (400, {"message": "Invalid HostID format provided."})


# --- host id segments: no repeats, at most 2,048 characters and 32 ids ----------------

FORMAT_ERROR = {"message": "Invalid HostID format provided."}
MANY_TYPES = {"types": [{"nameRaw": name, "min": 0, "max": 16} for name in ("CUSTOM", "HOSTNAME", "LONG")], "min": 1}


def put(client: Client, key: str, text: str) -> object:
    return client.http.put(f"/rest/v1/licenses/{key}/{segment(text)}")


def test_a_segment_repeating_one_host_id_is_a_format_error_and_stores_nothing(client: Client) -> None:
    key = orders.create_order(order(SEED_ORDER, hostid=MANY_TYPES)).activation_key
    response = put(client, key, ",".join(["CUSTOM=rep"] * 4000))
    assert (response.status_code, response.json_body) == (400, FORMAT_ERROR)
    assert list(models.Activation.query(key)) == []


@pytest.mark.parametrize("text", ["CUSTOM=a,CUSTOM=a", "CUSTOM=a,CUSTOM=A",
                                  "ETHERNET=001A2B3C4D5E,ETHERNET=00-1a-2b-3c-4d-5e"])
def test_the_same_host_id_twice_in_any_spelling_is_a_format_error(client: Client, text: str) -> None:
    key = orders.create_order(order(SEED_ORDER, hostid={"types": [
        {"nameRaw": "CUSTOM", "min": 0, "max": 4}, {"nameRaw": "ETHERNET", "min": 0, "max": 4}], "min": 1})).activation_key
    response = put(client, key, text)
    assert (response.status_code, response.json_body) == (400, FORMAT_ERROR)


def test_thirty_two_distinct_host_ids_are_accepted_and_thirty_three_are_not(client: Client) -> None:
    key = orders.create_order(order(SEED_ORDER, hostid=MANY_TYPES)).activation_key
    ids = [f"{name}=h{n}" for name in ("CUSTOM", "HOSTNAME", "LONG") for n in range(11)]  # 33, 11 of each type
    assert put(client, key, ",".join(ids[:32])).status_code == 202
    response = put(client, key, ",".join(ids))
    assert (response.status_code, response.json_body) == (400, FORMAT_ERROR)


def test_a_segment_over_2048_characters_is_a_format_error_however_valid_its_text(client: Client) -> None:
    key = orders.create_order(order(SEED_ORDER, hostid=MANY_TYPES)).activation_key
    text = f"CUSTOM={'v' * 250},HOSTNAME={'w' * 250}"
    encoded = segment(text)  # 692 characters; percent-encoding each one (allowed) triples that
    too_long = "".join(f"%{ord(char):02X}" for char in encoded)
    assert len(too_long) > 2048
    for method in ("PUT", "GET"):
        response = client.http.request(method, f"/rest/v1/licenses/{key}/{too_long}")
        assert (response.status_code, response.json_body) == (400, FORMAT_ERROR)
    assert put(client, key, text).status_code == 202  # the same text, sent short, is fine


# --- only application/json (optionally ; charset=utf-8) is JSON -----------------------

VRLI_415 = b'{"errorMessage":"Unsupported media type.","errorCode":"JSON_FORMAT_ERROR"}'
LOGIN = b'{"username":"admin","password":"wrong","provider":"Local"}'


@pytest.mark.parametrize("content_type", ["*/*", "text/plain, application/json", "application/json; charset=utf-16",
                                          "application/json, text/plain", "application/jsonx", "application/*",
                                          "application/json; charset=utf-8; x=y", "text/plain"])
def test_a_body_not_declared_as_json_is_415_in_the_vrli_format(client: Client, admin: models.User,
                                                               content_type: str) -> None:
    response = client.http.post("/api/v1/sessions", headers={"Content-Type": content_type}, body=LOGIN)
    assert (response.status_code, response.body) == (415, VRLI_415)


def test_a_body_without_a_content_type_is_415(client: Client, admin: models.User) -> None:
    response = client.http.post("/api/v1/sessions", headers={}, body=LOGIN)
    assert (response.status_code, response.body) == (415, VRLI_415)


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON", "application/json; charset=utf-8",
                                          "application/json;charset=UTF-8", 'application/json; Charset="utf-8"'])
def test_json_with_or_without_the_utf8_charset_is_read(client: Client, admin: models.User, content_type: str) -> None:
    response = client.http.post("/api/v1/sessions", headers={"Content-Type": content_type}, body=LOGIN)
    assert response.status_code == 401  # read and checked: a wrong password


def test_chalices_own_415_for_a_bodiless_request_is_in_the_lac_format(client: Client) -> None:
    response = client.http.get("/rest/v1/signing-keys", headers={"Content-Type": "text/plain"})
    assert (response.status_code, response.body) == (415, b'{"message":"Unsupported media type."}')
    assert response.headers["Content-Type"] == "application/hal+json"


def test_a_non_json_body_on_an_lac_route_is_415_in_the_lac_format(client: Client) -> None:
    key = orders.create_order(order(SEED_ORDER)).activation_key
    response = client.http.put(f"/rest/v1/licenses/{key}/Q1VTVE9NPWE=", headers={"Content-Type": "*/*"}, body=b"x")
    assert (response.status_code, response.body) == (415, b'{"message":"Unsupported media type."}')
    assert response.headers["Content-Type"] == "application/hal+json"
    assert list(models.Activation.query(key)) == []


# --- links come from the stage's base URL or API Gateway's context, never from the client ---

EVIL = {"Host": "evil.example", "X-Forwarded-Proto": "javascript"}
BASE = "https://license.example.com/rest/v1"  # the test stage's public base URL (tests/conftest.py)


def test_a_clients_host_and_forwarded_proto_never_reach_location_or_links(client: Client) -> None:
    key = orders.create_order(order(SEED_ORDER)).activation_key
    activated = client.http.put(f"/rest/v1/licenses/{key}/Q1VTVE9NPWE=", headers=EVIL)
    assert activated.headers["Location"] == f"{BASE}/license-queue/{key}/Q1VTVE9NPWE="
    queued = client.http.get(f"/rest/v1/license-queue/{key}/Q1VTVE9NPWE=", headers=EVIL)
    assert queued.headers["Location"] == f"{BASE}/licenses/{key}/Q1VTVE9NPWE="
    downloaded = client.http.get(f"/rest/v1/licenses/{key}/Q1VTVE9NPWE=", headers=EVIL).json_body
    assert downloaded["_links"] == {"self": {"href": f"{BASE}/licenses/{key}/Q1VTVE9NPWE="},
                                    "license-order": {"href": f"{BASE}/license-orders/{key}"}}
    listed = client.http.get(f"/rest/v1/licenses/{key}?state=success", headers=EVIL).json_body
    assert listed["_links"] == {"self": {"href": f"{BASE}/licenses/{key}?state=success"}}
    shown = client.http.get(f"/rest/v1/license-orders/{key}", headers=EVIL).json_body
    assert shown["_links"] == {"self": {"href": f"{BASE}/license-orders/{key}"}}


def gateway_event(method: str, resource: str, path: str, parameters: dict[str, str], *, stage_path: bool,
                  domain: str = "abc123defg.execute-api.eu-west-1.amazonaws.com") -> dict[str, Any]:
    """An API Gateway REST proxy event, as the function gets it behind the stage URL or a custom domain."""
    return {"resource": resource, "path": path, "httpMethod": method, "headers": dict(EVIL),
            "multiValueHeaders": {k: [v] for k, v in EVIL.items()}, "queryStringParameters": None,
            "multiValueQueryStringParameters": None, "pathParameters": parameters, "stageVariables": None,
            "requestContext": {"resourcePath": resource, "httpMethod": method, "stage": "api",
                               "path": f"/api{path}" if stage_path else path, "domainName": domain,
                               "requestId": "req-1", "identity": {"sourceIp": "203.0.113.9"}},
            "body": None, "isBase64Encoded": False}


@pytest.mark.parametrize(("stage_path", "domain", "base"), [
    (True, "abc123defg.execute-api.eu-west-1.amazonaws.com", "https://abc123defg.execute-api.eu-west-1.amazonaws.com/api"),
    (False, "licenses.example.org", "https://licenses.example.org"),  # a custom domain with a base path mapping
])
def test_without_a_base_url_links_come_from_api_gateways_domain_and_stage(
        aws: None, rebind: Callable[..., object], stage_path: bool, domain: str, base: str) -> None:
    from app import app

    rebind(public_base_url=None)
    key = orders.create_order(order(SEED_ORDER)).activation_key
    resource = "/rest/v1/licenses/{key}/{hostids}"
    event = gateway_event("PUT", resource, f"/rest/v1/licenses/{key}/Q1VTVE9NPWE=",
                          {"key": key, "hostids": "Q1VTVE9NPWE="}, stage_path=stage_path, domain=domain)
    response = app(event, None)
    assert response["statusCode"] == 202
    assert response["headers"]["Location"] == f"{base}/rest/v1/license-queue/{key}/Q1VTVE9NPWE="


def test_without_a_base_url_or_api_gateway_links_are_a_500_and_no_seat_is_taken(
        client: Client, rebind: Callable[..., object]) -> None:
    rebind(public_base_url=None)
    key = orders.create_order(order(SEED_ORDER)).activation_key
    response = client.http.put(f"/rest/v1/licenses/{key}/Q1VTVE9NPWE=", headers=EVIL)
    assert (response.status_code, response.body) == (500, b'{"message":"Internal server error."}')
    assert list(models.Activation.query(key)) == []


@pytest.mark.parametrize(("raw", "expected"), [
    ("https://license.example.com", "https://license.example.com"),
    ("https://license.example.com/", "https://license.example.com"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("https://example.com/activation", "https://example.com/activation"),
    ("", None),
])
def test_the_public_base_url_setting_is_read_without_a_trailing_slash(raw: str, expected: str | None) -> None:
    env = {"KEYTURN_STAGE": "dev", "KEYTURN_PUBLIC_BASE_URL": raw, "KEYTURN_SECRETS_SOURCE": "ssm"}
    assert config.from_environment(env, region="eu-west-1").public_base_url == expected


@pytest.mark.parametrize("raw", ["javascript://127.0.0.1:8231", "ftp://example.com", "license.example.com",
                                 "https://", "https://example.com/?a=1", "https://example.com/#x",
                                 "https://user:pw@example.com", "https://exa mple.com"])
def test_a_public_base_url_that_is_not_http_or_https_with_a_host_is_refused(raw: str) -> None:
    env = {"KEYTURN_STAGE": "dev", "KEYTURN_PUBLIC_BASE_URL": raw, "KEYTURN_SECRETS_SOURCE": "ssm"}
    with pytest.raises(config.ConfigError, match="KEYTURN_PUBLIC_BASE_URL must be an http:// or https:// URL"):
        config.from_environment(env, region="eu-west-1")


# --- activation attempts per activation key per minute ---------------------------------

TOO_MANY = b'{"message":"Too many activation attempts."}'


def test_attempts_over_the_stages_limit_are_429_in_the_lac_format_until_the_minute_ends(
        client: Client, rebind: Callable[..., object], clock: FakeClock) -> None:
    rebind(activation_rate_limit=3)
    key = orders.create_order(order(SEED_ORDER)).activation_key
    other = orders.create_order(order(SEED_ORDER)).activation_key
    clock.advance(15)  # 12:00:15: the window ends at 12:01:00
    assert [put(client, key, "CUSTOM=a").status_code for _ in range(3)] == [202, 202, 202]
    refused = put(client, key, "CUSTOM=b")
    assert (refused.status_code, refused.body) == (429, TOO_MANY)
    assert (refused.headers["Content-Type"], refused.headers["Vary"], refused.headers["Retry-After"]) == (
        "application/hal+json", "Accept", "45")
    assert put(client, key.lower(), "CUSTOM=b").status_code == 429  # the key in any case is the same key
    assert put(client, other, "CUSTOM=a").status_code == 202  # per activation key
    assert [a.hostids_key for a in models.Activation.query(key)] == ["CUSTOM=A"]  # refused attempts took no seat
    clock.advance(45)
    assert put(client, key, "CUSTOM=b").status_code == 202  # a new minute


def test_failed_attempts_count_too_and_a_malformed_key_is_refused_without_counting(
        client: Client, rebind: Callable[..., object]) -> None:
    rebind(activation_rate_limit=2)
    key = orders.create_order(order(SEED_ORDER)).activation_key
    assert put(client, key, "HOSTNAME=x").status_code == 400  # a type the order does not list
    assert put(client, key, "CUSTOM=a").status_code == 202
    assert put(client, key, "CUSTOM=a").status_code == 429
    assert client.http.put("/rest/v1/licenses/not-a-key/Q1VTVE9NPWE=").status_code == 400
    assert [(item.counter.split("#")[:2], int(item.attempts)) for item in models.RateLimit.scan()] == [
        (["activate", key], 2)]


def test_each_attempt_costs_one_update_item_when_limited_and_none_when_not(
        client: Client, rebind: Callable[..., object]) -> None:
    key = orders.create_order(order(SEED_ORDER)).activation_key
    assert put(client, key, "CUSTOM=a").status_code == 202

    def requests_of_a_repeat() -> list[tuple[str, str]]:
        calls: list[tuple[str, str]] = []

        def observe(model: Any, params: dict[str, Any], **_: Any) -> None:
            body = json.loads(params["body"])
            calls.append((model.name, body.get("TableName") or ",".join(sorted(body.get("RequestItems", {})))))

        aws_clients.observe(observe)
        try:
            assert put(client, key, "CUSTOM=a").status_code == 202
        finally:
            aws_clients.unobserve(observe)
        return calls

    unlimited = requests_of_a_repeat()
    rebind(activation_rate_limit=60)
    limited = requests_of_a_repeat()
    assert limited == [("UpdateItem", "keyturn-test-rate-limits"), *unlimited]
    assert [name for name, _ in unlimited] == ["BatchGetItem"]


@pytest.mark.parametrize(("stage", "environ", "limit"), [
    ("dev", {}, 60), ("prod", {}, 60), ("local", {}, 0), ("test", {}, 0),
    ("local", {"KEYTURN_ACTIVATION_RATE_LIMIT": "5"}, 5), ("prod", {"KEYTURN_ACTIVATION_RATE_LIMIT": "0"}, 0),
    ("dev", {"KEYTURN_ACTIVATION_RATE_LIMIT": "200"}, 200),
])
def test_the_limit_is_60_a_minute_on_deployed_stages_and_off_locally_unless_set(
        stage: str, environ: dict[str, str], limit: int) -> None:
    from tooling import stages

    env = stages.environment_for(stage, environ)
    assert config.from_environment(env, region="eu-west-1").activation_rate_limit == limit


@pytest.mark.parametrize("raw", ["-1", "sixty", "1.5"])
def test_a_limit_that_is_not_a_whole_number_is_refused(raw: str) -> None:
    env = {"KEYTURN_STAGE": "dev", "KEYTURN_SECRETS_SOURCE": "ssm", "KEYTURN_ACTIVATION_RATE_LIMIT": raw}
    with pytest.raises(config.ConfigError, match="KEYTURN_ACTIVATION_RATE_LIMIT must be"):
        config.from_environment(env, region="eu-west-1")


# --- a failed login costs the same, whatever the reason ----------------------------------

def login_cost(client: Client, username: str, password: str) -> tuple[int, list[tuple[str, str]], int]:
    """Status, the DynamoDB requests (operation, tables) and the scrypt computations of one login."""
    calls: list[tuple[str, str]] = []
    scrypts = 0

    def observe(model: Any, params: dict[str, Any], **_: Any) -> None:
        body = json.loads(params["body"])
        tables = {body["TableName"]} if "TableName" in body else set(body.get("RequestItems", {}))
        tables |= {item[kind]["TableName"] for item in body.get("TransactItems", []) for kind in item}
        calls.append((model.name, ",".join(sorted(tables))))

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal scrypts
        if event == "c_call" and arg is hashlib.scrypt:
            scrypts += 1

    body = json.dumps({"username": username, "password": password, "provider": "Local"})
    aws_clients.observe(observe)
    sys.setprofile(profile)
    try:
        response = client.http.post("/api/v1/sessions", headers={"Content-Type": "application/json"}, body=body)
    finally:
        sys.setprofile(None)
        aws_clients.unobserve(observe)
    return response.status_code, calls, scrypts


def test_unknown_users_locked_users_and_wrong_passwords_cost_the_same_requests_and_scrypt_work(
        client: Client, admin: models.User, clock: FakeClock) -> None:
    costs = {"unknown user": login_cost(client, "nobody", "guess")}
    for n in range(1, 6):  # the first failure opens the window; the fifth locks the account
        costs[f"wrong password {n}"] = login_cost(client, "admin", f"wrong-{n}")
    assert models.User.get("admin").locked_until > 0
    costs["locked, wrong password"] = login_cost(client, "admin", "wrong-6")
    costs["locked, right password"] = login_cost(client, "admin", ADMIN_PASSWORD)
    costs["unknown user again"] = login_cost(client, "nobody-else", "guess")
    clock.advance(6 * 60)  # the lock is over and the window too: the next failure opens a new one
    costs["wrong password, new window"] = login_cost(client, "admin", "wrong-7")

    expected = costs["unknown user"]
    assert expected[0] == 401 and expected[2] == 1
    assert {case: cost for case, cost in costs.items() if cost != expected} == {}
    assert [name for name, _ in expected[1]] == ["BatchGetItem", "UpdateItem", "TransactWriteItems"]


def test_the_hash_checked_for_unknown_users_costs_what_a_real_one_costs() -> None:
    from chalicelib import passwords

    assert passwords.hash_password("x").split("$")[:4] == passwords.DUMMY_HASH.split("$")[:4]


def test_counted_failures_are_audited_and_uncounted_ones_leave_nothing(client: Client, admin: models.User) -> None:
    from chalicelib import audit

    for n in range(6):  # five counted failures (the fifth locks), then one on the locked account
        assert login_cost(client, "admin", f"wrong-{n}")[0] == 401
    assert login_cost(client, "nobody", "guess")[0] == 401
    assert [r["action"] for r in audit.show("user#admin")] == ["password-set"] + ["login-failed"] * 4 + ["login-locked"]
    assert audit.verify("user#admin")["ok"]
    assert audit.show("user#nobody") == [] and audit.head_of("user#nobody") is None
    assert [u.username for u in models.User.scan()] == ["admin"]
    assert models.User.get("admin").pending_logins is None  # every counted attempt was decided
