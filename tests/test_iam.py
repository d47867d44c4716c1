"""The API function's IAM policy (``tooling/iam.py``) is exactly what the API uses.

Every AWS call the API makes while it serves the API tests' requests is recorded as the
IAM (action, resource) pairs AWS authorises it by (``tests/conftest.py``).  Each must be
allowed by the policy, or the deployed function fails where the tests pass; each grant
must be used by some call, or the function may do more than it needs to.

The recording comes from the API tests run earlier in this session (``test_api_*``
sorts before ``test_iam``).  When this session did not run all of them to the end
(``pytest tests/test_iam.py``, ``-k``, a node id), they are run in a pytest subprocess
that writes its recording to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    IAM_RECORDING,
    RECORD_IAM_CALLS_VARIABLE,
    RECORDED_ACCOUNT,
    RECORDED_REGION,
    api_test_modules,
)
from tooling import iam

PROJECT = Path(__file__).resolve().parents[1]
Pair = tuple[str, str]


def api_policy() -> dict[str, Any]:
    document = iam.policy_document(iam.API, table_prefix="keyturn-test-", ssm_prefix="/keyturn/test/",
                                   function_name="keyturn-test-api", name_prefix="keyturn-test-")
    resolved: dict[str, Any] = iam.resolve(document, region=RECORDED_REGION, account=RECORDED_ACCOUNT)
    return resolved


def grants(policy: dict[str, Any]) -> set[Pair]:
    """Every (action, resource pattern) an Allow statement grants."""
    return {(action, resource) for statement in policy["Statement"] if statement["Effect"] == "Allow"
            for action in statement["Action"] for resource in statement["Resource"]}


def covers(grant: Pair, call: Pair) -> bool:
    """IAM matching: actions case-insensitively, resources case-sensitively, both with ``*``/``?`` wildcards."""
    (granted_action, granted_resource), (action, resource) = grant, call
    return fnmatchcase(action.lower(), granted_action.lower()) and fnmatchcase(resource, granted_resource)


def _recorded_by_subprocess(tmp_path: Path) -> set[Pair]:
    out = tmp_path / "iam-calls.json"
    modules = [str(path.relative_to(PROJECT)) for path in api_test_modules()]
    env = {name: value for name, value in os.environ.items() if name != "PYTEST_ADDOPTS"}  # no -k of this run
    env[RECORD_IAM_CALLS_VARIABLE] = str(out)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *modules],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    recording: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"complete": False}
    if done.returncode != 0 or not recording["complete"]:  # a failed API test may not have made all its calls
        pytest.fail(f"the API tests did not all run and pass (exit {done.returncode}), so their AWS calls are not "
                    f"all recorded:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
    return {(action, resource) for action, resource in recording["calls"]}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> set[Pair]:
    """The (action, resource) pairs of every AWS call the API made for the API tests' requests.

    Not vacuous: a recording without the batch reads of the LAC calls and the SSM reads
    of the secrets is not the API suite's.
    """
    if IAM_RECORDING.complete():
        calls = set(IAM_RECORDING.calls)
    else:
        calls = _recorded_by_subprocess(tmp_path_factory.mktemp("iam"))
    actions = {action for action, _ in calls}
    assert {"dynamodb:BatchGetItem", "ssm:GetParameter"} <= actions, sorted(calls)
    return calls


def test_every_aws_call_the_api_makes_is_allowed(recorded: set[Pair]) -> None:
    """A call the policy does not allow is an AccessDenied (a 500) in the deployed API, never in these tests."""
    allowed = grants(api_policy())
    missing = sorted(call for call in recorded if not any(covers(grant, call) for grant in allowed))
    assert not missing, "calls tooling/iam.py does not allow:\n" + "\n".join(f"  {a} on {r}" for a, r in missing)


def test_every_grant_is_used_by_some_call(recorded: set[Pair]) -> None:
    """Least privilege: a grant no call uses is access the function does not need (Lambda's own logging aside)."""
    unused = sorted(grant for grant in grants(api_policy()) if grant[0] not in iam.API.runtime_only
                    and not any(covers(grant, call) for call in recorded))
    assert not unused, "grants in tooling/iam.py no call uses:\n" + "\n".join(f"  {a} on {r}" for a, r in unused)


# --- the other functions: recorded by their handler tests (tests/conftest.py's as_function) ---

FUNCTION_TESTS = ["tests/test_provisioning.py", "tests/test_operator.py", "tests/test_shops.py"]


@pytest.fixture(scope="module")
def function_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[Pair]]:
    """Each function's recorded calls, from its handler tests run whole in a subprocess."""
    out = tmp_path_factory.mktemp("iam-functions") / "calls.json"
    env = {name: value for name, value in os.environ.items() if name != "PYTEST_ADDOPTS"}
    env[RECORD_IAM_CALLS_VARIABLE] = str(out)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FUNCTION_TESTS],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not out.exists():
        pytest.fail(f"the handler tests did not all pass (exit {done.returncode}):\n{done.stdout[-4000:]}")
    recorded = json.loads(out.read_text())["functions"]
    return {name: {(action, resource) for action, resource in calls} for name, calls in recorded.items()}


def function_policy(name: str) -> dict[str, Any]:
    document = iam.policy_document(iam.FUNCTIONS[name], table_prefix="keyturn-test-", ssm_prefix="/keyturn/test/",
                                   function_name=f"keyturn-test-{name}", name_prefix="keyturn-test-")
    resolved: dict[str, Any] = iam.resolve(document, region=RECORDED_REGION, account=RECORDED_ACCOUNT)
    return resolved


@pytest.mark.parametrize("name", ["provision-queue", "provision-events", "operator"])
def test_each_other_function_is_allowed_exactly_what_its_code_calls(
        name: str, function_calls: dict[str, set[Pair]]) -> None:
    recorded = function_calls.get(name, set())
    assert {"dynamodb:PutItem", "ssm:GetParameter"} <= {a for a, _ in recorded}, sorted(recorded)
    allowed = grants(function_policy(name))
    missing = sorted(call for call in recorded if not any(covers(grant, call) for grant in allowed))
    assert not missing, f"calls {name} makes that tooling/iam.py does not allow:\n" + "\n".join(
        f"  {a} on {r}" for a, r in missing)
    unused = sorted(grant for grant in allowed if grant[0] not in iam.FUNCTIONS[name].runtime_only
                    and not any(covers(grant, call) for call in recorded))
    assert not unused, f"grants of {name} no call uses:\n" + "\n".join(f"  {a} on {r}" for a, r in unused)
