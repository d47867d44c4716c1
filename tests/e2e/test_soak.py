"""Soak: mixed traffic from parallel clients on the real local stack, then every invariant
checked against the tables; and the same traffic while the database is SIGTERMed and
SIGKILLed at random moments and the stack restarted, with every acknowledged write found.

Bounded in count (4 clients x 50 operations a run, 3 kills), seeded, 127.0.0.1 only.  The
figures (requests sent, responses by status, invariants checked, acknowledged writes
found) are printed in pytest's summary (``tests/e2e/conftest.py``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.stack import PROJECT, LocalStack, cli, process_exists, report
from tests.samples import segment

pytestmark = pytest.mark.e2e

SEED = 20261202
CLIENTS = 4
OPERATIONS = 50  # per client and run
ORDERS = 3  # bulkMax 6 each, so activations contend for seats
KILLS = 3
OPS = ["login", "add-key", "re-add-key", "delete-key", "activate", "deactivate", "provision"]
WEIGHTS = [8, 26, 5, 14, 30, 12, 5]
PROVISIONS_PER_CLIENT = 2  # each is a CLI process
EXPECTED = {"login": {200}, "add-key": {201}, "re-add-key": {409}, "delete-key": {200}, "activate": {202, 403},
            "deactivate": {204}, "provision": {"ok", "same result"}}
WHILE_KILLED = {500, "no answer", "failed"}  # only in the crash run, only while the database is down


def soaktool(state_dir: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYTURN_", "AWS_"))}
    env["KEYTURN_LOCAL_DIR"] = str(state_dir)
    done = subprocess.run([sys.executable, "-m", "tests.e2e.soaktool", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Ledger:
    """What the service acknowledged (and so must keep), and what it answered."""

    keys: dict[str, str] = field(default_factory=dict)  # license id -> key, added and not deleted
    deleted_keys: set[str] = field(default_factory=set)
    activations: set[str] = field(default_factory=set)  # "<activation key>/HOSTNAME=<HOST>", not deactivated
    deactivated: set[str] = field(default_factory=set)
    sessions: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, Any]] = field(default_factory=Counter)
    sent: int = 0

    def copy(self) -> "Ledger":
        return Ledger(dict(self.keys), set(self.deleted_keys), set(self.activations), set(self.deactivated),
                      list(self.sessions))

    def expected(self) -> int:
        return len(self.keys) + len(self.deleted_keys) + len(self.activations) + len(self.deactivated)

    def found(self, tables: dict[str, Any]) -> int:
        ids, activations = set(tables["licenseIds"]), set(tables["activations"])
        return (len(set(self.keys) & ids) + len(self.deleted_keys - ids) + len(self.activations & activations)
                + len(self.deactivated - activations))


class Traffic:
    """CLIENTS threads, each on its own keys and hosts, so every acknowledged write has one expected end."""

    def __init__(self, stack: LocalStack, run: str, orders: list[str], keys: list[str], crash: bool) -> None:
        self.stack, self.run, self.orders, self.keys, self.crash = stack, run, orders, keys, crash
        self.ledger = Ledger()
        self.up = threading.Event()
        self.up.set()
        self.locks = [threading.Lock() for _ in range(CLIENTS)]
        self._ledger_lock = threading.Lock()
        self.errors: list[str] = []

    def note(self, op: str, status: Any) -> None:
        with self._ledger_lock:
            self.ledger.statuses[(op, status)] += 1

    def call(self, client: int, op: str, method: str, path: str, **kwargs: Any) -> requests.Response | None:
        """One request; None when it got no definite answer (only while the database is killed)."""
        with self._ledger_lock:
            self.ledger.sent += 1
        try:
            response = requests.request(method, self.stack.url + path, timeout=60, **kwargs)
        except requests.RequestException:
            self.note(op, "no answer")
            if not self.crash:
                raise
            return None
        self.note(op, response.status_code)
        if response.status_code >= 500 and self.crash:
            return None
        return response

    def client(self, index: int) -> None:
        try:
            self._client(index)
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.errors.append(f"client {index}: {exc!r}")

    def _client(self, index: int) -> None:
        rng = random.Random(f"{SEED}-{self.run}-{index}")
        keys = iter(self.keys[index::CLIENTS])
        session: str | None = None
        mine: dict[str, str] = {}  # license id -> key: added, not deleted
        hosts: list[str] = []  # activated, not deactivated
        provisioned: list[tuple[str, str]] = []  # (event JSON, its result)
        lock = self.locks[index]
        for n in range(OPERATIONS):
            self.up.wait()  # never inside the client's lock: the killer takes every lock while the stack is down
            op = rng.choices(OPS, WEIGHTS)[0]
            if op == "provision" and len(provisioned) >= PROVISIONS_PER_CLIENT:
                op = "activate"
            if session is None or op == "login":
                with lock:
                    response = self.call(index, "login", "POST", "/api/v1/sessions", json={  # a user per client
                        "username": f"soak-{index}", "password": f"soak-password-{index}", "provider": "Local"})
                    if response is not None and response.status_code == 200:
                        session = response.json()["sessionId"]
                        self.ledger.sessions.append(str(session))
                if op == "login" or session is None:
                    continue
            auth = {"Authorization": f"Bearer {session}"}
            with lock:
                if op == "add-key" or (op in ("re-add-key", "delete-key") and not mine):
                    key = next(keys, None)
                    if key is None:
                        continue
                    response = self.call(index, "add-key", "POST", "/api/v1/licenses", json={"key": key}, headers=auth)
                    if response is not None and response.status_code == 201:
                        mine[response.json()["license"]["id"]] = key
                        self.ledger.keys[response.json()["license"]["id"]] = key
                elif op == "re-add-key":
                    key = rng.choice(sorted(mine.values()))
                    self.call(index, op, "POST", "/api/v1/licenses", json={"key": key}, headers=auth)
                elif op == "delete-key":
                    license_id = rng.choice(sorted(mine))
                    response = self.call(index, op, "DELETE", f"/api/v1/licenses/{license_id}", headers=auth)
                    del mine[license_id]  # whatever the answer: never used again
                    if response is not None and response.status_code == 200:
                        del self.ledger.keys[license_id]
                        self.ledger.deleted_keys.add(license_id)
                    elif license_id in self.ledger.keys:
                        del self.ledger.keys[license_id]  # unknown outcome: expected neither way
                elif op == "activate" or (op == "deactivate" and not hosts):
                    order, host = rng.choice(self.orders), f"soak-{self.run}-{index}-{n}"
                    response = self.call(index, "activate", "PUT", f"/rest/v1/licenses/{order}/"
                                                                   f"{segment('HOSTNAME=' + host)}")
                    if response is not None and response.status_code == 202:
                        hosts.append(f"{order}/HOSTNAME={host.upper()}")
                        self.ledger.activations.add(hosts[-1])
                elif op == "deactivate":
                    seat = hosts.pop(rng.randrange(len(hosts)))
                    order, host = seat.split("/HOSTNAME=")
                    response = self.call(index, op, "DELETE", f"/rest/v1/licenses/{order}/"
                                                              f"{segment('HOSTNAME=' + host.lower())}")
                    self.ledger.activations.discard(seat)
                    if response is not None and response.status_code == 204:
                        self.ledger.deactivated.add(seat)
                elif op == "provision":
                    self.provision(index, n, rng, provisioned)

    def provision(self, index: int, n: int, rng: random.Random, provisioned: list[tuple[str, str]]) -> None:
        """A new shop order line through the CLI, or a repeat of one: the same result (exactly once)."""
        if provisioned and rng.random() < 0.5:
            event, first = provisioned[0]
        else:
            event, first = json.dumps({
                "orderId": f"soak-{self.run}-{index}-{n}", "lineItem": "1", "kind": "license-key",
                "customer": {"name": "Soak Ltd"}, "typeEnum": "OSI", "count": 5, "expirationDate": "2099-12-31"}), ""
        with self._ledger_lock:
            self.ledger.sent += 1
        done = cli(self.stack.state_dir, "provision", "-", stdin=event)
        if done.returncode != 0:
            self.note("provision", "failed")
            return
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if first:
            self.note("provision", "same result" if result["licenseKey"] == json.loads(first)["licenseKey"]
                      else f"another result: {result}")
        else:
            provisioned.append((event, json.dumps(result)))
            self.note("provision", "ok")

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        return threads

    def quiesce(self) -> Ledger:
        """No client is inside a request: a copy of what was acknowledged so far."""
        for lock in self.locks:
            lock.acquire()
        try:
            return self.ledger.copy()
        finally:
            for lock in self.locks:
                lock.release()


def statuses(ledger: Ledger) -> str:
    by_op: dict[str, list[str]] = {}
    for (op, status), count in sorted(ledger.statuses.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        by_op.setdefault(op, []).append(f"{status}x{count}")
    return "; ".join(f"{op} {' '.join(parts)}" for op, parts in by_op.items())


def check_everything(stack: LocalStack, ledger: Ledger, label: str) -> dict[str, Any]:
    tables = soaktool(stack.state_dir, "check")
    assert tables["violations"] == [], f"{label}: {tables['violations']}"
    found, expected = ledger.found(tables), ledger.expected()
    assert found == expected, f"{label}: {expected - found} acknowledged writes missing"
    return tables


def unexpected(ledger: Ledger, crash: bool) -> list[tuple[str, Any]]:
    allowed = {op: EXPECTED[op] | (WHILE_KILLED if crash else set()) for op in EXPECTED}
    return [(op, status) for op, status in ledger.statuses if status not in allowed[op]]


def test_soak_mixed_traffic_keeps_every_invariant(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "state").start()
    try:
        made = soaktool(stack.state_dir, "setup", str(ORDERS), str(CLIENTS * OPERATIONS), str(CLIENTS))
        traffic = Traffic(stack, "soak", made["orders"], made["keys"], crash=False)
        for thread in traffic.start():
            thread.join()
        assert traffic.errors == []
        ledger = traffic.ledger
        assert unexpected(ledger, crash=False) == []
        tables = check_everything(stack, ledger, "soak")
        still = [stack.get("/api/v1/licenses", headers={"Authorization": f"Bearer {s}"}).status_code
                 for s in ledger.sessions]
        assert still == [200] * len(ledger.sessions)
        assert sum(tables["orders"].values()) > 0 and ledger.statuses[("activate", 403)] > 0  # seats ran out
    finally:
        assert stack.stop() == 0
    wider = {str(path): oct(path.stat().st_mode & 0o777) for path in [stack.state_dir, *stack.state_dir.rglob("*")]
             if path.stat().st_mode & 0o077}
    assert wider == {}  # password hashes, keys and license files: owner only, whatever made the file
    checked = ", ".join(f"{name} {count}" for name, count in tables["checked"].items())
    report(f"[soak] {CLIENTS} clients, {ledger.sent} requests sent (seed {SEED}); responses: {statuses(ledger)}")
    report(f"[soak] invariants checked: {checked}; violations: 0; acknowledged writes found "
           f"{ledger.found(tables)}/{ledger.expected()}, sessions valid {len(still)}/{len(ledger.sessions)}")


def test_crash_soak_kills_the_database_and_loses_no_acknowledged_write(tmp_path: Path) -> None:
    state = tmp_path / "state"
    stack = LocalStack(state).start()
    rng = random.Random(f"{SEED}-killer")
    kills: list[str] = []
    after_restarts: list[str] = []
    traffic: Traffic | None = None
    try:
        made = soaktool(state, "setup", str(ORDERS), str(CLIENTS * OPERATIONS), str(CLIENTS))
        traffic = Traffic(stack, "crash", made["orders"], made["keys"], crash=True)
        threads = traffic.start()
        for _ in range(KILLS):
            threading.Event().wait(rng.uniform(0.5, 3.0))  # a random moment (not an assertion on time)
            if not any(thread.is_alive() for thread in threads):
                break
            sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
            traffic.up.clear()
            database = int(stack.recorded["dynamodb_pid"])
            os.kill(database, sig)
            stack.stop()  # the orchestrator has seen its database go and stops the API
            assert not any(process_exists(pid) for pid in stack.pids())
            acknowledged = traffic.quiesce()
            stack = LocalStack(state).start()
            traffic.stack = stack
            tables = check_everything(stack, acknowledged, f"after {sig.name}")
            kills.append(sig.name)
            after_restarts.append(f"{acknowledged.found(tables)}/{acknowledged.expected()}")
            traffic.up.set()
        for thread in threads:
            thread.join()
        assert traffic.errors == []
        ledger = traffic.ledger
        assert unexpected(ledger, crash=True) == []
        tables = check_everything(stack, ledger, "at the end")
        still = [stack.get("/api/v1/licenses", headers={"Authorization": f"Bearer {s}"}).status_code
                 for s in ledger.sessions]
        assert still == [200] * len(ledger.sessions)
    finally:
        if traffic is not None:
            traffic.up.set()
        assert stack.stop() == 0
    checked = ", ".join(f"{name} {count}" for name, count in tables["checked"].items())
    report(f"[crash] {CLIENTS} clients, {ledger.sent} requests sent, database killed {len(kills)} times "
           f"({', '.join(kills)}; seed {SEED}); responses: {statuses(ledger)}")
    report(f"[crash] after each restart, acknowledged writes found/expected: {', '.join(after_restarts)}; "
           f"at the end {ledger.found(tables)}/{ledger.expected()}, sessions valid {len(still)}/"
           f"{len(ledger.sessions)}; invariants checked: {checked}; violations: 0")
