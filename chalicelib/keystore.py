"""Server secrets: the license-key MAC secret and the license-file signing keys.

Where they live depends on the stage (``config.Settings.local_dir``):
- local stack and tests: files under ``<state dir>/secrets/``, generated on first use
  by :func:`ensure_local_secrets` (``make run`` calls it);
- AWS: SSM Parameter Store SecureStrings under ``KEYTURN_SSM_PREFIX``:
  ``license-key-secret`` (base64 of >= 32 random bytes) and ``signing-keys`` (a JSON
  list of PKCS#8 PEM Ed25519 keys, the current one first; the others stay published
  so files they signed still verify).
SSM values are cached per process for ``Settings.secrets_max_age`` seconds (Powertools'
``SSMProvider``), so a rotated signing key reaches running functions within that time
without a redeploy; local files are read once per process.  Values are never logged.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from chalicelib import aws
from chalicelib.config import current

if TYPE_CHECKING:  # cryptography is imported only when a license file is signed
    from aws_lambda_powertools.utilities.parameters import SSMProvider
    from botocore.client import BaseClient

    from chalicelib.licensefile import SigningKey

MAC_SECRET_FILE = "license-key-secret"


class MissingSecret(RuntimeError):
    """The stage's secrets do not exist yet."""


SIGNING_DIR = "signing-keys"


def _secrets_dir(local_dir: Path) -> Path:
    return local_dir / "secrets"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_local_secrets(local_dir: Path) -> None:
    """Generate the local MAC secret and a first signing key if they are missing."""
    from chalicelib.licensefile import SigningKey

    root = _secrets_dir(local_dir)
    mac = root / MAC_SECRET_FILE
    if not mac.exists():
        _write_private(mac, base64.b64encode(secrets.token_bytes(32)))
    signing = root / SIGNING_DIR
    if not signing.exists() or not any(signing.glob("*.pem")):
        add_local_signing_key(local_dir, SigningKey.generate())


def add_local_signing_key(local_dir: Path, key: "SigningKey") -> None:
    """Store ``key`` and make it the current one (a rotation keeps the old files)."""
    signing = _secrets_dir(local_dir) / SIGNING_DIR
    _write_private(signing / f"{key.kid}.pem", key.to_pem())
    (signing / "current").write_text(key.kid + "\n")
    _local_signing_keys.cache_clear()


def _read_local(local_dir: Path, path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise MissingSecret(f"no local secrets in {local_dir}: start the stack once with `make run` "
                            "(or run `python -m tooling.cli init-secrets`)") from None


def _ssm() -> "BaseClient":
    return aws.client("ssm", current().region)


@lru_cache(maxsize=1)
def _ssm_provider() -> "SSMProvider":
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    return SSMProvider(boto3_client=_ssm())  # a botocore client: SSMProvider only calls its methods


def _ssm_parameter(name: str) -> str:
    """A SecureString's value, fetched again once ``secrets_max_age`` has passed."""
    return str(_ssm_provider().get(name, max_age=current().secrets_max_age, decrypt=True))


@lru_cache(maxsize=4)
def _decode_mac_secret(raw: str) -> bytes:
    secret = base64.b64decode(raw.strip(), validate=True)
    if len(secret) < 32:
        raise RuntimeError("the license-key secret must be at least 32 bytes")
    return secret


def license_key_secret() -> bytes:
    """The HMAC secret that authenticates Log Insight-style license keys."""
    s = current()
    if s.local_dir is not None:
        return _decode_mac_secret(_cached_local_mac_secret(s.local_dir))
    return _decode_mac_secret(_ssm_parameter(s.ssm_prefix + "license-key-secret"))


@lru_cache(maxsize=4)
def _cached_local_mac_secret(local_dir: Path) -> str:
    return _read_local(local_dir, _secrets_dir(local_dir) / MAC_SECRET_FILE)


@lru_cache(maxsize=4)
def _local_signing_keys(local_dir: Path) -> tuple["SigningKey", ...]:
    from chalicelib.licensefile import SigningKey

    signing = _secrets_dir(local_dir) / SIGNING_DIR
    current_kid = _read_local(local_dir, signing / "current").strip()
    keys = {p.stem: SigningKey.from_pem(p.read_bytes()) for p in sorted(signing.glob("*.pem"))}
    return (keys.pop(current_kid), *keys.values())


@lru_cache(maxsize=4)
def _parse_signing_keys(raw: str) -> tuple["SigningKey", ...]:
    from chalicelib.licensefile import SigningKey

    return tuple(SigningKey.from_pem(pem.encode()) for pem in json.loads(raw))


def signing_keys() -> tuple["SigningKey", ...]:
    """All signing keys, the current one first."""
    s = current()
    if s.local_dir is not None:
        return _local_signing_keys(s.local_dir)
    return _parse_signing_keys(_ssm_parameter(s.ssm_prefix + "signing-keys"))


def _encryption(kms_key_id: str | None) -> dict[str, str]:
    """SecureString options: the stage's customer key if it names one (else SSM's aws/ssm key), and
    Intelligent-Tiering, so the signing keys' list may outgrow a standard parameter's 4 KB (about 30 keys)."""
    return {"Tier": "Intelligent-Tiering", **({"KeyId": kms_key_id} if kms_key_id else {})}


def init_ssm_secrets(ssm_prefix: str, kms_key_id: str | None = None) -> list[str]:
    """Create the stage's SSM SecureStrings that are missing; returns the names created.

    Existing values are never overwritten: a new license-key secret would invalidate
    every key minted so far.
    """
    from botocore.exceptions import ClientError

    from chalicelib.licensefile import SigningKey

    ssm = _ssm()
    wanted = {
        ssm_prefix + "license-key-secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        ssm_prefix + "signing-keys": json.dumps([SigningKey.generate().to_pem().decode()]),
    }
    created = []
    for name, value in wanted.items():
        try:
            ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=False,
                              Description="Keyturn secret; see docs/deploy.md", **_encryption(kms_key_id))
            created.append(name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ParameterAlreadyExists":
                raise
    clear_cache()
    return created


def rotate_signing_key(kms_key_id: str | None = None) -> "SigningKey":
    """Make a new signing key current; the old ones stay (and stay published) for old files."""
    from chalicelib.licensefile import SigningKey

    key = SigningKey.generate()
    s = current()
    if s.local_dir is not None:
        add_local_signing_key(s.local_dir, key)
    else:
        name = s.ssm_prefix + "signing-keys"
        ssm = _ssm()
        existing = json.loads(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
        ssm.put_parameter(Name=name, Value=json.dumps([key.to_pem().decode(), *existing]), Type="SecureString",
                          Overwrite=True, **_encryption(kms_key_id))
    clear_cache()
    return key


def clear_cache() -> None:
    _cached_local_mac_secret.cache_clear()
    _local_signing_keys.cache_clear()
    _ssm_provider.cache_clear()
