"""Stage settings, read from the environment at call time (never at import).

Chalice copies the stage's ``environment_variables`` from ``.chalice/config.json`` into
the process environment (``chalice local`` overwrites variables of the same name), so
every stage default has its own name (``KEYTURN_DEFAULT_*``) and the operator's override
(``KEYTURN_*``) survives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SESSION_TTL = 1800
VERSION = "1.0.0-1"  # served by GET /api/v1/version as x.y.z-build


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a whole number of seconds, not {raw!r}") from exc
    if value <= 0:
        raise RuntimeError(f"{name} must be positive, not {value}")
    return value


@dataclass(frozen=True)
class Settings:
    stage: str
    table_prefix: str
    session_ttl: int
    region: str
    local_dir: Path | None  # secrets as files (local stack, tests); None means SSM
    ssm_prefix: str
    vendor: str  # VENDOR in license files and the issuer in their header


def settings() -> Settings:
    stage = os.environ.get("KEYTURN_STAGE", "local")
    ttl = _int("KEYTURN_SESSION_TTL", _int("KEYTURN_DEFAULT_SESSION_TTL", DEFAULT_SESSION_TTL))
    secrets_source = os.environ.get("KEYTURN_SECRETS_SOURCE", "file" if stage in ("local", "test") else "ssm")
    local_dir = Path(os.environ.get("KEYTURN_LOCAL_DIR", ".local")).resolve() if secrets_source == "file" else None
    return Settings(
        stage=stage,
        table_prefix=os.environ.get("KEYTURN_TABLE_PREFIX", f"keyturn-{stage}-"),
        session_ttl=ttl,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        local_dir=local_dir,
        ssm_prefix=os.environ.get("KEYTURN_SSM_PREFIX", f"/keyturn/{stage}/"),
        vendor=os.environ.get("KEYTURN_VENDOR") or os.environ.get("KEYTURN_DEFAULT_VENDOR") or "KEYTURN",
    )
