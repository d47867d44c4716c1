"""``make bench`` at its smallest size, so no benchmark can rot: every figure there, stdout only the table.

Nothing here depends on timing: the figures' values and their pass flags for speed and
memory are left to the machine; only what is deterministic is checked (DynamoDB request
counts against their floors, the seat invariant under parallel activations).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.e2e.stack import process_exists

PROJECT = Path(__file__).resolve().parents[1]
OPERATIONS = ["login", "authenticated vRLI call", "list keys", "add key", "delete key", "new activation",
              "repeat activation", "download", "deactivation", "provision one order (SQS)", "provision one key (SQS)",
              "shop event: Keyturn OrderPlaced (EventBridge)", "shop event: Shopify orders/paid, one line (EventBridge)"]

Test = Callable[..., None]


def smoke(test: Test) -> Test:
    """A test of the tiny run, which starts the local stack and builds the package."""
    marked: Test = pytest.mark.deploy(pytest.mark.e2e(test))
    return marked


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run([sys.executable, "-m", "benchmarks", "--size", "tiny", "--out", str(out),
                                "--log", str(out / "bench.log")], cwd=PROJECT, capture_output=True, text=True,
                               timeout=600)
    log = (out / "bench.log").read_text(errors="replace") if (out / "bench.log").exists() else ""
    assert completed.returncode in (0, 1), f"{completed.stderr}\n{log[-5000:]}"  # 1: a target missed, not a crash
    return {"returncode": completed.returncode, "stdout": completed.stdout, "stderr": completed.stderr,
            "results": json.loads((out / "results.json").read_text()), "docs": (out / "benchmarks.md").read_text(),
            "log": log}


@smoke
def test_stdout_is_the_table_and_one_verdict_line_and_nothing_else(tiny_run: dict[str, Any]) -> None:
    lines = tiny_run["stdout"].splitlines()
    figures = tiny_run["results"]["figures"]
    assert lines[0].split() == ["figure", "target", "measured", "pass/miss"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 2 + len(figures) + 1
    for line, figure in zip(lines[2:-1], figures, strict=True):
        assert line.startswith(f"{figure['group']}: {figure['name']}")
        assert line.rstrip().endswith(figure["verdict"])
    assert lines[-1] == tiny_run["results"]["verdict"]
    assert lines[-1].startswith("VERDICT: PASS" if tiny_run["returncode"] == 0 else "VERDICT: MISS")
    assert tiny_run["stderr"] == ""
    assert '"message":"request"' in tiny_run["log"]  # the handlers' logs went to the log file instead


@smoke
def test_every_figure_has_a_target_a_unit_and_a_pass_flag(tiny_run: dict[str, Any]) -> None:
    for figure in tiny_run["results"]["figures"]:
        assert figure["target"] and figure["unit"] and figure["measured"]
        assert figure["passed"] in (True, False, None)
        assert figure["verdict"] == {True: "pass", False: "MISS", None: "info"}[figure["passed"]]
        assert (figure["passed"] is None) == (figure["target"] == "reported")


@smoke
def test_every_benchmark_reported(tiny_run: dict[str, Any]) -> None:
    names = [(f["group"], f["name"]) for f in tiny_run["results"]["figures"]]
    assert [n for g, n in names if g == "DynamoDB"] == OPERATIONS
    assert [n for g, n in names if g == "$ per million"] == OPERATIONS
    assert ("$ per month", "the stated mix (docs/benchmarks.md)") in names
    cold = [n for g, n in names if g == "cold start"]
    assert len(cold) == 5 and sum("no bytecode" in n for n in cold) == 2
    assert [n for g, n in names if g == "handler overhead"] == ["download", "repeat activation"]
    assert ("memory", "peak RSS after every route once (deployed runtime)") in names
    assert [n for g, n in names if g == "concurrency"] == ["1 clients, 4 activations on bulkMax 2",
                                                           "2 clients, 4 activations on bulkMax 2"]
    assert "## Memory per route" in tiny_run["docs"] and tiny_run["results"]["verdict"] in tiny_run["docs"]


@smoke
def test_request_counts_meet_their_floors_and_the_seat_invariant_holds(tiny_run: dict[str, Any]) -> None:
    figures = tiny_run["results"]["figures"]
    counted = {f["name"]: f for f in figures if f["group"] == "DynamoDB"}
    assert {name: f["passed"] for name, f in counted.items()} == {name: True for name in OPERATIONS}
    assert counted["new activation"]["measured"].startswith("BatchGetItem x1 + TransactWriteItems x1 (4 items);")
    assert counted["download"]["measured"].startswith("BatchGetItem x1;")
    for level in tiny_run["results"]["details"]["concurrency"]["levels"]:
        assert (level["granted"], level["refused"], level["counter"], level["stored"]) == (2, 2, 2, 2)


@smoke
def test_every_route_answered_below_500_in_the_deployed_runtime(tiny_run: dict[str, Any]) -> None:
    steps = tiny_run["results"]["details"]["memory"]["steps"]
    assert len(steps) == 19 and all(step["status"] < 500 for step in steps)


@smoke
def test_no_process_the_run_started_survives_it(tiny_run: dict[str, Any]) -> None:
    details = tiny_run["results"]["details"]
    started = details["memory"]["started_pids"] + details["concurrency"]["started_pids"]
    assert len(started) >= 4 and not [pid for pid in started if process_exists(pid)]


# --- the capacity arithmetic, against the examples of DynamoDB's own documentation -------

def test_item_sizes_follow_dynamodbs_rules() -> None:
    from benchmarks.operations import item_size

    assert item_size({"name": {"S": "abc"}}) == 7  # name + UTF-8 bytes
    assert item_size({"n": {"N": "123"}}) == 1 + 3  # 1 byte per two significant digits, + 1
    assert item_size({"n": {"N": "-0.00100"}}) == 1 + 2
    assert item_size({"ok": {"BOOL": True}, "no": {"NULL": True}}) == 2 + 1 + 2 + 1
    assert item_size({"m": {"M": {"a": {"S": "xy"}}}}) == 1 + 3 + (1 + 1 + 2)
    assert item_size({"l": {"L": [{"S": "xy"}, {"N": "1"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)
    assert item_size({"b": {"B": "AAEC"}}) == 1 + 3  # base64 of 3 bytes
    assert item_size(None) == 0


def test_capacity_units_follow_dynamodbs_pricing_examples() -> None:
    from benchmarks.operations import read_units, write_units

    # "a strongly consistent read of an 8 KB item would require two RCUs, an eventually consistent
    # read of an 8 KB item would require one RCU, and a transactional read of an 8 KB item would
    # require four RCUs"; "a standard write request of a 3 KB item would require three WCUs, and a
    # transactional write request of a 3 KB item would require six WCUs" (aws.amazon.com/dynamodb/pricing)
    assert (read_units(8192, True), read_units(8192, False), read_units(8192, True, transactional=True)) == (2, 1, 4)
    assert (write_units(3072), write_units(3072, transactional=True)) == (3, 6)
    assert (read_units(0, True), read_units(3500, False), write_units(0), write_units(1025)) == (1, 0.5, 1, 2)


def test_the_recorder_computes_units_from_the_items_each_call_touches(aws: None) -> None:
    import boto3

    from benchmarks.operations import Recorder

    admin = boto3.session.Session().client("dynamodb", region_name="us-east-1")
    admin.create_table(TableName="capacity", BillingMode="PAY_PER_REQUEST",
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                             {"AttributeName": "alt", "AttributeType": "S"}],
                       KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                       GlobalSecondaryIndexes=[{"IndexName": "by-alt", "Projection": {"ProjectionType": "ALL"},
                                                "KeySchema": [{"AttributeName": "alt", "KeyType": "HASH"}]}])
    recorder = Recorder(admin)
    observed = boto3.session.Session().client("dynamodb", region_name="us-east-1")
    observed.meta.events.register("before-call.dynamodb.*", recorder)
    key = {"pk": {"S": "a"}}
    two_kb = {**key, "alt": {"S": "x"}, "data": {"S": "d" * (2048 - 2 - 1 - 3 - 1 - 4)}}  # names + values: 2048 B

    observed.put_item(TableName="capacity", Item=two_kb)
    observed.get_item(TableName="capacity", Key=key, ConsistentRead=True)
    observed.get_item(TableName="capacity", Key=key)
    observed.update_item(TableName="capacity", Key=key, UpdateExpression="SET more = :m",
                         ExpressionAttributeValues={":m": {"S": "m" * 3000}})
    observed.transact_write_items(TransactItems=[{"Put": {"TableName": "capacity", "Item": {
        "pk": {"S": "b"}, "data": {"S": "d" * 1500}}}}])  # no "alt": not in the index
    observed.delete_item(TableName="capacity", Key=key)
    calls = recorder.take()
    assert [(c.operation, c.rru, c.wru) for c in calls] == [
        ("PutItem", 0.0, 2 + 2),  # 2 KB, and the index that holds it
        ("GetItem", 1.0, 0.0), ("GetItem", 0.5, 0.0),
        ("UpdateItem", 0.0, 5 + 5),  # the larger image, 2048 + 3004 bytes
        ("TransactWriteItems", 0.0, 2 * 2),  # 1.5 KB, doubled in a transaction
        ("DeleteItem", 0.0, 5 + 5),
    ]
