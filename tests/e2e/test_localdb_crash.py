"""The embedded database as a process: killed (SIGTERM, SIGKILL) while it serves, on a full
disk, on a shared or read-only folder.  Every claim here is checked by killing or starving
a real ``python -m tooling.localdb``, never by reading its code."""

from __future__ import annotations

import ctypes
import json
import os
import random
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import requests
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.e2e.stack import PROJECT, STARTED, free_port, process_exists
from tooling import localdb
from tooling.procs import die_with_parent

pytestmark = pytest.mark.e2e

SEED = 20261202
START_TIMEOUT = 60.0
RUNNING: list["Database"] = []  # every database a test started: killed at its end if it still runs


@pytest.fixture(autouse=True)
def no_database_outlives_its_test() -> Iterator[None]:
    yield
    while RUNNING:
        RUNNING.pop().stop(signal.SIGKILL)


class Database:
    """One ``python -m tooling.localdb`` in a process group of its own."""

    def __init__(self, state_dir: Path, preexec: Callable[[], None] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.log = state_dir.parent / f"{state_dir.name}-db.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYTURN_"))}
        environment.update(env or {})

        def before_exec() -> None:
            die_with_parent()
            if preexec:
                preexec()

        with self.log.open("ab") as log:
            self.offset = log.tell()
            self.process = subprocess.Popen([sys.executable, "-m", "tooling.localdb", "--state-dir", str(state_dir)],
                                            cwd=PROJECT, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=before_exec)
        STARTED.add(self.process.pid)
        RUNNING.append(self)
        self.port = 0

    def output(self) -> str:
        return self.log.read_bytes()[self.offset:].decode(errors="replace")

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not condition():
            if self.process.poll() is not None:
                raise RuntimeError(f"the database exited ({self.process.returncode}) before {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the database never got to {what}:\n{self.output()}")
            time.sleep(0.05)

    def serving(self) -> "Database":
        ready = self.state_dir / localdb.READY_FILE

        def is_ready() -> bool:
            try:
                found = json.loads(ready.read_text())
            except (OSError, ValueError):
                return False
            if found.get("pid") != self.process.pid:
                return False
            self.port = int(found["port"])
            return True

        self.wait_until(is_ready, "serving")
        return self

    def client(self, attempts: int = 2) -> Any:
        return boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{self.port}", region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local",
                            config=Config(retries={"mode": "standard", "total_max_attempts": attempts},
                                          connect_timeout=5, read_timeout=30))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout=60)
        finally:
            if process_exists(self.process.pid):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def create_seat_tables(db: Any, filler: int) -> None:
    for name, key in (("orders", [("k", "HASH")]), ("activations", [("a", "HASH"), ("h", "RANGE")])):
        db.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": a, "KeyType": t} for a, t in key],
                        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in key])
    db.put_item(TableName="orders", Item={"k": {"S": "order"}, "activated": {"N": "0"}, "bulk_max": {"N": "100000"}})
    for start in range(0, filler, 25):  # moto copies whole tables in a transaction: a busy service's size
        db.batch_write_item(RequestItems={"activations": [
            {"PutRequest": {"Item": {"a": {"S": "other"}, "h": {"S": f"h{n}"}, "pad": {"S": "x" * 200}}}}
            for n in range(start, min(start + 25, filler))]})


def activate(db: Any, host: str) -> None:
    """One seat, as the service takes it: the activation and the order's counter in one transaction."""
    db.transact_write_items(TransactItems=[
        {"Put": {"TableName": "activations", "Item": {"a": {"S": "order"}, "h": {"S": host}},
                 "ConditionExpression": "attribute_not_exists(a)"}},
        {"Update": {"TableName": "orders", "Key": {"k": {"S": "order"}},
                    "UpdateExpression": "ADD activated :one", "ConditionExpression": "activated < bulk_max",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}}])


def seats(db: Any) -> tuple[int, set[str]]:
    """The order's counter and the hosts actually activated."""
    counter = int(db.get_item(TableName="orders", Key={"k": {"S": "order"}}, ConsistentRead=True)
                  ["Item"]["activated"]["N"])
    hosts: set[str] = set()
    kwargs: dict[str, Any] = {}
    while True:
        page = db.query(TableName="activations", KeyConditionExpression="a = :a",
                        ExpressionAttributeValues={":a": {"S": "order"}}, ConsistentRead=True, **kwargs)
        hosts |= {item["h"]["S"] for item in page["Items"]}
        if "LastEvaluatedKey" not in page:
            return counter, hosts
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_stop_signals_and_kills_never_tear_a_transaction_or_lose_an_acknowledged_one(tmp_path: Path) -> None:
    """Seat transactions from 4 clients, the database SIGTERMed or SIGKILLed at a random
    moment, 16 times: after each restart the counter equals the activations, and every
    acknowledged activation is there."""
    rng = random.Random(SEED)
    state = tmp_path / "state"
    db = Database(state).serving()
    create_seat_tables(db.client(), filler=600)
    acknowledged: set[str] = set()
    kills = {"SIGTERM": 0, "SIGKILL": 0}
    lock = threading.Lock()
    for round_ in range(16):
        client = db.client(attempts=1)
        stop = threading.Event()

        def traffic(worker: int, client: Any = client, stop: threading.Event = stop, round_: int = round_) -> None:
            for n in range(100_000):
                if stop.is_set():
                    return
                host = f"r{round_}-w{worker}-{n}"
                try:
                    activate(client, host)
                except Exception:  # refused or reset: any of botocore's errors
                    return  # the database went away: this one was never acknowledged
                with lock:
                    acknowledged.add(host)

        workers = [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(rng.uniform(0.05, 0.5))  # a random moment, not an assertion
        sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
        kills[sig.name] += 1
        status = db.stop(sig)
        stop.set()
        for worker in workers:
            worker.join()
        assert status == (0 if sig == signal.SIGTERM else -signal.SIGKILL), db.output()
        db = Database(state).serving()
        counter, hosts = seats(db.client())
        assert counter == len(hosts), f"round {round_} ({sig.name}): counter {counter}, {len(hosts)} activations"
        missing = acknowledged - hosts
        assert not missing, f"round {round_} ({sig.name}): acknowledged activations lost: {sorted(missing)[:5]}"
    print(f"\n[crash] 16 kills {kills}: {len(acknowledged)} acknowledged activations, all found; "
          f"counter = activations ({counter}) after every restart", file=sys.stderr)
    assert db.stop() == 0


def limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_refuses_changes_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """The journal cannot grow (RLIMIT_FSIZE: its writes fail with EFBIG, as ENOSPC would):
    every change from then on answers 500, is not applied, and a retry is never mistaken
    for a lost race; after a kill, everything acknowledged is there."""
    state = tmp_path / "state"
    db = Database(state, preexec=limit_file_size(24_000)).serving()
    client = db.client()
    create_seat_tables(client, filler=0)
    acknowledged, refused = [], []
    for n in range(400):
        try:
            client.put_item(TableName="activations", Item={"a": {"S": "k"}, "h": {"S": f"{n:04d}"}},
                            ConditionExpression="attribute_not_exists(a)")
            acknowledged.append(f"{n:04d}")
        except ClientError as exc:
            refused.append(exc.response["Error"]["Code"])
            if len(refused) == 3:
                break
    assert acknowledged and refused == ["InternalServerError"] * 3, refused
    assert "the journal cannot be written (File too large)" in db.output()
    assert db.stop(signal.SIGKILL) == -signal.SIGKILL
    restarted = Database(state).serving()
    stored = restarted.client().query(TableName="activations", KeyConditionExpression="a = :a",
                                      ExpressionAttributeValues={":a": {"S": "k"}})["Items"]
    assert sorted(item["h"]["S"] for item in stored) == acknowledged
    assert restarted.stop() == 0


def test_a_second_database_on_a_folder_waits_until_the_first_has_stopped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Database(state).serving()
    create_seat_tables(first.client(), filler=50)
    second = Database(state)
    try:
        second.wait_until(lambda: "waiting for the local DynamoDB that still uses" in second.output(), "waiting")
        assert json.loads((state / localdb.READY_FILE).read_text())["pid"] == first.process.pid
        activate(first.client(), "while-the-second-waits")
        assert first.stop() == 0
        second.serving()
        counter, hosts = seats(second.client())
        assert (counter, hosts) == (1, {"while-the-second-waits"})
    finally:
        first.stop(signal.SIGKILL)
        assert second.stop() == 0


def test_a_damaged_journal_stops_the_start_and_the_recovery_option_starts_from_the_intact_prefix(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = Database(state).serving()
    create_seat_tables(db.client(), filler=400)
    assert db.stop() == 0
    journal = state / localdb.JOURNAL
    whole = journal.read_bytes()
    journal.write_bytes(whole[:len(whole) // 2])
    refused = Database(state)
    assert refused.process.wait(timeout=60) == localdb.EXIT_DAMAGED
    (line,) = [text for text in refused.output().splitlines() if text.strip()]
    assert line.startswith("[keyturn] the local DynamoDB cannot start: ") and "(tables: activations)" in line
    assert journal.read_bytes() == whole[:len(whole) // 2]
    recovered = Database(state, env={localdb.RECOVER_VARIABLE: "1"}).serving()
    assert "started from the intact prefix" in recovered.output()
    assert len(list(state.glob(f"{localdb.JOURNAL}.damaged-*"))) == 1
    counter, _ = seats(recovered.client())
    assert counter == 0
    assert recovered.stop() == 0


def test_the_state_folder_and_its_files_are_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / "old-file").write_text("x")
    os.chmod(state / "old-file", 0o644)
    db = Database(state).serving()
    create_seat_tables(db.client(), filler=1)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert modes == {name: 0o600 for name in ("old-file", localdb.JOURNAL, localdb.ACKED, localdb.LOCK,
                                               localdb.READY_FILE)}
    assert db.stop() == 0


def without_file_permission_override() -> None:
    """Even as root, obey file permissions (drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2, 3):
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone for the program exec'd next
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.parametrize("program", ["tooling.localrun", "tooling.localdb"])
def test_a_read_only_state_folder_is_a_one_line_error(tmp_path: Path, program: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / localdb.JOURNAL).write_text("")
    os.chmod(state, 0o500)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYTURN_"))}
    env.update({"KEYTURN_LOCAL_DIR": str(state), "PORT": str(free_port())})
    args = [sys.executable, "-m", program] + (["--state-dir", str(state)] if program == "tooling.localdb" else [])
    try:
        result = subprocess.run(args, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120,
                                preexec_fn=without_file_permission_override)
    finally:
        os.chmod(state, 0o700)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, lines
    assert f"cannot use the state folder {state}" in lines[0] and "Permission denied" in lines[0]


def test_on_a_full_disk_both_apis_answer_in_their_own_format_and_acknowledge_nothing_unkept(tmp_path: Path) -> None:
    """Through the whole stack: the database's journal fails with ENOSPC (the test-only
    fault hook); the app's answers, then the same requests once the disk has room, then a kill."""
    from tests.e2e.stack import LocalStack, cli
    from tests.samples import HOSTNAME_TEMPLATE, SEED_ORDER, order, segment

    fault = tmp_path / "journal-fault"
    stack = LocalStack(tmp_path / "state", extra_env={localdb.FAULT_VARIABLE: str(fault)}).start()
    try:
        auth = {"Authorization": f"Bearer {stack.login()}"}
        key = cli(stack.state_dir, "mint-key", "--type", "OSI", "--count", "3").stdout.strip().splitlines()[-1]
        (tmp_path / "order.json").write_text(json.dumps(order(SEED_ORDER, hostid=HOSTNAME_TEMPLATE, bulkMax=1)))
        created = cli(stack.state_dir, "create-order", str(tmp_path / "order.json"))
        assert created.returncode == 0, created.stderr
        activation_key = created.stdout.strip().splitlines()[-1]
        seat = f"{stack.url}/rest/v1/licenses/{activation_key}/{segment('HOSTNAME=full-disk')}"

        fault.write_text("ENOSPC")
        added = stack.post("/api/v1/licenses", json={"key": key}, headers=auth)
        activated = requests.put(seat, timeout=60)
        fault.unlink()
        assert (added.status_code, added.json()) == (500, {"errorMessage": "The operation failed due to an internal error.",
                                                             "errorCode": "LICENSE_ERROR"})
        assert (activated.status_code, activated.headers["Content-Type"], activated.json()) == (
            500, "application/hal+json", {"message": "Internal server error."})
        assert "refused a TransactWriteItems: the journal cannot be written (No space left on device)" in stack.output()

        again = stack.post("/api/v1/licenses", json={"key": key}, headers=auth)  # not 409: nothing was kept
        assert again.status_code == 201, again.text
        assert requests.put(seat, timeout=60).status_code == 202  # not 403: no seat was taken
        os.kill(int(stack.recorded["dynamodb_pid"]), signal.SIGKILL)
    finally:
        stack.stop()
    restarted = LocalStack(stack.state_dir).start()
    try:
        listed = restarted.get("/api/v1/licenses", headers=auth).json()["licenses"]
        assert [entry["licenseKey"] for entry in listed.values()] == [key]
        shown = requests.get(f"{restarted.url}/rest/v1/license-orders/{activation_key}", timeout=30).json()
        assert shown["activatedLicenses"] == 1
        assert requests.get(seat.replace(stack.url, restarted.url), timeout=30).status_code == 200
    finally:
        assert restarted.stop() == 0


def test_after_kill_9_of_make_run_a_new_start_waits_for_the_old_database_and_keeps_its_data(tmp_path: Path) -> None:
    """``kill -9 -PGID`` of the orchestrator leaves its database stopping (PR_SET_PDEATHSIG) and
    compacting; a new start on the folder must neither collide with it nor lose what it holds."""
    from tests.e2e.stack import LocalStack

    stack = LocalStack(tmp_path / "state").start()
    endpoint = str(stack.recorded["dynamodb_endpoint"])
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="local",
                          aws_secret_access_key="local")
    items = [{"PutRequest": {"Item": {"activation_key": {"S": f"BULK-{n // 100:05d}"},
                                      "hostids_key": {"S": f"HOSTNAME=H{n}"}, "content": {"S": "x" * 300}}}}
             for n in range(3000)]
    for start in range(0, len(items), 25):
        client.batch_write_item(RequestItems={"keyturn-local-activations": items[start:start + 25]})
    old_database = int(stack.recorded["dynamodb_pid"])
    assert stack.process is not None
    os.killpg(stack.process.pid, signal.SIGKILL)
    stack.process.wait()
    again = LocalStack(stack.state_dir).start()
    try:
        assert not process_exists(old_database)  # it had stopped before the new database took the folder
        new_client = boto3.client("dynamodb", endpoint_url=str(again.recorded["dynamodb_endpoint"]),
                                  region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
        scanned = new_client.scan(TableName="keyturn-local-activations", Select="COUNT")
        count = scanned["Count"]
        while "LastEvaluatedKey" in scanned:
            scanned = new_client.scan(TableName="keyturn-local-activations", Select="COUNT",
                                      ExclusiveStartKey=scanned["LastEvaluatedKey"])
            count += scanned["Count"]
        assert count == 3000
    finally:
        assert again.stop() == 0
    stack.stop()  # the first stack's processes: checked gone
