"""The embedded local DynamoDB of ``make run``: moto, single-threaded, with a journal.

Why single-threaded: moto's threaded server applies ``TransactWriteItems`` item by item
on a copy of the whole table and restores the copy on failure, so concurrent
transactions overwrite each other (DESIGN.md measured 17-19 licenses stored for 10 seats under 40 racing activations).
Serving one request at a time makes every request atomic, as in real DynamoDB.

Why a journal: moto keeps state in memory.  Every successful request that can change
state is appended to ``<state dir>/dynamodb.journal`` (one JSON line, flushed before the
response is sent) and replayed at the next start, then the journal is compacted into
one ``CreateTable`` per table plus its items, so start-up stays proportional to the
data, not to its history (it is compacted again at a clean stop and every 20,000
writes).  A killed server loses nothing it has answered.

Run as ``python -m tooling.localdb --state-dir DIR``; it binds 127.0.0.1 on a free
port and writes ``{"port", "pid"}`` to ``DIR/dynamodb.json`` once it serves.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tooling.procs import die_with_parent

JOURNAL = "dynamodb.journal"
READY_FILE = "dynamodb.json"
_PREFIX = "DynamoDB_20120810."
# Requests that never change state; everything else that succeeds is journaled.
_READ_ONLY = {
    "GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable", "ListTables",
    "DescribeTimeToLive", "DescribeContinuousBackups", "ListTagsOfResource", "DescribeEndpoints",
    "DescribeLimits", "ListBackups", "ListGlobalTables",
}

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
COMPACT_EVERY = 20_000  # appends between compactions while serving
REQUEST_TIMEOUT = 10  # seconds a client may take to send its request (one stalled client blocks all)


def _region(authorization: str) -> str:
    """The region of a SigV4 ``Authorization`` header (``Credential=key/date/region/service/...``)."""
    try:
        return authorization.split(",")[0].split("Credential=")[1].split("/")[2]
    except IndexError:
        return "us-east-1"


def _auth_header(region: str) -> str:
    # One fixed credential scope: moto keys its state by account and region only, and the
    # journal must not depend on the day or the access key a request was signed with.
    return f"AWS4-HMAC-SHA256 Credential=local/19700101/{region}/dynamodb/aws4_request, " \
           "SignedHeaders=host;x-amz-target, Signature=0"


class Journal:
    """Append-only log of state-changing DynamoDB requests, replayable into a moto app."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.appended = 0
        self._handle: io.TextIOWrapper | None = None

    def entries(self) -> Iterator[tuple[str, str, str]]:
        """(region, target, body) of every complete line; a torn last line was never acknowledged."""
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.endswith("\n"):
                    entry = json.loads(line)
                    region = entry["r"] if "r" in entry else _region(entry["s"])  # "s": journals before 2026-11-26
                    yield region, entry["t"], entry["b"]

    def append(self, region: str, target: str, body: str) -> None:
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps({"r": region, "t": target, "b": body}, separators=(",", ":")) + "\n")
        self._handle.flush()
        self.appended += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _Caller:
    """Sends DynamoDB JSON requests straight into a WSGI app (no socket)."""

    def __init__(self, app: WsgiApp) -> None:
        from werkzeug.test import Client

        self._client = Client(app)

    def __call__(self, region: str, target: str, body: dict[str, Any] | str) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, str) else json.dumps(body)
        response = self._client.post("/", data=data, headers={
            "Authorization": _auth_header(region), "X-Amz-Target": _PREFIX + target,
            "Content-Type": "application/x-amz-json-1.0", "Host": "127.0.0.1",
        })
        return response.status_code, json.loads(response.get_data(as_text=True) or "{}")


def replay(app: WsgiApp, journal: Journal) -> set[str]:
    """Apply every journaled request in order; returns the regions seen."""
    call = _Caller(app)
    regions = set()
    for region, target, body in journal.entries():
        status, answer = call(region, target, body)
        if status != 200:
            if target == "CreateTable" and "ResourceInUseException" in answer.get("__type", ""):
                continue  # the same table twice: journals compacted per credential scope did that
            raise RuntimeError(f"journal replay failed at {target}: {answer}")
        regions.add(region)
    return regions


def _create_table_request(table: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TableName": table["TableName"], "KeySchema": table["KeySchema"],
        "AttributeDefinitions": table["AttributeDefinitions"], "BillingMode": "PAY_PER_REQUEST",
    }
    for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if table.get(kind):
            request[kind] = [{"IndexName": i["IndexName"], "KeySchema": i["KeySchema"],
                              "Projection": i["Projection"]} for i in table[kind]]
    return request


def snapshot(app: WsgiApp, regions: Iterable[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The requests that rebuild the current state: tables, TTL settings, items."""
    call = _Caller(app)
    for region in sorted(regions):
        _, listing = call(region, "ListTables", {})
        for name in listing.get("TableNames", []):
            _, described = call(region, "DescribeTable", {"TableName": name})
            yield region, "CreateTable", _create_table_request(described["Table"])
            _, ttl = call(region, "DescribeTimeToLive", {"TableName": name})
            ttl_desc = ttl.get("TimeToLiveDescription", {})
            if ttl_desc.get("TimeToLiveStatus") == "ENABLED":
                yield region, "UpdateTimeToLive", {"TableName": name, "TimeToLiveSpecification": {
                    "Enabled": True, "AttributeName": ttl_desc["AttributeName"]}}
            request: dict[str, Any] = {"TableName": name}
            while True:
                _, page = call(region, "Scan", request)
                items = page.get("Items", [])
                for start in range(0, len(items), 25):
                    chunk = items[start:start + 25]
                    yield region, "BatchWriteItem", {"RequestItems": {name: [{"PutRequest": {"Item": i}} for i in chunk]}}
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def compact(app: WsgiApp, journal: Journal, regions: Iterable[str]) -> None:
    """Rewrite the journal as a snapshot of the current state (atomically: a kill keeps the old one)."""
    journal.close()
    temporary = journal.path.with_suffix(".compacting")
    with temporary.open("w", encoding="utf-8") as handle:
        for region, target, body in snapshot(app, regions):
            handle.write(json.dumps({"r": region, "t": target, "b": json.dumps(body)}, separators=(",", ":")) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, journal.path)
    journal.appended = 0


def journaling(app: WsgiApp, journal: Journal, regions: set[str], compact_every: int = COMPACT_EVERY) -> WsgiApp:
    """Wrap the moto app so every successful state-changing request is journaled first,
    and the journal is compacted every ``compact_every`` appends."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(_PREFIX) or target[len(_PREFIX):] in _READ_ONLY:
            return app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        status: list[str] = []

        def capture(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(code)  # the server sends nothing before the body is returned
            return start_response(code, headers, exc_info)

        answer = b"".join(app(environ, capture))
        if status and status[0].startswith("200"):
            region = _region(environ.get("HTTP_AUTHORIZATION", ""))
            regions.add(region)
            journal.append(region, target[len(_PREFIX):], body.decode("utf-8"))
            if journal.appended >= compact_every:
                compact(app, journal, regions)
        return [answer]

    return wrapped


class Store:
    """moto's DynamoDB with its journal: loaded from disk, serving, compacted on close."""

    def __init__(self, state_dir: Path, compact_every: int = COMPACT_EVERY) -> None:
        from moto.dynamodb.models import dynamodb_backends
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        dynamodb_backends.reset()  # moto's state is per process: start from empty, then replay
        self._moto: WsgiApp = DomainDispatcherApplication(create_backend_app)
        self.journal = Journal(state_dir / JOURNAL)
        self.regions = replay(self._moto, self.journal)
        compact(self._moto, self.journal, self.regions)
        self.app = journaling(self._moto, self.journal, self.regions, compact_every)

    def close(self) -> None:
        """Compact, so the next start loads a snapshot instead of this run's history."""
        compact(self._moto, self.journal, self.regions)
        self.journal.close()


def serve(state_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
    import logging

    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        timeout = REQUEST_TIMEOUT

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    store = Store(state_dir)
    server = make_server(host, port, store.app, threaded=False, request_handler=Handler)  # see module doc
    ready = state_dir / READY_FILE
    temporary = ready.with_suffix(".tmp")
    temporary.write_text(json.dumps({"port": server.port, "pid": os.getpid()}))
    os.replace(temporary, ready)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ready.unlink(missing_ok=True)
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.localdb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    args = parser.parse_args(argv)
    die_with_parent()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    serve(args.state_dir, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
