"""The LM-X License Activation Center-compatible API through chalice.test.Client (contract B)."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from chalice.test import Client

from chalicelib import keystore, models, orders, verifier
from tests.conftest import FakeClock
from tests.samples import SEED_ORDER, order, segment

HOST = {"Host": "license.example.com"}
BASE = "https://license.example.com/rest/v1"
CUSTOM_A = "Q1VTVE9NPWE="  # CUSTOM=a
def new_order(**changes: Any) -> str:
    return orders.create_order(order(SEED_ORDER, **changes)).activation_key


def call(client: Client, method: str, path: str) -> Any:
    return client.http.request(method, "/rest/v1" + path, headers=HOST)


def assert_error(response: Any, status: int, message: str) -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/hal+json"
    assert response.headers["Vary"] == "Accept"
    assert response.body == json.dumps({"message": message}).replace(": ", ":").encode()


@pytest.fixture
def key(aws: None) -> str:
    return new_order()


def order_json(key: str, activated: int, bulk_max: int = 10, created: str = "2026-11-26T12:00:00+00:00") -> dict[str, Any]:
    return {
        "activationKey": key, "customer": {"name": "customer1ó?"},
        "product": {"name": "product 1", "version": "2", "template": "Default", "licenseGeneratorType": "lm_x"},
        "licenseType": "local", "creationTime": created, "activatedLicenses": activated, "bulkMax": bulk_max,
        "hostid": {"types": [{"nameRaw": "CUSTOM", "name": "Custom", "min": 1, "max": 1}], "min": 1},
        "_links": {"self": {"href": f"{BASE}/license-orders/{key}"}},
    }


# --- activation -------------------------------------------------------------------

def test_activation_answers_202_with_the_queue_location(client: Client, key: str) -> None:
    response = call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    assert (response.status_code, response.body) == (202, b"")
    assert response.headers["Location"] == f"{BASE}/license-queue/{key}/{CUSTOM_A}"
    assert response.headers["Vary"] == "Accept"


def test_the_seed_example_downloads_exactly_as_the_seed_shows(client: Client, key: str, clock: FakeClock) -> None:
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    response = call(client, "GET", f"/licenses/{key}/{CUSTOM_A}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/hal+json"
    assert response.headers["Vary"] == "Accept"
    body = response.json_body
    assert list(body) == ["activationKey", "activationTime", "expirationDate", "maintenanceEndDate", "hostids",
                          "content", "filename", "_links", "_embedded"]
    assert body["activationKey"] == key
    assert body["activationTime"] == "2026-11-26T12:00:00+00:00"
    assert (body["expirationDate"], body["maintenanceEndDate"]) == (None, None)
    assert body["hostids"] == [{"nameRaw": "CUSTOM", "name": "Custom", "value": "a"}]
    assert body["filename"] == "license_2026_11_26-12_00.lic"
    assert body["_links"] == {"self": {"href": f"{BASE}/licenses/{key}/{CUSTOM_A}"},
                              "license-order": {"href": f"{BASE}/license-orders/{key}"}}
    assert body["_embedded"] == {"license-orders": [order_json(key, activated=1)]}
    assert body["content"].startswith("# This license is generated using KEYTURN License Activation Center\n"
                                      "# Generation Time: 2026-11-26 12:00:00 GMT\n"
                                      f"# Activation Key: {key}\n\nFEATURE feature-1\n{{\n")
    public = {k.kid: k.public_raw() for k in keystore.signing_keys()}
    result = verifier.verify_license(body["content"], public, hostids="CUSTOM=a")
    assert result.valid, result.reason


def test_a_repeated_activation_consumes_no_seat_and_yields_the_same_license(client: Client, key: str,
                                                                             clock: FakeClock) -> None:
    first = call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    original = call(client, "GET", f"/licenses/{key}/{CUSTOM_A}").json_body
    clock.advance(3600)
    for variant in (CUSTOM_A, CUSTOM_A.rstrip("="), segment("custom=A")):
        again = call(client, "PUT", f"/licenses/{key}/{variant}")
        assert again.status_code == 202
        assert again.headers["Location"] == f"{BASE}/license-queue/{key}/{variant}"
    assert first.headers["Location"].endswith(CUSTOM_A)
    assert models.Order.get(key).activated_licenses == 1
    assert call(client, "GET", f"/licenses/{key}/{segment('CUSTOM=A')}").json_body["content"] == original["content"]


def test_the_docs_multi_id_example_is_a_format_error(client: Client, key: str) -> None:
    response = call(client, "PUT", f"/licenses/{key}/dHlwZTE9dmFsdWUxLHR5cGUyPXZhbHVlPTI=")
    assert_error(response, 400, "Invalid HostID format provided.")


@pytest.mark.parametrize("bad", ["!!!!", "Q1VTVE9NPW=", "not base64", "%ZZ", segment("CUSTOM"),
                                 segment("CUSTOM=a b"), segment("NOSUCH=a")])
def test_bad_host_ids_are_a_format_error(client: Client, key: str, bad: str) -> None:
    assert_error(call(client, "PUT", f"/licenses/{key}/{bad}"), 400, "Invalid HostID format provided.")


def test_padded_unpadded_and_percent_encoded_segments_name_the_same_host(client: Client, key: str) -> None:
    for variant in (CUSTOM_A, CUSTOM_A.rstrip("="), CUSTOM_A.replace("=", "%3D"), segment("custom=A")):
        response = call(client, "PUT", f"/licenses/{key}/{variant}")
        assert response.status_code == 202
        assert response.headers["Location"] == f"{BASE}/license-queue/{key}/{variant}"  # echoed as received
    assert models.Order.get(key).activated_licenses == 1
    assert call(client, "GET", f"/licenses/{key}/{CUSTOM_A}").json_body["hostids"][0]["value"] == "a"  # as first sent


def test_template_checks_come_in_the_contract_order(client: Client, aws: None) -> None:
    key = new_order(hostid={"types": [{"nameRaw": "HOSTNAME", "min": 1, "max": 1},
                                      {"nameRaw": "ETHERNET", "min": 0, "max": 2}], "min": 2})
    assert_error(call(client, "PUT", f"/licenses/{key}/{segment('CUSTOM=a')}"), 400, "HostID type is not supported.")
    assert_error(call(client, "PUT", f"/licenses/{key}/{segment('ETHERNET=001122334455')}"), 400,
                 "The required HostID is missing.")
    assert_error(call(client, "PUT", f"/licenses/{key}/{segment('HOSTNAME=h1')}"), 400,
                 "The required HostID is missing.")
    assert_error(call(client, "PUT", f"/licenses/{key}/{segment('HOSTNAME=h1,HOSTNAME=h2,ETHERNET=001122334455')}"),
                 400, "Too many HostIDs of one type.")
    ok = call(client, "PUT", f"/licenses/{key}/{segment('HOSTNAME=h1,ETHERNET=00-11-22-33-44-55')}")
    assert ok.status_code == 202


def test_an_unknown_key_is_400_on_activation_and_404_elsewhere(client: Client, aws: None) -> None:
    unknown = "AAAAA-BBBBB-CCCCC-DDDDD"
    assert_error(call(client, "PUT", f"/licenses/{unknown}/{CUSTOM_A}"), 400, "Invalid activation key specified.")
    for method, path in [("GET", f"/licenses/{unknown}/{CUSTOM_A}"), ("DELETE", f"/licenses/{unknown}/{CUSTOM_A}"),
                         ("GET", f"/license-queue/{unknown}/{CUSTOM_A}"), ("GET", f"/license-orders/{unknown}"),
                         ("GET", f"/licenses/{unknown}?state=success"), ("GET", f"/license-errors/{unknown}/{CUSTOM_A}")]:
        assert_error(call(client, method, path), 404, "Invalid activation key specified.")
    head = call(client, "HEAD", f"/license-orders/{unknown}")
    assert head.status_code == 404


def test_seats_run_out_at_bulk_max(client: Client, aws: None) -> None:
    key = new_order(bulkMax=2)
    for host in ("a", "b"):
        assert call(client, "PUT", f"/licenses/{key}/{segment('CUSTOM=' + host)}").status_code == 202
    assert_error(call(client, "PUT", f"/licenses/{key}/{segment('CUSTOM=c')}"), 403,
                 "Bulk license count has been exceeded.")
    assert models.Order.get(key).activated_licenses == 2
    assert call(client, "PUT", f"/licenses/{key}/{segment('CUSTOM=a')}").status_code == 202  # repeats still work
    assert len(list(models.Activation.query(key))) == 2


def test_a_disabled_order_refuses_every_end_user_call_with_403(client: Client, key: str) -> None:
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    orders.set_enabled(key, False)
    disabled = "License order has been disabled."
    assert_error(call(client, "PUT", f"/licenses/{key}/{segment('CUSTOM=b')}"), 403, disabled)
    assert_error(call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}"), 403, disabled)
    assert_error(call(client, "GET", f"/licenses/{key}/{CUSTOM_A}"), 403, disabled)
    assert_error(call(client, "GET", f"/license-queue/{key}/{CUSTOM_A}"), 403, disabled)
    assert_error(call(client, "GET", f"/license-orders/{key}"), 403, disabled)
    assert_error(call(client, "GET", f"/licenses/{key}?state=success"), 403, disabled)
    assert_error(call(client, "GET", f"/license-errors/{key}/{CUSTOM_A}"), 403, disabled)
    assert_error(call(client, "DELETE", f"/licenses/{key}/{CUSTOM_A}"), 403, "Cannot deactivate license.")
    orders.set_enabled(key, True)
    assert call(client, "GET", f"/licenses/{key}/{CUSTOM_A}").status_code == 200


# --- queue, download, errors ----------------------------------------------------------

def test_the_queue_redirects_once_generated_and_404s_before(client: Client, key: str) -> None:
    assert_error(call(client, "GET", f"/license-queue/{key}/{CUSTOM_A}"), 404, "License activation was not requested.")
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    response = call(client, "GET", f"/license-queue/{key}/{CUSTOM_A}")
    assert (response.status_code, response.body) == (303, b"")
    assert response.headers["Location"] == f"{BASE}/licenses/{key}/{CUSTOM_A}"


def test_a_license_never_activated_does_not_exist(client: Client, key: str) -> None:
    assert_error(call(client, "GET", f"/licenses/{key}/{CUSTOM_A}"), 404, "License does not exist.")


def test_license_errors_is_404_no_errors(client: Client, key: str) -> None:
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    assert_error(call(client, "GET", f"/license-errors/{key}/{CUSTOM_A}"), 404, "License has no errors.")


def test_links_use_the_stages_public_base_url_whatever_the_host_header(
        client: Client, key: str, rebind: Callable[..., object]) -> None:
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    rebind(public_base_url="http://127.0.0.1:8000")  # what make run sets
    local = client.http.get(f"/rest/v1/license-orders/{key}", headers={"Host": "lic.example.com",
                                                                       "X-Forwarded-Proto": "https"})
    assert local.json_body["_links"]["self"]["href"] == f"http://127.0.0.1:8000/rest/v1/license-orders/{key}"


# --- deactivation ------------------------------------------------------------------

def test_deactivation_needs_an_allowance(client: Client, key: str) -> None:
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    assert_error(call(client, "DELETE", f"/licenses/{key}/{CUSTOM_A}"), 403, "Cannot deactivate license.")
    assert models.Order.get(key).activated_licenses == 1


def test_deactivation_frees_the_seat_within_the_allowance(client: Client, aws: None) -> None:
    key = new_order(bulkMax=1, deactivationsAllowed=1)
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    response = call(client, "DELETE", f"/licenses/{key}/{CUSTOM_A}")
    assert (response.status_code, response.body) == (204, b"")
    assert_error(call(client, "GET", f"/licenses/{key}/{CUSTOM_A}"), 404, "License does not exist.")
    assert_error(call(client, "DELETE", f"/licenses/{key}/{CUSTOM_A}"), 404, "License does not exist.")
    assert call(client, "PUT", f"/licenses/{key}/{segment('CUSTOM=b')}").status_code == 202  # the seat is free
    assert_error(call(client, "DELETE", f"/licenses/{key}/{segment('CUSTOM=b')}"), 403, "Cannot deactivate license.")
    order = models.Order.get(key)
    assert (order.activated_licenses, order.deactivations_used) == (1, 1)


def test_an_allowance_below_the_used_count_allows_no_more(client: Client, aws: None) -> None:
    key = new_order(deactivationsAllowed=2)
    for host in "abc":
        call(client, "PUT", f"/licenses/{key}/{segment('CUSTOM=' + host)}")
    assert call(client, "DELETE", f"/licenses/{key}/{segment('CUSTOM=a')}").status_code == 204
    orders.allow_deactivations(key, 0)
    assert_error(call(client, "DELETE", f"/licenses/{key}/{segment('CUSTOM=b')}"), 403, "Cannot deactivate license.")
    orders.allow_deactivations(key, 2)
    assert call(client, "DELETE", f"/licenses/{key}/{segment('CUSTOM=b')}").status_code == 204


# --- lists, orders, keys ----------------------------------------------------------------

def test_licenses_by_state_lists_the_orders_licenses(client: Client, key: str) -> None:
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    response = call(client, "GET", f"/licenses/{key}?state=success,failed")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/hal+json"
    body = response.json_body
    assert body["_links"] == {"self": {"href": f"{BASE}/licenses/{key}?state=success,failed"}}
    (listed,) = body["_embedded"]["licenses"]
    download = call(client, "GET", f"/licenses/{key}/{CUSTOM_A}").json_body
    del download["_embedded"]
    assert listed == download


def test_licenses_by_state_rejects_unknown_states_and_404s_when_none(client: Client, key: str) -> None:
    assert_error(call(client, "GET", f"/licenses/{key}?state=success,bogus"), 400, "Unsupported license state.")
    assert_error(call(client, "GET", f"/licenses/{key}?state="), 400, "Unsupported license state.")
    assert_error(call(client, "GET", f"/licenses/{key}?state=success"), 404, "No licenses were found for a given state.")
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    assert_error(call(client, "GET", f"/licenses/{key}?state=failed,in_progress"), 404,
                 "No licenses were found for a given state.")


def test_the_order_object_matches_the_contract(client: Client, key: str) -> None:
    for host in "abcdefg":
        call(client, "PUT", f"/licenses/{key}/{segment('CUSTOM=' + host)}")
    response = call(client, "GET", f"/license-orders/{key}")
    assert response.status_code == 200
    assert response.json_body == order_json(key, activated=7)
    assert list(response.json_body) == list(order_json(key, 7))


def test_head_on_an_order_has_the_headers_and_no_body(client: Client, key: str) -> None:
    response = call(client, "HEAD", f"/license-orders/{key}")
    assert (response.status_code, response.body) == (200, b"")
    assert response.headers["Content-Type"] == "application/hal+json"


def test_network_orders_carry_count_in_the_file_and_dates_in_the_body(client: Client, aws: None) -> None:
    key = new_order(licenseType="network", features=[{"name": "f1", "version": "2.0", "count": 5}],
                    expirationDate="2027-12-31", maintenanceEndDate="2027-06-30")
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    body = call(client, "GET", f"/licenses/{key}/{CUSTOM_A}").json_body
    assert "VENDOR=KEYTURN VERSION=2.0 END=2027-12-31 COUNT=5\n" in body["content"]
    assert (body["expirationDate"], body["maintenanceEndDate"]) == ("2027-12-31T00:00:00+00:00",
                                                                    "2027-06-30T00:00:00+00:00")


def test_signing_keys_publish_every_public_key_by_kid(client: Client, aws: None) -> None:
    response = client.http.get("/rest/v1/signing-keys")
    assert response.status_code == 200
    keys = response.json_body["keys"]
    assert [k["kid"] for k in keys] == [k.kid for k in keystore.signing_keys()]
    for published in keys:
        assert list(published) == ["kid", "alg", "publicKey"] and published["alg"] == "Ed25519"
        assert verifier.kid_for(verifier.load_public_key(published["publicKey"])) == published["kid"]


def test_wrong_methods_and_media_types_answer_in_the_lac_format(client: Client, key: str) -> None:
    assert_error(client.http.post(f"/rest/v1/license-orders/{key}", headers=HOST), 405, "Method not allowed.")
    response = client.http.put(f"/rest/v1/licenses/{key}/{CUSTOM_A}",
                               headers={**HOST, "Content-Type": "application/xml"}, body=b"<a/>")
    assert_error(response, 415, "Unsupported media type.")


def test_no_license_record_exists_for_a_refused_host(client: Client, aws: None) -> None:
    key = new_order(bulkMax=1)
    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    call(client, "PUT", f"/licenses/{key}/{segment('CUSTOM=b')}")
    assert [a.hostids_key for a in models.Activation.query(key)] == ["CUSTOM=A"]


# --- found in review: inputs that must never be a 500, and the key-first check order ------

def test_percent_encoded_non_ascii_host_ids_are_a_format_error(client: Client, key: str) -> None:
    assert_error(call(client, "PUT", f"/licenses/{key}/%C3%A9AAA"), 400, "Invalid HostID format provided.")


def test_host_ids_longer_than_a_dynamodb_key_are_a_format_error(client: Client, aws: None) -> None:
    key = new_order(hostid={"types": [{"nameRaw": t, "min": 0, "max": 1} for t in
                                      ("CUSTOM", "HOSTNAME", "BIOS", "LONG", "HARDDISK")], "min": 1})
    text = ",".join(f"{t}={'v' * 255}" for t in ("CUSTOM", "HOSTNAME", "BIOS", "LONG", "HARDDISK"))
    assert_error(call(client, "PUT", f"/licenses/{key}/{segment(text)}"), 400, "Invalid HostID format provided.")


@pytest.mark.parametrize("bad_key", ["short", "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", "AAAAA_BBBBB_CCCCC_DDDDD", "x" * 3000])
def test_a_malformed_activation_key_is_unknown_without_a_lookup(client: Client, aws: None, bad_key: str) -> None:
    assert_error(call(client, "PUT", f"/licenses/{bad_key}/{CUSTOM_A}"), 400, "Invalid activation key specified.")
    assert_error(call(client, "GET", f"/license-orders/{bad_key}"), 404, "Invalid activation key specified.")


def test_activation_keys_are_accepted_in_lower_case(client: Client, key: str) -> None:
    assert call(client, "PUT", f"/licenses/{key.lower()}/{CUSTOM_A}").status_code == 202
    assert call(client, "GET", f"/license-orders/{key.lower()}").json_body["activationKey"] == key


def test_an_unknown_key_is_reported_before_garbled_host_ids_or_states(client: Client, aws: None) -> None:
    unknown = "AAAAA-BBBBB-CCCCC-DDDDD"
    assert_error(call(client, "GET", f"/licenses/{unknown}/!!!"), 404, "Invalid activation key specified.")
    assert_error(call(client, "PUT", f"/licenses/{unknown}/!!!"), 400, "Invalid activation key specified.")
    assert_error(call(client, "GET", f"/licenses/{unknown}?state=bogus"), 404, "Invalid activation key specified.")


def test_head_errors_have_no_body(client: Client, aws: None) -> None:
    response = call(client, "HEAD", "/license-orders/AAAAA-BBBBB-CCCCC-DDDDD")
    assert (response.status_code, response.body) == (404, b"")


def test_keys_dynamodb_leaves_unprocessed_are_asked_for_again() -> None:
    from chalicelib import activations

    answers = [
        {"Responses": {"orders": [{"k": {"S": "1"}}]}, "UnprocessedKeys": {"activations": {"Keys": [{"k": {"S": "2"}}]}}},
        {"Responses": {"activations": [{"k": {"S": "2"}}]}, "UnprocessedKeys": {}},
    ]
    asked: list[dict[str, Any]] = []

    def dispatch(operation: str, request: dict[str, Any]) -> dict[str, Any]:
        asked.append(request["RequestItems"])
        return answers[len(asked) - 1]

    found = activations.batch_get(dispatch, {"orders": {"Keys": [{"k": {"S": "1"}}]},
                                             "activations": {"Keys": [{"k": {"S": "2"}}]}})
    assert found == {"orders": [{"k": {"S": "1"}}], "activations": [{"k": {"S": "2"}}]}
    assert asked[1] == {"activations": {"Keys": [{"k": {"S": "2"}}]}}


def test_seat_transactions_are_retried_when_dynamodb_reports_a_conflict() -> None:
    from pynamodb.exceptions import CancellationReason, TransactWriteError, VerboseClientError

    attempts = []

    def write() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            cause = VerboseClientError({"Error": {"Code": "TransactionCanceledException", "Message": "conflict"}},
                                       "TransactWriteItems", cancellation_reasons=[
                                           None, CancellationReason(code="TransactionConflict")])
            raise TransactWriteError("cancelled", cause=cause)
        return "written"

    assert models.retrying_conflicts(write) == "written"
    assert len(attempts) == 3


def test_operators_can_revoke_an_activation_outside_the_allowance(client: Client, key: str) -> None:
    from chalicelib import activations

    call(client, "PUT", f"/licenses/{key}/{CUSTOM_A}")
    activations.revoke(key, CUSTOM_A)
    order = models.Order.get(key)
    assert (order.activated_licenses, order.deactivations_used) == (0, 0)
    assert_error(call(client, "GET", f"/licenses/{key}/{CUSTOM_A}"), 404, "License does not exist.")
