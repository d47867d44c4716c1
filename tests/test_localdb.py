"""The embedded DynamoDB's journal: replayed, compacted, and safe against torn writes."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from tooling import localdb, localrun


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
    """The requests in the journal (format 2: checksum, space, JSON), without its header."""
    lines = (state / localdb.JOURNAL).read_text().splitlines()
    return [json.loads(line.split(" ", 1)[1])["t"] for line in lines[1:]]


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


# --- the journal is written before a change is applied, and damage is never compacted over ----

def failing_journal(state: Path, failures: list[int]) -> localdb.Journal:
    """A journal whose writes fail with the errnos in ``failures`` (popped one per write) while it has any."""
    def write(fd: int, data: bytes) -> int:
        if failures:
            code = failures.pop(0)
            raise OSError(code, os.strerror(code))
        return os.write(fd, data)

    return localdb.Journal(state / localdb.JOURNAL, write=write)


def test_a_change_the_journal_cannot_keep_is_refused_and_not_applied(tmp_path: Path) -> None:
    failures: list[int] = []
    store = localdb.Store(tmp_path, journal=failing_journal(tmp_path, failures))
    create_and_fill(store.app, 2)
    failures.append(errno.ENOSPC)
    status, answer = request(store.app, "PutItem", {"TableName": "t", "Item": {"k": {"S": "new"}},
                                                    "ConditionExpression": "attribute_not_exists(k)"})
    assert (status, answer) == (500, {
        "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
        "message": "The local DynamoDB could not journal the change (No space left on device); nothing was changed."})
    assert request(store.app, "GetItem", {"TableName": "t", "Key": {"k": {"S": "new"}}})[1] == {}
    failures.append(errno.EIO)
    status, _ = request(store.app, "TransactWriteItems", {"TransactItems": [
        {"Put": {"TableName": "t", "Item": {"k": {"S": "tx"}}}},
        {"Update": {"TableName": "t", "Key": {"k": {"S": "0"}}, "UpdateExpression": "ADD v :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}}]})
    assert status == 500
    assert request(store.app, "GetItem", {"TableName": "t", "Key": {"k": {"S": "0"}}})[1]["Item"]["v"] == {"N": "1"}
    # the disk has room again: the retry is not mistaken for a lost race
    assert request(store.app, "PutItem", {"TableName": "t", "Item": {"k": {"S": "new"}},
                                          "ConditionExpression": "attribute_not_exists(k)"})[0] == 200
    store.journal.close()  # killed
    restarted = localdb.Store(tmp_path)
    assert sorted(i["k"]["S"] for i in request(restarted.app, "Scan", {"TableName": "t"})[1]["Items"]) == [
        "0", "1", "new"]


def test_a_failed_write_that_cannot_be_cut_off_refuses_every_later_write_until_the_stop_repairs_it(
        tmp_path: Path) -> None:
    failing: list[str] = []  # "half": the next write stores half its record, the ones after it fail

    def truncate(fd: int, size: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    def write(fd: int, data: bytes) -> int:
        if failing == ["half"]:
            failing[0] = "failed"
            return os.write(fd, data[:len(data) // 2])
        if failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return os.write(fd, data)

    store = localdb.Store(tmp_path, journal=localdb.Journal(tmp_path / localdb.JOURNAL, write=write,
                                                             fsync=lambda fd: None, truncate=truncate))
    create_and_fill(store.app, 2)
    failing.append("half")
    status, answer = request(store.app, "PutItem", {"TableName": "t", "Item": {"k": {"S": "lost"}}})
    failing.clear()  # the device works again, but the journal ends in half a record
    assert status == 500 and "could not cut off a failed write (Input/output error)" in answer["message"]
    assert store.journal.unusable
    status, answer = request(store.app, "PutItem", {"TableName": "t", "Item": {"k": {"S": "later"}}})
    assert (status, answer["message"]) == (500, "The local DynamoDB could not journal the change (an earlier "
                                                "write could not be cut off); nothing was changed.")
    assert request(store.app, "Scan", {"TableName": "t"})[1]["Count"] == 2
    store.close()  # the snapshot comes from memory: exactly what was acknowledged
    restarted = localdb.Store(tmp_path)
    assert sorted(i["k"]["S"] for i in request(restarted.app, "Scan", {"TableName": "t"})[1]["Items"]) == ["0", "1"]
    assert restarted.notes == []


def test_the_last_record_of_a_refused_request_is_dropped_at_replay(tmp_path: Path) -> None:
    """Written ahead, then moto refused the request and the process died before cutting it off."""
    store = localdb.Store(tmp_path)
    create_and_fill(store.app, 1)
    store.journal.begin("us-east-1", "PutItem", json.dumps({
        "TableName": "t", "Item": {"k": {"S": "0"}}, "ConditionExpression": "attribute_not_exists(k)"}))
    store.journal.close()
    restarted = localdb.Store(tmp_path)
    assert request(restarted.app, "Scan", {"TableName": "t"})[1]["Count"] == 1
    assert restarted.notes == []


def damaged_store(tmp_path: Path, items: int = 200) -> bytes:
    """A compacted journal of two tables with 20 further writes; returns its bytes."""
    store = localdb.Store(tmp_path)
    create_and_fill(store.app, items, table="orders")
    create_and_fill(store.app, 3, table="users")
    store.close()
    store = localdb.Store(tmp_path)
    for n in range(20):
        request(store.app, "PutItem", {"TableName": "users", "Item": {"k": {"S": f"late-{n}"}}})
    store.journal.close()
    return (tmp_path / localdb.JOURNAL).read_bytes()


def test_a_journal_cut_to_half_its_size_is_reported_and_never_compacted_over(tmp_path: Path) -> None:
    whole = damaged_store(tmp_path)
    (tmp_path / localdb.JOURNAL).write_bytes(whole[:len(whole) // 2])
    with pytest.raises(localdb.JournalDamaged) as refused:
        localdb.Store(tmp_path)
    message = str(refused.value)
    assert "the snapshot ends after" in message and "(tables: orders, users)" in message
    assert f"set {localdb.RECOVER_VARIABLE}=1" in message
    assert (tmp_path / localdb.JOURNAL).read_bytes() == whole[:len(whole) // 2]  # untouched

    recovered = localdb.Store(tmp_path, recover=True)
    (aside,) = tmp_path.glob(f"{localdb.JOURNAL}.damaged-*")
    assert aside.read_bytes() == whole[:len(whole) // 2]
    assert "started from the intact prefix" in recovered.notes[0]
    assert 0 < request(recovered.app, "Scan", {"TableName": "orders"})[1]["Count"] < 200
    recovered.close()
    localdb.Store(tmp_path).close()  # the recovered journal is whole


def test_a_tail_cut_at_a_record_boundary_is_told_from_a_torn_write(tmp_path: Path) -> None:
    whole = damaged_store(tmp_path)
    lines = whole.split(b"\n")
    (tmp_path / localdb.JOURNAL).write_bytes(b"\n".join(lines[:-6]) + b"\n")  # 5 acknowledged writes gone
    with pytest.raises(localdb.JournalDamaged, match="but write .* was acknowledged; 5 record"):
        localdb.Store(tmp_path)
    (tmp_path / localdb.JOURNAL).write_bytes(b"\n".join(lines[:-2]) + b"\n" + lines[-2][:30])  # the last, cut
    with pytest.raises(localdb.JournalDamaged, match="was acknowledged but is cut short"):
        localdb.Store(tmp_path)


def test_a_corrupt_record_in_the_middle_names_its_line_and_what_is_lost(tmp_path: Path) -> None:
    whole = damaged_store(tmp_path, items=10)
    lines = whole.split(b"\n")
    corrupt = len(lines) - 5  # a write after the snapshot: 5 writes from there on are lost, all to users
    middle = len(lines[corrupt - 1]) // 2
    lines[corrupt - 1] = lines[corrupt - 1][:middle] + b"#" + lines[corrupt - 1][middle + 1:]  # one byte flipped
    (tmp_path / localdb.JOURNAL).write_bytes(b"\n".join(lines))
    with pytest.raises(localdb.JournalDamaged) as refused:
        localdb.Store(tmp_path)
    assert f"line {corrupt} fails its checksum" in str(refused.value)
    assert "5 record(s) after the intact prefix of 19 are lost (tables: users)" in str(refused.value)


def test_a_missing_record_in_the_middle_is_damage(tmp_path: Path) -> None:
    lines = damaged_store(tmp_path, items=10).split(b"\n")
    del lines[-10]
    (tmp_path / localdb.JOURNAL).write_bytes(b"\n".join(lines))
    with pytest.raises(localdb.JournalDamaged, match="is out of sequence"):
        localdb.Store(tmp_path)


def test_a_journal_of_the_first_format_is_kept_aside_and_rewritten(tmp_path: Path) -> None:
    put = {"TableName": "t", "Item": {"k": {"S": "a"}}}
    create = {"TableName": "t", "BillingMode": "PAY_PER_REQUEST", "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
              "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}]}
    old = "".join(json.dumps({"r": "us-east-1", "t": t, "b": json.dumps(b)}) + "\n"
                  for t, b in (("CreateTable", create), ("PutItem", put)))
    (tmp_path / localdb.JOURNAL).write_text(old)
    store = localdb.Store(tmp_path)
    assert (tmp_path / f"{localdb.JOURNAL}.format1").read_text() == old
    assert journal_targets(tmp_path) == ["CreateTable", "BatchWriteItem"]
    assert "was in the old format" in store.notes[0]
    (tmp_path / localdb.JOURNAL).write_text(old.replace('"PutItem"', '"PutItem'))
    with pytest.raises(localdb.JournalDamaged, match="line 2 is not a journal record"):
        localdb.Store(tmp_path)


def test_the_state_folder_is_owner_only_and_an_existing_one_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "secrets").mkdir(parents=True)
    os.chmod(state, 0o755)
    (state / "admin-password").write_text("x")
    os.chmod(state / "admin-password", 0o644)
    (state / "secrets" / "key").write_text("x")
    os.chmod(state / "secrets" / "key", 0o644)
    localdb.secure_state_dir(state)
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in [state, *state.rglob("*")]}
    assert modes == {"state": 0o700, "state/secrets": 0o700, "state/admin-password": 0o600,
                     "state/secrets/key": 0o600}


def test_a_port_whose_connections_are_in_time_wait_is_free_and_a_listened_one_is_not() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as chalice local's server (http.server) sets
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    assert localrun._port_is_free(port) is False  # listening
    accepted.close()  # the side that closes first keeps the connection in TIME_WAIT
    client.close()
    listener.close()
    assert localrun._port_is_free(port) is True
