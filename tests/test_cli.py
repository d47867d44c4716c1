"""The operator CLI against AWS stages: one region, and every failure one line with exit status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.deploy.harness import PROJECT, MotoServer, without_aws_configuration


def run(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tooling.cli", *args], cwd=PROJECT, capture_output=True, text=True,
                          env=env or without_aws_configuration(), input=stdin, timeout=120)


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def test_an_aws_stage_with_no_region_says_so_instead_of_choosing_one() -> None:
    assert one_line_failure(run("--stage", "dev", "show-order", "AAAAA-BBBBB-CCCCC-DDDDD")) == (
        "no AWS region: set AWS_DEFAULT_REGION or AWS_PROFILE (a profile with a region)")


def test_an_aws_stage_with_no_credentials_says_so() -> None:
    env = {**without_aws_configuration(), "AWS_DEFAULT_REGION": "eu-west-1"}
    assert one_line_failure(run("--stage", "dev", "show-order", "AAAAA-BBBBB-CCCCC-DDDDD", env=env)) == (
        "no AWS credentials for stage dev: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")


@pytest.fixture(scope="module")
def empty_account() -> Iterator[dict[str, str]]:
    """A moto server standing in for an AWS account where nothing is deployed."""
    with MotoServer() as moto:
        yield {**without_aws_configuration(), "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": moto.url,
               "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}


def test_a_stage_not_deployed_in_the_region_names_the_table_and_the_region(empty_account: dict[str, str]) -> None:
    message = one_line_failure(run("--stage", "dev", "show-order", "AAAAA-BBBBB-CCCCC-DDDDD", env=empty_account))
    assert message.startswith("Requested resource not found") and message.endswith(
        "(region eu-west-1): is stage dev deployed in this region? See docs/deploy.md")


def test_missing_secrets_name_the_command_that_creates_them(empty_account: dict[str, str]) -> None:
    assert one_line_failure(run("--stage", "dev", "signing-keys", env=empty_account)) == (
        "a secret of stage dev is missing in SSM (region eu-west-1): run "
        "`python -m tooling.cli --stage dev init-secrets`")


def test_init_secrets_then_mint_key_in_the_resolved_region(empty_account: dict[str, str]) -> None:
    created = run("--stage", "dev", "init-secrets", env=empty_account)
    assert (created.returncode, created.stdout.strip()) == (
        0, "created /keyturn/dev/license-key-secret, /keyturn/dev/signing-keys")
    minted = run("--stage", "dev", "mint-key", "--type", "OSI", "--count", "1", env=empty_account)
    assert minted.returncode == 0 and len(minted.stdout.strip().splitlines()[-1]) > 20


def test_set_password_without_a_terminal_or_password_is_a_message(empty_account: dict[str, str]) -> None:
    assert one_line_failure(run("--stage", "dev", "set-password", "admin", env=empty_account)) == (
        "no password: give --password, set KEYTURN_PASSWORD, or run in a terminal to be asked")


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, '{"bulkMax": ' + "9" * 5000 + "}"], ids=["deep", "digits"])
def test_json_a_parser_refuses_is_a_one_line_message(text: str, tmp_path: Path) -> None:
    from tooling import cli

    path = tmp_path / "event.json"
    path.write_text(text)
    with pytest.raises(SystemExit) as caught:
        cli._read_json(str(path))
    assert str(caught.value).startswith(f"{path}: not JSON: ") and "\n" not in str(caught.value)
