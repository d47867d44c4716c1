"""Parallel activations of one order on the real local stack (``make run``'s), at several client counts.

For each count of clients, a fresh order with ``bulkMax`` seats takes more activation
requests than it has seats (each for another host), sent by that many threads at once
over HTTP.  Throughput is requests over the wall time of the whole burst; latency
percentiles are per request, as the client saw it.  The invariant: exactly
``bulkMax`` answers 202, the rest 403, the order's counter equals ``bulkMax`` and the
table holds exactly that many activations.

The local stack serves moto single-threaded (docs/design.md: moto's transactions are not
safe under threads), so these figures are the local stack's, not DynamoDB's: they
show the invariant holding under contention, not what AWS would sustain.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.e2e.stack import LocalStack, cli

ORDER = {"customer": {"name": "bench"}, "product": {"name": "p", "version": "1", "template": "Default"},
         "licenseType": "local", "hostid": {"types": [{"nameRaw": "HOSTNAME", "min": 1, "max": 1}], "min": 1},
         "features": [{"name": "f1", "version": "1.0"}], "expirationDate": None, "maintenanceEndDate": None,
         "deactivationsAllowed": 1}


def _segment(host: str) -> str:
    return base64.b64encode(f"HOSTNAME={host}".encode()).decode()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def burst(stack: LocalStack, clients: int, requests_count: int, seats: int) -> dict[str, Any]:
    order_file = stack.state_dir.parent / f"order-{clients}.json"
    order_file.write_text(json.dumps({**ORDER, "bulkMax": seats}))
    created = cli(stack.state_dir, "create-order", str(order_file))
    if created.returncode != 0:
        raise RuntimeError(created.stderr)
    key = created.stdout.strip().splitlines()[-1]
    hosts = [f"c{clients}-h{n}" for n in range(requests_count)]
    session = threading_local_sessions()

    def activate(host: str) -> tuple[int, float]:
        start = time.perf_counter()
        response = session().put(f"{stack.url}/rest/v1/licenses/{key}/{_segment(host)}", timeout=120)
        return response.status_code, time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        answers = list(pool.map(activate, hosts))
        wall = time.perf_counter() - start
    statuses = [status for status, _ in answers]
    latencies = [seconds * 1000 for _, seconds in answers]
    order = requests.get(f"{stack.url}/rest/v1/license-orders/{key}", timeout=30).json()
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.recorded["dynamodb_endpoint"], region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")
    stored = dynamodb.query(TableName="keyturn-local-activations", ConsistentRead=True, Select="COUNT",
                            KeyConditionExpression="activation_key = :k",
                            ExpressionAttributeValues={":k": {"S": key}})["Count"]
    granted, refused = statuses.count(202), statuses.count(403)
    return {"clients": clients, "requests": requests_count, "bulk_max": seats, "granted": granted,
            "refused": refused, "other": len(statuses) - granted - refused,
            "counter": order.get("activatedLicenses"), "stored": stored,
            "invariant": granted == seats and refused == requests_count - seats and order.get(
                "activatedLicenses") == seats and stored == seats,
            "requests_per_second": requests_count / wall, "p50_ms": statistics.median(latencies),
            "p99_ms": percentile(latencies, 0.99)}


def threading_local_sessions() -> Any:
    """One keep-alive HTTP session per client thread."""
    import threading

    local = threading.local()

    def get() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    return get


def run(levels: tuple[int, ...], requests_count: int, seats: int) -> dict[str, Any]:
    """Each level: ``requests_count`` activations (at least one more than clients) on ``seats`` seats (fewer)."""
    with tempfile.TemporaryDirectory(prefix="keyturn-bench-stack-") as work:
        stack = LocalStack(Path(work) / "state").start()
        try:
            levels_found = []
            for clients in levels:
                count = max(requests_count, clients + 1)
                levels_found.append(burst(stack, clients, count, min(seats, count - 1)))
        finally:
            stack.stop()
        return {"levels": levels_found, "started_pids": stack.pids()}
