"""The embedded local DynamoDB of ``make run``: moto, single-threaded, with a journal.

Why single-threaded: moto's threaded server applies ``TransactWriteItems`` item by item
on a copy of the whole table and restores the copy on failure, so concurrent
transactions overwrite each other (40 racing activations on 10 seats once stored 17).
Serving one request at a time makes every request atomic, as in real DynamoDB.

Why a journal: moto keeps state in memory.  Every successful request that can change
state is appended to ``<state dir>/dynamodb.journal`` (one JSON line, flushed before the
response is sent) and replayed at the next start, then the journal is compacted into
one ``CreateTable`` per table plus its items, so start-up stays proportional to the
data, not to its history.  A killed server loses nothing it has answered.

Run as ``python -m chalicelib.localdb --state-dir DIR``; it binds 127.0.0.1 on a free
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

from chalicelib.procs import die_with_parent

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


def _auth_header(scope: str) -> str:
    return f"{scope}, SignedHeaders=host;x-amz-target, Signature=0"


class Journal:
    """Append-only log of state-changing DynamoDB requests, replayable into a moto app."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: io.TextIOWrapper | None = None

    def entries(self) -> Iterator[dict[str, str]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.endswith("\n"):  # a torn last line was never acknowledged
                    yield json.loads(line)

    def append(self, scope: str, target: str, body: str) -> None:
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps({"s": scope, "t": target, "b": body}, separators=(",", ":")) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _call(app: WsgiApp, scope: str, target: str, body: dict[str, Any] | str) -> tuple[int, dict[str, Any]]:
    from werkzeug.test import Client

    data = body if isinstance(body, str) else json.dumps(body)
    response = Client(app).post("/", data=data, headers={
        "Authorization": _auth_header(scope), "X-Amz-Target": _PREFIX + target,
        "Content-Type": "application/x-amz-json-1.0", "Host": "127.0.0.1",
    })
    return response.status_code, json.loads(response.get_data(as_text=True) or "{}")


def replay(app: WsgiApp, journal: Journal) -> set[str]:
    """Apply every journaled request in order; returns the credential scopes seen."""
    scopes = set()
    for entry in journal.entries():
        status, answer = _call(app, entry["s"], entry["t"], entry["b"])
        if status != 200:
            raise RuntimeError(f"journal replay failed at {entry['t']}: {answer}")
        scopes.add(entry["s"])
    return scopes


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


def snapshot(app: WsgiApp, scopes: Iterable[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The requests that rebuild the current state: tables, TTL settings, items."""
    for scope in sorted(scopes):
        _, listing = _call(app, scope, "ListTables", {})
        for name in listing.get("TableNames", []):
            _, described = _call(app, scope, "DescribeTable", {"TableName": name})
            yield scope, "CreateTable", _create_table_request(described["Table"])
            _, ttl = _call(app, scope, "DescribeTimeToLive", {"TableName": name})
            ttl_desc = ttl.get("TimeToLiveDescription", {})
            if ttl_desc.get("TimeToLiveStatus") == "ENABLED":
                yield scope, "UpdateTimeToLive", {"TableName": name, "TimeToLiveSpecification": {
                    "Enabled": True, "AttributeName": ttl_desc["AttributeName"]}}
            request: dict[str, Any] = {"TableName": name}
            while True:
                _, page = _call(app, scope, "Scan", request)
                items = page.get("Items", [])
                for start in range(0, len(items), 25):
                    chunk = items[start:start + 25]
                    yield scope, "BatchWriteItem", {"RequestItems": {name: [{"PutRequest": {"Item": i}} for i in chunk]}}
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def compact(app: WsgiApp, journal: Journal, scopes: Iterable[str]) -> None:
    """Rewrite the journal as a snapshot of the current state (atomically)."""
    temporary = journal.path.with_suffix(".compacting")
    with temporary.open("w", encoding="utf-8") as handle:
        for scope, target, body in snapshot(app, scopes):
            handle.write(json.dumps({"s": scope, "t": target, "b": json.dumps(body)}, separators=(",", ":")) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, journal.path)


def journaling(app: WsgiApp, journal: Journal) -> WsgiApp:
    """Wrap the moto app so every successful state-changing request is journaled first."""

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
            scope = environ.get("HTTP_AUTHORIZATION", "").split(",")[0]
            journal.append(scope, target[len(_PREFIX):], body.decode("utf-8"))
        return [answer]

    return wrapped


def build_app(state_dir: Path) -> tuple[WsgiApp, Journal]:
    from moto.dynamodb.models import dynamodb_backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    dynamodb_backends.reset()  # moto's state is per process: start from empty, then replay
    moto_app: WsgiApp = DomainDispatcherApplication(create_backend_app)
    journal = Journal(state_dir / JOURNAL)
    scopes = replay(moto_app, journal)
    compact(moto_app, journal, scopes)
    return journaling(moto_app, journal), journal


def serve(state_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app, journal = build_app(state_dir)
    server = make_server(host, port, app, threaded=False)  # one request at a time: see module doc
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
        journal.close()
        ready.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.localdb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    args = parser.parse_args(argv)
    die_with_parent()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    serve(args.state_dir, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
