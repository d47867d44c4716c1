"""The embedded local DynamoDB of ``make run``: moto, single-threaded, with a journal.

Why single-threaded: moto's threaded server applies ``TransactWriteItems`` item by item
on a copy of the whole table and restores the copy on failure, so concurrent
transactions overwrite each other (DESIGN.md measured 17-19 licenses stored for 10 seats under 40 racing activations).
Serving one request at a time makes every request atomic, as in real DynamoDB.

Why a journal: moto keeps state in memory.  Every request that can change state is
written to ``<state dir>/dynamodb.journal`` and fsynced *before* moto applies it
(write-ahead); if moto refuses it (a failed condition) the record is cut off again, and
if the journal cannot be written (a full disk, an I/O error) moto never sees the request
and the client gets a 500 ``InternalServerError``: nothing unkept is ever acknowledged.
The journal is replayed at the next start, then compacted into a snapshot (one
``CreateTable`` per table plus its items), so start-up stays proportional to the data,
not to its history (it is compacted again at a clean stop and every 20,000 writes).

Journal format 2, one record a line: eight hex digits of the CRC-32 of the rest of the
line, a space, and a JSON object: first a header ``{"h": {"format": 2, "upto": N,
"records": K, "tables": {...}}}`` (the snapshot's size, per table), then the K snapshot
records ``{"s": 1..K, "r", "t", "b"}``, then the writes since ``{"n": N+1, ...}``, numbered
without gaps.  ``dynamodb.acked`` holds the number of the last acknowledged write (written
after the fsync, before the answer).  So a start tells apart a torn tail (an unterminated
last line numbered after the last acknowledged write: never acknowledged, dropped) from
damage: a corrupt record (checksum), a missing or repeated one (numbering), a cut
snapshot (header) or a cut tail (acknowledged writes missing).  Damage is reported by
record and table and never compacted over: the database refuses to start, unless
``--recover`` or ``KEYTURN_RECOVER_JOURNAL=1`` asks it to start from the intact prefix,
keeping the damaged file aside.  Journals of format 1 (plain JSON lines) are loaded,
kept aside as ``dynamodb.journal.format1`` and rewritten in format 2.

Stop signals (SIGTERM, SIGINT) take effect between requests, never inside one.  The
process holds ``dynamodb.lock`` while it runs, so a second database on the same folder
waits for the first to stop.  The folder is 0700 and its files 0600.

Run as ``python -m tooling.localdb --state-dir DIR``; it binds 127.0.0.1 on a free
port and writes ``{"port", "pid"}`` to ``DIR/dynamodb.json`` once it serves.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import io
import json
import os
import signal
import stat
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tooling.procs import die_with_parent

JOURNAL = "dynamodb.journal"
ACKED = "dynamodb.acked"  # the sequence number of the last acknowledged write
LOCK = "dynamodb.lock"  # held by the database process while it runs
READY_FILE = "dynamodb.json"
FORMAT = 2
RECOVER_VARIABLE = "KEYTURN_RECOVER_JOURNAL"  # "1": start from the intact prefix of a damaged journal
FAULT_VARIABLE = "KEYTURN_LOCALDB_FAULT_FILE"  # tests only: while this file names an errno, journal writes fail
EXIT_DAMAGED = 3
_PREFIX = "DynamoDB_20120810."
# Requests that never change state; everything else is journaled.
_READ_ONLY = {
    "GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable", "ListTables",
    "DescribeTimeToLive", "DescribeContinuousBackups", "ListTagsOfResource", "DescribeEndpoints",
    "DescribeLimits", "ListBackups", "ListGlobalTables",
}

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Record = tuple[str, str, str]  # region, target, body
COMPACT_EVERY = 20_000  # appends between compactions while serving
REQUEST_TIMEOUT = 10  # seconds a client may take to send its request (one stalled client blocks all)


def _say(message: str) -> None:
    print(f"[keyturn] {message}", flush=True)  # stdout, as the orchestrator's own lines: in order with them


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


def secure_state_dir(path: Path) -> None:
    """Create the state folder (0700), or tighten an existing one: no access for group and
    others to it, its folders or its files (a read-only folder stays read-only)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for root, folders, files in os.walk(path):
        for name in [root, *(os.path.join(root, f) for f in folders + files)]:
            mode = os.lstat(name).st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                os.chmod(name, stat.S_IMODE(mode) & 0o700)


# --- records -----------------------------------------------------------------------------

def _encode(record: dict[str, Any]) -> bytes:
    data = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(data), data)


def _decode(line: bytes) -> dict[str, Any] | None:
    """The record of one line of format 2, or None if its checksum or JSON is wrong."""
    checksum, _, data = line.partition(b" ")
    try:
        if len(checksum) != 8 or int(checksum, 16) != zlib.crc32(data):
            return None
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _tables(target: str, body: str) -> set[str]:
    """The tables a journaled request names (for reports of what was lost)."""
    try:
        request = json.loads(body)
    except ValueError:
        return set()
    if not isinstance(request, dict):
        return set()
    names = {request["TableName"]} if isinstance(request.get("TableName"), str) else set()
    names |= set(request.get("RequestItems") or {})
    for item in request.get("TransactItems") or []:
        names |= {part["TableName"] for part in item.values() if isinstance(part, dict) and "TableName" in part}
    return names


@dataclasses.dataclass
class Loaded:
    """What a journal file holds: its intact records, and what is wrong with it."""

    records: list[Record] = dataclasses.field(default_factory=list)
    upto: int = 0  # the sequence number of the last intact record
    legacy: bool = False  # format 1
    torn_tail: bool = False  # an unterminated last line that was never acknowledged (dropped)
    damage: str | None = None  # what is wrong, in words; None when the journal is intact
    lost: int = 0  # records lost by the damage (as far as known)
    lost_tables: set[str] = dataclasses.field(default_factory=set)

    def report(self, path: Path) -> str:
        tables = ", ".join(sorted(self.lost_tables)) or "unknown"
        return (f"{path} is damaged: {self.damage}; {self.lost} record(s) after the intact prefix of "
                f"{len(self.records)} are lost (tables: {tables})")


def read_acked(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "x")
    except (OSError, ValueError):
        return None


def read_journal(path: Path, acked: int | None) -> Loaded:
    """Check and decode a journal file; ``acked`` is the last acknowledged write, if known."""
    if not path.exists():
        loaded = Loaded()
        if acked:
            loaded.damage, loaded.lost = f"the journal is missing, but write {acked} was acknowledged", acked
        return loaded
    lines = path.read_bytes().split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if lines and lines[0].startswith(b"{") or not lines and tail.startswith(b"{"):
        return _read_format1(lines, tail)
    loaded = Loaded()
    header: dict[str, Any] = {}
    snapshot_seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        record = _decode(line)
        if number == 1:
            header = record.get("h", {}) if record else {}
            if header.get("format") != FORMAT:
                return _damaged(loaded, lines[number - 1:], tail, "line 1 is not a journal header")
            loaded.upto = int(header["upto"]) - int(header["records"])
            continue
        snapshot_left = number - 1 <= int(header["records"])
        expected = ("s", number - 1) if snapshot_left else ("n", loaded.upto + 1)
        if record is None:
            return _damaged(loaded, lines[number - 1:], tail, f"line {number} fails its checksum", header,
                            snapshot_seen)
        if record.get(expected[0]) != expected[1]:
            return _damaged(loaded, lines[number - 1:], tail,
                            f"line {number} is out of sequence (expected {expected[0]}={expected[1]})", header,
                            snapshot_seen)
        loaded.records.append((record["r"], record["t"], record["b"]))
        loaded.upto += 1
        if snapshot_left:
            for table in _tables(record["t"], record["b"]):
                key = f"{record['r']}/{table}"
                snapshot_seen[key] = snapshot_seen.get(key, 0) + _items(record["t"], record["b"])
    if header and len(lines) - 1 < int(header["records"]):
        return _damaged(loaded, [], tail, f"the snapshot ends after {len(lines) - 1} of its "
                                          f"{header['records']} records", header, snapshot_seen)
    if tail:
        if acked is not None and acked > loaded.upto:  # an acknowledged write, cut
            return _damaged(loaded, [], tail, f"write {loaded.upto + 1} was acknowledged but is cut short")
        loaded.torn_tail = True  # written, never acknowledged: the client was never told it was kept
    if acked is not None and acked > loaded.upto:
        loaded.damage = f"the journal ends at write {loaded.upto}, but write {acked} was acknowledged"
        loaded.lost = acked - loaded.upto
    return loaded


def _items(target: str, body: str) -> int:
    if target != "BatchWriteItem":
        return 0
    request = json.loads(body)
    return sum(len(writes) for writes in request["RequestItems"].values())


def _damaged(loaded: Loaded, rest: list[bytes], tail: bytes, what: str, header: dict[str, Any] | None = None,
             snapshot_seen: dict[str, int] | None = None) -> Loaded:
    loaded.damage = what
    loaded.lost = len(rest) + (1 if tail else 0)
    for line in rest:
        record = _decode(line)
        if record and "t" in record:
            loaded.lost_tables |= _tables(record["t"], record["b"])
    if header is not None and snapshot_seen is not None:  # items of the snapshot that are not in the prefix
        expected_records = int(header["records"])
        seen_records = min(len(loaded.records), expected_records)
        loaded.lost = max(loaded.lost, expected_records - seen_records)
        for key, count in header.get("tables", {}).items():
            if key not in snapshot_seen or snapshot_seen[key] < count:
                loaded.lost_tables.add(key.split("/", 1)[1])
    return loaded


def _read_format1(lines: list[bytes], tail: bytes) -> Loaded:
    """Journals written before 2026-12-02: JSON lines with no number or checksum."""
    loaded = Loaded(legacy=True, torn_tail=bool(tail))
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
            region = entry["r"] if "r" in entry else _region(entry["s"])  # "s": journals before 2026-11-26
            loaded.records.append((region, entry["t"], entry["b"]))
        except (ValueError, KeyError, TypeError):
            loaded.damage, loaded.lost = f"line {number} is not a journal record", len(lines) - number + 1
            for later in lines[number:]:
                try:
                    entry = json.loads(later)
                    loaded.lost_tables |= _tables(entry["t"], entry["b"])
                except (ValueError, KeyError, TypeError):
                    pass
            return loaded
        loaded.upto += 1
    return loaded


# --- the journal file --------------------------------------------------------------------

class JournalUnusable(RuntimeError):
    """A write could not be cut off again after a failure: no write can be journaled safely."""


class Journal:
    """The write-ahead journal: ``begin`` before moto applies a request, then ``commit`` or ``cancel``.

    ``write``, ``fsync`` and ``truncate`` are the system calls (tests pass failing ones); the
    ``KEYTURN_LOCALDB_FAULT_FILE`` hook makes them fail while that file names an errno.
    """

    def __init__(self, path: Path, write: Callable[[int, bytes], int] = os.write,
                 fsync: Callable[[int], None] = os.fsync,
                 truncate: Callable[[int, int], None] = os.ftruncate) -> None:
        self.path = path
        self.acked_path = path.with_name(ACKED)
        self.upto = 0  # sequence number of the last record in the file
        self.appended = 0
        self._write, self._fsync, self._truncate_call = write, fsync, truncate
        self._fd: int | None = None
        self._acked_fd: int | None = None
        self._pending: int | None = None  # file size before the record being applied
        self.unusable = False

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._write(fd, view.tobytes())
            if written <= 0:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            view = view[written:]

    def begin(self, region: str, target: str, body: str) -> None:
        """Write and fsync the next record; on failure the file is as before and OSError is raised."""
        if self.unusable:
            raise JournalUnusable("an earlier write could not be cut off")
        fd = self._open()
        size = os.fstat(fd).st_size
        try:
            self._write_all(fd, _encode({"n": self.upto + 1, "r": region, "t": target, "b": body}))
            self._fsync(fd)
        except OSError:
            self._truncate(size)
            raise
        self._pending = size

    def commit(self) -> None:
        """The request was applied: count it as acknowledged (before the client is answered)."""
        self._pending = None
        self.upto += 1
        self.appended += 1
        self._write_acked()

    def cancel(self) -> None:
        """moto refused the request: cut its record off again."""
        size, self._pending = self._pending, None
        if size is not None:
            self._truncate(size)

    def _truncate(self, size: int) -> None:
        try:
            assert self._fd is not None
            self._truncate_call(self._fd, size)
        except OSError as exc:
            self.unusable = True  # the file has a record that was never applied, and more must not follow it
            raise JournalUnusable(f"could not cut off a failed write ({exc.strerror})") from exc

    def _write_acked(self) -> None:
        # Not fsynced: it must survive the process, which page-cache writes do; after a power
        # loss it can only lag behind the journal, which never raises a false alarm.
        try:
            if self._acked_fd is None:
                self._acked_fd = os.open(self.acked_path, os.O_RDWR | os.O_CREAT, 0o600)
            os.pwrite(self._acked_fd, b"%020d\n" % self.upto, 0)
        except OSError as exc:
            _say(f"could not record the last acknowledged write in {self.acked_path} ({exc.strerror})")

    def rewrite(self, records: Iterable[Record]) -> None:
        """Replace the file by a snapshot (atomically: a kill keeps the old one); numbering goes on."""
        self.close()
        records = list(records)
        tables: dict[str, int] = {}
        for region, target, body in records:
            for table in _tables(target, body):
                tables[f"{region}/{table}"] = tables.get(f"{region}/{table}", 0) + _items(target, body)
        temporary = self.path.with_suffix(".compacting")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_encode({"h": {"format": FORMAT, "upto": self.upto + len(records),
                                            "records": len(records), "tables": tables}}))
                for number, (region, target, body) in enumerate(records, start=1):
                    handle.write(_encode({"s": number, "r": region, "t": target, "b": body}))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.upto += len(records)
        self.appended = 0
        self._write_acked()

    def close(self) -> None:
        for fd in (self._fd, self._acked_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._acked_fd = None


def fault_injecting_calls(fault_file: Path) -> tuple[Callable[[int, bytes], int], Callable[[int], None]]:
    """write and fsync that fail with the errno named in ``fault_file`` while it exists (tests only)."""

    def fault() -> None:
        try:
            name = fault_file.read_text().strip()
        except FileNotFoundError:
            return
        code = getattr(errno, name, errno.EIO)
        raise OSError(code, os.strerror(code))

    def write(fd: int, data: bytes) -> int:
        fault()
        return os.write(fd, data)

    def fsync(fd: int) -> None:
        fault()
        os.fsync(fd)

    return write, fsync


# --- moto --------------------------------------------------------------------------------

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


class ReplayFailed(RuntimeError):
    def __init__(self, index: int, target: str, answer: dict[str, Any]) -> None:
        super().__init__(f"record {index + 1} ({target}) cannot be applied: {answer.get('__type', '')} "
                         f"{answer.get('message', answer.get('Message', ''))}".rstrip())
        self.index = index


def replay(app: WsgiApp, records: list[Record], legacy: bool = False) -> set[str]:
    """Apply the records in order; returns the regions seen.

    Only the last one may fail: it was written ahead of a request moto then refused (or
    never got to), and the process died before cutting it off.
    """
    call = _Caller(app)
    regions = set()
    for index, (region, target, body) in enumerate(records):
        status, answer = call(region, target, body)
        if status != 200:
            if legacy and target == "CreateTable" and "ResourceInUseException" in answer.get("__type", ""):
                continue  # the same table twice: journals compacted per credential scope did that
            if index == len(records) - 1 and not legacy:
                continue
            raise ReplayFailed(index, target, answer)
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
    """Rewrite the journal as a snapshot of the current state."""
    journal.rewrite((region, target, json.dumps(body)) for region, target, body in snapshot(app, regions))


def _error(start_response: Callable[..., Any], message: str) -> list[bytes]:
    body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                       "message": message}).encode()
    start_response("500 Internal Server Error", [("Content-Type", "application/x-amz-json-1.0"),
                                                 ("Content-Length", str(len(body)))])
    return [body]


def journaling(app: WsgiApp, journal: Journal, regions: set[str], compact_every: int = COMPACT_EVERY) -> WsgiApp:
    """Wrap the moto app so every state-changing request is journaled before moto applies it,
    and the journal is compacted every ``compact_every`` appends."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(_PREFIX) or target[len(_PREFIX):] in _READ_ONLY:
            return app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        region = _region(environ.get("HTTP_AUTHORIZATION", ""))
        try:
            journal.begin(region, target[len(_PREFIX):], body.decode("utf-8"))
        except (OSError, JournalUnusable) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            _say(f"refused a {target[len(_PREFIX):]}: the journal cannot be written ({reason})")
            return _error(start_response, f"The local DynamoDB could not journal the change ({reason}); "
                                          "nothing was changed.")
        status: list[str] = []

        def capture(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(code)  # the server sends nothing before the body is returned
            return start_response(code, headers, exc_info)

        try:
            answer = b"".join(app(environ, capture))
        except BaseException:
            journal.cancel()
            raise
        if status and status[0].startswith("200"):
            journal.commit()
            regions.add(region)
            if journal.appended >= compact_every:
                try:
                    compact(app, journal, regions)
                except OSError as exc:  # the journal is intact: the change is kept and is answered
                    _say(f"could not compact {journal.path} ({exc.strerror}); trying again later")
                    journal.appended = 0
        else:
            try:
                journal.cancel()
            except JournalUnusable as exc:
                _say(f"the journal is unusable until restart: {exc}")
        return [answer]

    return wrapped


class JournalDamaged(RuntimeError):
    pass


class Store:
    """moto's DynamoDB with its journal: loaded from disk, serving, compacted on close.

    A damaged journal raises :class:`JournalDamaged` (nothing is changed on disk) unless
    ``recover``: then the damaged file is kept aside and the intact prefix is loaded.
    """

    def __init__(self, state_dir: Path, compact_every: int = COMPACT_EVERY, recover: bool = False,
                 journal: Journal | None = None) -> None:
        from moto.dynamodb.models import dynamodb_backends
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        dynamodb_backends.reset()  # moto's state is per process: start from empty, then replay
        self._moto: WsgiApp = DomainDispatcherApplication(create_backend_app)
        self.journal = journal or Journal(state_dir / JOURNAL)
        self.notes: list[str] = []
        path = self.journal.path
        loaded = read_journal(path, read_acked(self.journal.acked_path))
        if loaded.damage is None:
            try:
                self.regions = replay(self._moto, loaded.records, loaded.legacy)
            except ReplayFailed as exc:
                loaded.damage, loaded.lost = str(exc), len(loaded.records) - exc.index
                loaded.lost_tables = {t for _, target, body in loaded.records[exc.index:] for t in _tables(target, body)}
                del loaded.records[exc.index:]
        if loaded.damage is not None:
            report = loaded.report(path)
            if not recover:
                raise JournalDamaged(f"{report}. Nothing was changed. To start with the intact prefix, "
                                     f"set {RECOVER_VARIABLE}=1 (the damaged journal is then kept aside)")
            aside = path.with_name(f"{JOURNAL}.damaged-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
            if path.exists():
                _keep_aside(path, aside)
            self.notes.append(f"{report}; started from the intact prefix, the damaged journal is kept as {aside}")
            dynamodb_backends.reset()
            self.regions = replay(self._moto, loaded.records, loaded.legacy)
        elif loaded.legacy:
            aside = path.with_name(f"{JOURNAL}.format1")
            _keep_aside(path, aside)
            self.notes.append(f"{path} was in the old format: kept as {aside}, rewritten in format {FORMAT}")
        if loaded.torn_tail:
            self.notes.append(f"{path}: dropped an unterminated last record, a write that was never acknowledged")
        self.journal.upto = loaded.upto if loaded.damage is None else 0
        try:  # the file is replaced only once the snapshot is on disk; until then it stays as it was
            compact(self._moto, self.journal, self.regions)
        except OSError as exc:
            raise JournalDamaged(f"cannot rewrite {path} ({exc.strerror}); nothing was changed") from exc
        self.app = journaling(self._moto, self.journal, self.regions, compact_every)

    def close(self) -> None:
        """Compact, so the next start loads a snapshot instead of this run's history.

        The snapshot is taken from memory, which holds exactly the acknowledged writes, so it
        also drops a record that could not be cut off (an unusable journal).  If it cannot be
        written, the journal stays as it is: the next start replays it.
        """
        try:
            compact(self._moto, self.journal, self.regions)
        except OSError as exc:
            _say(f"could not compact {self.journal.path} ({exc.strerror}); the next start replays it")
        self.journal.close()


def _keep_aside(path: Path, aside: Path) -> None:
    """A second name for the file, so replacing ``path`` keeps the old content as ``aside``."""
    aside.unlink(missing_ok=True)
    os.link(path, aside)


def open_lock(state_dir: Path) -> int:
    return os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)


def _lock(state_dir: Path, stopping: list[int], fd: int | None = None) -> int | None:
    """Hold ``dynamodb.lock``, waiting while another database uses the folder; None if told to stop."""
    fd = open_lock(state_dir) if fd is None else fd
    next_note = 0.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if stopping:
                os.close(fd)
                return None
            if time.monotonic() >= next_note:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                _say(f"waiting for the local DynamoDB that still uses {state_dir} (pid {holder}) to stop")
                next_note = time.monotonic() + 10
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def serve(state_dir: Path, host: str = "127.0.0.1", port: int = 0, recover: bool = False,
          lock_fd: int | None = None) -> int:
    import logging

    from werkzeug.serving import WSGIRequestHandler, make_server

    stopping: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        stopping.append(signum)  # acted on between requests, never inside one

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    class Handler(WSGIRequestHandler):
        timeout = REQUEST_TIMEOUT

    lock = _lock(state_dir, stopping, lock_fd)
    if lock is None:
        return 0
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    journal = Journal(state_dir / JOURNAL)
    if os.environ.get(FAULT_VARIABLE):
        journal = Journal(state_dir / JOURNAL, *fault_injecting_calls(Path(os.environ[FAULT_VARIABLE])))
    try:
        store = Store(state_dir, recover=recover, journal=journal)
    except JournalDamaged as exc:
        _say(f"the local DynamoDB cannot start: {exc}")
        return EXIT_DAMAGED
    for note in store.notes:
        _say(note)
    ready = state_dir / READY_FILE
    try:
        server = make_server(host, port, store.app, threaded=False, request_handler=Handler)  # see module doc
        server.timeout = 0.2  # how soon a stop signal is seen while idle
        temporary = ready.with_suffix(".tmp")
        temporary.write_text(json.dumps({"port": server.port, "pid": os.getpid()}))
        os.replace(temporary, ready)
        while not stopping:
            server.handle_request()
        server.server_close()
    finally:
        ready.unlink(missing_ok=True)
        store.close()
        os.close(lock)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.localdb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--recover", action="store_true",
                        help=f"start from the intact prefix of a damaged journal (also {RECOVER_VARIABLE}=1)")
    args = parser.parse_args(argv)
    die_with_parent()
    os.umask(0o077)
    try:
        secure_state_dir(args.state_dir)
        lock_fd = open_lock(args.state_dir)
    except OSError as exc:
        _say(f"could not start: cannot use the state folder {args.state_dir} ({exc.strerror})")
        return 1
    recover = args.recover or os.environ.get(RECOVER_VARIABLE) == "1"
    return serve(args.state_dir, port=args.port, recover=recover, lock_fd=lock_fd)


if __name__ == "__main__":
    sys.exit(main())
