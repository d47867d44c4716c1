"""Start and stop the real local stack (``python -m tooling.localrun``) for tests.

Each stack gets its own state folder and free ports; it is stopped the way a terminal
stops ``make run`` (SIGINT to its process group), and every process it recorded is
checked to be gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tooling.procs import die_with_parent

PROJECT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0
STARTED: set[int] = set()  # every pid any stack recorded: the suite checks none survives


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def cli(state_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the operator CLI as a user would, against the stack of ``state_dir``."""
    env = {**os.environ, "KEYTURN_LOCAL_DIR": str(state_dir)}
    for name in [n for n in env if n.startswith(("KEYTURN_TABLE", "KEYTURN_STAGE", "KEYTURN_SECRETS", "AWS_ENDPOINT"))]:
        del env[name]
    return subprocess.run([sys.executable, "-m", "tooling.cli", *args], cwd=PROJECT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


class LocalStack:
    def __init__(self, state_dir: Path, admin_password: str | None = "e2e-admin-password",
                 extra_env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.extra_env = extra_env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_password = admin_password
        self.process: subprocess.Popen[bytes] | None = None
        self.recorded: dict[str, Any] = {}
        self.log = state_dir.parent / f"{state_dir.name}-stack.log"

    def environment(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("KEYTURN_", "AWS_"))}
        env.update({"KEYTURN_LOCAL_DIR": str(self.state_dir), "PORT": str(self.port)})
        if self.admin_password is not None:
            env["KEYTURN_ADMIN_PASSWORD"] = self.admin_password
        env.update(self.extra_env)
        return env

    def start(self) -> "LocalStack":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "tooling.localrun"], cwd=PROJECT,
                                            env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=die_with_parent)
        try:
            self._wait_until_running(offset)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_running(self, offset: int) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the stack exited early:\n{self.output(offset)}")
            if "Keyturn is running" in self.output(offset):
                self.recorded = json.loads((self.state_dir / "stack.json").read_text())
                self.pids()
                return
            time.sleep(0.2)
        raise RuntimeError(f"the stack did not start:\n{self.output(offset)}")

    def output(self, offset: int = 0) -> str:
        return self.log.read_bytes()[offset:].decode(errors="replace")

    def pids(self) -> list[int]:
        pids = [int(self.recorded[name]) for name in ("pid", "api_pid", "dynamodb_pid") if name in self.recorded]
        STARTED.update(pids)
        return pids

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Stop as a terminal's Ctrl-C does; returns the exit status."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            status = self.process.wait(timeout=60)
        finally:
            deadline = time.monotonic() + 10
            while any(process_exists(pid) for pid in self.pids()) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in self.pids():  # never leave anything behind, even when the test fails
                if process_exists(pid):
                    os.kill(pid, signal.SIGKILL)
        return status

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.delete(self.url + path, timeout=30, **kwargs)

    def login(self, password: str | None = None) -> str:
        response = self.post("/api/v1/sessions", json={"username": "admin", "password": password or self.admin_password,
                                                        "provider": "Local"})
        assert response.status_code == 200, response.text
        return str(response.json()["sessionId"])


FIGURES: list[str] = []  # figures the long-running tests report: printed in the terminal summary (tests/e2e/conftest.py)


def report(line: str) -> None:
    """Report a figure: shown at the end of every run (pytest's summary), not only with ``-s``."""
    FIGURES.append(line)
    print(line, file=sys.stderr)
