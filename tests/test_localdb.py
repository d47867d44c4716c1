"""The embedded DynamoDB's journal: replayed, compacted, and safe against torn writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from werkzeug.test import Client

from chalicelib import localdb

SCOPE = "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/dynamodb/aws4_request"


def request(app: Any, target: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = Client(app).post("/", data=json.dumps(body), headers={
        "Authorization": localdb._auth_header(SCOPE), "X-Amz-Target": f"DynamoDB_20120810.{target}",
        "Content-Type": "application/x-amz-json-1.0"})
    return response.status_code, json.loads(response.get_data(as_text=True) or "{}")


def fresh(state: Path) -> Any:
    app, journal = localdb.build_app(state)
    return app, journal


def create_and_fill(app: Any, items: int) -> None:
    status, _ = request(app, "CreateTable", {
        "TableName": "t", "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}]})
    assert status == 200
    for n in range(items):
        assert request(app, "PutItem", {"TableName": "t", "Item": {"k": {"S": str(n)}, "v": {"N": "1"}}})[0] == 200


def test_state_survives_a_restart_and_the_journal_is_compacted(tmp_path: Path) -> None:
    app, journal = fresh(tmp_path)
    create_and_fill(app, 30)
    for _ in range(10):
        request(app, "UpdateItem", {"TableName": "t", "Key": {"k": {"S": "1"}}, "UpdateExpression": "ADD v :one",
                                    "ExpressionAttributeValues": {":one": {"N": "1"}}})
    request(app, "DeleteItem", {"TableName": "t", "Key": {"k": {"S": "2"}}})
    journal.close()
    assert len((tmp_path / localdb.JOURNAL).read_text().splitlines()) == 1 + 30 + 10 + 1

    restarted, journal = fresh(tmp_path)
    journal.close()
    _, scan = request(restarted, "Scan", {"TableName": "t"})
    assert scan["Count"] == 29
    _, item = request(restarted, "GetItem", {"TableName": "t", "Key": {"k": {"S": "1"}}})
    assert item["Item"]["v"] == {"N": "11"}
    compacted = (tmp_path / localdb.JOURNAL).read_text().splitlines()
    assert [json.loads(line)["t"] for line in compacted] == ["CreateTable", "BatchWriteItem", "BatchWriteItem"]


def test_failed_and_read_only_requests_are_not_journaled(tmp_path: Path) -> None:
    app, journal = fresh(tmp_path)
    create_and_fill(app, 1)
    status, _ = request(app, "PutItem", {"TableName": "t", "Item": {"k": {"S": "0"}},
                                         "ConditionExpression": "attribute_not_exists(k)"})
    assert status == 400
    request(app, "GetItem", {"TableName": "t", "Key": {"k": {"S": "0"}}})
    request(app, "Scan", {"TableName": "t"})
    journal.close()
    targets = [json.loads(line)["t"] for line in (tmp_path / localdb.JOURNAL).read_text().splitlines()]
    assert targets == ["CreateTable", "PutItem"]


def test_a_torn_last_line_was_never_acknowledged_and_is_dropped(tmp_path: Path) -> None:
    app, journal = fresh(tmp_path)
    create_and_fill(app, 3)
    journal.close()
    with (tmp_path / localdb.JOURNAL).open("a") as handle:
        handle.write('{"s": "half a line')
    restarted, journal = fresh(tmp_path)
    journal.close()
    assert request(restarted, "Scan", {"TableName": "t"})[1]["Count"] == 3


def test_ttl_settings_and_indexes_survive_compaction(tmp_path: Path) -> None:
    app, journal = fresh(tmp_path)
    request(app, "CreateTable", {
        "TableName": "g", "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"},
                                 {"AttributeName": "i", "AttributeType": "S"}],
        "GlobalSecondaryIndexes": [{"IndexName": "by-i", "KeySchema": [{"AttributeName": "i", "KeyType": "HASH"}],
                                    "Projection": {"ProjectionType": "ALL"}}]})
    request(app, "UpdateTimeToLive", {"TableName": "g", "TimeToLiveSpecification": {"Enabled": True,
                                                                                   "AttributeName": "exp"}})
    request(app, "PutItem", {"TableName": "g", "Item": {"k": {"S": "a"}, "i": {"S": "x"}}})
    journal.close()
    for _ in range(2):  # compaction of a compacted journal changes nothing
        restarted, journal = fresh(tmp_path)
        journal.close()
    _, ttl = request(restarted, "DescribeTimeToLive", {"TableName": "g"})
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "exp"
    _, found = request(restarted, "Query", {"TableName": "g", "IndexName": "by-i", "KeyConditionExpression": "i = :i",
                                            "ExpressionAttributeValues": {":i": {"S": "x"}}})
    assert found["Count"] == 1
