"""The embedded DynamoDB's journal: replayed, compacted, and safe against torn writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from werkzeug.test import Client

from tooling import localdb


def signed(region: str = "us-east-1", day: str = "20261126", access_key: str = "local") -> str:
    return f"AWS4-HMAC-SHA256 Credential={access_key}/{day}/{region}/dynamodb/aws4_request, Signature=x"


def request(app: Any, target: str, body: dict[str, Any], authorization: str | None = None) -> tuple[int, Any]:
    response = Client(app).post("/", data=json.dumps(body), headers={
        "Authorization": authorization or signed(), "X-Amz-Target": f"DynamoDB_20120810.{target}",
        "Content-Type": "application/x-amz-json-1.0"})
    return response.status_code, json.loads(response.get_data(as_text=True) or "{}")


def create_and_fill(app: Any, items: int, table: str = "t") -> None:
    status, _ = request(app, "CreateTable", {
        "TableName": table, "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}]})
    assert status == 200
    for n in range(items):
        assert request(app, "PutItem", {"TableName": table, "Item": {"k": {"S": str(n)}, "v": {"N": "1"}}})[0] == 200


def journal_targets(state: Path) -> list[str]:
    return [json.loads(line)["t"] for line in (state / localdb.JOURNAL).read_text().splitlines()]


def test_state_survives_a_restart_and_the_journal_is_compacted(tmp_path: Path) -> None:
    store = localdb.Store(tmp_path)
    create_and_fill(store.app, 30)
    for _ in range(10):
        request(store.app, "UpdateItem", {"TableName": "t", "Key": {"k": {"S": "1"}},
                                          "UpdateExpression": "ADD v :one",
                                          "ExpressionAttributeValues": {":one": {"N": "1"}}})
    request(store.app, "DeleteItem", {"TableName": "t", "Key": {"k": {"S": "2"}}})
    store.journal.close()  # killed: no compaction at close
    assert len(journal_targets(tmp_path)) == 1 + 30 + 10 + 1

    restarted = localdb.Store(tmp_path)
    _, scan = request(restarted.app, "Scan", {"TableName": "t"})
    assert scan["Count"] == 29
    _, item = request(restarted.app, "GetItem", {"TableName": "t", "Key": {"k": {"S": "1"}}})
    assert item["Item"]["v"] == {"N": "11"}
    assert journal_targets(tmp_path) == ["CreateTable", "BatchWriteItem", "BatchWriteItem"]


def test_a_clean_stop_compacts_the_journal(tmp_path: Path) -> None:
    store = localdb.Store(tmp_path)
    create_and_fill(store.app, 3)
    store.close()
    assert journal_targets(tmp_path) == ["CreateTable", "BatchWriteItem"]


def test_the_journal_is_compacted_while_serving_every_so_many_writes(tmp_path: Path) -> None:
    store = localdb.Store(tmp_path, compact_every=10)
    create_and_fill(store.app, 12)
    store.journal.close()
    assert journal_targets(tmp_path) == ["CreateTable", "BatchWriteItem", "PutItem", "PutItem", "PutItem"]
    assert request(localdb.Store(tmp_path).app, "Scan", {"TableName": "t"})[1]["Count"] == 12


def test_requests_signed_on_other_days_or_with_other_keys_share_one_state(tmp_path: Path) -> None:
    store = localdb.Store(tmp_path)
    create_and_fill(store.app, 1)
    request(store.app, "PutItem", {"TableName": "t", "Item": {"k": {"S": "x"}}}, signed(day="20261127"))
    request(store.app, "PutItem", {"TableName": "t", "Item": {"k": {"S": "y"}}}, signed(access_key="AKIAEXAMPLE"))
    store.journal.close()
    for _ in range(3):  # every restart loads what the previous one compacted
        restarted = localdb.Store(tmp_path)
        restarted.journal.close()
    assert request(restarted.app, "Scan", {"TableName": "t"})[1]["Count"] == 3
    assert journal_targets(tmp_path) == ["CreateTable", "BatchWriteItem"]


def test_journals_of_the_first_format_still_load(tmp_path: Path) -> None:
    create = {"TableName": "t", "BillingMode": "PAY_PER_REQUEST", "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
              "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}]}
    put = {"TableName": "t", "Item": {"k": {"S": "a"}}}
    lines = [{"s": signed(day=day).split(",")[0], "t": "CreateTable", "b": json.dumps(create)}
             for day in ("20261125", "20261126")]  # compacted once per credential scope: the same table twice
    lines.append({"s": signed().split(",")[0], "t": "PutItem", "b": json.dumps(put)})
    (tmp_path / localdb.JOURNAL).write_text("".join(json.dumps(line) + "\n" for line in lines))
    store = localdb.Store(tmp_path)
    assert request(store.app, "Scan", {"TableName": "t"})[1]["Count"] == 1


def test_failed_and_read_only_requests_are_not_journaled(tmp_path: Path) -> None:
    store = localdb.Store(tmp_path)
    create_and_fill(store.app, 1)
    status, _ = request(store.app, "PutItem", {"TableName": "t", "Item": {"k": {"S": "0"}},
                                               "ConditionExpression": "attribute_not_exists(k)"})
    assert status == 400
    request(store.app, "GetItem", {"TableName": "t", "Key": {"k": {"S": "0"}}})
    request(store.app, "Scan", {"TableName": "t"})
    store.journal.close()
    assert journal_targets(tmp_path) == ["CreateTable", "PutItem"]


def test_a_torn_last_line_was_never_acknowledged_and_is_dropped(tmp_path: Path) -> None:
    store = localdb.Store(tmp_path)
    create_and_fill(store.app, 3)
    store.journal.close()
    with (tmp_path / localdb.JOURNAL).open("a") as handle:
        handle.write('{"r": "half a line')
    assert request(localdb.Store(tmp_path).app, "Scan", {"TableName": "t"})[1]["Count"] == 3


def test_ttl_settings_and_indexes_survive_compaction(tmp_path: Path) -> None:
    store = localdb.Store(tmp_path)
    request(store.app, "CreateTable", {
        "TableName": "g", "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"},
                                 {"AttributeName": "i", "AttributeType": "S"}],
        "GlobalSecondaryIndexes": [{"IndexName": "by-i", "KeySchema": [{"AttributeName": "i", "KeyType": "HASH"}],
                                    "Projection": {"ProjectionType": "ALL"}}]})
    request(store.app, "UpdateTimeToLive", {"TableName": "g", "TimeToLiveSpecification": {"Enabled": True,
                                                                                         "AttributeName": "exp"}})
    request(store.app, "PutItem", {"TableName": "g", "Item": {"k": {"S": "a"}, "i": {"S": "x"}}})
    store.close()
    for _ in range(2):  # compaction of a compacted journal changes nothing
        restarted = localdb.Store(tmp_path)
        restarted.close()
    _, ttl = request(restarted.app, "DescribeTimeToLive", {"TableName": "g"})
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "exp"
    _, found = request(restarted.app, "Query", {"TableName": "g", "IndexName": "by-i",
                                                "KeyConditionExpression": "i = :i",
                                                "ExpressionAttributeValues": {":i": {"S": "x"}}})
    assert found["Count"] == 1
