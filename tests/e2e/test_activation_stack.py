"""Seats under real concurrency, and license files checked offline, on the real local stack."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
import requests

from tests.e2e.stack import LocalStack, cli
from tests.samples import HOSTNAME_TEMPLATE, SEED_ORDER, order, segment

pytestmark = pytest.mark.e2e

ORDER = order(SEED_ORDER, hostid=HOSTNAME_TEMPLATE)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(tmp_path_factory.mktemp("activation") / "state").start()
    yield running
    running.stop()


def create_order(stack: LocalStack, **changes: Any) -> str:
    order_file = stack.state_dir.parent / "order.json"
    order_file.write_text(json.dumps({**ORDER, **changes}))
    result = cli(stack.state_dir, "create-order", str(order_file))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def dynamodb(stack: LocalStack) -> Any:
    return boto3.client("dynamodb", endpoint_url=stack.recorded["dynamodb_endpoint"], region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local")


def store_other_activations(stack: LocalStack, count: int) -> None:
    """Fill the activations table with other orders' licenses, as a busy service would have."""
    client = dynamodb(stack)
    items = [{"PutRequest": {"Item": {
        "activation_key": {"S": f"OTHER-{n // 50:05d}"}, "hostids_key": {"S": f"HOSTNAME=H{n}"},
        "hostids": {"L": [{"M": {"nameRaw": {"S": "HOSTNAME"}, "value": {"S": f"h{n}"}}}]},
        "activation_time": {"N": "0"}, "content": {"S": "x" * 400}, "filename": {"S": "f.lic"},
        "kid": {"S": "k"}, "state": {"S": "success"}}}} for n in range(count)]
    for start in range(0, count, 25):
        client.batch_write_item(RequestItems={"keyturn-local-activations": items[start:start + 25]})


def put(stack: LocalStack, key: str, host: str) -> requests.Response:
    return requests.put(f"{stack.url}/rest/v1/licenses/{key}/{segment('HOSTNAME=' + host)}", timeout=120)


def test_forty_racing_activations_on_ten_seats_give_exactly_ten_licenses(stack: LocalStack) -> None:
    store_other_activations(stack, 3000)
    key = create_order(stack, bulkMax=10)
    hosts = [f"host-{n}" for n in range(40)]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        responses = dict(zip(hosts, pool.map(lambda host: put(stack, key, host), hosts), strict=True))
    granted = [host for host, response in responses.items() if response.status_code == 202]
    refused = [host for host, response in responses.items() if response.status_code == 403]
    assert (len(granted), len(refused)) == (10, 30)
    assert all(responses[host].json() == {"message": "Bulk license count has been exceeded."} for host in refused)

    order = requests.get(f"{stack.url}/rest/v1/license-orders/{key}", timeout=30).json()
    assert (order["activatedLicenses"], order["bulkMax"]) == (10, 10)
    stored = dynamodb(stack).query(TableName="keyturn-local-activations", ConsistentRead=True,
                                   KeyConditionExpression="activation_key = :k",
                                   ExpressionAttributeValues={":k": {"S": key}})["Items"]
    assert sorted(item["hostids_key"]["S"] for item in stored) == sorted(f"HOSTNAME={h.upper()}" for h in granted)
    for host in refused:
        missing = requests.get(f"{stack.url}/rest/v1/licenses/{key}/{segment('HOSTNAME=' + host)}", timeout=30)
        assert missing.status_code == 404


def test_twenty_racing_repeats_of_one_host_take_one_seat(stack: LocalStack) -> None:
    key = create_order(stack, bulkMax=5)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: put(stack, key, "same-host").status_code, range(20)))
    assert statuses == [202] * 20
    order = requests.get(f"{stack.url}/rest/v1/license-orders/{key}", timeout=30).json()
    assert order["activatedLicenses"] == 1


def test_a_downloaded_license_verifies_offline_and_fails_when_edited(stack: LocalStack, tmp_path: Path) -> None:
    key = create_order(stack)
    assert put(stack, key, "build-01").status_code == 202
    body = requests.get(f"{stack.url}/rest/v1/licenses/{key}/{segment('HOSTNAME=build-01')}", timeout=30).json()
    public_keys = requests.get(f"{stack.url}/rest/v1/signing-keys", timeout=30).json()["keys"]
    license_file = tmp_path / body["filename"]
    license_file.write_text(body["content"])
    flags = [arg for k in public_keys for arg in ("--public-key", k["publicKey"])]

    valid = cli(stack.state_dir, "verify-license", str(license_file), *flags, "--hostids", "HOSTNAME=build-01")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout.startswith("valid")

    other_host = cli(stack.state_dir, "verify-license", str(license_file), *flags, "--hostids", "HOSTNAME=build-02")
    assert other_host.returncode == 1 and "HOSTNAME=BUILD-02" in other_host.stdout.upper()

    license_file.write_text(body["content"].replace("VERSION=1.0", "VERSION=9.0"))
    edited = cli(stack.state_dir, "verify-license", str(license_file), *flags)
    assert edited.returncode == 1 and edited.stdout.startswith("invalid")


def test_operators_manage_orders_from_the_cli(stack: LocalStack) -> None:
    key = create_order(stack, bulkMax=3)
    shown = cli(stack.state_dir, "show-order", key)
    assert shown.returncode == 0 and json.loads(shown.stdout)["customer"] == {"name": "customer1ó?"}
    assert cli(stack.state_dir, "disable-order", key).returncode == 0
    assert put(stack, key, "h1").status_code == 403
    assert cli(stack.state_dir, "enable-order", key).returncode == 0
    assert put(stack, key, "h1").status_code == 202
    assert requests.delete(f"{stack.url}/rest/v1/licenses/{key}/{segment('HOSTNAME=h1')}", timeout=30).status_code == 403
    allowed = cli(stack.state_dir, "allow-deactivations", key, "1")
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["deactivationsAllowed"] == 1
    assert requests.delete(f"{stack.url}/rest/v1/licenses/{key}/{segment('HOSTNAME=h1')}", timeout=30).status_code == 204
    assert put(stack, key, "h2").status_code == 202
    revoked = cli(stack.state_dir, "revoke-activation", key, "HOSTNAME=h2")
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["activatedLicenses"] == 0
    head = requests.head(f"{stack.url}/rest/v1/license-orders/{key}", timeout=30)
    assert (head.status_code, head.content) == (200, b"")
    unknown = cli(stack.state_dir, "show-order", "AAAAA-AAAAA-AAAAA-AAAAA")
    assert unknown.returncode == 1 and "Invalid activation key specified." in unknown.stderr


def test_an_invalid_order_is_refused_with_every_problem_named(stack: LocalStack) -> None:
    order_file = stack.state_dir.parent / "bad-order.json"
    order_file.write_text(json.dumps({**ORDER, "bulkMax": 0, "licenseType": "floating"}))
    result = cli(stack.state_dir, "create-order", str(order_file))
    assert result.returncode == 1
    assert "bulkMax" in result.stderr and "licenseType" in result.stderr


def test_an_unreadable_order_file_is_a_message_not_a_traceback(stack: LocalStack) -> None:
    result = cli(stack.state_dir, "create-order", str(stack.state_dir / "no-such-order.json"))
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_stdin_orders_work_too(stack: LocalStack) -> None:
    result = cli(stack.state_dir, "create-order", "-", stdin=json.dumps(ORDER))
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert len(key) == 23 and key.count("-") == 3
