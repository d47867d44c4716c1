"""docs/openapi.yaml kept in step with the app: every route documented, every answer as described.

The route test compares the Chalice app's own route table (blueprints included) with the
description's paths and methods, both ways.  The conformance tests call every documented
operation with realistic requests through ``chalice.test.Client`` on moto, one request per
documented answer where the test can provoke it, and validate each answer (status, content
type, headers, body) with schemathesis' OpenAPI checks, the library the fuzz run
(``tests/e2e/test_fuzz_stack.py``) uses too.  The bad input of issue 10 item 4 (empty ids,
repeated or too many host ids, loose content types, link schemes) has a test of its own.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import schemathesis
from schemathesis.core.failures import FailureGroup
import yaml
from chalice.test import Client
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chalicelib import config, keys, keystore, models, orders
from tests.conftest import ADMIN_PASSWORD, FakeClock
from tests.samples import SEED_ORDER, order, segment

DESCRIPTION = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
RAW = yaml.safe_load(DESCRIPTION.read_text())
SCHEMA = schemathesis.openapi.from_dict(RAW)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
JSON = {"Content-Type": "application/json"}
CUSTOM_A = "Q1VTVE9NPWE="  # CUSTOM=a
UNKNOWN_KEY = "AAAAA-BBBBB-CCCCC-DDDDD"


def documented_operations(raw: dict[str, Any] = RAW) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in raw["paths"].items() for method in item if method in METHODS}


def documented_answers() -> set[tuple[str, str, int]]:
    return {(method.upper(), path, int(status)) for path, item in RAW["paths"].items()
            for method, operation in item.items() if method in METHODS for status in operation["responses"]}


def app_operations() -> set[tuple[str, str]]:
    from app import app

    return {(method, path) for path, entries in app.routes.items() for method in entries}


def test_every_route_of_the_app_is_documented_and_nothing_else() -> None:
    app, documented = app_operations(), documented_operations()
    assert sorted(app - documented) == [], "routes of the app missing from docs/openapi.yaml"
    assert sorted(documented - app) == [], "operations in docs/openapi.yaml the app does not serve"


def test_the_route_check_sees_blueprint_routes_and_a_method_missing_from_the_description() -> None:
    raw = copy.deepcopy(RAW)
    del raw["paths"]["/rest/v1/license-orders/{key}"]["head"]
    del raw["paths"]["/api/v1/sessions"]
    assert app_operations() - documented_operations(raw) == {("HEAD", "/rest/v1/license-orders/{key}"),
                                                             ("POST", "/api/v1/sessions")}


def test_the_description_is_valid_openapi_3_1_with_quoted_status_codes() -> None:
    from openapi_spec_validator import validate

    validate(RAW)
    assert RAW["openapi"].startswith("3.1.")
    text = DESCRIPTION.read_text()
    for method, path, status in documented_answers():
        assert f"'{status}':" in text, f"{method} {path}: status {status} is not quoted"
    assert all(path.startswith(("/api/v1/", "/rest/v1/")) for path in RAW["paths"])  # full paths


# --- conformance --------------------------------------------------------------------------

def as_schemathesis_response(method: str, path: str, headers: dict[str, str], body: bytes,
                             answer: Any) -> schemathesis.Response:
    request = requests.Request(method, f"http://127.0.0.1{path}", headers=headers, data=body or None).prepare()
    return schemathesis.Response(status_code=answer.status_code,
                                 headers={name: [value] for name, value in answer.headers.items()},
                                 content=answer.body, request=request, elapsed=0.0, verify=True)


class Conformance:
    """Requests through the Chalice test client, each answer validated against the description."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.answered: set[tuple[str, str, int]] = set()

    def call(self, method: str, template: str, params: dict[str, str] | None = None, *, raw_path: str | None = None,
             query: str | None = None, headers: dict[str, str] | None = None, body: bytes = b"",
             status: int | None = None, payload: Any = None) -> Any:
        params = params or {}
        headers = dict(headers or {})
        path = raw_path or template.format(**params)
        if query is not None:
            path += f"?{query}"
        answer = self.client.http.request(method, path, headers=headers, body=body)
        operation = SCHEMA[template][method]
        case = operation.Case(path_parameters=params, headers=headers,
                              query=dict(pair.split("=", 1) for pair in query.split("&")) if query else None)
        case.validate_response(as_schemathesis_response(method, path, headers, body, answer), checks=CHECKS)
        self.text_body_is_as_described(method, template, answer)
        if status is not None:
            assert answer.status_code == status, (method, path, answer.status_code, answer.body)
        if payload is not None:
            expected = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
            assert answer.body == expected, (method, path, answer.body)
        self.answered.add((method, template, answer.status_code))
        return answer

    @staticmethod
    def text_body_is_as_described(method: str, template: str, answer: Any) -> None:
        """Plain-text answers (401, 440) are exact texts; schemathesis validates JSON bodies only."""
        described = RAW["paths"][template][method.lower()]["responses"].get(str(answer.status_code), {})
        if "$ref" in described:
            described = RAW["components"]["responses"][described["$ref"].rsplit("/", 1)[1]]
        for media_type, content in (described.get("content") or {}).items():
            if media_type.startswith("text/plain"):
                assert answer.headers["Content-Type"] == media_type
                assert answer.body.decode() == content["schema"]["const"]


@pytest.fixture
def api(client: Client) -> Conformance:
    return Conformance(client)


def mint(type_enum: str = "OSI", count: int = 10) -> str:
    return keys.mint(type_enum, count, None, secret=keystore.license_key_secret())


def login_body(password: str = ADMIN_PASSWORD) -> bytes:
    return json.dumps({"username": "admin", "password": password, "provider": "Local"}).encode()


def test_the_log_insight_api_answers_as_described(api: Conformance, admin: models.User, auth: dict[str, str],
                                                  clock: FakeClock) -> None:
    s, lic, one = "/api/v1/sessions", "/api/v1/licenses", "/api/v1/licenses/{license_id}"
    api.call("POST", s, headers=JSON, body=login_body(), status=200)
    api.call("POST", s, headers=JSON, body=b"{", status=400)
    api.call("POST", s, headers=JSON, body=b'{"username":"admin"}', status=400)
    api.call("POST", s, headers=JSON, body=login_body("wrong"), status=401)
    api.call("POST", s, headers={"Content-Type": "text/plain"}, body=login_body(), status=415)
    api.call("GET", "/api/v1/auth-providers", status=200, payload={"providers": ["Local"]})
    api.call("GET", "/api/v1/version", status=200)
    api.call("GET", "/api/v1/sessions/current", headers=auth, status=200)
    api.call("GET", "/api/v1/sessions/current", status=401)

    key = mint()
    added = api.call("POST", lic, headers=auth, body=json.dumps({"key": key}).encode(), status=201)
    license_id = added.json_body["license"]["id"]
    api.call("POST", lic, headers=auth, body=json.dumps({"key": key}).encode(), status=409)
    api.call("POST", lic, headers=auth, body=b'{"key":"ABCDE-ABCDE"}', status=400,
             payload={"errorMessage": "Invalid serial number"})
    api.call("POST", lic, headers=auth, body=b"[]", status=400)
    api.call("POST", lic, headers=auth, body=b'{"key":5}', status=400)
    api.call("POST", lic, headers={**auth, "Content-Type": "application/xml"}, body=b"<a/>", status=415)
    api.call("POST", lic, headers=JSON, body=b"{}", status=401)
    api.call("GET", lic, headers=auth, status=200)
    api.call("GET", lic, status=401)
    api.call("GET", one, {"license_id": license_id}, headers=auth, status=200)
    api.call("GET", one, {"license_id": "00000000-0000-4000-8000-000000000000"}, headers=auth, status=404)
    api.call("GET", one, {"license_id": license_id}, status=401)
    api.call("DELETE", one, {"license_id": license_id}, headers=auth, status=200, payload=b"")
    api.call("DELETE", one, {"license_id": license_id}, headers=auth, status=404)
    api.call("DELETE", one, {"license_id": license_id}, status=401)
    api.call("DELETE", "/api/v1/sessions/current", headers={"Authorization": "Bearer nope"}, status=401)

    clock.advance(1800)  # the session has been idle for its TTL
    for method, template, params in [("GET", "/api/v1/sessions/current", {}), ("DELETE", "/api/v1/sessions/current", {}),
                                     ("GET", lic, {}), ("POST", lic, {}), ("GET", one, {"license_id": license_id}),
                                     ("DELETE", one, {"license_id": license_id})]:
        api.call(method, template, params, headers=auth, body=b"{}", status=440)
    fresh = {**JSON, "Authorization": f"Bearer {api.call('POST', s, headers=JSON, body=login_body()).json_body['sessionId']}"}
    api.call("DELETE", "/api/v1/sessions/current", headers=fresh, status=200, payload=b"")

    session = {**JSON, "Authorization": f"Bearer {api.call('POST', s, headers=JSON, body=login_body()).json_body['sessionId']}"}
    models.LicenseKey.delete_table()  # the store fails under the service
    for method, template, params in [("GET", lic, {}), ("POST", lic, {}), ("GET", one, {"license_id": license_id}),
                                     ("DELETE", one, {"license_id": license_id})]:
        api.call(method, template, params, headers=session, body=json.dumps({"key": mint()}).encode(), status=500)
    models.Session.delete_table()
    for method, template in [("POST", s), ("GET", "/api/v1/sessions/current"), ("DELETE", "/api/v1/sessions/current")]:
        api.call(method, template, headers=session, body=login_body(), status=500)

    unprovoked = {(m, p, st) for m, p, st in documented_answers() if p.startswith("/api/v1/")} - api.answered
    # version and auth-providers read no store: only a broken stage configuration makes them fail.
    assert unprovoked == {("GET", "/api/v1/version", 500), ("GET", "/api/v1/auth-providers", 500)}


def test_the_activation_api_answers_as_described(api: Conformance, aws: None,
                                                rebind: Callable[..., config.Settings]) -> None:
    put_get_delete, queue = "/rest/v1/licenses/{key}/{hostids}", "/rest/v1/license-queue/{key}/{hostids}"
    by_state, order_path = "/rest/v1/licenses/{key}", "/rest/v1/license-orders/{key}"
    errors_path = "/rest/v1/license-errors/{key}/{hostids}"
    key = orders.create_order(order(SEED_ORDER, bulkMax=2, deactivationsAllowed=1,
                                    expirationDate="2027-12-31")).activation_key
    host = {"key": key, "hostids": CUSTOM_A}
    other = {"key": key, "hostids": segment("CUSTOM=b")}
    garbled = {"key": key, "hostids": "!!!!"}
    unknown = {"key": UNKNOWN_KEY, "hostids": CUSTOM_A}

    for params in (host, garbled, unknown):
        api.call("GET", queue, params)
        api.call("GET", put_get_delete, params)
        api.call("GET", errors_path, params)
    api.call("GET", by_state, {"key": key}, query="state=success", status=404)
    api.call("PUT", put_get_delete, host, status=202, payload=b"")
    api.call("PUT", put_get_delete, unknown, status=400)
    api.call("PUT", put_get_delete, garbled, status=400)
    api.call("PUT", put_get_delete, {"key": key, "hostids": segment("HOSTNAME=h")}, status=400,
             payload={"message": "HostID type is not supported."})
    api.call("PUT", put_get_delete, host, headers={"Content-Type": "application/xml"}, body=b"<a/>", status=415)
    api.call("PUT", put_get_delete, other, status=202)
    api.call("PUT", put_get_delete, {"key": key, "hostids": segment("CUSTOM=c")}, status=403,
             payload={"message": "Bulk license count has been exceeded."})
    api.call("GET", queue, host, status=303, payload=b"")
    api.call("GET", put_get_delete, host, status=200)
    api.call("GET", by_state, {"key": key}, status=200)
    api.call("GET", by_state, {"key": key}, query="state=success,failed", status=200)
    api.call("GET", by_state, {"key": key}, query="state=bogus", status=400)
    api.call("GET", by_state, {"key": UNKNOWN_KEY}, query="state=success", status=404)
    api.call("GET", order_path, {"key": key}, status=200)
    api.call("GET", order_path, {"key": UNKNOWN_KEY}, status=404)
    api.call("HEAD", order_path, {"key": key}, status=200, payload=b"")
    api.call("HEAD", order_path, {"key": UNKNOWN_KEY}, status=404, payload=b"")
    api.call("GET", "/rest/v1/signing-keys", status=200)
    api.call("DELETE", put_get_delete, garbled, status=400)
    api.call("DELETE", put_get_delete, unknown, status=404)
    api.call("DELETE", put_get_delete, host, status=204, payload=b"")
    api.call("DELETE", put_get_delete, host, status=404, payload={"message": "License does not exist."})
    api.call("DELETE", put_get_delete, other, status=403, payload={"message": "Cannot deactivate license."})

    rebind(activation_rate_limit=1)  # a deployer's limit: one attempt per key and minute
    limited = {"key": orders.create_order(order(SEED_ORDER)).activation_key, "hostids": CUSTOM_A}
    api.call("PUT", put_get_delete, limited, status=202, payload=b"")
    api.call("PUT", put_get_delete, limited, status=429, payload={"message": "Too many activation attempts."})
    rebind()

    orders.set_enabled(key, False)
    for method, template, params in [("PUT", put_get_delete, other), ("GET", put_get_delete, other),
                                     ("GET", queue, other), ("GET", errors_path, other), ("GET", by_state, {"key": key}),
                                     ("GET", order_path, {"key": key}), ("HEAD", order_path, {"key": key})]:
        api.call(method, template, params, status=403)

    models.Order.delete_table()  # the store fails under the service
    for method, template, params in [("PUT", put_get_delete, host), ("GET", put_get_delete, host),
                                     ("DELETE", put_get_delete, host), ("GET", queue, host), ("GET", errors_path, host),
                                     ("GET", by_state, {"key": key}), ("GET", order_path, {"key": key}),
                                     ("HEAD", order_path, {"key": key})]:
        api.call(method, template, params, status=500)

    unprovoked = {(m, p, st) for m, p, st in documented_answers() if p.startswith("/rest/v1/")} - api.answered
    assert unprovoked == {("GET", "/rest/v1/signing-keys", 500)}  # reads only the stage's secrets


# --- issue 10 item 4: bad input answered as described ------------------------------------

@pytest.fixture
def activation_key(aws: None) -> str:
    # up to 48 host ids (16 per type is the most an order allows), so the format check is what refuses 33
    template = {"types": [{"nameRaw": name, "min": 0, "max": 16} for name in ("CUSTOM", "HOSTNAME", "BIOS")], "min": 1}
    return orders.create_order(order(SEED_ORDER, bulkMax=100, hostid=template)).activation_key


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_empty_license_id_is_a_404(api: Conformance, auth: dict[str, str], method: str) -> None:
    api.call(method, "/api/v1/licenses/{license_id}", {"license_id": ""}, raw_path="/api/v1/licenses//",
             headers=auth, status=404, payload={"errorMessage": "License not found."})


def test_a_segment_naming_one_host_id_twice_is_a_format_error(api: Conformance, activation_key: str) -> None:
    api.call("PUT", "/rest/v1/licenses/{key}/{hostids}",
             {"key": activation_key, "hostids": segment("CUSTOM=rep,CUSTOM=rep")},
             status=400, payload={"message": "Invalid HostID format provided."})


def test_a_segment_over_2048_characters_is_a_format_error(api: Conformance, activation_key: str) -> None:
    text = ",".join(f"CUSTOM=v{n}{'x' * 60}" for n in range(10))  # 650 bytes canonical, under DynamoDB's 1,024
    encoded = base64.b64encode(text.encode()).decode()
    long_segment = "".join(f"%{byte:02X}" for byte in encoded.encode())  # every character percent-encoded
    assert len(long_segment) > 2048
    api.call("PUT", "/rest/v1/licenses/{key}/{hostids}", {"key": activation_key, "hostids": long_segment},
             status=400, payload={"message": "Invalid HostID format provided."})


def test_more_than_32_host_ids_are_a_format_error(api: Conformance, activation_key: str) -> None:
    text = ",".join(f"{name}=h{n}" for name in ("CUSTOM", "HOSTNAME") for n in range(16)) + ",BIOS=b"
    api.call("PUT", "/rest/v1/licenses/{key}/{hostids}", {"key": activation_key, "hostids": segment(text)},
             status=400, payload={"message": "Invalid HostID format provided."})


def test_32_distinct_host_ids_are_within_the_format(api: Conformance, activation_key: str) -> None:
    text = ",".join(f"{name}=h{n}" for name in ("CUSTOM", "HOSTNAME") for n in range(16))
    api.call("PUT", "/rest/v1/licenses/{key}/{hostids}", {"key": activation_key, "hostids": segment(text)}, status=202)


LOOSE_MEDIA_TYPES = ["*/*", "text/plain, application/json", "application/json; charset=utf-16"]


@pytest.mark.parametrize("media_type", LOOSE_MEDIA_TYPES)
def test_only_application_json_is_json_on_the_log_insight_api(api: Conformance, auth: dict[str, str],
                                                              media_type: str) -> None:
    api.call("POST", "/api/v1/licenses", headers={**auth, "Content-Type": media_type},
             body=json.dumps({"key": mint()}).encode(), status=415,
             payload={"errorMessage": "Unsupported media type.", "errorCode": "JSON_FORMAT_ERROR"})


@pytest.mark.parametrize("media_type", LOOSE_MEDIA_TYPES)
def test_only_application_json_is_json_on_the_activation_api(api: Conformance, activation_key: str,
                                                             media_type: str) -> None:
    api.call("PUT", "/rest/v1/licenses/{key}/{hostids}", {"key": activation_key, "hostids": CUSTOM_A},
             headers={"Content-Type": media_type}, body=b"{}", status=415,
             payload={"message": "Unsupported media type."})


@pytest.mark.parametrize("media_type", ["application/json", "application/json; charset=utf-8",
                                        "Application/JSON; Charset=UTF-8"])
def test_application_json_with_or_without_utf_8_is_json(api: Conformance, auth: dict[str, str],
                                                        media_type: str) -> None:
    api.call("POST", "/api/v1/licenses", headers={**auth, "Content-Type": media_type},
             body=json.dumps({"key": mint()}).encode(), status=201)


def test_links_never_take_a_scheme_other_than_http_or_https(api: Conformance, activation_key: str) -> None:
    api.call("PUT", "/rest/v1/licenses/{key}/{hostids}", {"key": activation_key, "hostids": CUSTOM_A},
             headers={"Host": "127.0.0.1:8231", "X-Forwarded-Proto": "javascript"}, status=202)


def test_the_conformance_checks_notice_an_answer_outside_the_description(api: Conformance, aws: None) -> None:
    """The validation is real: a body, a header or a status the description does not allow fails."""
    operation = SCHEMA["/rest/v1/license-orders/{key}"]["GET"]
    case = operation.Case(path_parameters={"key": UNKNOWN_KEY})
    good = {"Content-Type": "application/hal+json", "Vary": "Accept",
            "X-Request-Id": "8fdd4dfc-1e83-463d-a62a-4a55e3497338"}

    class Answer:
        def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.status_code, self.headers, self.body = status, headers, body

    def validate(status: int, headers: dict[str, str], body: bytes) -> None:
        path = f"/rest/v1/license-orders/{UNKNOWN_KEY}"
        case.validate_response(as_schemathesis_response("GET", path, {}, b"", Answer(status, headers, body)),
                               checks=CHECKS)

    validate(404, good, b'{"message":"Invalid activation key specified."}')
    for status, headers, body in [(404, good, b'{"message":"Something else."}'),
                                  (404, {**good, "Content-Type": "application/json"}, b'{"message":"x"}'),
                                  (404, {k: v for k, v in good.items() if k != "Vary"},
                                   b'{"message":"Invalid activation key specified."}'),
                                  (418, good, b'{"message":"Invalid activation key specified."}')]:
        with pytest.raises(FailureGroup):
            validate(status, headers, body)
