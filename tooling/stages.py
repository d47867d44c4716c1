"""The stages of ``.chalice/config.json``, for the processes Chalice does not start itself.

``chalice local`` and Lambda get a stage's ``environment_variables`` from
``.chalice/config.json``; the local orchestrator, the operator CLI and the packager
read the same file here, so table names and secret locations have one source.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Mapping

from chalicelib import aws, config

PROJECT_DIR = Path(__file__).resolve().parent.parent
STACK_FILE = "stack.json"
LOCAL_REGION = "us-east-1"  # the local stack's region: its journal keys state by region
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
DEPLOYED = ("dev", "prod")


def chalice_config() -> dict:
    data: dict = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    return data


def stage_environment(stage: str) -> dict[str, str]:
    """The stage's ``environment_variables`` (global ones, then the stage's own)."""
    data = chalice_config()
    if stage not in data.get("stages", {}):
        raise SystemExit(f"unknown stage {stage!r}; stages: {', '.join(data.get('stages', {}))}")
    return {**data.get("environment_variables", {}), **data["stages"][stage].get("environment_variables", {})}


def environment_for(stage: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What a Lambda function of ``stage`` would see: the stage's values win, as Chalice does,
    except ``KEYTURN_DEFAULT_*``, which an operator's own variable overrides."""
    merged = {name: value for name, value in environ.items() if name.startswith("KEYTURN_")}
    for name, value in stage_environment(stage).items():
        if name.startswith("KEYTURN_DEFAULT_"):
            merged.setdefault(name, value)
        else:
            merged[name] = value
    return merged


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


def settings_for(stage: str, endpoint_url: str | None = None,
                 notifications_topic_arn: str | None = None) -> config.Settings:
    """The settings of ``stage``.  ``local``: the local stack of the state folder (its
    endpoint and notifications topic from the running stack unless given; no endpoint when none
    runs), never AWS.  Other stages: AWS, in the region botocore resolves."""
    env = environment_for(stage)
    if stage != "local":
        if os.environ.get("AWS_ENDPOINT_URL"):  # e.g. a moto server standing in for AWS
            env["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
        return config.from_environment(env)
    state_dir = local_state_dir()
    env["KEYTURN_LOCAL_DIR"] = str(state_dir)
    stack = read_stack(state_dir)
    if endpoint_url is None and stack:
        endpoint_url = str(stack["dynamodb_endpoint"])
    if notifications_topic_arn is None and stack and stack.get("notifications_topic_arn"):
        notifications_topic_arn = str(stack["notifications_topic_arn"])
    if notifications_topic_arn:
        env["KEYTURN_NOTIFICATIONS_TOPIC_ARN"] = notifications_topic_arn
    env.pop("AWS_ENDPOINT_URL", None)
    return dataclasses.replace(config.from_environment(env, region=LOCAL_REGION), endpoint_url=endpoint_url)


def bind(stage: str, endpoint_url: str | None = None,
         notifications_topic_arn: str | None = None) -> config.Settings:
    """Bind this process to ``stage`` (see :func:`settings_for`)."""
    settings = settings_for(stage, endpoint_url, notifications_topic_arn)
    if stage == "local":  # the local database accepts any signature; never send real credentials to it
        aws.session().set_credentials(LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                      LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    return config.bind(settings)


def local_child_environment(settings: config.Settings) -> dict[str, str]:
    """The environment of a process of the local stack (``chalice local``): local, whatever the shell has."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AWS_", "KEYTURN_TABLE", "KEYTURN_STAGE", "KEYTURN_SECRETS"))}
    env.update(LOCAL_CREDENTIALS)
    env.update({"AWS_DEFAULT_REGION": LOCAL_REGION, "KEYTURN_LOCAL_DIR": str(settings.local_dir)})
    if settings.endpoint_url:
        env["AWS_ENDPOINT_URL"] = settings.endpoint_url
    if settings.notifications_topic_arn:
        env["KEYTURN_NOTIFICATIONS_TOPIC_ARN"] = settings.notifications_topic_arn
    return env
