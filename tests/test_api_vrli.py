"""The Log Insight-compatible API through chalice.test.Client, pinned to contract A's bytes."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Callable

import pytest
from chalice.test import Client

from chalicelib import config, keys, keystore, models, users
from tests.conftest import ADMIN_PASSWORD, FakeClock

JSON = {"Content-Type": "application/json"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def mint(type_enum: str = "OSI", count: int = 10, expires: date | None = None) -> str:
    return keys.mint(type_enum, count, expires, secret=keystore.license_key_secret())


def login(client: Client, password: str = ADMIN_PASSWORD, username: str = "admin") -> "object":
    body = json.dumps({"username": username, "password": password, "provider": "Local"})
    return client.http.post("/api/v1/sessions", headers=JSON, body=body)


def add(client: Client, auth: dict[str, str], key: str) -> "object":
    return client.http.post("/api/v1/licenses", headers=auth, body=json.dumps({"key": key}))


# --- A.1 sessions -------------------------------------------------------------

def test_login_answers_200_with_user_session_and_ttl_in_that_order(client: Client, admin: models.User) -> None:
    response = login(client)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    match = re.fullmatch(rb'\{"userId":"([^"]+)","sessionId":"([^"]+)","ttl":1800\}', response.body)
    assert match, response.body
    assert match.group(1).decode() == admin.user_id and UUID.match(admin.user_id)
    assert len(match.group(2)) >= 43  # 256 bits of base64


def test_the_session_id_is_the_eighth_double_quoted_field_for_shell_clients(client: Client, admin: models.User) -> None:
    response = login(client)
    assert response.body.decode().split('"')[7] == response.json_body["sessionId"]


def test_only_a_hash_of_the_session_id_is_stored(client: Client, admin: models.User) -> None:
    session_id = login(client).json_body["sessionId"]
    stored = [item.token_hash for item in models.Session.scan()]
    assert len(stored) == 1 and session_id not in stored[0] and len(stored[0]) == 64


def test_a_wrong_password_is_401_in_the_vrli_format(client: Client, admin: models.User) -> None:
    response = login(client, password="wrong")
    assert response.status_code == 401
    assert response.body == b'{"errorMessage":"Invalid username or password.","errorCode":"FIELD_ERROR"}'


def test_an_unknown_user_gets_the_same_401(client: Client, admin: models.User) -> None:
    assert login(client, username="nobody").body == login(client, password="nope").body


@pytest.mark.parametrize("provider", ["ActiveDirectory", "vIDM"])
def test_other_known_providers_get_the_401(client: Client, admin: models.User, provider: str) -> None:
    body = json.dumps({"username": "admin", "password": ADMIN_PASSWORD, "provider": provider})
    response = client.http.post("/api/v1/sessions", headers=JSON, body=body)
    assert response.status_code == 401
    assert response.json_body == {"errorMessage": "Invalid username or password.", "errorCode": "FIELD_ERROR"}


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "The request body is empty."),
    (b"{", "Malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2."),
    (b"[{}]", "The request body must be a JSON object."),
    (b'"text"', "The request body must be a JSON object."),
    (b"\xff\xfe", "The request body is not UTF-8."),
    (b'{"username":"' + b"a" * 17000 + b'"}', "The request body is larger than 16384 bytes."),
])
def test_a_body_that_is_not_a_json_object_is_a_json_format_error(client: Client, body: bytes, reason: str) -> None:
    response = client.http.post("/api/v1/sessions", headers=JSON, body=body)
    assert response.status_code == 400
    assert response.json_body == {"errorMessage": "Invalid request body.", "errorCode": "JSON_FORMAT_ERROR",
                                  "errorDetails": {"reason": reason}}


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"password": "x", "provider": "Local"}, "username", "The field is required."),
    ({"username": 5, "password": "x", "provider": "Local"}, "username", "The field must be a string."),
    ({"username": "a", "provider": "Local"}, "password", "The field is required."),
    ({"username": "a", "password": ["x"], "provider": "Local"}, "password", "The field must be a string."),
    ({"username": "a", "password": "x"}, "provider", "The field is required."),
    ({"username": "a", "password": "x", "provider": "local"}, "provider",
     "The provider must be one of Local, ActiveDirectory, vIDM."),
])
def test_a_missing_or_mistyped_field_is_a_field_error(client: Client, body: dict, field: str, reason: str) -> None:
    response = client.http.post("/api/v1/sessions", headers=JSON, body=json.dumps(body))
    assert response.status_code == 400
    assert response.body == json.dumps({"errorMessage": "Invalid request body.", "errorCode": "FIELD_ERROR",
                                        "errorDetails": {"field": field, "reason": reason}},
                                       separators=(",", ":")).encode()


def test_five_failures_lock_the_account_and_a_lock_looks_like_a_wrong_password(
        client: Client, admin: models.User, clock: FakeClock) -> None:
    for _ in range(5):
        assert login(client, password="wrong").status_code == 401
    locked = login(client)
    assert locked.status_code == 401
    assert locked.body == b'{"errorMessage":"Invalid username or password.","errorCode":"FIELD_ERROR"}'
    clock.advance(5 * 60 + 1)
    assert login(client).status_code == 200


def test_failures_spread_over_more_than_five_minutes_do_not_lock(
        client: Client, admin: models.User, clock: FakeClock) -> None:
    for _ in range(4):
        login(client, password="wrong")
    clock.advance(5 * 60 + 1)
    for _ in range(4):
        login(client, password="wrong")
    assert login(client).status_code == 200


def test_a_successful_login_resets_the_failure_count(client: Client, admin: models.User) -> None:
    for _ in range(4):
        login(client, password="wrong")
    assert login(client).status_code == 200
    for _ in range(4):
        login(client, password="wrong")
    assert login(client).status_code == 200


def test_setting_the_password_again_clears_a_lock(client: Client, admin: models.User) -> None:
    for _ in range(5):
        login(client, password="wrong")
    users.set_password("admin", ADMIN_PASSWORD)
    assert login(client).status_code == 200


def test_current_session_answers_user_and_ttl(client: Client, auth: dict[str, str], admin: models.User) -> None:
    response = client.http.get("/api/v1/sessions/current", headers=auth)
    assert response.status_code == 200
    assert response.body == f'{{"userId":"{admin.user_id}","ttl":1800}}'.encode()


def test_logout_ends_the_session(client: Client, auth: dict[str, str]) -> None:
    response = client.http.delete("/api/v1/sessions/current", headers=auth)
    assert (response.status_code, response.body) == (200, b"")
    after = client.http.get("/api/v1/sessions/current", headers=auth)
    assert (after.status_code, after.body) == (401, b"Invalid session ID")


def test_auth_providers_and_version_need_no_session(client: Client) -> None:
    providers = client.http.get("/api/v1/auth-providers")
    assert (providers.status_code, providers.body) == (200, b'{"providers":["Local"]}')
    version = client.http.get("/api/v1/version")
    assert version.status_code == 200
    assert version.json_body["releaseName"] == "GA"
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+", version.json_body["version"])


# --- A.2 the session check ------------------------------------------------------

AUTHENTICATED = [("GET", "/api/v1/licenses"), ("POST", "/api/v1/licenses"), ("GET", "/api/v1/licenses/x"),
                 ("DELETE", "/api/v1/licenses/x"), ("GET", "/api/v1/sessions/current"),
                 ("DELETE", "/api/v1/sessions/current")]


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED)
@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "bearer abc", "Basic abc", "Bearer unknown",
                                    'Bearer ""'])
def test_a_missing_or_unknown_session_is_401_text(client: Client, method: str, path: str, header: str | None) -> None:
    headers = dict(JSON)
    if header is not None:
        headers["Authorization"] = header
    response = client.http.request(method, path, headers=headers, body=b"{}")
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.body == b"Invalid session ID"
    assert UUID.match(response.headers["X-Request-Id"])


def test_a_quoted_bearer_token_is_accepted(client: Client, session_id: str) -> None:
    response = client.http.get("/api/v1/licenses", headers={"Authorization": f'Bearer "{session_id}"'})
    assert response.status_code == 200


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED)
def test_an_expired_session_is_440_text(client: Client, auth: dict[str, str], clock: FakeClock, method: str,
                                        path: str) -> None:
    clock.advance(1800)
    response = client.http.request(method, path, headers=auth, body=b"{}")
    assert response.status_code == 440
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.body == b"Login Timeout"
    assert "X-Request-Id" in response.headers


def test_a_session_is_valid_until_the_last_second_of_its_ttl(client: Client, auth: dict[str, str],
                                                              clock: FakeClock) -> None:
    clock.advance(1799)
    assert client.http.get("/api/v1/licenses", headers=auth).status_code == 200


def test_use_slides_the_expiry(client: Client, auth: dict[str, str], clock: FakeClock) -> None:
    for _ in range(5):
        clock.advance(1500)
        assert client.http.get("/api/v1/licenses", headers=auth).status_code == 200
    clock.advance(1800)
    assert client.http.get("/api/v1/licenses", headers=auth).status_code == 440


def test_the_stored_expiry_is_written_at_most_once_a_minute(client: Client, auth: dict[str, str],
                                                            clock: FakeClock) -> None:
    (before,) = list(models.Session.scan())
    clock.advance(59)
    client.http.get("/api/v1/licenses", headers=auth)
    (unchanged,) = list(models.Session.scan())
    assert unchanged.expires_at == before.expires_at
    clock.advance(1)
    client.http.get("/api/v1/licenses", headers=auth)
    (refreshed,) = list(models.Session.scan())
    assert refreshed.expires_at == before.expires_at + 60_000


def test_a_session_expired_over_a_day_ago_is_401(client: Client, auth: dict[str, str], clock: FakeClock) -> None:
    clock.advance(1800 + 24 * 3600 - 1)
    assert client.http.get("/api/v1/licenses", headers=auth).status_code == 440
    clock.advance(1)
    response = client.http.get("/api/v1/licenses", headers=auth)
    assert (response.status_code, response.body) == (401, b"Invalid session ID")


def test_the_ttl_comes_from_the_stage_and_the_environment_overrides_it(
        client: Client, admin: models.User, clock: FakeClock, rebind: Callable[..., config.Settings]) -> None:
    stage = config.from_environment({"KEYTURN_STAGE": "test", "KEYTURN_DEFAULT_SESSION_TTL": "1800",
                                     "KEYTURN_SESSION_TTL": "120"}, region="us-east-1")
    assert stage.session_ttl == 120
    rebind(session_ttl=stage.session_ttl)
    response = login(client)
    assert response.json_body["ttl"] == 120
    auth = {"Authorization": f"Bearer {response.json_body['sessionId']}"}
    clock.advance(120)
    assert client.http.get("/api/v1/licenses", headers=auth).status_code == 440


# --- A.3 licenses -----------------------------------------------------------------

def test_adding_a_key_answers_201_with_the_summary_derived_from_it(client: Client, auth: dict[str, str],
                                                                   clock: FakeClock) -> None:
    key = mint("OSI", 10)
    response = add(client, auth, key.lower())
    assert response.status_code == 201
    license_id = response.json_body["license"]["id"]
    assert UUID.match(license_id)
    created = int(clock().timestamp() * 1000)
    assert response.body == (
        f'{{"license":{{"id":"{license_id}","status":"Active","error":"",'
        f'"configuration":"10 Operating System Instances (OSIs)","licenseKey":"{key}","infinite":true,'
        f'"count":10,"typeEnum":"OSI","expirationDate":0,"createdDate":{created}}}}}').encode()


def test_a_key_with_an_expiry_is_not_infinite(client: Client, auth: dict[str, str]) -> None:
    license = add(client, auth, mint("CPU", 2, date(2027, 12, 31))).json_body["license"]
    assert (license["infinite"], license["expirationDate"], license["configuration"]) == (False, 1830297599999, "2 CPUs")


def test_the_same_key_twice_is_409(client: Client, auth: dict[str, str]) -> None:
    key = mint()
    assert add(client, auth, key).status_code == 201
    response = add(client, auth, f" {key.lower()} ")
    assert (response.status_code, response.body) == (409, b'{"errorMessage":"License already exists."}')


@pytest.mark.parametrize("body", [b"{}", b'{"key":null}', b'{"key":""}', b'{"key":"M502V-XXXXX-XXXXX-XXXXX-XXXXX"}',
                                  b'{"key":"ABCDE-ABCDE"}'])
def test_a_missing_malformed_or_forged_key_is_an_invalid_serial_number(client: Client, auth: dict[str, str],
                                                                       body: bytes) -> None:
    response = client.http.post("/api/v1/licenses", headers=auth, body=body)
    assert (response.status_code, response.body) == (400, b'{"errorMessage":"Invalid serial number"}')


def test_a_key_that_is_not_a_string_is_a_field_error(client: Client, auth: dict[str, str]) -> None:
    response = client.http.post("/api/v1/licenses", headers=auth, body=b'{"key":12345}')
    assert response.status_code == 400
    assert response.json_body["errorCode"] == "FIELD_ERROR"
    assert response.json_body["errorDetails"]["field"] == "key"


def test_the_seed_curl_sample_body_is_a_json_format_error(client: Client, auth: dict[str, str]) -> None:
    response = client.http.post("/api/v1/licenses", headers=auth, body=b"[{}]")
    assert response.status_code == 400
    assert response.json_body["errorCode"] == "JSON_FORMAT_ERROR"


def test_an_empty_collection_is_uninitialized(client: Client, auth: dict[str, str]) -> None:
    response = client.http.get("/api/v1/licenses", headers=auth)
    assert response.body == (b'{"licenseState":"UNINITIALIZED","maxOsis":0,"maxCpus":0,"hasCpu":false,'
                             b'"hasOsi":false,"hasTap":false,"averageOsiUsage":0,"licenses":{}}')


def test_the_list_is_a_map_by_id_with_totals_over_active_keys(client: Client, auth: dict[str, str],
                                                              clock: FakeClock) -> None:
    osi_ids = [add(client, auth, mint("OSI", n)).json_body["license"]["id"] for n in (3, 4)]
    cpu = add(client, auth, mint("CPU", 2)).json_body["license"]
    add(client, auth, mint("OSI", 100, date(2020, 1, 1)))  # expired: not counted
    body = client.http.get("/api/v1/licenses", headers=auth).json_body
    assert (body["licenseState"], body["maxOsis"], body["maxCpus"]) == ("ACTIVE", 7, 2)
    assert (body["hasOsi"], body["hasCpu"], body["hasTap"], body["averageOsiUsage"]) == (True, True, False, 0)
    assert len(body["licenses"]) == 4 and set(osi_ids) <= set(body["licenses"])
    listed = body["licenses"][cpu["id"]]
    assert listed == {**cpu, "expiration": cpu["expirationDate"]}
    assert list(listed)[-1] == "expiration"


def test_an_unlimited_active_key_makes_the_total_zero(client: Client, auth: dict[str, str]) -> None:
    add(client, auth, mint("OSI", 5))
    add(client, auth, mint("OSI", 0))
    assert client.http.get("/api/v1/licenses", headers=auth).json_body["maxOsis"] == 0


def test_expired_keys_report_expired(client: Client, auth: dict[str, str], clock: FakeClock) -> None:
    license = add(client, auth, mint("CORE", 4, date(2026, 11, 26))).json_body["license"]
    assert license["status"] == "Active"
    clock.advance(12 * 3600)  # past the end of 2026-11-26 UTC
    fresh = {"Authorization": f"Bearer {login(client).json_body['sessionId']}"}
    body = client.http.get("/api/v1/licenses", headers=fresh).json_body
    listed = body["licenses"][license["id"]]
    assert (listed["status"], listed["error"]) == ("Expired", "License expired.")
    assert body["licenseState"] == "EXPIRED"


def test_get_by_id_answers_the_license_or_404(client: Client, auth: dict[str, str]) -> None:
    license = add(client, auth, mint()).json_body["license"]
    response = client.http.get(f"/api/v1/licenses/{license['id']}", headers=auth)
    assert (response.status_code, response.json_body) == (200, {"license": license})
    missing = client.http.get("/api/v1/licenses/00000000-0000-4000-8000-000000000000", headers=auth)
    assert (missing.status_code, missing.body) == (404, b'{"errorMessage":"License not found."}')


def test_delete_answers_200_then_404_and_the_key_can_be_added_again_with_a_new_id(
        client: Client, auth: dict[str, str]) -> None:
    key = mint()
    first = add(client, auth, key).json_body["license"]["id"]
    response = client.http.delete(f"/api/v1/licenses/{first}", headers=auth)
    assert (response.status_code, response.body) == (200, b"")
    again = client.http.delete(f"/api/v1/licenses/{first}", headers=auth)
    assert (again.status_code, again.body) == (404, b'{"errorMessage":"License not found."}')
    second = add(client, auth, key)
    assert second.status_code == 201 and second.json_body["license"]["id"] != first


# --- common rules -------------------------------------------------------------------

def test_a_method_a_route_does_not_serve_is_405_in_the_vrli_format(client: Client, auth: dict[str, str]) -> None:
    response = client.http.put("/api/v1/licenses", headers=auth, body=b"{}")
    assert (response.status_code, response.body) == (405, b'{"errorMessage":"Method not allowed."}')
    assert "X-Request-Id" in response.headers


def test_a_body_that_is_not_json_by_content_type_is_415_in_the_vrli_format(client: Client, auth: dict[str, str]) -> None:
    response = client.http.post("/api/v1/licenses", headers={**auth, "Content-Type": "text/plain"}, body=b"{}")
    assert response.status_code == 415
    assert response.body == b'{"errorMessage":"Unsupported media type.","errorCode":"JSON_FORMAT_ERROR"}'


def test_an_internal_failure_is_a_bare_500_with_a_request_id(client: Client, auth: dict[str, str],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    models.LicenseKey.delete_table()  # the store fails under the service
    response = add(client, auth, mint())
    assert response.status_code == 500
    assert response.body == (b'{"errorMessage":"The operation failed due to an internal error.",'
                             b'"errorCode":"LICENSE_ERROR"}')
    request_id = response.headers["X-Request-Id"]
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(entry.get("request_id") == request_id and entry["level"] == "ERROR" for entry in logged)


def test_logs_never_contain_keys_or_session_ids(client: Client, auth: dict[str, str], session_id: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    key = mint()
    add(client, auth, key)
    output = capsys.readouterr().out
    assert "license added" in output
    assert key not in output and session_id not in output


# --- found in review: races and inputs that must never be a 500 -------------------------

def test_a_refresh_racing_a_logout_does_not_bring_the_session_back(client: Client, auth: dict[str, str],
                                                                  session_id: str, clock: FakeClock) -> None:
    from chalicelib import errors, sessions

    (stale,) = list(models.Session.scan())  # read by a request just before the logout
    sessions.logout(session_id)
    with pytest.raises(errors.InvalidSession):
        sessions.refresh(stale, int(clock().timestamp() * 1000) + 60_000, 1800)
    assert list(models.Session.scan()) == []
    response = client.http.get("/api/v1/sessions/current", headers=auth)
    assert (response.status_code, response.body) == (401, b"Invalid session ID")


@pytest.mark.parametrize("username", ["", "x" * 129])
def test_an_empty_or_overlong_username_is_a_wrong_login_not_a_500(client: Client, admin: models.User,
                                                                    username: str) -> None:
    response = login(client, username=username)
    assert response.status_code == 401
    assert response.json_body == {"errorMessage": "Invalid username or password.", "errorCode": "FIELD_ERROR"}


def test_a_provider_with_a_trailing_newline_is_a_field_error(client: Client, admin: models.User) -> None:
    body = json.dumps({"username": "admin", "password": ADMIN_PASSWORD, "provider": "Local\n"})
    response = client.http.post("/api/v1/sessions", headers=JSON, body=body)
    assert response.status_code == 400 and response.json_body["errorDetails"]["field"] == "provider"


@pytest.mark.parametrize(("body", "reason"), [
    (b"[" * 5000 + b"]" * 5000, "The JSON is nested too deeply."),
    (b'{"key":' + b"1" * 5000 + b"}", "Malformed JSON: Exceeds the limit (4300 digits) for integer string "
                                       "conversion: value has 5000 digits; use sys.set_int_max_str_digits() "
                                       "to increase the limit."),
])
def test_pathological_json_is_a_json_format_error(client: Client, auth: dict[str, str], body: bytes,
                                                  reason: str) -> None:
    response = client.http.post("/api/v1/licenses", headers=auth, body=body)
    assert response.status_code == 400
    assert response.json_body == {"errorMessage": "Invalid request body.", "errorCode": "JSON_FORMAT_ERROR",
                                  "errorDetails": {"reason": reason}}


def test_lockout_counts_each_attempt_before_checking_it(admin: models.User, clock: FakeClock) -> None:
    from chalicelib import errors

    for _ in range(4):
        with pytest.raises(errors.BadCredentials):
            users.authenticate("admin", "wrong")
    assert models.User.get("admin").failed_logins == 4
    assert users.authenticate("admin", ADMIN_PASSWORD).username == "admin"
    stored = models.User.get("admin")
    assert (stored.failed_logins, stored.locked_until) == (0, 0)


def test_listing_uses_the_summary_stored_when_the_key_was_added(client: Client, auth: dict[str, str],
                                                                 state_dir: "object") -> None:
    key = mint("CORE", 3, date(2030, 6, 30))
    added = add(client, auth, key).json_body["license"]
    stored = models.LicenseKey.get(key)
    assert (stored.type_enum, stored.units, stored.expiration_date) == ("CORE", 3, added["expirationDate"])
    assert keys.decode(key, secret=keystore.license_key_secret()).serial == stored.serial
    listed = client.http.get("/api/v1/licenses", headers=auth).json_body["licenses"][added["id"]]
    assert {k: v for k, v in listed.items() if k != "expiration"} == added
