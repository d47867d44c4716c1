"""The CloudFormation tables merged into `chalice package`, and the stages' IAM policies."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def generate(stage: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    result = subprocess.run([sys.executable, "-m", "chalicelib.deploy", "--stage", stage], cwd=PROJECT, env=env,
                            capture_output=True, text=True, check=True, timeout=60)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def prod_template(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return generate("prod")


def test_every_model_gets_a_retained_on_demand_table_with_recovery(prod_template: dict) -> None:
    tables = prod_template["Resources"]
    assert set(tables) == {"UserTable", "SessionTable", "LicenseKeyTable", "OrderTable", "ActivationTable"}
    for resource in tables.values():
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain")
        properties = resource["Properties"]
        assert properties["TableName"].startswith("keyturn-prod-")
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert tables["SessionTable"]["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "purge_at",
                                                                               "Enabled": True}
    assert tables["LicenseKeyTable"]["Properties"]["GlobalSecondaryIndexes"][0]["IndexName"] == "by-id"
    assert [k["AttributeName"] for k in tables["ActivationTable"]["Properties"]["KeySchema"]] == [
        "activation_key", "hostids_key"]


def test_the_template_passes_cfn_lint(prod_template: dict, tmp_path: Path) -> None:
    path = tmp_path / "tables.json"
    path.write_text(json.dumps(prod_template))
    result = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_each_stage_policy_covers_exactly_its_own_tables(stage: str) -> None:
    policy = json.loads((PROJECT / ".chalice" / f"policy-{stage}.json").read_text())
    (tables,) = [s for s in policy["Statement"] if s["Sid"] == "KeyturnTables"]
    other = "prod" if stage == "dev" else "dev"
    for resource in generate(stage)["Resources"].values():
        arn = f"arn:aws:dynamodb:eu-west-1:123456789012:table/{resource['Properties']['TableName']}"
        assert any(fnmatch.fnmatch(arn, pattern) for pattern in tables["Resource"])
        assert not any(fnmatch.fnmatch(arn.replace(f"-{stage}-", f"-{other}-"), p) for p in tables["Resource"])


def test_local_stages_are_not_deployed() -> None:
    result = subprocess.run([sys.executable, "-m", "chalicelib.deploy", "--stage", "local"], cwd=PROJECT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not deployed" in result.stderr
