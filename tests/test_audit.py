"""The audit trail: every change recorded with its actor, in its transaction; tampering is named."""

from __future__ import annotations

import boto3
import pytest
from chalice.test import Client

from chalicelib import activations, audit, licenses, operator, orders, users
from chalicelib.models import AuditRecord
from tests.conftest import ADMIN_PASSWORD, FakeClock
from tests.samples import SEED_ORDER, order, segment


def actions(entity: str) -> list[tuple[int, str, str]]:
    return [(r["seq"], r["actor"], r["action"]) for r in audit.show(entity)]


def test_an_orders_life_is_one_verified_chain_with_its_actors(aws: None, clock: FakeClock) -> None:
    with audit.acting_as("operator:test"):
        key = orders.create_order(order(SEED_ORDER, bulkMax=2, deactivationsAllowed=1)).activation_key
        orders.set_enabled(key, False)
        orders.set_enabled(key, True)
    with audit.acting_as("client:198.51.100.7"):
        activations.activate(key, segment("CUSTOM=a"))
        activations.deactivate(key, segment("CUSTOM=a"))
    assert actions(f"order#{key}") == [(1, "operator:test", "order-created"), (2, "operator:test", "order-disabled"),
                                       (3, "operator:test", "order-enabled")]
    assert actions(f"activation#{key}#CUSTOM=A") == [(1, "client:198.51.100.7", "activated"),
                                                     (2, "client:198.51.100.7", "deactivated")]
    for entity in (f"order#{key}", f"activation#{key}#CUSTOM=A"):
        assert audit.verify(entity)["ok"] is True
    records = audit.show(f"order#{key}")
    assert records[1]["prev"] == records[0]["digest"] and records[0]["prev"] == ""
    assert records[1]["detail"] == {"enabled": False}


def test_a_refused_change_records_nothing(aws: None) -> None:
    key = orders.create_order(order(SEED_ORDER, bulkMax=1)).activation_key
    activations.activate(key, segment("CUSTOM=a"))
    from chalicelib import errors

    with pytest.raises(errors.BulkExceeded):
        activations.activate(key, segment("CUSTOM=b"))
    assert audit.show(f"activation#{key}#CUSTOM=B") == []  # no seat, no record: one transaction


def tamper() -> tuple[str, object]:
    key = orders.create_order(order(SEED_ORDER)).activation_key
    for enabled in (False, True, False):
        orders.set_enabled(key, enabled)
    return f"order#{key}", boto3.client("dynamodb")


def test_an_edited_record_is_named(aws: None) -> None:
    entity, dynamodb = tamper()
    dynamodb.update_item(TableName=AuditRecord.Meta.table_name, Key={"entity": {"S": entity}, "seq": {"N": "2"}},
                         UpdateExpression="SET actor = :a", ExpressionAttributeValues={":a": {"S": "someone-else"}})
    assert audit.verify(entity) == {"entity": entity, "ok": False, "records": 4, "firstBad": 2,
                                    "reason": "record 2 was changed after it was written"}


def test_a_removed_record_is_named(aws: None) -> None:
    entity, dynamodb = tamper()
    dynamodb.delete_item(TableName=AuditRecord.Meta.table_name, Key={"entity": {"S": entity}, "seq": {"N": "2"}})
    assert audit.verify(entity) == {"entity": entity, "ok": False, "records": 3, "firstBad": 2,
                                    "reason": "record 2 is missing (the next is 3)"}


def test_a_removed_last_record_is_told_by_the_head(aws: None) -> None:
    entity, dynamodb = tamper()
    dynamodb.delete_item(TableName=AuditRecord.Meta.table_name, Key={"entity": {"S": entity}, "seq": {"N": "4"}})
    assert audit.verify(entity) == {"entity": entity, "ok": False, "records": 3, "firstBad": 4,
                                    "reason": "the chain ends at record 3 but its head names record 4"}


def test_reordered_records_are_named(aws: None) -> None:
    entity, dynamodb = tamper()
    table = AuditRecord.Meta.table_name
    items = {int(i["seq"]["N"]): i for i in dynamodb.query(
        TableName=table, KeyConditionExpression="entity = :e", ExpressionAttributeValues={":e": {"S": entity}})["Items"]}
    second, third = dict(items[2]), dict(items[3])
    second["seq"], third["seq"] = {"N": "3"}, {"N": "2"}  # swap the places of records 2 and 3
    dynamodb.put_item(TableName=table, Item=second)
    dynamodb.put_item(TableName=table, Item=third)
    assert audit.verify(entity) == {"entity": entity, "ok": False, "records": 4, "firstBad": 2,
                                    "reason": "record 2 does not follow record 1"}


def test_keys_users_and_logins_are_recorded_by_who_did_them(client: Client, admin: users.User) -> None:
    response = client.http.post("/api/v1/sessions", headers={"Content-Type": "application/json"},
                                body='{"username":"admin","password":"wrong","provider":"Local"}')
    assert response.status_code == 401
    session = client.http.post("/api/v1/sessions", headers={"Content-Type": "application/json"},
                               body=f'{{"username":"admin","password":"{ADMIN_PASSWORD}","provider":"Local"}}')
    auth = {"Authorization": f"Bearer {session.json_body['sessionId']}", "Content-Type": "application/json"}
    from chalicelib import keys, keystore

    key = keys.mint("OSI", 5, None, secret=keystore.license_key_secret())
    added = client.http.post("/api/v1/licenses", headers=auth, body=f'{{"key":"{key}"}}')
    assert added.status_code == 201
    client.http.delete(f"/api/v1/licenses/{added.json_body['license']['id']}", headers=auth)
    assert [a for _, a, _ in actions(licenses.entity_of(key))] == ["user:admin", "user:admin"]
    assert [n for _, _, n in actions(licenses.entity_of(key))] == ["key-added", "key-deleted"]
    assert [n for _, _, n in actions(users.entity_of("admin"))] == ["password-set", "login-failed"]
    assert operator.handle({"action": "verify-audit", "entity": users.entity_of("admin")}, "operator:test") == {
        "ok": True, "action": "verify-audit",
        "result": {"entity": "user#admin", "ok": True, "records": 2, "firstBad": None, "reason": None}}
