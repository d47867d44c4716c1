"""``make bench``: each figure is a ratio to a baseline measured in the same run.

1. DynamoDB requests per operation (counted with botocore events), against DESIGN.md.
2. Cold start: ``import app`` vs a bare Chalice + boto3 app (target <= 1.3x).
3. Handler overhead: a download through the whole app vs a bare handler making the
   same DynamoDB call against the same (in-process moto) DynamoDB (target <= 1.5x).
4. Peak RSS of a process that imports the handler and every service, against the configured memory.
5. Cold start of the deployed package in the Lambda-like runtime (``benchmarks.coldstart``).

Timing figures vary with the machine; ratios are what to compare.  Nothing here is
asserted by the tests.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

PROJECT = Path(__file__).resolve().parents[1]
STATE = Path(tempfile.mkdtemp(prefix="keyturn-bench-"))
for name in [n for n in os.environ if n.startswith(("AWS_", "KEYTURN_"))]:
    del os.environ[name]
os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
sys.path.insert(0, str(PROJECT))
BENCH_ENV = {"KEYTURN_STAGE": "test", "KEYTURN_TABLE_PREFIX": "keyturn-bench-", "KEYTURN_SECRETS_SOURCE": "file",
             "KEYTURN_LOCAL_DIR": str(STATE)}

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}


def median_seconds(command: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=PROJECT, check=True, env=dict(os.environ))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def cold_start(runs: int = 7) -> None:
    bare = "import boto3, chalice; app = chalice.Chalice(app_name='bare'); boto3.client('dynamodb')"
    ours = "import app"
    base = median_seconds([sys.executable, "-c", bare], runs)
    keyturn = median_seconds([sys.executable, "-c", ours], runs)
    print(f"cold start: import app {keyturn * 1000:.0f} ms, bare Chalice+boto3 app {base * 1000:.0f} ms "
          f"-> {keyturn / base:.2f}x (target <= 1.3x; median of {runs}, includes interpreter start)")


class RequestCounter:
    """Counts DynamoDB operations made by any botocore client while it is installed."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        if model.service_model.service_name == "dynamodb":
            self.calls[model.name] += 1

    def summary(self) -> tuple[int, int, str]:
        reads = sum(n for op, n in self.calls.items() if op in READS)
        writes = sum(n for op, n in self.calls.items() if op in WRITES)
        return reads, writes, ", ".join(f"{op} x{n}" for op, n in sorted(self.calls.items()))


def counted(counter: RequestCounter, action: Callable[[], Any]) -> tuple[int, int, str]:
    counter.calls.clear()
    action()
    return counter.summary()


def main() -> int:
    from moto import mock_aws

    with mock_aws():
        import boto3
        from chalice.test import Client

        from chalicelib import aws, config, keys, keystore, models, orders, users

        counter = RequestCounter()
        config.bind(config.from_environment(BENCH_ENV))
        aws.observe(counter)  # every call of every client of the process's one botocore session
        keystore.ensure_local_secrets(STATE)
        models.create_tables()
        users.set_password("admin", "bench-password")
        from app import app

        order = orders.create_order({
            "customer": {"name": "bench"}, "product": {"name": "p", "version": "1"}, "bulkMax": 100000,
            "hostid": {"types": [{"nameRaw": "HOSTNAME", "min": 1, "max": 1}], "min": 1},
            "features": [{"name": "f1", "version": "1.0"}]})
        key = order.activation_key
        json_headers = {"Content-Type": "application/json"}
        with Client(app, stage_name="test") as client:
            session = client.http.post("/api/v1/sessions", headers=json_headers,
                                       body=b'{"username":"admin","password":"bench-password","provider":"Local"}')
            auth = {"Authorization": f"Bearer {session.json_body['sessionId']}", **json_headers}
            client.http.get("/api/v1/licenses", headers=auth)  # warm PynamoDB's per-model clients
            license_key = keys.mint("OSI", 5, None, secret=keystore.license_key_secret())
            rows = [
                ("authenticated vRLI call (GET /api/v1/sessions/current)", "1 read, 0 writes",
                 lambda: client.http.get("/api/v1/sessions/current", headers=auth)),
                ("list keys (GET /api/v1/licenses)", "session read + 1 scan, 0 writes",
                 lambda: client.http.get("/api/v1/licenses", headers=auth)),
                ("add key (POST /api/v1/licenses)", "session read + 1 conditional write",
                 lambda: client.http.post("/api/v1/licenses", headers=auth, body=f'{{"key":"{license_key}"}}')),
                ("new activation (PUT)", "1 read + 1 transaction",
                 lambda: client.http.put(f"/rest/v1/licenses/{key}/SE9TVE5BTUU9Ym94LTE=")),
                ("repeat activation (PUT)", "<= 2 reads, 0 writes",
                 lambda: client.http.put(f"/rest/v1/licenses/{key}/SE9TVE5BTUU9Ym94LTE=")),
                ("download (GET)", "<= 2 reads, 0 writes",
                 lambda: client.http.get(f"/rest/v1/licenses/{key}/SE9TVE5BTUU9Ym94LTE=")),
            ]
            print("DynamoDB requests per operation:")
            for name, target, action in rows:
                reads, writes, detail = counted(counter, action)
                print(f"  {name:52} reads={reads} writes={writes}  ({detail}; target {target})")

            # Handler overhead: the app's download vs a bare handler doing the same BatchGetItem.
            dynamodb = boto3.client("dynamodb")
            segment = "SE9TVE5BTUU9Ym94LTE="
            activation_key = key

            def bare_handler() -> dict[str, Any]:
                orders_table, activations_table = models.Order.Meta.table_name, models.Activation.Meta.table_name
                response = dynamodb.batch_get_item(RequestItems={
                    orders_table: {"Keys": [{"activation_key": {"S": activation_key}}], "ConsistentRead": True},
                    activations_table: {"Keys": [{"activation_key": {"S": activation_key},
                                                  "hostids_key": {"S": "HOSTNAME=BOX-1"}}], "ConsistentRead": True},
                })
                return {"statusCode": 200, "body": str(response["Responses"][activations_table][0]["content"]["S"])}

            def ours() -> Any:
                return client.http.get(f"/rest/v1/licenses/{key}/{segment}")

            rounds = 300
            for fn in (bare_handler, ours):
                for _ in range(20):
                    fn()
            timings = {}
            for label, fn in (("bare", bare_handler), ("keyturn", ours)):
                samples = []
                for _ in range(5):
                    start = time.perf_counter()
                    for _ in range(rounds):
                        fn()
                    samples.append((time.perf_counter() - start) / rounds)
                timings[label] = statistics.median(samples)
            print(f"handler overhead (download): keyturn {timings['keyturn'] * 1e3:.2f} ms, bare boto3 handler "
                  f"{timings['bare'] * 1e3:.2f} ms -> {timings['keyturn'] / timings['bare']:.2f}x (target <= 1.5x; "
                  "same in-process moto DynamoDB, which dominates both)")

    probe = ("import app; from chalicelib import activations, licenses, sessions, orderspec, licensefile; "
             "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    bare = ("import boto3, chalice; boto3.client('dynamodb'); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    peak = {}
    for label, code in (("keyturn", probe), ("bare", bare)):
        out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True, capture_output=True, text=True,
                             env={**os.environ, **BENCH_ENV}).stdout
        peak[label] = int(out) / 1024
    from tooling import template

    memory = template.deployment("dev").memory_mb
    print(f"peak RSS (VmHWM) after importing the handler and every service: {peak['keyturn']:.0f} MB, "
          f"bare Chalice+boto3 {peak['bare']:.0f} MB -> {peak['keyturn'] / memory:.2f} of the {memory} MB configured "
          "(after every route, in the deployed runtime: `pytest -s tests/deploy`)")
    cold_start()
    from benchmarks import coldstart

    return coldstart.main(["--runs", "7"])


if __name__ == "__main__":
    sys.exit(main())
