"""Schemathesis fuzzes the real local stack against docs/openapi.yaml (issue 10 item 3).

Bounded for CI and reproducible: a fixed seed, derandomized generation, a fixed number of
examples per operation.  Every operation gets schemathesis' explicit examples, coverage and
fuzzing phases; each answer must not be a 5xx and must be inside the description (status,
content type, headers, body), and schema-invalid input must be refused with a 4xx.  The
stateful run follows the description's OpenAPI links: login → the session id in
``Authorization`` → current session, keys, logout; an order created through the CLI →
activate → queue, download, deactivate.

The generators are pointed at real data: the activation key of the CLI's order, host ids
valid for its template, keys minted by the CLI (besides random ones), so the fuzzing
reaches past "unknown key".  The stateless run logs in as its own user (schemathesis'
auth providers run at collection, before the stack exists) and makes up no Authorization
values (bad sessions are ``tests/test_openapi.py``'s), except for the case without one.
The figures (requests sent, answers by status) are printed at the end of the session.

Left to their own tests: methods ``chalice local`` does not know (TRACE, QUERY, FOO: the
local server answers them 405 in the API's format, tested below), and ``OPTIONS``, which ``chalice local`` answers 200 as a CORS
preflight (``docs/api.md``).  ``positive_data_acceptance`` is not run: a schema-valid
activation key or license key is not a known one, and 4xx is then the right answer.
"""

from __future__ import annotations

import base64
import json
import string
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import hypothesis
import pytest
import requests
import schemathesis
import yaml
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.meta import CoverageScenario, coverage_scenario
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.e2e.figures import by_status, report
from tests.e2e.stack import LocalStack, cli
from tests.samples import SEED_ORDER, order

pytestmark = pytest.mark.e2e

DESCRIPTION = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SEED = 20261202
EXAMPLES = 50  # per operation in the fuzzing phase; the examples and coverage phases add their own cases
STATEFUL_SCENARIOS, STATEFUL_STEPS = 40, 8
FUZZ_USER, STATEFUL_USER, PASSWORD = "fuzz-auth", "fuzz-stateful", "fuzz-password-7f3a"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, missing_required_header, unsupported_method]
# The methods chalice local serves (the others are answered by tooling/localapi.py: tested below).
UNEXPECTED_METHODS = ["get", "put", "post", "delete", "patch"]
UNKNOWN_TO_CHALICE_LOCAL = ["TRACE", "QUERY", "FOO"]


class Run:
    """What the tests share: the stack, the CLI's order and keys, and the figures."""

    stack: LocalStack | None = None
    activation_key = ""
    license_keys: list[str] = []  # one of each type, as KEY_PLACEHOLDERS names them
    statuses: dict[str, Counter[int]] = {}

    @classmethod
    def url(cls) -> str:
        assert cls.stack is not None, "the stack fixture starts first"
        return cls.stack.url

    @classmethod
    def count(cls, run: str, status: int) -> None:
        cls.statuses.setdefault(run, Counter())[status] += 1


# --- the description, with generators pointed at real data ----------------------------------

CUSTOM_VALUE = st.text(string.ascii_letters + string.digits + "_.:-", min_size=1, max_size=24)


def _segment(values: list[str], urlsafe: bool, padded: bool) -> str:
    text = ",".join(f"CUSTOM={value}" for value in values).encode()
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(text).decode()
    return encoded if padded else encoded.rstrip("=")


# Host ids for the CLI order's template (one CUSTOM id): mostly valid, sometimes two (too many).
VALID_HOSTIDS = st.builds(_segment, st.lists(CUSTOM_VALUE, min_size=1, max_size=1), st.booleans(), st.booleans())
TWO_HOSTIDS = st.builds(_segment, st.lists(CUSTOM_VALUE, min_size=2, max_size=2), st.booleans(), st.booleans())
# Schemathesis builds its coverage cases at collection, before the stack (and the CLI's order
# and keys) exist: generators draw placeholders of the right form, replaced just before a call.
ORDER_PLACEHOLDER = "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ"
KEY_PLACEHOLDERS = ["ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZ0", "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZ1", "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZ2"]
# (st.one_of picks its branches evenly: a branch given twice is drawn twice as often.)
schemathesis.openapi.format("keyturn-hostids", st.one_of(
    VALID_HOSTIDS, VALID_HOSTIDS, TWO_HOSTIDS, st.from_regex(r"\A[A-Za-z0-9+=_-]{1,64}\Z")))
CLI_ORDER = st.sampled_from([ORDER_PLACEHOLDER, ORDER_PLACEHOLDER.lower()])
schemathesis.openapi.format("keyturn-activation-key", st.one_of(
    CLI_ORDER, CLI_ORDER, CLI_ORDER, st.from_regex(r"\A[0-9A-Za-z]{5}-[0-9A-Za-z]{5}-[0-9A-Za-z]{5}-[0-9A-Za-z]{5}\Z")))
schemathesis.openapi.format("keyturn-license-key", st.one_of(st.sampled_from(KEY_PLACEHOLDERS), st.text(max_size=40)))
schemathesis.openapi.format("keyturn-stateful-user", st.just(STATEFUL_USER))
schemathesis.openapi.format("keyturn-stateful-password", st.just(PASSWORD))


def description(*, stateful: bool) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(DESCRIPTION.read_text())
    parameters = raw["components"]["parameters"]
    parameters["key"]["schema"]["format"] = "keyturn-activation-key"
    parameters["hostids"]["schema"]["format"] = "keyturn-hostids"
    add_body = raw["paths"]["/api/v1/licenses"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    add_body["properties"]["key"]["format"] = "keyturn-license-key"
    if stateful:  # the login succeeds, so its links are followed (a wrong password would lock the user)
        login = raw["components"]["schemas"]["LoginRequest"]["properties"]
        login["username"]["format"] = "keyturn-stateful-user"
        login["password"]["format"] = "keyturn-stateful-password"
        login["provider"] = {"const": "Local"}
    return raw


def config(*, stateful: bool) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        # Stateless: no made-up Authorization (that is a 401, tests/test_openapi.py checks it), so the
        # fuzzed requests get the fuzzer's session; the stateful links carry the login's session id.
        "generation": {"deterministic": True, "max-examples": EXAMPLES, "database": "none",
                       "with-security-parameters": stateful},
        "phases": {"coverage": {"unexpected-methods": UNEXPECTED_METHODS},
                   "stateful": {"enabled": stateful, "max-steps": STATEFUL_STEPS}},
    })


SCHEMA = schemathesis.openapi.from_dict(description(stateful=False), config=config(stateful=False))
STATEFUL_SCHEMA = schemathesis.openapi.from_dict(description(stateful=True), config=config(stateful=True))


def with_real_data(case: schemathesis.Case) -> None:
    """The CLI's activation key and minted keys in place of the placeholders."""
    key = (case.path_parameters or {}).get("key")
    if isinstance(key, str) and key.upper() == ORDER_PLACEHOLDER:
        case.path_parameters = {**case.path_parameters, "key": Run.activation_key if key.isupper()
                                else Run.activation_key.lower()}
    if isinstance(case.body, dict) and case.body.get("key") in KEY_PLACEHOLDERS:
        case.body = {**case.body, "key": Run.license_keys[KEY_PLACEHOLDERS.index(case.body["key"])]}


class Sessions:
    """The fuzzer's own user's session: one kept for the run, a fresh one for each logout."""

    kept: str | None = None

    @staticmethod
    def login() -> str:
        response = requests.post(f"{Run.url()}/api/v1/sessions", timeout=30,
                                 json={"username": FUZZ_USER, "password": PASSWORD, "provider": "Local"})
        assert response.status_code == 200, response.text
        return str(response.json()["sessionId"])

    @classmethod
    def authorize(cls, case: schemathesis.Case) -> None:
        """A live session on the routes that need one, unless the case is about the header itself."""
        if not case.operation.definition.raw.get("security") or "authorization" in {h.lower() for h in case.headers or {}}:
            return
        if coverage_scenario(case) == CoverageScenario.MISSING_PARAMETER:  # the case without Authorization
            return
        if case.method == "DELETE" and case.path == "/api/v1/sessions/current":
            session = cls.login()  # the fuzzer logs out: never the kept session
        else:
            cls.kept = cls.kept or cls.login()
            session = cls.kept
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {session}"}


# --- the stack ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(tmp_path_factory.mktemp("fuzz") / "state").start()
    try:
        for user in (FUZZ_USER, STATEFUL_USER):
            added = cli(running.state_dir, "add-user", user, "--password", PASSWORD)
            assert added.returncode == 0, added.stderr
        order_file = running.state_dir.parent / "order.json"
        order_file.write_text(json.dumps(order(SEED_ORDER, bulkMax=1_000_000, deactivationsAllowed=1_000_000)))
        created = cli(running.state_dir, "create-order", str(order_file))
        assert created.returncode == 0, created.stderr
        Run.activation_key = created.stdout.strip().splitlines()[-1]
        minted = [cli(running.state_dir, "mint-key", "--type", kind, "--count", "4") for kind in ("OSI", "CPU", "CORE")]
        assert all(result.returncode == 0 for result in minted), [result.stderr for result in minted]
        Run.license_keys = [result.stdout.strip().splitlines()[-1] for result in minted]
        Run.stack = running
        yield running
    finally:
        running.stop()
        Run.stack = None
        for run, statuses in sorted(Run.statuses.items()):
            report(f"schemathesis {run}: {sum(statuses.values())} requests; by status: {by_status(statuses)}")


# --- the runs -------------------------------------------------------------------------------------

@SCHEMA.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_no_answer_is_a_5xx_or_outside_the_description(case: schemathesis.Case, stack: LocalStack) -> None:
    with_real_data(case)
    Sessions.authorize(case)
    response = case.call(base_url=stack.url, timeout=60)
    Run.count("stateless", response.status_code)
    documented = case.method.lower() in SCHEMA.raw_schema["paths"][case.path]
    Run.count(f"stateless {case.method} {case.path}" if documented else "stateless, methods a path does not serve",
              response.status_code)
    case.validate_response(response, checks=CHECKS, transport_kwargs={"base_url": stack.url})


class LinkedCalls:
    """What both state machines do around each call: real data in, figures and checks out.

    Each scenario undoes what it made (activations, keys), so every scenario starts from the
    same stack: Hypothesis replays choices it made before and requires the same choices to
    meet the same answers (else ``FlakyStrategyDefinition``), which a stack still holding an
    earlier scenario's activations would break.
    """

    def before_call(self, case: schemathesis.Case) -> None:
        with_real_data(case)

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"base_url": Run.url(), "timeout": 60}

    def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
        Run.count("stateful", response.status_code)
        Run.count(f"stateful {case.method} {case.path}", response.status_code)
        made: list[str] = self.__dict__.setdefault("made", [])
        if case.method == "PUT" and response.status_code == 202:
            made.append(str(response.request.url))
        elif case.method == "POST" and case.path == "/api/v1/licenses" and response.status_code == 201:
            made.append(f"{Run.url()}/api/v1/licenses/{json.loads(response.content)['license']['id']}")

    def teardown(self) -> None:
        made: list[str] = self.__dict__.get("made", [])
        if made:
            auth = {"Authorization": f"Bearer {Sessions.login()}"}
            for url in made:  # a 404: the scenario deleted it itself
                assert requests.delete(url, headers=auth, timeout=60).status_code in (200, 204, 404)
        super().teardown()  # type: ignore[misc]

    def validate_response(self, response: schemathesis.Response, case: schemathesis.Case,
                          additional_checks: Any = None, **kwargs: Any) -> None:
        case.validate_response(response, checks=CHECKS, transport_kwargs={"base_url": Run.url()})


# Schemathesis starts its scenarios at operations likely to create something (POSTs, and GETs
# without path parameters) and only falls back to the others when there are none; so the
# activation chain gets a machine of its own, without the signing keys (a GET of that kind).
class SessionLinks(LinkedCalls, STATEFUL_SCHEMA.include(path_regex="^/api/v1/").as_state_machine()):  # type: ignore[misc]
    pass


class ActivationLinks(LinkedCalls, STATEFUL_SCHEMA.include(path_regex="^/rest/v1/licen").as_state_machine()):  # type: ignore[misc]
    pass


STATEFUL_SETTINGS = hypothesis.settings(
    max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS, derandomize=True, deadline=None,
    database=None, suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate])


def test_a_login_links_to_the_calls_its_session_makes(stack: LocalStack) -> None:
    SessionLinks.run(settings=STATEFUL_SETTINGS)
    calls = Run.statuses
    assert calls["stateful GET /api/v1/sessions/current"][200] > 0, "no call used the session id of a login"
    assert calls["stateful GET /api/v1/licenses"][200] > 0, "no listing used the session id of a login"
    assert calls["stateful DELETE /api/v1/sessions/current"][200] > 0, "no logout used the session id of a login"


def test_the_clis_order_links_activation_to_download_and_deactivation(stack: LocalStack) -> None:
    ActivationLinks.run(settings=STATEFUL_SETTINGS)
    calls = Run.statuses
    assert calls["stateful PUT /rest/v1/licenses/{key}/{hostids}"][202] > 0, "the CLI's order was never activated"
    assert calls["stateful GET /rest/v1/license-queue/{key}/{hostids}"][303] > 0, "no activation was looked up"
    assert calls["stateful GET /rest/v1/licenses/{key}/{hostids}"][200] > 0, "no activation was downloaded"
    assert calls["stateful DELETE /rest/v1/licenses/{key}/{hostids}"][204] > 0, "no activation was deactivated"


# --- issue 10 item 4: bad input over HTTP ----------------------------------------------------------

@pytest.mark.parametrize("method", UNKNOWN_TO_CHALICE_LOCAL)
def test_a_method_the_local_server_does_not_know_is_405_in_the_apis_format(stack: LocalStack, method: str) -> None:
    vrli = requests.request(method, f"{stack.url}/api/v1/licenses", timeout=30)
    assert (vrli.status_code, vrli.headers.get("Content-Type"), vrli.content) == (
        405, "application/json", b'{"errorMessage":"Method not allowed."}')
    lac = requests.request(method, f"{stack.url}/rest/v1/signing-keys", timeout=30)
    assert (lac.status_code, lac.headers.get("Content-Type"), lac.content) == (
        405, "application/hal+json", b'{"message":"Method not allowed."}')


# Schemathesis turns "//" into "/", so empty ids get requests of their own.
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_empty_license_id_is_a_404(stack: LocalStack, method: str) -> None:
    response = requests.request(method, f"{stack.url}/api/v1/licenses//", timeout=30,
                                headers={"Authorization": f"Bearer {Sessions.login()}"})
    assert (response.status_code, response.content) == (404, b'{"errorMessage":"License not found."}')


@pytest.mark.parametrize(("method", "path", "status"), [
    ("PUT", "/rest/v1/licenses//Q1VTVE9NPWE=", 400),  # the contract's one 400 for an unknown key
    ("GET", "/rest/v1/licenses//Q1VTVE9NPWE=", 404),
    ("DELETE", "/rest/v1/licenses//Q1VTVE9NPWE=", 404),
    ("GET", "/rest/v1/licenses//", 404),
    ("GET", "/rest/v1/license-queue//Q1VTVE9NPWE=", 404),
    ("GET", "/rest/v1/license-orders//", 404),
    ("GET", "/rest/v1/license-errors//Q1VTVE9NPWE=", 404),
])
def test_an_empty_activation_key_is_an_unknown_one(stack: LocalStack, method: str, path: str, status: int) -> None:
    response = requests.request(method, stack.url + path, timeout=30)
    assert (response.status_code, response.headers["Content-Type"], response.content) == (
        status, "application/hal+json", b'{"message":"Invalid activation key specified."}')
