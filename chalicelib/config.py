"""Stage settings, bound explicitly at each entry point; no module reads them at import.

Entry points: the Lambda functions (``app.py`` binds from the function's environment on
its first event), the operator CLI and the local stack (from the stage in
``.chalice/config.json``), the tests and benchmarks (a :class:`Settings` they build).
:func:`bind` points the models at the stage's tables through one shared connection and
resets the cached secrets; :func:`current` is what services read.

Chalice copies a stage's ``environment_variables`` into the process environment
(``chalice local`` overwrites variables of the same name), so every stage default has
its own name (``KEYTURN_DEFAULT_*``) and an operator's override (``KEYTURN_*``) survives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

DEFAULT_SESSION_TTL = 1800
DEFAULT_SECRETS_MAX_AGE = 300  # seconds an SSM secret is cached: a rotation reaches running functions in this time
VERSION = "1.0.0-1"  # served by GET /api/v1/version as x.y.z-build


class ConfigError(RuntimeError):
    """The stage's configuration is missing or wrong; the message says what to set."""


@dataclass(frozen=True)
class Settings:
    stage: str
    table_prefix: str
    region: str
    session_ttl: int = DEFAULT_SESSION_TTL
    vendor: str = "KEYTURN"  # VENDOR in license files and the issuer in their header
    local_dir: Path | None = None  # secrets as files (local stack, tests); None means SSM
    ssm_prefix: str = ""
    secrets_max_age: int = DEFAULT_SECRETS_MAX_AGE
    endpoint_url: str | None = None  # every client's endpoint: the local stack's database; None means AWS
    notifications_topic_arn: str | None = None  # where provisioning results are published (SNS); None: nowhere
    allow_test_orders: bool = True  # grant shops' test orders (Shopify test: true, Stripe livemode: false)
    # scheme://host[:port][/path] of links (Location, HAL _links); None: from API Gateway's request context
    public_base_url: str | None = None
    activation_rate_limit: int = 0  # activation attempts per activation key per minute; 0: no limit


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of seconds, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {value}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, not {raw!r}")
    return raw == "true"
def _limit(env: Mapping[str, str], name: str) -> int:
    """A per-minute limit: a whole number, 0 (or unset) for none."""
    raw = env.get(name, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number per minute (0 for no limit), not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 (no limit) or more, not {value}")
    return value


def public_base_url(raw: str | None, name: str = "KEYTURN_PUBLIC_BASE_URL") -> str | None:
    """``raw`` as the base of links, without a trailing ``/``; None when unset.

    Only ``http``/``https`` with a host, and no query, fragment or credentials: the
    value is put in front of every ``Location`` and ``href`` clients follow.
    """
    text = (raw or "").strip().rstrip("/")
    if not text:
        return None
    parts = urlsplit(text)
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
            or parts.username is not None or "\\" in text or any(c.isspace() for c in text)):
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host (and optionally a path), "
                          f"not {raw!r}")
    return text


def table_prefix(env: Mapping[str, str], stage: str) -> str:
    return env.get("KEYTURN_TABLE_PREFIX", f"keyturn-{stage}-")


def ssm_prefix(env: Mapping[str, str], stage: str) -> str:
    return env.get("KEYTURN_SSM_PREFIX", f"/keyturn/{stage}/")


def from_environment(env: Mapping[str, str], region: str | None = None) -> Settings:
    """The settings a Lambda function's (or ``chalice local``'s) environment describes.

    ``region``: as botocore resolves it (``aws.resolved_region()``) unless given; with
    none, a :class:`ConfigError`, never a silent default.
    """
    stage = env.get("KEYTURN_STAGE", "").strip()
    if not stage:
        raise ConfigError("KEYTURN_STAGE is not set: run with a stage from .chalice/config.json")
    if region is None:
        from chalicelib import aws

        region = aws.resolved_region()
    if not region:
        raise ConfigError("no AWS region: set AWS_DEFAULT_REGION or AWS_PROFILE (a profile with a region)")
    ttl = _int(env, "KEYTURN_SESSION_TTL", _int(env, "KEYTURN_DEFAULT_SESSION_TTL", DEFAULT_SESSION_TTL))
    secrets_source = env.get("KEYTURN_SECRETS_SOURCE", "file" if stage in ("local", "test") else "ssm")
    if secrets_source not in ("file", "ssm"):
        raise ConfigError(f"KEYTURN_SECRETS_SOURCE must be file or ssm, not {secrets_source!r}")
    local_dir = Path(env.get("KEYTURN_LOCAL_DIR", ".local")).resolve() if secrets_source == "file" else None
    return Settings(
        stage=stage,
        table_prefix=table_prefix(env, stage),
        region=region,
        session_ttl=ttl,
        vendor=env.get("KEYTURN_VENDOR") or env.get("KEYTURN_DEFAULT_VENDOR") or "KEYTURN",
        local_dir=local_dir,
        ssm_prefix=ssm_prefix(env, stage),
        secrets_max_age=_int(env, "KEYTURN_SECRETS_MAX_AGE", DEFAULT_SECRETS_MAX_AGE),
        endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
        notifications_topic_arn=env.get("KEYTURN_NOTIFICATIONS_TOPIC_ARN") or None,
        allow_test_orders=_flag(env, "KEYTURN_ALLOW_TEST_ORDERS", stage != "prod"),
        public_base_url=public_base_url(env.get("KEYTURN_PUBLIC_BASE_URL")),
        activation_rate_limit=_limit(env, "KEYTURN_ACTIVATION_RATE_LIMIT") if env.get(
            "KEYTURN_ACTIVATION_RATE_LIMIT", "").strip() else _limit(env, "KEYTURN_DEFAULT_ACTIVATION_RATE_LIMIT"),
    )


_lock = threading.RLock()
_bound: Settings | None = None


def bind(settings: Settings) -> Settings:
    """Make ``settings`` the process's stage: tables, region, secrets.  Returns it."""
    global _bound
    from chalicelib import keystore, models

    with _lock:
        models.bind(settings)
        keystore.clear_cache()
        _bound = settings
    return settings


def bind_once(env: Mapping[str, str]) -> Settings:
    """Bind from ``env`` unless this process is bound already (a Lambda's first event)."""
    with _lock:  # chalice local's first requests may arrive on several threads at once
        if _bound is not None:
            return _bound
        return bind(from_environment(env))


def current() -> Settings:
    if _bound is None:
        raise ConfigError("no stage is bound: an entry point must call chalicelib.config.bind() first")
    return _bound
