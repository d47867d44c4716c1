"""The environment of a Chalice stage, for the processes Chalice does not start itself.

``chalice local`` and Lambda get a stage's ``environment_variables`` from
``.chalice/config.json``; the local orchestrator and the operator CLI read the same
file here, so table names and secret locations have one source.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
STACK_FILE = "stack.json"


def stage_environment(stage: str) -> dict[str, str]:
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    if stage not in config.get("stages", {}):
        raise SystemExit(f"unknown stage {stage!r}; stages: {', '.join(config.get('stages', {}))}")
    return {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}


def local_state_dir() -> Path:
    """``.local/`` in the project, unless ``KEYTURN_LOCAL_DIR`` names another folder."""
    return Path(os.environ.get("KEYTURN_LOCAL_DIR") or PROJECT_DIR / ".local").resolve()


def read_stack(state_dir: Path) -> dict[str, object] | None:
    """What a running ``make run`` recorded (endpoints, pids), or None when none runs.

    Running means holding the state folder's lock (a pid alone can be stale or reused).
    """
    import fcntl

    lock_path, path = state_dir / "lock", state_dir / STACK_FILE
    if not lock_path.exists() or not path.exists():
        return None
    with lock_path.open("r") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            stack: dict[str, object] = json.loads(path.read_text())
            return stack
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None  # nobody holds the lock: stack.json is left over from a killed stack


def use_stage(stage: str) -> None:
    """Point this process at ``stage``: its variables, and for ``local`` the local stack.

    Call before importing ``chalicelib.models`` (table names are read at import).
    """
    for name, value in stage_environment(stage).items():
        if not name.startswith("KEYTURN_DEFAULT_"):  # as Chalice does: the stage's values win
            os.environ[name] = value
        else:
            os.environ.setdefault(name, value)
    if stage != "local":
        return
    state_dir = local_state_dir()
    os.environ["KEYTURN_LOCAL_DIR"] = str(state_dir)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    stack = read_stack(state_dir)
    if stack is not None:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = str(stack["dynamodb_endpoint"])
