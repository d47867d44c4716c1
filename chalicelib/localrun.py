"""``make run``: the whole service on a laptop, with an embedded DynamoDB.

1. state folder (``.local/`` or ``KEYTURN_LOCAL_DIR``), locked so two stacks never
   share it; secrets generated there on first start;
2. ``python -m chalicelib.localdb`` (moto, single-threaded, journaled) on a free port;
3. tables created, user ``admin`` seeded (``KEYTURN_ADMIN_PASSWORD``, else a password
   generated once into ``<state>/admin-password``), its lock cleared;
4. ``chalice local --no-autoreload --stage local`` on 127.0.0.1:``PORT`` (8000), through
   ``chalicelib.localapi``, which only raises its listen backlog.

Both servers run in process groups of their own, so the terminal's Ctrl-C reaches only
this process, which then stops them (API first) and waits for them.  Both also get
SIGTERM from the kernel if this process is killed outright.  Whatever fails on the
way up, everything already started is stopped (``finally``).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from chalicelib import procs, stages

ADMIN_USER = "admin"
START_TIMEOUT = 60.0


class StartupError(RuntimeError):
    pass


def _say(message: str) -> None:
    print(f"[keyturn] {message}", flush=True)


def _admin_password(state_dir: Path) -> tuple[str, str]:
    """The admin password and where it came from."""
    given = os.environ.get("KEYTURN_ADMIN_PASSWORD")
    if given:
        return given, "KEYTURN_ADMIN_PASSWORD"
    path = state_dir / "admin-password"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(18) + "\n")
    return path.read_text().strip(), str(path)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=stages.PROJECT_DIR, env=env, start_new_session=True,
                            preexec_fn=procs.die_with_parent)


def _stop(process: subprocess.Popen[bytes] | None, name: str) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _say(f"{name} did not stop in 10 s; killing it")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_for(check: Any, process: subprocess.Popen[bytes], what: str) -> Any:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartupError(f"{what} exited with status {process.returncode} while starting")
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise StartupError(f"{what} did not start within {START_TIMEOUT:.0f} s")


def _db_ready(state_dir: Path) -> dict[str, int] | None:
    from chalicelib.localdb import READY_FILE

    path = state_dir / READY_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _api_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/v1/version", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run() -> int:
    state_dir = stages.local_state_dir()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = int(os.environ.get("PORT", "8000"))
    lock = (state_dir / "lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _say(f"another local stack is using {state_dir}; stop it first, or set KEYTURN_LOCAL_DIR")
        return 1
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (`cmd &`)
    signal.signal(signal.SIGTERM, _interrupt)
    (state_dir / stages.STACK_FILE).unlink(missing_ok=True)
    (state_dir / "dynamodb.json").unlink(missing_ok=True)
    db = api = None
    try:
        stages.use_stage("local")
        from chalicelib import keystore

        keystore.ensure_local_secrets(state_dir)
        env = dict(os.environ)
        db = _spawn([sys.executable, "-m", "chalicelib.localdb", "--state-dir", str(state_dir)], env)
        db_port = _wait_for(lambda: _db_ready(state_dir), db, "the local DynamoDB")["port"]
        endpoint = f"http://127.0.0.1:{db_port}"
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = env["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint

        from chalicelib import models, users

        models.create_tables()
        password, source = _admin_password(state_dir)
        users.set_password(ADMIN_USER, password)

        url = f"http://127.0.0.1:{port}"
        api = _spawn([sys.executable, "-m", "chalicelib.localapi", "local", "--no-autoreload",
                      "--host", "127.0.0.1", "--port", str(port), "--stage", "local"], env)
        (state_dir / stages.STACK_FILE).write_text(json.dumps({
            "pid": os.getpid(), "api_url": url, "api_pid": api.pid,
            "dynamodb_endpoint": endpoint, "dynamodb_pid": db.pid,
        }))
        _wait_for(lambda: _api_ready(url), api, f"chalice local on port {port} (is the port in use? set PORT)")
        _say(f"Keyturn is running on {url}  (DynamoDB on {endpoint}, data in {state_dir})")
        _say(f"log in as {ADMIN_USER!r} with the password {password!r} (from {source})")
        _say("press Ctrl-C to stop")
        while db.poll() is None and api.poll() is None:
            time.sleep(0.5)
        _say("a server stopped unexpectedly; stopping the rest")
        return 1
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    except StartupError as exc:
        _say(f"could not start: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        _stop(api, "chalice local")
        _stop(db, "the local DynamoDB")
        (state_dir / stages.STACK_FILE).unlink(missing_ok=True)
        lock.close()


if __name__ == "__main__":
    sys.exit(run())
