"""``make run``: the whole service on a laptop, with an embedded DynamoDB.

1. state folder (``.local/`` or ``KEYTURN_LOCAL_DIR``, made or tightened to 0700, files
   0600), locked so two stacks never share it; the port (``PORT``, 8000) checked free;
   secrets generated on first start;
2. ``python -m tooling.localdb`` (moto, single-threaded, journaled) on a free port,
   waited for as long as it takes to load its journal (it reports when it serves); it
   holds a lock of its own, so it waits while a database left by a killed run still stops;
3. tables created, user ``admin`` seeded (``KEYTURN_ADMIN_PASSWORD``, else a password
   generated once into ``<state>/admin-password``), its lock cleared;
4. ``chalice local --no-autoreload --stage local`` on 127.0.0.1:``PORT``, through
   ``tooling.localapi``, which raises its listen backlog and reports once it holds
   the port (so another program answering there is never mistaken for it).

Both servers run in process groups of their own, so the terminal's Ctrl-C reaches only
this process, which then stops them (API first; the database compacts its journal on
the way out) and waits for them.  Both also get SIGTERM from the kernel if this process
is killed outright.  Whatever fails on the way up, everything already started is
stopped (``finally``).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tooling import localdb, procs, stages

ADMIN_USER = "admin"
NOTIFICATIONS_TOPIC = "keyturn-local-notifications"  # SNS, in the local moto server (not kept across restarts)
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
    if not path.exists() or not path.read_text().strip():
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(18) + "\n")
        os.replace(temporary, path)  # never a half-written password file
    return path.read_text().strip(), str(path)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=stages.PROJECT_DIR, env=env, start_new_session=True,
                            preexec_fn=procs.die_with_parent)


def _stop(process: subprocess.Popen[bytes] | None, name: str, timeout: float) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _say(f"{name} did not stop in {timeout:.0f} s; killing it")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _ready_file(path: Path, process: subprocess.Popen[bytes], what: str, timeout: float | None) -> dict[str, int]:
    """Wait for ``process`` to write ``path`` (it does once it serves); None timeout: while it lives."""
    started = time.monotonic()
    next_note = started + 10
    while True:
        if process.poll() is not None:
            if process.returncode == localdb.EXIT_DAMAGED:
                raise StartupError(f"{what} refused to start: its journal is damaged (see above)")
            raise StartupError(f"{what} exited with status {process.returncode} while starting")
        if path.exists():
            ready: dict[str, int] = json.loads(path.read_text())
            if ready.get("pid") == process.pid:
                return ready
        now = time.monotonic()
        if timeout is not None and now - started > timeout:
            raise StartupError(f"{what} did not start within {timeout:.0f} s")
        if now > next_note:
            _say(f"still waiting for {what} ({now - started:.0f} s)")
            next_note = now + 10
        time.sleep(0.1)


def _port_is_free(port: int) -> bool:
    """Nothing listens on ``port``: a port whose last connections are in TIME_WAIT is free
    (SO_REUSEADDR, as every server sets), one with a listener is not, even then."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run() -> int:
    state_dir = stages.local_state_dir()
    port = int(os.environ.get("PORT", "8000"))
    os.umask(0o077)  # the state holds password hashes, keys and license files: owner only
    try:
        localdb.secure_state_dir(state_dir)
        lock = (state_dir / "lock").open("w")
    except OSError as exc:
        _say(f"could not start: cannot use the state folder {state_dir} ({exc.strerror}); "
             "make it writable, or set KEYTURN_LOCAL_DIR")
        return 1
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _say(f"another local stack is using {state_dir}; stop it first, or set KEYTURN_LOCAL_DIR")
        return 1
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (`cmd &`)
    signal.signal(signal.SIGTERM, _interrupt)
    (state_dir / stages.STACK_FILE).unlink(missing_ok=True)
    db_ready = state_dir / localdb.READY_FILE
    db_ready.unlink(missing_ok=True)  # left by a killed run: must not pass for this run's database
    db = api = None
    try:
        if not _port_is_free(port):
            raise StartupError(f"port {port} on 127.0.0.1 is in use; stop what holds it, or set PORT")
        from chalicelib import audit, aws, keystore, models, users

        keystore.ensure_local_secrets(state_dir)
        db = _spawn([sys.executable, "-m", "tooling.localdb", "--state-dir", str(state_dir)],
                    stages.local_child_environment(stages.settings_for("local")))
        _say("loading the local DynamoDB")  # as long as its journal takes: no time limit while it runs
        db_port = _ready_file(db_ready, db, "the local DynamoDB", timeout=None)["port"]
        endpoint = f"http://127.0.0.1:{db_port}"
        stages.bind("local", endpoint_url=endpoint)  # the local credentials, before any client is made
        topic = aws.client("sns", stages.LOCAL_REGION, endpoint_url=endpoint).create_topic(Name=NOTIFICATIONS_TOPIC)
        env = stages.local_child_environment(stages.bind("local", endpoint_url=endpoint,
                                                         notifications_topic_arn=topic["TopicArn"]))

        models.create_tables()
        password, source = _admin_password(state_dir)
        with audit.acting_as("make-run"):
            users.set_password(ADMIN_USER, password)

        url = f"http://127.0.0.1:{port}"
        api_ready = state_dir / "api.json"
        api_ready.unlink(missing_ok=True)
        env["KEYTURN_API_READY_FILE"] = str(api_ready)
        api = _spawn([sys.executable, "-m", "tooling.localapi", "local", "--no-autoreload",
                      "--host", "127.0.0.1", "--port", str(port), "--stage", "local"], env)
        (state_dir / stages.STACK_FILE).write_text(json.dumps({
            "pid": os.getpid(), "api_url": url, "api_pid": api.pid,
            "dynamodb_endpoint": endpoint, "dynamodb_pid": db.pid, "notifications_topic_arn": topic["TopicArn"],
        }))
        _ready_file(api_ready, api, f"chalice local on port {port}", timeout=START_TIMEOUT)
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
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        _stop(api, "chalice local", timeout=10)
        _stop(db, "the local DynamoDB", timeout=120)  # it compacts its journal on the way out
        (state_dir / stages.STACK_FILE).unlink(missing_ok=True)
        lock.close()


if __name__ == "__main__":
    sys.exit(run())
