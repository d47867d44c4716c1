"""Provisioning exactly once: SQS batches and EventBridge events through the real handlers (moto)."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from chalicelib import config, keystore, licenses, models, provisioning
from chalicelib.functions import handle_event, handle_queue
from chalicelib.models import Order, Provisioning
from tests.conftest import FakeClock, as_function

# DESIGN.md's example, exactly as written there.
DESIGN_EXAMPLE: dict[str, Any] = json.loads("""
{"orderId": "shop-1001", "lineItem": "1", "kind": "license-order",
 "customer": {"name": "Zoë Ltd"}, "product": {"name": "product 1", "version": "2", "template": "Default"},
 "licenseType": "local", "bulkMax": 5,
 "hostid": {"types": [{"nameRaw": "HOSTNAME", "min": 1, "max": 1}], "min": 1},
 "features": [{"name": "f1", "version": "1.0"}],
 "expirationDate": null, "maintenanceEndDate": null, "deactivationsAllowed": 1}
""")
KEY_LINE: dict[str, Any] = {"orderId": "shop-1001", "lineItem": "2", "kind": "license-key",
                            "customer": {"name": "Zoë Ltd"}, "typeEnum": "OSI", "count": 10,
                            "expirationDate": "2027-12-31"}
_ids = itertools.count(1)


def queue(event: dict[str, Any]) -> dict[str, Any]:
    """The provision_queue function's handling, its AWS calls recorded for tests/test_iam.py."""
    with as_function("provision-queue"):
        return handle_queue(event)


def events(event: dict[str, Any]) -> dict[str, Any]:
    """The provision_events function's handling, its AWS calls recorded for tests/test_iam.py."""
    with as_function("provision-events"):
        return handle_event(event)


def sqs_event(*bodies: Any) -> dict[str, Any]:
    """An SQS event, each record with its own messageId (Chalice's generator repeats one)."""
    records = []
    for body in bodies:
        records.append({"messageId": f"msg-{next(_ids)}", "receiptHandle": "rh", "eventSource": "aws:sqs",
                        "body": body if isinstance(body, str) else json.dumps(body), "attributes": {},
                        "messageAttributes": {}, "md5OfBody": "", "awsRegion": "us-east-1",
                        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:keyturn-test-provisioning"})
    return {"Records": records}


def eventbridge_event(detail: Any, event_id: str = "evt-1") -> dict[str, Any]:
    return {"version": "0", "id": event_id, "detail-type": "OrderPlaced", "source": "com.example.shop",
            "account": "123456789012", "time": "2026-11-26T12:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail}


def orders_for(order_id: str) -> list[Order]:
    return [o for o in Order.scan(consistent_read=True) if o.external_order_id == f"keyturn#{order_id}"]


def test_the_design_example_provisions_one_order_however_often_it_is_delivered(aws: None, clock: FakeClock) -> None:
    first = provisioning.provision(copy.deepcopy(DESIGN_EXAMPLE))
    clock.advance(3 * 24 * 3600)  # days apart
    again = provisioning.provision(copy.deepcopy(DESIGN_EXAMPLE))
    assert again == first
    assert first == {"source": "keyturn", "orderId": "shop-1001", "lineItem": "1", "status": "provisioned",
                     "kind": "license-order", "customer": {"name": "Zoë Ltd"}, "bulkMax": 5,
                     "activationKey": first["activationKey"], "provisionedAt": "2026-11-26T12:00:00+00:00"}
    (order,) = orders_for("shop-1001")
    assert (order.activation_key, int(order.bulk_max), order.customer.as_dict()) == (
        first["activationKey"], 5, {"name": "Zoë Ltd"})
    assert provisioning.show("shop-1001", "1") == first


def test_a_key_line_mints_one_stored_key(aws: None) -> None:
    result = provisioning.provision(copy.deepcopy(KEY_LINE))
    assert provisioning.provision(copy.deepcopy(KEY_LINE)) == result
    (stored,) = licenses.all_keys()
    assert (stored.license_key, stored.type_enum, int(stored.units)) == (result["licenseKey"], "OSI", 10)
    assert result["licenseId"] == stored.license_id and stored.added_by == "provisioning:keyturn"


def test_a_mixed_batch_provisions_the_good_lines_and_acknowledges_the_bad(aws: None) -> None:
    bad_field = {**DESIGN_EXAMPLE, "lineItem": "3", "bulkMax": 0}
    event = sqs_event(DESIGN_EXAMPLE, "{not json", bad_field, DESIGN_EXAMPLE, KEY_LINE, [1, 2])
    assert queue(event) == {"batchItemFailures": []}
    assert len(orders_for("shop-1001")) == 1 and len(licenses.all_keys()) == 1
    ids = [r["messageId"] for r in event["Records"]]
    rejected = {r.order_key: json.loads(r.result) for r in Provisioning.scan() if r.status == "rejected"}
    assert rejected[f"message#{ids[1]}"]["reason"].startswith(
        "Invalid provisioning event: the message body is not JSON (Expecting property name")
    assert rejected[f"message#{ids[2]}"] == {
        "source": "keyturn", "status": "rejected", "messageId": ids[2], "orderId": "shop-1001", "lineItem": "3",
        "reason": "Invalid provisioning event: license-order.bulkMax: Input should be greater than or equal to 1"}
    assert provisioning.show("shop-1001", "3") == rejected[f"message#{ids[2]}"]
    assert rejected[f"message#{ids[5]}"]["reason"] == (
        "Invalid provisioning event: the order line must be a JSON object")
    assert [line["lineItem"] for line in provisioning.show("shop-1001")] == ["1", "2", "3"]


def test_a_rejected_redelivery_never_hides_a_provisioned_line(aws: None) -> None:
    good = provisioning.provision(copy.deepcopy(DESIGN_EXAMPLE))
    queue(sqs_event({**DESIGN_EXAMPLE, "bulkMax": "five"}))
    assert provisioning.show("shop-1001", "1") == good


def test_a_corrected_event_provisions_a_line_that_was_rejected(aws: None) -> None:
    queue(sqs_event({**DESIGN_EXAMPLE, "bulkMax": 0}))
    assert provisioning.show("shop-1001", "1")["status"] == "rejected"
    fixed = provisioning.provision(copy.deepcopy(DESIGN_EXAMPLE))
    assert provisioning.show("shop-1001", "1") == fixed and fixed["status"] == "provisioned"


def test_every_field_problem_is_named_at_once(aws: None) -> None:
    line = {**DESIGN_EXAMPLE, "bulkMax": -1, "licenseType": "floating", "orderId": "", "extra": 1}
    with pytest.raises(provisioning.Rejected) as caught:
        provisioning.provision(line)
    assert caught.value.message == (
        "Invalid provisioning event: license-order.orderId: String should have at least 1 character; "
        "license-order.licenseType: Input should be 'local' or 'network'; "
        "license-order.bulkMax: Input should be greater than or equal to 1; "
        "license-order.extra: Extra inputs are not permitted")
    with pytest.raises(provisioning.Rejected) as caught:
        provisioning.provision({**DESIGN_EXAMPLE, "kind": None})
    assert caught.value.message == ("Invalid provisioning event: kind: Input tag 'None' found using 'kind' does not "
                                    "match any of the expected tags: 'license-order', 'license-key'")
    line = {k: v for k, v in DESIGN_EXAMPLE.items() if k != "kind"}
    with pytest.raises(provisioning.Rejected) as caught:
        provisioning.provision(line)
    assert caught.value.message == "Invalid provisioning event: kind: Unable to extract tag using discriminator 'kind'"


def test_a_whole_eventbridge_event_on_the_queue_is_read_by_its_detail(aws: None) -> None:
    assert queue(sqs_event(eventbridge_event(DESIGN_EXAMPLE))) == {"batchItemFailures": []}
    assert len(orders_for("shop-1001")) == 1


def test_an_unavailable_table_is_a_transient_failure_retried_until_it_succeeds(aws: None) -> None:
    Provisioning.delete_table()  # the table is briefly unavailable
    event = sqs_event(DESIGN_EXAMPLE, {**DESIGN_EXAMPLE, "lineItem": "9"})
    assert queue(event) == {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}
    assert orders_for("shop-1001") == []  # nothing half-applied: no order without its record
    models.create_tables()
    assert queue(event) == {"batchItemFailures": []}  # SQS redelivers the same messages
    assert sorted(int(o.bulk_max) for o in orders_for("shop-1001")) == [5, 5]


def test_eventbridge_redelivery_reports_the_same_result(aws: None) -> None:
    first = events(eventbridge_event(DESIGN_EXAMPLE, "evt-1"))
    second = events(eventbridge_event(DESIGN_EXAMPLE, "evt-1"))
    assert first == second == {"ok": True, "results": [provisioning.show("shop-1001", "1")]}
    assert len(orders_for("shop-1001")) == 1


def test_eventbridge_rejection_is_recorded_and_answered(aws: None) -> None:
    answer = events(eventbridge_event({**DESIGN_EXAMPLE, "features": []}, "evt-9"))
    message = "Invalid provisioning event: license-order.features: List should have at least 1 item after validation, not 0"
    assert answer == {"ok": False, "error": {"code": "invalid_order", "message": message}}
    assert json.loads(Provisioning.get("message#event:evt-9", "-").result)["reason"] == message


def test_eventbridge_transient_failure_raises_for_lambda_to_retry(aws: None) -> None:
    Order.delete_table()
    with pytest.raises(Exception):  # noqa: B017 - any AWS error: Lambda retries the event
        events(eventbridge_event(DESIGN_EXAMPLE))
    assert provisioning.show("shop-1001", "1") is None


def test_results_are_published_to_the_stage_topic(aws: None, rebind: Callable[..., config.Settings]) -> None:
    """With the deployed stages' secrets (SSM) and topic: what each function's policy must allow."""
    import boto3

    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="keyturn-test-notifications")["TopicArn"]
    mailer = sqs.create_queue(QueueName="shop-mailer")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=mailer, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    rebind(notifications_topic_arn=topic, local_dir=None, ssm_prefix="/keyturn/test/")
    keystore.init_ssm_secrets("/keyturn/test/")
    keystore.clear_cache()  # the functions read the secret themselves
    queued = sqs_event(DESIGN_EXAMPLE, KEY_LINE, {**KEY_LINE, "lineItem": "3", "count": -1})
    assert queue(queued) == queue(queued) == {"batchItemFailures": []}  # published again: at least once
    keystore.clear_cache()  # a separate function: a process of its own, reading the secret itself
    evented = events(eventbridge_event({**KEY_LINE, "lineItem": "4"}))
    assert events(eventbridge_event({**KEY_LINE, "lineItem": "5", "typeEnum": "ANY"}))["ok"] is False
    published = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=mailer, MaxNumberOfMessages=10)["Messages"]]
    lines = [provisioning.show("shop-1001", line) for line in ("1", "2", "3")]
    assert published[:6] == lines + lines
    assert published[6:] == [evented["results"][0], provisioning.show("shop-1001", "5")]


SAMPLES = Path(__file__).resolve().parents[1] / "events" / "provisioning"


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.json")))
def test_every_provisioning_sample_event_succeeds_and_is_idempotent(aws: None, sample: str) -> None:
    event = json.loads((SAMPLES / sample).read_text())
    if sample.startswith("provision_queue-"):
        assert queue(event) == queue(event) == {"batchItemFailures": []}
        lines = [provisioning.show("shop-1001", str(line)) for line in ("1", "2")]
        assert [line["status"] for line in lines] == ["provisioned", "provisioned"]
    elif sample.startswith("provision_events-"):
        first = events(event)
        assert first == events(event) and first["ok"] is True and first["results"][0]["status"] == "provisioned"
    else:
        result = provisioning.provision(event)
        assert provisioning.provision(event) == result and result["status"] == "provisioned"


@pytest.mark.parametrize("body", [
    "[" * 5000 + "]" * 5000,  # nested too deeply to decode
    '{"orderId": "\\ud800", "lineItem": "1"}',  # a lone surrogate: no text DynamoDB keeps
    json.dumps({**DESIGN_EXAMPLE, **{f"extra{i}": i for i in range(8000)}}),  # 8,000 problems
    json.dumps({**DESIGN_EXAMPLE, "deactivationsAllowed": 10 ** 200}),  # beyond DynamoDB's numbers
], ids=["deep", "surrogate", "many-problems", "huge-number"])
def test_events_that_can_never_succeed_are_recorded_and_acknowledged(aws: None, body: str) -> None:
    event = sqs_event(body)
    assert queue(event) == {"batchItemFailures": []}  # not retried until the dead-letter queue
    (record,) = [r for r in Provisioning.scan() if r.order_key == f"message#{event['Records'][0]['messageId']}"]
    reason = json.loads(record.result)["reason"]
    assert reason.startswith("Invalid provisioning event: ") and len(reason) <= provisioning.MAX_REASON + 1
    assert orders_for("shop-1001") == []


def test_a_broken_secret_is_the_stages_fault_retried_not_the_events(aws: None, rebind: Callable[..., config.Settings],
                                                                       tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "license-key-secret").write_text("not base64 !!!")
    rebind(local_dir=tmp_path)
    event = sqs_event(KEY_LINE)
    assert queue(event) == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert provisioning.show("shop-1001", "2") is None  # nothing recorded: a fixed secret provisions it


def test_a_transient_failure_is_logged_with_its_message_id(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    Provisioning.delete_table()
    event = sqs_event(DESIGN_EXAMPLE)
    capsys.readouterr()
    assert queue(event)["batchItemFailures"] == [{"itemIdentifier": event["Records"][0]["messageId"]}]
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"level"')]
    assert [(entry["level"], entry["message"], entry["message_id"]) for entry in logged] == [
        ("ERROR", "provisioning message failed; it will be redelivered", event["Records"][0]["messageId"])]


def test_an_eventbridge_event_with_a_lone_surrogate_is_rejected_not_retried(aws: None) -> None:
    answer = events(eventbridge_event({"orderId": "\ud800", "lineItem": "1"}, "evt-\ud800"))
    assert answer == {"ok": False, "error": {"code": "invalid_order", "message":
                      "Invalid provisioning event: the order line must be a JSON object"}}
