"""Secrets: SSM in AWS stages, files locally; rotation keeps old files verifiable."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Callable

import boto3
import pytest

from chalicelib import config, keystore, verifier
from chalicelib.licensefile import FeatureSpec, render_license
from tests.conftest import FakeClock


@pytest.fixture
def ssm_stage(aws: None, rebind: Callable[..., config.Settings]) -> str:
    return rebind(local_dir=None, ssm_prefix="/keyturn/dev/").ssm_prefix


def test_init_creates_the_ssm_secure_strings_once_and_never_overwrites(ssm_stage: str) -> None:
    created = keystore.init_ssm_secrets(ssm_stage)
    assert created == ["/keyturn/dev/license-key-secret", "/keyturn/dev/signing-keys"]
    ssm = boto3.client("ssm")
    stored = ssm.get_parameter(Name="/keyturn/dev/license-key-secret", WithDecryption=True)["Parameter"]
    assert stored["Type"] == "SecureString" and len(base64.b64decode(stored["Value"])) == 32
    assert keystore.init_ssm_secrets(ssm_stage) == []
    assert ssm.get_parameter(Name="/keyturn/dev/license-key-secret", WithDecryption=True)["Parameter"]["Value"] \
        == stored["Value"]
    assert keystore.license_key_secret() == base64.b64decode(stored["Value"])


def test_rotation_in_ssm_keeps_the_old_key_published_and_signs_with_the_new(ssm_stage: str,
                                                                            clock: FakeClock) -> None:
    keystore.init_ssm_secrets(ssm_stage)
    old = keystore.signing_keys()[0]
    old_file = render_license(issuer="KEYTURN", activation_key="AAAAA-BBBBB-CCCCC-DDDDD",
                              features=[FeatureSpec("f1", "1.0")], hostids_canonical="CUSTOM=A",
                              generated_at=clock(), expiration_date=None, signing_key=old)
    new = keystore.rotate_signing_key()
    assert [k.kid for k in keystore.signing_keys()] == [new.kid, old.kid]
    public = [k.public_raw() for k in keystore.signing_keys()]
    assert verifier.verify_license(old_file, public).valid
    only_new = verifier.verify_license(old_file, [new.public_raw()])
    assert not only_new.valid and old.kid in only_new.reason


def test_local_rotation_adds_a_key_file_and_makes_it_current(tmp_path: Path,
                                                             rebind: Callable[..., config.Settings]) -> None:
    rebind(local_dir=tmp_path)
    keystore.ensure_local_secrets(tmp_path)
    first = keystore.signing_keys()[0]
    second = keystore.rotate_signing_key()
    assert [k.kid for k in keystore.signing_keys()] == [second.kid, first.kid]
    assert sorted(p.name for p in (tmp_path / "secrets" / "signing-keys").iterdir()) == sorted(
        [f"{first.kid}.pem", f"{second.kid}.pem", "current"])
    assert oct((tmp_path / "secrets" / "license-key-secret").stat().st_mode & 0o777) == "0o600"


def test_a_short_license_key_secret_is_refused(tmp_path: Path, rebind: Callable[..., config.Settings]) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "license-key-secret").write_text(base64.b64encode(b"short").decode())
    rebind(local_dir=tmp_path)
    with pytest.raises(RuntimeError, match="at least 32 bytes"):
        keystore.license_key_secret()


def test_published_keys_are_what_the_verifier_loads(aws: None) -> None:
    for key in keystore.signing_keys():
        published = key.public_jwk_like()
        assert verifier.load_public_key(published["publicKey"]) == key.public_raw()
        assert json.dumps(published)
