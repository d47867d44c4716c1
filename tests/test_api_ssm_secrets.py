"""The API with its secrets in SSM Parameter Store, as every deployed stage keeps them.

The other API tests read file secrets (the test stage's default), so without these the
API's SSM reads would run only once deployed, and ``tests/test_iam.py`` would never see
the ``ssm:GetParameter`` calls the API function's policy grants.
"""

from __future__ import annotations

import json
import secrets
from typing import Callable

import pytest
from chalice.test import Client

from chalicelib import config, keys, keystore, models, orders, verifier
from tests.conftest import ADMIN_PASSWORD, FakeClock
from tests.samples import SEED_ORDER, order

SSM_PREFIX = "/keyturn/test/"
JSON = {"Content-Type": "application/json"}
HOST = {"Host": "license.example.com"}
CUSTOM_A = "Q1VTVE9NPWE="  # CUSTOM=a


@pytest.fixture
def ssm_stage(aws: None, rebind: Callable[..., config.Settings]) -> None:
    """The test stage reading SSM secrets, created as ``tooling.cli init-secrets`` creates them (test setup)."""
    rebind(local_dir=None, ssm_prefix=SSM_PREFIX)
    assert keystore.init_ssm_secrets(SSM_PREFIX) == [SSM_PREFIX + "license-key-secret", SSM_PREFIX + "signing-keys"]


def login(client: Client) -> dict[str, str]:
    body = json.dumps({"username": "admin", "password": ADMIN_PASSWORD, "provider": "Local"})
    response = client.http.post("/api/v1/sessions", headers=JSON, body=body)
    assert response.status_code == 200, response.body
    return {**JSON, "Authorization": f"Bearer {response.json_body['sessionId']}"}


def test_keys_are_checked_with_the_license_key_secret_in_ssm(client: Client, ssm_stage: None, admin: models.User,
                                                             clock: FakeClock) -> None:
    """A deployed stage authenticates license keys with its SSM secret: a key minted with it is
    added, one minted with any other secret is forged."""
    key = keys.mint("OSI", 10, None, secret=keystore.license_key_secret())
    forged = keys.mint("OSI", 10, None, secret=secrets.token_bytes(32))
    keystore.clear_cache()  # the API reads the secret from SSM itself, as a freshly started function does
    auth = login(client)
    response = client.http.post("/api/v1/licenses", headers=auth, body=json.dumps({"key": key}))
    assert response.status_code == 201, response.body
    license_id = response.json_body["license"]["id"]
    created = int(clock().timestamp() * 1000)
    assert response.body == (
        f'{{"license":{{"id":"{license_id}","status":"Active","error":"",'
        f'"configuration":"10 Operating System Instances (OSIs)","licenseKey":"{key}","infinite":true,'
        f'"count":10,"typeEnum":"OSI","expirationDate":0,"createdDate":{created}}}}}').encode()
    refused = client.http.post("/api/v1/licenses", headers=auth, body=json.dumps({"key": forged}))
    assert (refused.status_code, refused.body) == (400, b'{"errorMessage":"Invalid serial number"}')


def test_licenses_are_signed_with_the_signing_key_in_ssm(client: Client, ssm_stage: None) -> None:
    """A deployed stage signs license files with the current key in SSM, so they verify against it alone."""
    key = orders.create_order(order(SEED_ORDER)).activation_key
    activated = client.http.put(f"/rest/v1/licenses/{key}/{CUSTOM_A}", headers=HOST)
    assert (activated.status_code, activated.body) == (202, b"")
    assert activated.headers["Location"] == f"https://license.example.com/rest/v1/license-queue/{key}/{CUSTOM_A}"
    downloaded = client.http.get(f"/rest/v1/licenses/{key}/{CUSTOM_A}", headers=HOST)
    assert downloaded.status_code == 200, downloaded.body
    body = downloaded.json_body
    assert (body["activationKey"], body["hostids"]) == (key, [{"nameRaw": "CUSTOM", "name": "Custom", "value": "a"}])
    (signing_key,) = keystore.signing_keys()  # read from SSM by the test, after the requests
    result = verifier.verify_license(body["content"], {signing_key.kid: signing_key.public_raw()}, hostids="CUSTOM=a")
    assert result.valid, result.reason
