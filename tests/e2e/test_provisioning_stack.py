"""Provisioning on the real local stack: concurrent deliveries from several processes give one order."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path
from typing import Iterator

import boto3
import pytest

from tests.e2e.stack import LocalStack, cli

pytestmark = pytest.mark.e2e
EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(tmp_path_factory.mktemp("provisioning") / "state").start()
    yield running
    running.stop()


def test_one_event_delivered_by_eight_processes_at_once_provisions_one_order(stack: LocalStack) -> None:
    line = {**json.loads((EVENTS / "provisioning" / "order-line.json").read_text()), "orderId": "race-1"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # each delivery is its own CLI process
        runs = list(pool.map(lambda _: cli(stack.state_dir, "provision", "-", stdin=json.dumps(line)), range(8)))
    assert [r.returncode for r in runs] == [0] * 8, [r.stderr for r in runs]
    results = [json.loads(r.stdout.strip().splitlines()[-1]) for r in runs]
    assert all(result == results[0] for result in results)  # every delivery reports the same result
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.recorded["dynamodb_endpoint"], region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")
    orders = [i for i in dynamodb.scan(TableName="keyturn-local-orders")["Items"]
              if i.get("external_order_id", {}).get("S") == "keyturn#race-1"]
    assert [o["activation_key"]["S"] for o in orders] == [results[0]["activationKey"]]
    shown = cli(stack.state_dir, "provisioning-show", "race-1", "1")
    assert (shown.returncode, json.loads(shown.stdout)) == (0, results[0])


def test_the_local_functions_run_as_lambda_would_with_the_sample_events(stack: LocalStack) -> None:
    queued = cli(stack.state_dir, "invoke", "provision_queue",
                 str(EVENTS / "provisioning" / "provision_queue-order-and-key.json"))
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.strip().splitlines()[-1] == '{"batchItemFailures":[]}'
    evented = cli(stack.state_dir, "invoke", "provision_events",
                  str(EVENTS / "provisioning" / "provision_events-order-placed.json"))
    answer = json.loads(evented.stdout.strip().splitlines()[-1])
    assert evented.returncode == 0 and answer["ok"] is True and answer["results"][0]["orderId"] == "shop-1001"
    listed = cli(stack.state_dir, "provisioning-show", "shop-1001")
    assert [line["lineItem"] for line in json.loads(listed.stdout)] == ["1", "2"]
    never = cli(stack.state_dir, "provisioning-show", "no-such-order")
    assert (never.returncode, never.stdout, never.stderr.strip()) == (
        1, "", "no provisioning event was seen for order no-such-order")


def test_results_are_published_to_the_local_topic(stack: LocalStack) -> None:
    endpoint = str(stack.recorded["dynamodb_endpoint"])
    aws = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "local",
           "aws_secret_access_key": "local"}
    sqs, sns = boto3.client("sqs", **aws), boto3.client("sns", **aws)
    mailer = sqs.create_queue(QueueName="local-mailer")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=mailer, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=str(stack.recorded["notifications_topic_arn"]), Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    line = {**json.loads((EVENTS / "provisioning" / "key-line.json").read_text()), "orderId": "published-1"}
    provisioned = cli(stack.state_dir, "provision", "-", stdin=json.dumps(line))
    assert provisioned.returncode == 0, provisioned.stderr
    (message,) = sqs.receive_message(QueueUrl=mailer, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(message["Body"]) == json.loads(provisioned.stdout.strip().splitlines()[-1])


def sqs(*bodies: dict, first: int = 1) -> dict:
    return {"Records": [{"messageId": f"shop-msg-{first + n}", "receiptHandle": "rh", "eventSource": "aws:sqs",
                         "body": json.dumps(body), "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                         "awsRegion": "us-east-1",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:keyturn-local-provisioning"}
                        for n, body in enumerate(bodies)]}


def invoke_queue(stack: LocalStack, tmp_path: Path, event: dict) -> None:
    path = tmp_path / "sqs-event.json"
    path.write_text(json.dumps(event))
    done = cli(stack.state_dir, "invoke", "provision_queue", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == '{"batchItemFailures":[]}'


def test_a_shopify_order_through_the_queue_then_a_partial_refund_and_a_cancellation(
        stack: LocalStack, tmp_path: Path) -> None:
    import requests

    plan = json.loads((EVENTS / "operator" / "put-plan.json").read_text())["plan"]
    key_plan = {"planId": "keys-10", "kind": "license-key", "key": {"typeEnum": "OSI", "countPerUnit": 10},
                "match": {"shopify": {"skus": ["KEYS-10"]}}}
    for one in (plan, key_plan):
        put = cli(stack.state_dir, "put-plan", "-", stdin=json.dumps(one))
        assert put.returncode == 0, put.stderr
    paid = json.loads((EVENTS / "shopify" / "orders-paid.json").read_text())
    paid["detail"]["payload"]["line_items"][1]["sku"] = "KEYS-10"  # two lines that grant: an order and a key
    invoke_queue(stack, tmp_path, sqs(paid, paid))  # delivered twice in one batch
    invoke_queue(stack, tmp_path, sqs(paid, first=3))  # and again later
    shop = ("--source", "shopify", "--shop", "zoe-tools.myshopify.com", "6158849654871")
    listed = cli(stack.state_dir, "provisioning-show", *shop)
    lines = {line["lineItem"]: line for line in json.loads(listed.stdout)}
    assert {k: (v["status"], v["kind"]) for k, v in lines.items()} == {
        "15894375612503": ("provisioned", "license-order"), "15894375645271": ("provisioned", "license-key")}
    key = lines["15894375612503"]["activationKey"]
    order = requests.get(f"{stack.url}/rest/v1/license-orders/{key}", timeout=30)
    assert (order.status_code, order.json()["bulkMax"]) == (200, 3)
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.recorded["dynamodb_endpoint"], region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")
    shop_orders = [i for i in dynamodb.scan(TableName="keyturn-local-orders")["Items"]
                   if i["activation_key"]["S"] == key]
    assert len(shop_orders) == 1
    invoke_queue(stack, tmp_path, sqs(json.loads((EVENTS / "shopify" / "refunds-create.json").read_text()), first=4))
    order = requests.get(f"{stack.url}/rest/v1/license-orders/{key}", timeout=30)
    assert (order.status_code, order.json()["bulkMax"]) == (200, 2)
    invoke_queue(stack, tmp_path, sqs(json.loads((EVENTS / "shopify" / "orders-cancelled.json").read_text()), first=5))
    refused = requests.get(f"{stack.url}/rest/v1/license-orders/{key}", timeout=30)
    assert (refused.status_code, refused.json()) == (403, {"message": "License order has been disabled."})
    one = cli(stack.state_dir, "provisioning-show", *shop, "15894375645271")
    assert (one.returncode, json.loads(one.stdout)["status"]) == (0, "revoked")
    keys = [i for i in dynamodb.scan(TableName="keyturn-local-license-keys")["Items"]
            if i["license_key"]["S"] == lines["15894375645271"]["licenseKey"]]
    assert keys == []  # a revoked key is gone from the license-key store
    never = cli(stack.state_dir, "provisioning-show", *shop[:-1], "1")
    assert (never.returncode, never.stderr.strip()) == (1, "no provisioning event was seen for order 1")


def test_an_ignored_shop_line_is_shown_with_its_reason_and_exit_status_0(stack: LocalStack) -> None:
    paid = json.loads((EVENTS / "shopify" / "orders-paid.json").read_text())
    paid["detail"]["payload"]["id"] = 424242
    fed = cli(stack.state_dir, "provision", "-", stdin=json.dumps(paid))
    assert fed.returncode == 0, fed.stderr
    shown = cli(stack.state_dir, "provisioning-show", "--source", "shopify", "--shop", "zoe-tools.myshopify.com",
                "424242", "15894375645271")
    found = json.loads(shown.stdout)
    assert (shown.returncode, found["status"], found["reason"]) == (0, "ignored", "no plan matches sku TSHIRT-L")
    bad = cli(stack.state_dir, "provisioning-show", "--shop", "zoe-tools.myshopify.com", "424242")
    assert (bad.returncode, bad.stderr.strip()) == (1, "--shop is Shopify's: use it with --source shopify")


def test_one_shopify_order_delivered_by_eight_processes_at_once_grants_once(stack: LocalStack) -> None:
    plan = json.loads((EVENTS / "operator" / "put-plan.json").read_text())["plan"]
    assert cli(stack.state_dir, "put-plan", "-", stdin=json.dumps(plan)).returncode == 0
    paid = json.loads((EVENTS / "shopify" / "orders-paid.json").read_text())
    paid["detail"]["payload"]["id"] = 5550001
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # the local database, not moto in threads: atomic
        runs = list(pool.map(lambda _: cli(stack.state_dir, "provision", "-", stdin=json.dumps(paid)), range(8)))
    assert [r.returncode for r in runs] == [0] * 8, [r.stderr[-500:] for r in runs]
    keys = {json.loads(r.stdout.strip().splitlines()[-1])["results"][0]["activationKey"] for r in runs}
    assert len(keys) == 1
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.recorded["dynamodb_endpoint"], region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")
    granted = [i for i in dynamodb.scan(TableName="keyturn-local-orders")["Items"]
               if i["activation_key"]["S"] in keys]
    assert len(granted) == 1
