"""Seat alerts and seat metrics through the activation API: an operator hears of a full order first."""

from __future__ import annotations

import json
from typing import Any, Callable

import boto3
import pytest
from chalice.test import Client

from chalicelib import config, orders
from tests.conftest import FakeClock
from tests.samples import SEED_ORDER, order, segment


@pytest.fixture
def mailbox(aws: None, rebind: Callable[..., config.Settings]) -> Callable[[], list[dict[str, Any]]]:
    """The stage's notifications topic, with a queue subscribed to it; returns a reader of what arrived."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="keyturn-test-notifications")["TopicArn"]
    queue = sqs.create_queue(QueueName="operator-mail")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    rebind(notifications_topic_arn=topic)

    def read() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return [json.loads(m["Body"]) for m in messages]

    return read


def put(client: Client, key: str, host: str) -> int:
    return client.http.put(f"/rest/v1/licenses/{key}/{segment(f'CUSTOM={host}')}",
                           headers={"Host": "license.example.com"}).status_code


def test_the_last_seat_and_refusals_alert_at_most_once_an_hour(
        client: Client, mailbox: Callable[[], list[dict[str, Any]]], clock: FakeClock) -> None:
    key = orders.create_order(order(SEED_ORDER, bulkMax=2)).activation_key
    assert put(client, key, "a") == 202
    assert mailbox() == []  # one seat is still free
    assert put(client, key, "b") == 202  # the last seat
    alert = {"type": "SeatLimitReached", "activationKey": key, "reason": "the last seat was taken", "bulkMax": 2,
             "product": {"name": "product 1", "version": "2", "template": "Default", "licenseGeneratorType": "lm_x"},
             "customer": {"name": "customer1ó?"}, "at": "2026-11-26T12:00:00+00:00"}
    assert mailbox() == [alert]
    clock.advance(3599)
    assert put(client, key, "c") == 403  # refused, but alerted within the hour
    assert mailbox() == []
    clock.advance(1)
    assert put(client, key, "d") == 403
    assert mailbox() == [{**alert, "reason": "an activation was refused: no seat is free",
                          "at": "2026-11-26T13:00:00+00:00"}]


def test_activations_refusals_and_free_seats_are_metrics_per_product(
        client: Client, aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    key = orders.create_order(order(SEED_ORDER, bulkMax=1)).activation_key
    capsys.readouterr()
    assert (put(client, key, "a"), put(client, key, "b")) == (202, 403)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    metrics = [(m["_aws"]["CloudWatchMetrics"][0]["Namespace"], m["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
                m["product"]) for m in emitted]
    values = [m[m["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"]] for m in emitted]
    assert metrics == [("Keyturn", "Activations", "product 1"), ("Keyturn", "FreeSeats", "product 1"),
                       ("Keyturn", "ActivationsRefused", "product 1"), ("Keyturn", "FreeSeats", "product 1")]
    assert values == [[1.0], [0.0], [1.0], [0.0]]
