"""Shopify and Stripe events through the real provisioning functions (moto): exactly once, in any order."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from chalice.test import Client

from chalicelib import audit, config, keys, keystore, licenses, operator, orders, plans, provisioning
from chalicelib.functions import handle_event
from chalicelib.models import LicenseKey, Order, Provisioning
from tests.conftest import as_function
from tests.samples import segment
from tests.test_provisioning import events as via_events
from tests.test_provisioning import queue, sqs_event

PROJECT = Path(__file__).resolve().parents[1]
SHOP = "zoe-tools.myshopify.com"
ORDER_ID = "6158849654871"
PRO_LINE, SHIRT_LINE = "15894375612503", "15894375645271"
SESSION = "cs_live_a1B2c3D4e5F6g7H8i9J0kLmNoPqRsTuVwXyZ0123456789abcdEF"
SUB = "sub_1QyZaBcDeFgHiJkLmNoPqRsT"
DISABLED = "License order has been disabled."
KEY_PLAN: dict[str, Any] = {"planId": "keys-10", "kind": "license-key", "key": {"typeEnum": "OSI", "countPerUnit": 10},
                            "termMonths": None, "match": {"shopify": {"skus": ["KEYS-10"]},
                                                          "stripe": {"prices": ["price_1KEYS"]}}}


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PROJECT / "events" / f"{name}.json").read_text(encoding="utf-8"))
    return data


def plan_sample() -> dict[str, Any]:
    return copy.deepcopy(sample("operator/put-plan")["plan"])


@pytest.fixture(params=["events", "queue"])
def deliver(request: pytest.FixtureRequest, aws: None) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """Deliver a shop event through provision_events (its answer's results) or provision_queue (then read back)."""
    plans.put(plan_sample())
    plans.put(copy.deepcopy(KEY_PLAN))

    def through_events(event: dict[str, Any]) -> list[dict[str, Any]]:
        answer = via_events(copy.deepcopy(event))
        assert answer["ok"] is True, answer
        results: list[dict[str, Any]] = answer["results"]
        return results

    def through_queue(event: dict[str, Any]) -> list[dict[str, Any]]:
        answer = queue(sqs_event(copy.deepcopy(event)))
        assert answer == {"batchItemFailures": []}
        return []  # the queue answers only failures: tests read the lines back

    return through_events if request.param == "events" else through_queue


def line(line_item: str = PRO_LINE, order_id: str = ORDER_ID) -> dict[str, Any]:
    found = provisioning.show(f"{SHOP}#{order_id}", line_item, source="shopify")
    assert found is not None
    return dict(found)


def order_of(result: dict[str, Any]) -> Order:
    return orders.get_order(result["activationKey"])


def shopify_orders() -> list[Order]:
    return list(Order.scan(consistent_read=True))


def lac(client: Client, method: str, key: str, host: str = "HOSTNAME=build-01") -> Any:
    return client.http.request(method, f"/rest/v1/licenses/{key}/{segment(host)}",
                               headers={"Host": "license.example.com"})


def refund(quantity: int, refund_line: str = "612345678901", created: str = "2026-12-01T14:02:10+01:00",
           line_item: str = PRO_LINE) -> dict[str, Any]:
    event = sample("shopify/refunds-create")
    payload = event["detail"]["payload"]
    payload["created_at"] = created
    payload["refund_line_items"] = [{"id": int(refund_line), "line_item_id": int(line_item), "quantity": quantity}]
    return event


def updated(current: int, at: str = "2026-12-01T14:02:11+01:00") -> dict[str, Any]:
    event = sample("shopify/orders-updated")
    event["detail"]["payload"]["updated_at"] = at
    event["detail"]["payload"]["line_items"][0]["current_quantity"] = current
    return event


# --- plans ---------------------------------------------------------------------------------

def operator_ok(event: dict[str, Any]) -> Any:
    with as_function("operator"):
        answer = operator.handle(event, "operator:test")
    assert answer["ok"] is True, answer
    return answer["result"]


def operator_refused(event: dict[str, Any]) -> tuple[str, str]:
    with as_function("operator"):
        answer = operator.handle(event, "operator:test")
    assert answer["ok"] is False, answer
    return answer["error"]["code"], answer["error"]["message"]


def test_the_plan_samples_put_show_list_and_delete_a_plan(aws: None) -> None:
    put = operator_ok(sample("operator/put-plan"))
    assert put["planId"] == "pro-annual"
    assert operator_ok(sample("operator/show-plan")) == put
    assert operator_ok(sample("operator/list-plans")) == [put]
    assert operator_ok(sample("operator/delete-plan")) == {"planId": "pro-annual", "deleted": True}
    assert operator_ok(sample("operator/list-plans")) == []
    assert operator_refused(sample("operator/show-plan")) == ("unknown_plan", "No such plan: pro-annual.")
    assert [r["action"] for r in audit.show("plan#pro-annual")] == ["plan-put", "plan-deleted"]


def test_a_sku_or_price_another_plan_claims_is_refused_until_it_is_freed(aws: None) -> None:
    plans.put(plan_sample())
    rival = {**plan_sample(), "planId": "pro-rival",
             "match": {"shopify": {"skus": ["PRO-1Y", "PRO-2Y"]}, "stripe": {"prices": ["price_1PRO"]}}}
    assert operator_refused({"action": "put-plan", "plan": rival}) == (
        "invalid_plan", "Invalid plan: sku PRO-1Y is claimed by plan pro-annual; "
                        "price price_1PRO is claimed by plan pro-annual")
    assert plans.get("pro-rival") is None and plans.for_claims(["shopify-sku#PRO-2Y"]) == {}
    plans.put({**plan_sample(), "match": {"shopify": {"skus": ["PRO-3Y"]}}})  # the first plan lets go of both
    assert plans.put(rival)["planId"] == "pro-rival"
    assert set(plans.for_claims(["shopify-sku#PRO-1Y", "shopify-sku#PRO-3Y", "stripe-price#price_1PRO"])) == {
        "shopify-sku#PRO-1Y", "shopify-sku#PRO-3Y", "stripe-price#price_1PRO"}
    assert plans.for_claims(["shopify-sku#PRO-1Y"])["shopify-sku#PRO-1Y"]["planId"] == "pro-rival"


def test_two_plans_racing_for_one_sku_cannot_both_hold_it(aws: None) -> None:
    outcomes: list[str] = []

    def put(plan_id: str) -> None:
        try:
            plans.put({**plan_sample(), "planId": plan_id})
            outcomes.append("stored")
        except plans.PlanError:
            outcomes.append("refused")

    threads = [threading.Thread(target=put, args=(f"plan-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["stored"]
    assert len(plans.all_plans()) == 1


def test_an_invalid_plan_names_every_problem(aws: None) -> None:
    bad = {"planId": "x", "kind": "license-order", "seatsPerUnit": 0, "termMonths": 0,
           "key": {"typeEnum": "OSI", "countPerUnit": 1}}
    assert operator_refused({"action": "put-plan", "plan": bad}) == (
        "invalid_plan", "Invalid plan: seatsPerUnit: Input should be greater than or equal to 1; termMonths: Input "
                        "should be greater than or equal to 1")
    assert operator_refused({"action": "put-plan", "plan": {**plan_sample(), "order": None}}) == (
        "invalid_plan", 'Invalid plan: a license-order plan needs "order"')
    twice = {**plan_sample()["order"], "features": [{"name": "f1", "version": "1.0"}, {"name": "f1", "version": "2.0"}]}
    assert operator_refused({"action": "put-plan", "plan": {**plan_sample(), "order": twice}}) == (
        "invalid_plan", "Invalid plan: order: feature names must be unique")  # the order's own rules, at put time


# --- Shopify -------------------------------------------------------------------------------

def test_orders_paid_grants_each_matching_line_once_however_often_it_is_delivered(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    for _ in range(3):
        deliver(sample("shopify/orders-paid"))
    granted = line()
    assert {k: granted[k] for k in ("status", "kind", "planId", "bulkMax", "expirationDate", "test", "customer")} == {
        "status": "provisioned", "kind": "license-order", "planId": "pro-annual", "bulkMax": 3,
        "expirationDate": "2027-11-30", "test": False,
        "customer": {"name": "Zoë Lindqvist", "email": "ops@zoe-ltd.example"}}
    assert line(SHIRT_LINE) == {"source": "shopify", "shop": SHOP, "orderId": ORDER_ID, "lineItem": SHIRT_LINE,
                                "status": "ignored", "reason": "no plan matches sku TSHIRT-L",
                                "event": {"source": "shopify", "type": "orders/paid",
                                          "id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"}}
    (order,) = shopify_orders()
    assert (order.activation_key, int(order.bulk_max), order.expiration_date, order.enabled) == (
        granted["activationKey"], 3, "2027-11-30", True)
    assert [r["action"] for r in audit.show(f"order#{order.activation_key}")] == ["order-created"]
    assert audit.show(f"order#{order.activation_key}")[0]["detail"]["event"]["type"] == "orders/paid"


def test_concurrent_deliveries_of_one_order_grant_once(aws: None) -> None:
    plans.put(plan_sample())
    errors: list[BaseException] = []

    def run() -> None:
        try:
            handle_event(sample("shopify/orders-paid"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(shopify_orders()) == 1
    assert line()["activationKey"] == shopify_orders()[0].activation_key


@pytest.mark.parametrize("order_of_events", [("refund", "updated"), ("updated", "refund")])
def test_a_refund_lowers_the_seats_once_whichever_of_its_two_events_comes_first(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]], order_of_events: tuple[str, str]) -> None:
    deliver(sample("shopify/orders-paid"))
    for name in order_of_events * 2:  # each twice
        deliver(sample("shopify/refunds-create") if name == "refund" else sample("shopify/orders-updated"))
    assert (line()["status"], line()["bulkMax"]) == ("provisioned", 2)
    assert int(order_of(line()).bulk_max) == 2


def test_an_older_report_changes_nothing_and_each_refund_line_counts_once(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("shopify/orders-paid"))
    deliver(updated(1, at="2026-12-03T10:00:00+01:00"))  # an edit: one seat left
    deliver(updated(2, at="2026-12-01T14:02:11+01:00"))  # older: ignored
    assert line()["bulkMax"] == 1
    deliver(refund(1, refund_line="700000000001", created="2026-12-02T10:00:00+01:00"))  # included in the edit's count
    assert line()["bulkMax"] == 1
    deliver(refund(1, refund_line="700000000002", created="2026-12-04T10:00:00+01:00"))  # a later one: revoked
    deliver(refund(1, refund_line="700000000002", created="2026-12-04T10:00:00+01:00"))
    assert (line()["status"], line()["bulkMax"]) == ("revoked", 0)


def test_a_full_refund_or_a_cancellation_revokes_and_the_lac_answers_403(
        client: Client, deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("shopify/orders-paid"))
    key = line()["activationKey"]
    assert lac(client, "PUT", key).status_code == 202
    deliver(refund(1))
    assert lac(client, "PUT", key, "HOSTNAME=build-02").status_code == 202
    assert lac(client, "PUT", key, "HOSTNAME=build-03").status_code == 403  # bulkMax 2, both taken
    assert lac(client, "PUT", key, "HOSTNAME=build-03").json_body == {"message": "Bulk license count has been exceeded."}
    deliver(sample("shopify/orders-cancelled"))
    assert line()["status"] == "revoked"
    response = lac(client, "GET", key)
    assert (response.status_code, response.json_body) == (403, {"message": DISABLED})
    assert [r["action"] for r in audit.show(f"order#{key}")][-2:] == ["order-changed-by-shop", "order-changed-by-shop"]
    assert audit.verify(f"order#{key}")["ok"] is True


def test_a_refund_and_a_cancellation_before_the_paid_event_are_applied_to_the_late_grant(
        client: Client, deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("shopify/refunds-create"))
    assert line()["status"] == "pending"
    assert shopify_orders() == []
    deliver(sample("shopify/orders-paid"))
    assert (line()["status"], line()["bulkMax"]) == ("provisioned", 2)
    other = sample("shopify/orders-paid")
    other["detail"]["payload"]["id"] = 6158849654999
    cancelled = sample("shopify/orders-cancelled")
    cancelled["detail"]["payload"]["id"] = 6158849654999
    deliver(cancelled)
    deliver(other)
    late = line(order_id="6158849654999")
    assert late["status"] == "revoked"
    assert order_of(late).enabled is False  # the key exists and is shown, the LAC refuses it
    assert lac(client, "PUT", late["activationKey"]).json_body == {"message": DISABLED}


def test_metadata_names_are_read_in_any_case_with_or_without_x(aws: None) -> None:
    plans.put(plan_sample())
    for n, spelling in enumerate(["X-Shopify-", "x-shopify-", "Shopify-", "SHOPIFY-"]):
        event = sample("shopify/orders-paid")
        event["detail"]["metadata"] = {f"{spelling}Topic": "orders/paid", f"{spelling}Shop-Domain": SHOP,
                                       f"{spelling}Webhook-Id": f"w-{n}"}
        event["detail"]["payload"]["id"] = 1000 + n
        assert handle_event(event)["results"][0]["status"] == "provisioned"
    assert len(shopify_orders()) == 4


def test_64_bit_ids_stay_exact_and_a_float_id_is_rejected(aws: None) -> None:
    plans.put(plan_sample())
    event = sample("shopify/orders-paid")
    event["detail"]["payload"]["id"] = 9007199254740993  # 2**53 + 1: a float would make it ...992
    event["detail"]["payload"]["line_items"][0]["id"] = 18446744073709551615
    body = json.dumps(event)
    assert queue(sqs_event(body)) == {"batchItemFailures": []}
    assert line("18446744073709551615", "9007199254740993")["status"] == "provisioned"
    event["detail"]["payload"]["id"] = 9007199254740993.0
    answer = handle_event(event)
    assert answer == {"ok": False, "error": {"code": "invalid_order",
                                             "message": "Invalid shop event: payload.id must be an integer id, not float"}}


def test_test_orders_are_granted_and_marked_only_where_the_stage_allows_them(
        aws: None, rebind: Callable[..., config.Settings]) -> None:
    plans.put(plan_sample())
    event = sample("shopify/orders-paid")
    event["detail"]["payload"]["test"] = True
    assert handle_event(event)["results"][0]["test"] is True
    rebind(allow_test_orders=False)
    event["detail"]["payload"]["id"] = 77
    (result, _) = handle_event(event)["results"]
    assert (result["status"], result["reason"]) == ("ignored", "a test order: this stage does not grant test orders")
    assert len(shopify_orders()) == 1


def test_the_stage_defaults_for_test_orders() -> None:
    env = {"KEYTURN_STAGE": "prod"}
    assert config.from_environment(env, region="us-east-1").allow_test_orders is False
    assert config.from_environment({"KEYTURN_STAGE": "dev"}, region="us-east-1").allow_test_orders is True
    assert config.from_environment({"KEYTURN_STAGE": "prod", "KEYTURN_ALLOW_TEST_ORDERS": "true"},
                                   region="us-east-1").allow_test_orders is True
    with pytest.raises(config.ConfigError, match="KEYTURN_ALLOW_TEST_ORDERS must be true or false"):
        config.from_environment({"KEYTURN_STAGE": "dev", "KEYTURN_ALLOW_TEST_ORDERS": "yes"}, region="us-east-1")


def test_orders_create_grants_nothing(deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("shopify/orders-create"))
    assert provisioning.show(f"{SHOP}#{ORDER_ID}", source="shopify") is None
    assert shopify_orders() == []


def test_a_key_plan_mints_a_stored_key_replaced_on_a_refund_and_deleted_on_cancellation(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    paid = sample("shopify/orders-paid")
    paid["detail"]["payload"]["line_items"][0]["sku"] = "KEYS-10"
    deliver(paid)
    first = line()
    assert (first["kind"], first["count"], first["expirationDate"]) == ("license-key", 30, None)
    summary = keys.decode(first["licenseKey"], secret=keystore.license_key_secret())
    assert (summary.count, summary.expires) == (30, None)
    assert [k.license_key for k in LicenseKey.scan()] == [first["licenseKey"]]
    deliver(sample("shopify/refunds-create"))
    second = line()
    assert second["count"] == 20 and second["licenseKey"] != first["licenseKey"]
    assert [k.license_key for k in LicenseKey.scan()] == [second["licenseKey"]]
    assert int(LicenseKey.get(second["licenseKey"]).units) == 20
    deliver(sample("shopify/orders-cancelled"))
    assert line()["status"] == "revoked" and list(LicenseKey.scan()) == []
    assert [r["action"] for r in audit.show(licenses.entity_of(first["licenseKey"]))] == ["key-added", "key-replaced"]
    assert [r["action"] for r in audit.show(licenses.entity_of(second["licenseKey"]))] == ["key-added", "key-revoked"]
    for key in (first["licenseKey"], second["licenseKey"]):
        assert audit.verify(licenses.entity_of(key))["ok"] is True


def test_malformed_shop_events_are_recorded_and_acknowledged(aws: None) -> None:
    event = sample("shopify/orders-paid")
    del event["detail"]["payload"]["line_items"]
    assert queue(sqs_event(event)) == {"batchItemFailures": []}
    (record,) = [r for r in Provisioning.scan() if r.order_key.startswith("message#")]
    assert json.loads(record.result)["reason"] == "Invalid shop event: payload.line_items must be a list"
    assert json.loads(record.result)["source"] == "shopify"


# --- Stripe --------------------------------------------------------------------------------

def stripe_line(order_id: str, line_item: str) -> dict[str, Any]:
    found = provisioning.show(order_id, line_item, source="stripe")
    assert found is not None
    return dict(found)


def test_a_paid_checkout_grants_its_plan_once_and_a_full_refund_revokes_it(
        client: Client, deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("stripe/checkout-session-completed"))
    deliver(sample("stripe/checkout-session-completed"))
    granted = stripe_line(SESSION, "pro-annual")
    assert {k: granted[k] for k in ("status", "bulkMax", "expirationDate", "customer")} == {
        "status": "provisioned", "bulkMax": 2, "expirationDate": "2027-11-30",
        "customer": {"name": "Zoë Lindqvist", "email": "ops@zoe-ltd.example"}}
    assert len(shopify_orders()) == 1
    deliver(sample("stripe/charge-refunded"))
    assert stripe_line(SESSION, "pro-annual")["status"] == "revoked"
    assert lac(client, "PUT", granted["activationKey"]).json_body == {"message": DISABLED}


def test_a_refund_before_the_checkout_event_creates_the_grant_revoked(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("stripe/charge-refunded"))
    deliver(sample("stripe/checkout-session-completed"))
    late = stripe_line(SESSION, "pro-annual")
    assert late["status"] == "revoked" and order_of(late).enabled is False


def test_a_partial_refund_keeps_the_license(deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("stripe/checkout-session-completed"))
    partial = sample("stripe/charge-refunded")
    partial["detail"]["data"]["object"]["refunded"] = False
    deliver(partial)
    assert stripe_line(SESSION, "pro-annual")["status"] == "provisioned"


@pytest.mark.parametrize(("change", "reason"), [
    ({"mode": "subscription"}, "a subscription checkout: its subscription's invoice.paid grants it"),
    ({"metadata": {}}, "the session's metadata names no keyturn_plan"),
    ({"metadata": {"keyturn_plan": "nope"}}, "no plan nope"),
])
def test_checkouts_that_grant_nothing_are_recorded_as_ignored(aws: None, change: dict[str, Any], reason: str) -> None:
    plans.put(plan_sample())
    event = sample("stripe/checkout-session-completed")
    event["detail"]["data"]["object"].update(change)
    (result,) = handle_event(event)["results"]
    assert (result["status"], result["reason"]) == ("ignored", reason)
    assert shopify_orders() == []


def test_an_unpaid_checkout_waits_for_its_async_payment(aws: None) -> None:
    plans.put(plan_sample())
    event = sample("stripe/checkout-session-completed")
    event["detail"]["data"]["object"]["payment_status"] = "unpaid"
    assert handle_event(event) == {"ok": True, "results": []}
    event["detail"]["data"]["object"]["payment_status"] = "paid"
    event["detail"]["type"] = event["detail-type"] = "checkout.session.async_payment_succeeded"
    assert handle_event(event)["results"][0]["status"] == "provisioned"


def test_a_bad_quantity_is_rejected(aws: None) -> None:
    plans.put(plan_sample())
    event = sample("stripe/checkout-session-completed")
    event["detail"]["data"]["object"]["metadata"]["keyturn_quantity"] = "2.5"
    assert handle_event(event)["error"]["message"] == (
        "Invalid shop event: metadata.keyturn_quantity must be a whole number from 1 to 1000000")


def to_legacy(event: dict[str, Any]) -> dict[str, Any]:
    """The same invoice.paid in the shape of API versions before 2025-03-31.basil."""
    legacy = copy.deepcopy(event)
    detail = legacy["detail"]
    detail["api_version"] = "2024-06-20"
    invoice = detail["data"]["object"]
    invoice["subscription"] = invoice.pop("parent")["subscription_details"]["subscription"]
    for item in invoice["lines"]["data"]:
        item["price"] = {"id": item.pop("pricing")["price_details"]["price"]}
        item.pop("parent")
    return legacy


def invoice(reason: str, invoice_id: str, quantity: int, period_end: int, created: int,
            legacy: bool = False) -> dict[str, Any]:
    event = sample("stripe/invoice-paid-subscription-create")
    obj = event["detail"]["data"]["object"]
    obj.update({"id": invoice_id, "billing_reason": reason, "created": created})
    obj["lines"]["data"][0].update({"quantity": quantity, "period": {"start": period_end - 31536000,
                                                                     "end": period_end}})
    return to_legacy(event) if legacy else event


def test_both_invoice_shapes_grant_the_same(aws: None) -> None:
    plans.put(plan_sample())
    basil = handle_event(sample("stripe/invoice-paid-subscription-create"))["results"][0]
    assert (basil["orderId"], basil["lineItem"], basil["bulkMax"], basil["expirationDate"]) == (
        SUB, "price_1PRO", 5, "2027-11-30")
    legacy = to_legacy(sample("stripe/invoice-paid-subscription-create"))
    legacy["detail"]["data"]["object"]["subscription"] = "sub_other"
    old = handle_event(legacy)["results"][0]
    assert (old["orderId"], old["lineItem"], old["bulkMax"], old["expirationDate"]) == (
        "sub_other", "price_1PRO", 5, "2027-11-30")
    # no parent and no subscription field: the api_version decides (basil and later: the new shape)
    later = sample("stripe/invoice-paid-subscription-create")
    later["detail"]["data"]["object"].pop("parent")
    assert handle_event(later)["error"]["message"] == (
        "Invalid shop event: data.object.parent.subscription_details.subscription must be a Stripe id")


def test_renewals_extend_once_and_a_late_older_invoice_never_shortens(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("stripe/invoice-paid-subscription-create"))
    cycle = sample("stripe/invoice-paid-subscription-cycle-2024-06-20")
    deliver(cycle)
    deliver(cycle)
    renewed = stripe_line(SUB, "price_1PRO")
    assert (renewed["expirationDate"], renewed["bulkMax"]) == ("2028-11-29", 5)
    deliver(sample("stripe/invoice-paid-subscription-create"))  # the first invoice, again, late
    assert stripe_line(SUB, "price_1PRO")["expirationDate"] == "2028-11-29"
    assert order_of(renewed).expiration_date == "2028-11-29"


def test_a_subscription_update_applies_its_new_quantity_and_an_older_one_loses(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("stripe/invoice-paid-subscription-create"))
    end = 1796030900 + 31536000
    deliver(invoice("subscription_update", "in_up_2", 8, end, 1796100000))
    deliver(invoice("subscription_update", "in_up_1", 6, end, 1796050000, legacy=True))  # older, arrives later
    assert stripe_line(SUB, "price_1PRO")["bulkMax"] == 8


def test_a_deleted_subscription_revokes_even_when_its_invoice_comes_later(
        client: Client, deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("stripe/customer-subscription-deleted"))
    assert stripe_line(SUB, "price_1PRO")["status"] == "pending"
    deliver(sample("stripe/invoice-paid-subscription-create"))
    late = stripe_line(SUB, "price_1PRO")
    assert late["status"] == "revoked"
    assert lac(client, "GET", late["activationKey"]).json_body == {"message": DISABLED}


def test_a_livemode_false_event_is_not_granted_where_test_orders_are_not(
        aws: None, rebind: Callable[..., config.Settings]) -> None:
    plans.put(plan_sample())
    rebind(allow_test_orders=False)
    event = sample("stripe/checkout-session-completed")
    event["detail"]["livemode"] = False
    (result,) = handle_event(event)["results"]
    assert result["status"] == "ignored"


@pytest.mark.parametrize("name", sorted(f"{p.parent.name}/{p.stem}" for p in (PROJECT / "events").glob("s*/*.json")
                                        if p.parent.name in ("shopify", "stripe")))
def test_every_shop_sample_event_is_accepted_and_idempotent(aws: None, name: str) -> None:
    plans.put(plan_sample())
    first = handle_event(sample(name))
    assert first["ok"] is True, first
    again = handle_event(sample(name))
    assert [{k: v for k, v in r.items() if k != "event"} for r in again["results"]] == [
        {k: v for k, v in r.items() if k != "event"} for r in first["results"]]


# --- found in review: each failed before its fix ------------------------------------------------

def rejected_through_the_queue(event: dict[str, Any]) -> str:
    """Deliver through provision_queue: acknowledged (not retried), its rejection recorded; the reason."""
    assert queue(sqs_event(event)) == {"batchItemFailures": []}
    (record,) = [r for r in Provisioning.scan(consistent_read=True) if r.order_key.startswith("message#")]
    reason: str = json.loads(record.result)["reason"]
    record.delete()
    return reason


def test_seats_beyond_what_an_order_or_a_key_holds_are_a_recorded_rejection(aws: None) -> None:
    plans.put(copy.deepcopy(KEY_PLAN))
    plans.put({**plan_sample(), "seatsPerUnit": 2})
    big_key = sample("shopify/orders-paid")
    big_key["detail"]["payload"]["line_items"][0].update({"sku": "KEYS-10", "current_quantity": 200000})
    assert rejected_through_the_queue(big_key) == (
        "Invalid shop event: 200000 units of plan keys-10 are 2000000 seats, more than a license key holds (1048575)")
    big_order = sample("shopify/orders-paid")
    big_order["detail"]["payload"]["line_items"][0]["current_quantity"] = 1_000_000
    assert rejected_through_the_queue(big_order) == (
        "Invalid shop event: 1000000 units of plan pro-annual are 2000000 seats, more than a license order holds "
        "(1000000)")
    assert list(Order.scan()) == [] and list(LicenseKey.scan()) == []


@pytest.mark.parametrize(("change", "reason"), [
    (lambda e: e["detail"]["payload"].update(id="²"), "Invalid shop event: payload.id must be an integer id"),
    (lambda e: e["detail"]["payload"].update(processed_at="9999-12-31T00:00:00+00:00"),
     "Invalid shop event: a purchase on 9999-12-31 with a term of 12 months ends past the year 9999"),
    (lambda e: e["detail"]["payload"]["line_items"].__setitem__(0, ["not", "an", "object"]),
     "Invalid shop event: payload.line_items.0 must be an object"),
])
def test_malformed_shopify_payloads_are_recorded_not_retried(aws: None, change: Callable[[dict[str, Any]], Any],
                                                             reason: str) -> None:
    plans.put(plan_sample())
    event = sample("shopify/orders-paid")
    change(event)
    assert rejected_through_the_queue(event) == reason


@pytest.mark.parametrize(("name", "change", "reason"), [
    ("stripe/invoice-paid-subscription-create",
     lambda o: o["parent"].update(subscription_details=["sub"]),
     "Invalid shop event: data.object.parent.subscription_details must be an object"),
    ("stripe/invoice-paid-subscription-create", lambda o: o["lines"]["data"][0].update(pricing="price_1PRO"),
     "Invalid shop event: data.object.lines.data.0.pricing must be an object"),
    ("stripe/invoice-paid-subscription-create", lambda o: o["lines"]["data"][0].update(amount="199500"),
     "Invalid shop event: data.object.lines.data.0.amount must be a whole number"),
    ("stripe/invoice-paid-subscription-create", lambda o: o["lines"]["data"][0].update(period={"end": 10**13}),
     "Invalid shop event: data.object.lines.data.0.period.end must be a whole number from 0 to 4102444800"),
    ("stripe/checkout-session-completed", lambda o: o["metadata"].update(keyturn_quantity="²"),
     "Invalid shop event: metadata.keyturn_quantity must be a whole number from 1 to 1000000"),
    ("stripe/customer-subscription-deleted", lambda o: o["items"]["data"][0].update(price="price_1PRO"),
     "Invalid shop event: data.object.items.data.0.price must be an object"),
])
def test_malformed_stripe_objects_are_recorded_not_retried(aws: None, name: str, change: Callable[[Any], Any],
                                                           reason: str) -> None:
    plans.put(plan_sample())
    event = sample(name)
    change(event["detail"]["data"]["object"])
    assert rejected_through_the_queue(event) == reason


def test_an_unforeseen_shape_is_still_a_recorded_rejection(aws: None) -> None:
    plans.put(plan_sample())
    event = sample("stripe/checkout-session-completed")
    event["detail"]["created"] = 10**15
    assert rejected_through_the_queue(event).startswith("Invalid shop event: detail.created must be a whole number")
    event = sample("shopify/orders-paid")
    event["detail"]["payload"]["line_items"][0]["current_quantity"] = 2**70
    assert rejected_through_the_queue(event).startswith("Invalid shop event: payload.line_items.0.quantity")


def test_a_plan_id_no_plan_can_have_is_ignored_under_its_session(aws: None) -> None:
    event = sample("stripe/checkout-session-completed")
    event["detail"]["data"]["object"]["metadata"]["keyturn_plan"] = "€" * 400  # 1,200 bytes: no range key holds it
    (result,) = handle_event(event)["results"]
    assert (result["lineItem"], result["status"], result["reason"]) == (
        "-", "ignored", "the session's metadata.keyturn_plan is not a plan id (1-128 printable ASCII characters)")


def test_lines_no_plan_matches_stay_ignored_whatever_comes_first(aws: None) -> None:
    plans.put(plan_sample())
    handle_event(sample("shopify/orders-updated"))  # Shopify sends one when the order is created
    handle_event(sample("shopify/orders-paid"))
    assert (line(SHIRT_LINE)["status"], line(SHIRT_LINE)["reason"]) == ("ignored", "no plan matches sku TSHIRT-L")
    handle_event(sample("shopify/orders-cancelled"))
    assert line(SHIRT_LINE)["status"] == "ignored"
    unrelated = sample("stripe/customer-subscription-deleted")
    unrelated["detail"]["data"]["object"]["id"] = "sub_newsletter"
    unrelated["detail"]["data"]["object"]["items"]["data"][0]["price"]["id"] = "price_NEWSLETTER"
    assert handle_event(unrelated) == {"ok": True, "results": []}
    assert provisioning.show("sub_newsletter", source="stripe") is None
    unmatched = sample("stripe/invoice-paid-subscription-create")
    unmatched["detail"]["data"]["object"]["lines"]["data"][0]["pricing"]["price_details"]["price"] = "price_OTHER"
    handle_event(unmatched)
    deleted = sample("stripe/customer-subscription-deleted")
    deleted["detail"]["data"]["object"]["items"]["data"][0]["price"]["id"] = "price_OTHER"
    handle_event(deleted)
    assert stripe_line(SUB, "price_OTHER")["status"] == "ignored"


def test_a_refunded_renewal_is_revoked_until_the_next_paid_period(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("stripe/invoice-paid-subscription-create"))
    deliver(sample("stripe/invoice-paid-subscription-cycle-2024-06-20"))
    refund_of_renewal = sample("stripe/charge-refunded")
    refund_of_renewal["detail"]["data"]["object"]["payment_intent"] = "pi_3SaBcDeFgHiJkLmN1x2y3z4w"
    deliver(refund_of_renewal)
    assert stripe_line(SUB, "price_1PRO")["status"] == "revoked"
    next_year = to_legacy(invoice("subscription_cycle", "in_next_year", 5, 1859102900 + 31536000, 1859102900))
    next_year["detail"]["data"]["object"]["payment_intent"] = "pi_next_year"
    deliver(next_year)
    renewed = stripe_line(SUB, "price_1PRO")
    assert (renewed["status"], renewed["expirationDate"]) == ("provisioned", "2029-11-29")
    assert order_of(renewed).enabled is True


@pytest.mark.parametrize("order_of_events", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
def test_reports_in_the_same_second_give_one_result_in_any_order(aws: None, order_of_events: tuple[int, ...]) -> None:
    plans.put(plan_sample())
    handle_event(sample("shopify/orders-paid"))
    same_second = "2026-12-03T10:00:00+01:00"
    events = [updated(3, at=same_second), updated(2, at=same_second),
              refund(1, refund_line="700000000009", created=same_second)]
    for index in order_of_events:
        handle_event(events[index])
    assert line()["bulkMax"] == 2
    end = 1796030900 + 31536000
    handle_event(sample("stripe/invoice-paid-subscription-create"))
    pair = [invoice("subscription_update", "in_tie_a", 6, end, 1796100000),
            invoice("subscription_update", "in_tie_b", 8, end, 1796100000)]
    for index in (order_of_events[0] % 2, 1 - order_of_events[0] % 2):
        handle_event(pair[index])
    assert stripe_line(SUB, "price_1PRO")["bulkMax"] == 8  # the later id of two in one second


def test_a_free_checkout_is_granted(aws: None) -> None:
    plans.put(plan_sample())
    event = sample("stripe/checkout-session-completed")
    event["detail"]["data"]["object"]["payment_status"] = "no_payment_required"  # a 100 % coupon
    assert handle_event(event)["results"][0]["status"] == "provisioned"


def test_a_price_switched_away_revokes_its_line_and_the_new_price_is_granted(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("stripe/invoice-paid-subscription-create"))
    switch = sample("stripe/invoice-paid-subscription-update")
    credit, debit = switch["detail"]["data"]["object"]["lines"]["data"]
    debit["pricing"]["price_details"]["price"] = "price_1KEYS"  # from Pro to the key plan
    deliver(switch)
    deliver(switch)
    assert (stripe_line(SUB, "price_1PRO")["status"], stripe_line(SUB, "price_1PRO")["bulkMax"]) == ("revoked", 0)
    assert (stripe_line(SUB, "price_1KEYS")["status"], stripe_line(SUB, "price_1KEYS")["count"]) == (
        "provisioned", 80)


def test_the_subscription_update_sample_applies_the_new_quantity(
        deliver: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    deliver(sample("stripe/invoice-paid-subscription-create"))
    deliver(sample("stripe/invoice-paid-subscription-update"))
    updated_line = stripe_line(SUB, "price_1PRO")
    assert (updated_line["status"], updated_line["bulkMax"], updated_line["expirationDate"]) == (
        "provisioned", 8, "2027-11-30")
