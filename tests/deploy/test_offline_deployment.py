"""The deployment, exercised offline: what `make package STAGE=dev` builds works where it runs.

1. ``make package`` with no AWS configuration at all; the zip holds only the service,
   each source with unchecked-hash bytecode.
2. The SAM template is transformed to CloudFormation, linted, and created as a stack in
   moto's CloudFormation on 127.0.0.1: tables, function, role, log group, the API's methods.
3. The unzipped package runs as Lambda's Python 3.11 runtime runs it (a clean interpreter
   with only boto3/botocore, a read-only task root, the template's environment) with the
   credentials of an IAM user holding exactly the function's policy, against the moto
   server enforcing IAM.  API Gateway proxy events drive every route, the README's flows
   among them; every answer equals the local stack's (``make run``) for the same requests.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from chalicelib import verifier
from tests.deploy import harness
from tests.deploy.harness import ACCOUNT, BUCKET, KEY, REGION
from tests.e2e.stack import LocalStack, cli
from tests.samples import DESIGN_ORDER
from tooling import iam, template

pytestmark = pytest.mark.deploy
PASSWORD = "offline-admin-password"
HOST_SEGMENT = "Q1VTVE9NPWE="  # CUSTOM=a


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "dev"
    result = harness.build_package(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(result.stdout.strip().splitlines()[-2])  # the zip's size
    return out


@pytest.fixture(scope="module")
def sam(package: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((package / "sam.json").read_text())
    return data


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    return harness.transform(sam)


def test_the_package_needs_no_aws_configuration_and_holds_only_what_runs_in_lambda(package: Path) -> None:
    with zipfile.ZipFile(package / "deployment.zip") as archive:
        names = set(archive.namelist())
    tops = {name.split("/")[0] for name in names}
    assert {"app.py", "chalicelib", "chalice", "pynamodb", "botocore", "cryptography"} <= tops
    assert not tops & {"tooling", "tests", "benchmarks", "pip", "setuptools", "click", "yaml", "inquirer"}
    assert {n for n in names if n.startswith("chalice/") and not n.startswith("chalice/__pycache__/")} == {
        "chalice/__init__.py", "chalice/app.py"}
    models = {n.split("/")[2] for n in names if n.startswith("botocore/data/") and n.count("/") > 2}
    assert models == {"dynamodb", "ssm", "sns"}  # the services the functions' policies allow


def test_every_source_ships_with_unchecked_hash_bytecode_of_itself(package: Path) -> None:
    with zipfile.ZipFile(package / "deployment.zip") as archive:
        names = set(archive.namelist())
        sources = sorted(n for n in names if n.endswith(".py"))
        assert len(sources) > 500
        for source in sources:
            cached = importlib.util.cache_from_source(source)
            assert cached in names, f"no bytecode for {source}"
            header = archive.read(cached)[:16]
            assert header[:4] == importlib.util.MAGIC_NUMBER, source  # compiled by this Python: 3.11
            assert int.from_bytes(header[4:8], "little") == 0b01, source  # hash-based, not checked
            assert header[8:16] == importlib.util.source_hash(archive.read(source)), source
        orphans = [n for n in names if n.endswith(".pyc")
                   and re.sub(r"__pycache__/([^/]+)\.cpython-311\.pyc$", r"\1.py", n) not in names]
        assert orphans == []


def test_the_template_transforms_and_lints_with_one_stage_and_what_moto_cannot_show(
        cfn: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "cfn.json"
    path.write_text(json.dumps(cfn))
    lint = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(path)], capture_output=True,
                          text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    resources = cfn["Resources"]
    by_type: dict[str, list[str]] = {}
    for name, resource in resources.items():
        by_type.setdefault(resource["Type"], []).append(name)
    (stage,) = [resources[n]["Properties"] for n in by_type["AWS::ApiGateway::Stage"]]
    assert stage["StageName"] == "api"
    assert "StageName" not in resources[by_type["AWS::ApiGateway::Deployment"][0]]["Properties"]  # no "Stage" stage
    assert stage["MethodSettings"] == [{"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": 20.0,
                                        "ThrottlingBurstLimit": 40}]
    body = resources["RestAPI"]["Properties"]["Body"]
    assert body["x-amazon-apigateway-gateway-responses"]["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    assert sorted(by_type["AWS::CloudWatch::Alarm"]) == sorted(
        ["Api5xxAlarm", "DeadLettersAlarm"] + [f"{t.removesuffix('Table')}ThrottledAlarm" for t in by_type[
            "AWS::DynamoDB::Table"]]
        + [f"{f.alarm_prefix}{kind}Alarm" for f in template.FUNCTIONS for kind in ("Errors", "Throttles")])
    (mapping,) = [resources[n]["Properties"] for n in by_type["AWS::Lambda::EventSourceMapping"]]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]  # partial batch responses
    queue = resources["ProvisioningQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * resources["ProvisionQueue"]["Properties"]["Timeout"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    (invoke_config,) = [resources[n]["Properties"] for n in by_type["AWS::Lambda::EventInvokeConfig"]]
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["ProvisioningDeadLetterQueue", "Arn"]}
    (rule,) = [resources[n]["Properties"] for n in by_type["AWS::Events::Rule"]]
    assert rule["EventPattern"] == {"detail-type": ["OrderPlaced"]}
    sessions = resources["SessionTable"]["Properties"]
    assert sessions["TimeToLiveSpecification"] == {"AttributeName": "purge_at", "Enabled": True}
    assert all(resources[n]["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
               for n in by_type["AWS::DynamoDB::Table"])


# --- the stack in moto, and the package under its policy ---------------------------------

@dataclass
class Deployed:
    moto: harness.MotoServer
    cfn: dict[str, Any]
    removed: list[str]
    admin: dict[str, str]
    function_env: dict[str, str]
    function_policy: dict[str, Any]
    stack: dict[str, Any]
    environments: dict[str, dict[str, str]] = field(default_factory=dict)
    results_queue: str = ""
    answers: list["Answer"] = field(default_factory=list)
    peak_kb: int = 0
    logs: str = ""
    task_root_changed: dict[str, Any] = field(default_factory=dict)
    license_valid: bool = False


def _operator_cli(moto: harness.MotoServer, admin: dict[str, str], *args: str,
                  stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The operator CLI against the stack in moto, as a deployer runs it against AWS."""
    env = harness.without_aws_configuration()
    env.update({"AWS_ENDPOINT_URL": moto.url, "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": admin["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": admin["SecretAccessKey"]})
    return subprocess.run([sys.executable, "-m", "tooling.cli", "--stage", "dev", *args], cwd=harness.PROJECT,
                          env=env, input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def deployed(package: Path, cfn: dict[str, Any]) -> Iterator[Deployed]:
    adapted, removed = harness.adapt_for_moto(cfn)
    with harness.MotoServer() as moto:
        root = {"AccessKeyId": "setup", "SecretAccessKey": "setup"}  # before IAM is enforced
        iam_client = moto.client("iam", root)
        admin = harness.iam_user(iam_client, "deployer", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
        s3 = moto.client("s3", admin)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.upload_file(str(package / "deployment.zip"), BUCKET, KEY)
        cloudformation = moto.client("cloudformation", admin)
        cloudformation.create_stack(StackName="keyturn-dev", TemplateBody=json.dumps(adapted),
                                    Capabilities=["CAPABILITY_IAM"])
        assert cloudformation.describe_stacks(StackName="keyturn-dev")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
        environments, policies = {}, {}
        for function in template.FUNCTIONS:  # an IAM user per function, holding exactly its role's policy
            properties = cfn["Resources"][function.logical]["Properties"]
            policies[function.logical] = policy = iam.resolve(
                cfn["Resources"][function.role]["Properties"]["Policies"][0]["PolicyDocument"],
                region=REGION, account=ACCOUNT)
            user = harness.iam_user(iam_client, function.suffix, harness.as_moto_checks_it(policy))
            variables = {name: harness.resolve_ref(value, adapted_stack_refs(moto, admin))
                         for name, value in properties["Environment"]["Variables"].items()}
            environments[function.logical] = {
                "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": ":UTC", **variables,
                "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_LAMBDA_FUNCTION_NAME": properties["FunctionName"],
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(properties["MemorySize"]),
                "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11", "_HANDLER": properties["Handler"],
                "AWS_ACCESS_KEY_ID": user["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": user["SecretAccessKey"],
                "AWS_ENDPOINT_URL": moto.url}  # the one thing real Lambda does not have: moto stands in for AWS
        for args in (("init-secrets",), ("set-password", "admin", "--password", PASSWORD)):
            result = _operator_cli(moto, admin, *args)
            assert result.returncode == 0, result.stderr
        stack = _observe_stack(moto, admin, cfn)
        results = _subscribe_results(moto, admin)
        yield Deployed(moto, cfn, removed, admin, environments["APIHandler"], policies["APIHandler"], stack,
                       environments=environments, results_queue=results)


def adapted_stack_refs(moto: harness.MotoServer, admin: dict[str, str]) -> dict[str, str]:
    """What ``Ref`` of each resource of the stack gives (its physical id), as CloudFormation would resolve it."""
    resources = moto.client("cloudformation", admin).list_stack_resources(StackName="keyturn-dev")
    return {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources["StackResourceSummaries"]}


def _subscribe_results(moto: harness.MotoServer, admin: dict[str, str]) -> str:
    """A queue subscribed to the results topic, standing in for the shop's mailer."""
    sqs, sns = moto.client("sqs", admin), moto.client("sns", admin)
    queue = sqs.create_queue(QueueName="shop-mailer")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:keyturn-dev-notifications"
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return str(queue)


@dataclass(frozen=True)
class Answer:
    step: str
    status: int
    content_type: str
    location: str
    body: str


Send = Callable[[str, str, dict[str, str], str | None], tuple[int, dict[str, str], str]]


def _field(text: str, *path: str) -> str:
    """A value from a JSON answer, or "(missing)": a failed step must not hide the steps after it."""
    try:
        value: Any = json.loads(text)
        for name in path:
            value = next(iter(value)) if name == "<first>" else value[name]
        return str(value)
    except (ValueError, KeyError, TypeError, StopIteration, IndexError):
        return "(missing)"


def run_flows(send: Send, license_key: str, activation_key: str) -> tuple[list[Answer], dict[str, str]]:
    """Every route once, the README's flows among them; returns the answers and the values they carried."""
    seen: dict[str, str] = {"license_key": license_key, "activation_key": activation_key}
    answers: list[Answer] = []
    json_type = {"Content-Type": "application/json"}

    def step(name: str, method: str, path: str, headers: dict[str, str] | None = None,
             body: str | None = None) -> str:
        status, response_headers, text = send(method, path, headers or {}, body)
        answers.append(Answer(name, status, response_headers.get("content-type", ""),
                              response_headers.get("location", ""), text))
        return text

    step("version", "GET", "/api/v1/version")
    step("auth providers", "GET", "/api/v1/auth-providers")
    login = step("login", "POST", "/api/v1/sessions", json_type,
                 json.dumps({"username": "admin", "password": PASSWORD, "provider": "Local"}))
    seen["session"] = _field(login, "sessionId")
    auth = {"Authorization": f"Bearer {seen['session']}"}
    step("current session", "GET", "/api/v1/sessions/current", auth)
    step("add key", "POST", "/api/v1/licenses", {**auth, **json_type}, json.dumps({"key": license_key}))
    listed = step("list keys", "GET", "/api/v1/licenses", auth)
    seen["license_id"] = _field(listed, "licenses", "<first>")
    step("get key", "GET", f"/api/v1/licenses/{seen['license_id']}", auth)
    step("delete key", "DELETE", f"/api/v1/licenses/{seen['license_id']}", auth)
    license_path = f"/rest/v1/licenses/{activation_key}/{HOST_SEGMENT}"
    step("activate", "PUT", license_path)
    step("activation queue", "GET", f"/rest/v1/license-queue/{activation_key}/{HOST_SEGMENT}")
    seen["license_file"] = _field(step("download", "GET", license_path), "content")
    step("licenses in a state", "GET", f"/rest/v1/licenses/{activation_key}?state=success")
    step("order", "GET", f"/rest/v1/license-orders/{activation_key}")
    step("order head", "HEAD", f"/rest/v1/license-orders/{activation_key}")
    step("license errors", "GET", f"/rest/v1/license-errors/{activation_key}/{HOST_SEGMENT}")
    signing_keys = json.loads(step("signing keys", "GET", "/rest/v1/signing-keys") or "{}").get("keys") or [{}]
    seen["public_key"] = str(signing_keys[0].get("publicKey", "(missing)"))
    step("deactivate", "DELETE", license_path)
    step("logout", "DELETE", "/api/v1/sessions/current", auth)
    step("after logout", "GET", "/api/v1/licenses", auth)
    return answers, seen


def normalised(answers: list[Answer], seen: dict[str, str], bases: list[str]) -> list[Answer]:
    """The answers with what differs between any two runs replaced: ids, keys, times, signatures, base URL."""
    def clean(text: str) -> str:
        for base in bases:
            text = text.replace(base, "<BASE>")
        for name in ("session", "license_id", "license_key", "activation_key", "public_key"):
            text = text.replace(seen[name], f"<{name}>")
        text = re.sub(r"[A-Za-z0-9+/_-]{40,}={0,2}", "<b64>", text)  # signatures, kids' keys
        text = re.sub(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<uuid>", text)
        text = re.sub(r"\b[0-9a-f]{16}\b", "<kid>", text)
        text = re.sub(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?(\+00:00|Z)?)?", "<time>", text)
        text = re.sub(r"\d{4}_\d{2}_\d{2}-\d{2}_\d{2}", "<time>", text)
        return re.sub(r"\b\d{10,}\b", "<ms>", text)

    return [Answer(a.step, a.status, a.content_type, clean(a.location), clean(a.body)) for a in answers]


@pytest.fixture(scope="module")
def lambda_run(deployed: Deployed, package: Path, sam: dict[str, Any],
               tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    license_key = _operator_cli(deployed.moto, deployed.admin, "mint-key", "--type", "OSI", "--count", "10",
                                "--expires", "2027-12-31").stdout.strip().splitlines()[-1]
    order = _operator_cli(deployed.moto, deployed.admin, "create-order", "-", stdin=json.dumps(ORDER_CUSTOM))
    assert order.returncode == 0, order.stderr
    activation_key = order.stdout.strip().splitlines()[-1]
    task_root = tmp_path_factory.mktemp("task")
    harness.unzip(package / "deployment.zip", task_root)
    before = harness.snapshot(task_root)
    python = harness.runtime_python(Path(sys.prefix) / "lambda-runtime")
    deployed.moto.enforce_iam()
    routes = harness.Routes(sam["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"])
    function = harness.LambdaProcess(python, task_root, {**deployed.function_env, "LAMBDA_TASK_ROOT": str(task_root)})
    try:
        def send(method: str, path: str, headers: dict[str, str], body: str | None) -> tuple[int, dict[str, str], str]:
            response = function.call({"event": harness.proxy_event(routes, method, path, headers, body)})["response"]
            answer_headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
            answer_headers.setdefault("content-type", "application/json")  # what API Gateway adds when none is set
            return response["statusCode"], answer_headers, response.get("body") or ""

        deployed.answers, seen = run_flows(send, license_key, activation_key)
        deployed.peak_kb = function.call({"peak": True})["vmhwm_kb"]
    finally:
        deployed.logs = function.close()
    after = harness.snapshot(task_root)
    deployed.task_root_changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                                  if before.get(k) != after.get(k)}
    deployed.license_valid = seen["public_key"] != "(missing)" and verifier.verify_license(
        seen["license_file"], [verifier.load_public_key(seen["public_key"])], hostids="CUSTOM=a").valid
    deployed.answers = normalised(deployed.answers, seen, [f"https://{harness.HOST}/{harness.STAGE}"])
    return deployed


ORDER_CUSTOM = {**DESIGN_ORDER, "hostid": {"types": [{"nameRaw": "CUSTOM", "min": 1, "max": 1}], "min": 1}}


@pytest.fixture(scope="module")
def local_answers(tmp_path_factory: pytest.TempPathFactory) -> list[Answer]:
    stack = LocalStack(tmp_path_factory.mktemp("local") / "state", admin_password=PASSWORD).start()
    try:
        minted = cli(stack.state_dir, "mint-key", "--type", "OSI", "--count", "10", "--expires", "2027-12-31")
        order = cli(stack.state_dir, "create-order", "-", stdin=json.dumps(ORDER_CUSTOM))
        assert minted.returncode == 0 and order.returncode == 0, minted.stderr + order.stderr

        def send(method: str, path: str, headers: dict[str, str], body: str | None) -> tuple[int, dict[str, str], str]:
            response = requests.request(method, stack.url + path, headers=headers, data=body, timeout=30,
                                        allow_redirects=False)
            return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.text

        answers, seen = run_flows(send, minted.stdout.strip().splitlines()[-1], order.stdout.strip().splitlines()[-1])
    finally:
        stack.stop()
    return normalised(answers, seen, [stack.url])


def test_the_stack_creates_every_table_function_role_and_api_method(deployed: Deployed, sam: dict[str, Any]) -> None:
    cfn, seen = deployed.cfn, deployed.stack
    skipped = sorted(f"{n} ({r['Type']})" for n, r in cfn["Resources"].items() if r["Type"] in harness.SKIPPED_BY_MOTO)
    assert deployed.removed == [*skipped, "RestAPI.Body (turned into Resource/Method resources)"]
    for resource in (r for r in cfn["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"):
        wanted = resource["Properties"]
        table = seen["tables"][wanted["TableName"]]
        assert table["KeySchema"] == wanted["KeySchema"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert [(i["IndexName"], i["KeySchema"]) for i in table.get("GlobalSecondaryIndexes", [])] == [
            (i["IndexName"], i["KeySchema"]) for i in wanted.get("GlobalSecondaryIndexes", [])]
    for function in template.FUNCTIONS:
        found, properties = seen["functions"][function.logical], cfn["Resources"][function.logical]["Properties"]
        assert (found["Runtime"], found["Handler"], found["MemorySize"], found["Timeout"]) == (
            "python3.11", properties["Handler"], properties["MemorySize"], properties["Timeout"])
        assert found["Environment"]["Variables"] == {
            k: harness.resolve_ref(v, seen["refs"]) for k, v in properties["Environment"]["Variables"].items()}
        assert seen["role_policies"][function.logical] == [f"{function.role}Policy"]
    assert seen["functions"]["APIHandler"]["Handler"] == "app.app"
    assert seen["log_groups"] == sorted((f"/aws/lambda/keyturn-dev-{f.suffix}", 14) for f in template.FUNCTIONS)
    assert seen["queues"] == ["keyturn-dev-provisioning", "keyturn-dev-provisioning-dlq"]
    assert seen["mappings"] == [(f"arn:aws:sqs:{REGION}:{ACCOUNT}:keyturn-dev-provisioning",
                                 f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:keyturn-dev-provision-queue")]
    swagger = sam["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    assert seen["methods"] == {(path, method.upper()) for path, operations in swagger.items() for method in operations}
    assert sorted(seen["topics"]) == [f"arn:aws:sns:{REGION}:{ACCOUNT}:keyturn-dev-{name}"
                                      for name in ("alarms", "notifications")]


def _observe_stack(moto: harness.MotoServer, admin: dict[str, str], cfn: dict[str, Any]) -> dict[str, Any]:
    """What the stack created, read back before IAM is enforced (moto's Lambda API fails SigV4 checks)."""
    dynamodb = moto.client("dynamodb", admin)
    tables = {r["Properties"]["TableName"]: dynamodb.describe_table(TableName=r["Properties"]["TableName"])["Table"]
              for r in cfn["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"}
    lambda_client, iam_client = moto.client("lambda", admin), moto.client("iam", admin)
    functions = {f.logical: lambda_client.get_function(FunctionName=f"keyturn-dev-{f.suffix}")["Configuration"]
                 for f in template.FUNCTIONS}
    groups = moto.client("logs", admin).describe_log_groups(logGroupNamePrefix="/aws/lambda/keyturn-dev-")
    sqs = moto.client("sqs", admin)
    apigateway = moto.client("apigateway", admin)
    (api,) = [a for a in apigateway.get_rest_apis()["items"] if a["name"] == "keyturn-dev"]
    return {
        "tables": tables, "functions": functions, "refs": adapted_stack_refs(moto, admin),
        "role_policies": {name: iam_client.list_role_policies(RoleName=f["Role"].rsplit("/", 1)[1])["PolicyNames"]
                          for name, f in functions.items()},
        "log_groups": sorted((g["logGroupName"], g.get("retentionInDays")) for g in groups["logGroups"]),
        "queues": sorted(url.rsplit("/", 1)[1] for url in sqs.list_queues().get("QueueUrls", [])),
        "mappings": [(m["EventSourceArn"], m["FunctionArn"])
                     for m in lambda_client.list_event_source_mappings()["EventSourceMappings"]],
        "methods": {(r["path"], m) for r in apigateway.get_resources(restApiId=api["id"], limit=500)["items"]
                    for m in r.get("resourceMethods", {})},
        "topics": [t["TopicArn"] for t in moto.client("sns", admin).list_topics()["Topics"]],
    }


def test_the_package_answers_every_route_under_its_own_policy_as_the_local_stack_does(
        lambda_run: Deployed, local_answers: list[Answer]) -> None:
    refused = sorted(set(re.findall(r"is not authorized to perform: [\w:]+", lambda_run.logs)))
    assert refused == [], f"the function's policy refused calls its code makes: {refused}"
    statuses = [(a.step, a.status) for a in lambda_run.answers]
    assert statuses == [
        ("version", 200), ("auth providers", 200), ("login", 200), ("current session", 200), ("add key", 201),
        ("list keys", 200), ("get key", 200), ("delete key", 200), ("activate", 202), ("activation queue", 303),
        ("download", 200), ("licenses in a state", 200), ("order", 200), ("order head", 200),
        ("license errors", 404), ("signing keys", 200), ("deactivate", 204), ("logout", 200), ("after logout", 401)]
    assert lambda_run.answers == local_answers
    assert lambda_run.license_valid  # the downloaded file verifies offline for CUSTOM=a


def test_the_package_writes_nothing_to_its_read_only_task_root(lambda_run: Deployed) -> None:
    assert lambda_run.task_root_changed == {}


def test_memory_leaves_a_quarter_above_the_peak_of_a_process_that_served_every_route(lambda_run: Deployed) -> None:
    configured_mb = template.deployment("dev").memory_mb
    peak_mb = lambda_run.peak_kb / 1024
    print(f"peak RSS after every route once: {peak_mb:.1f} MB; configured {configured_mb} MB")
    assert lambda_run.peak_kb > 0
    assert configured_mb >= 1.25 * peak_mb


def test_the_function_is_refused_what_its_policy_does_not_grant(lambda_run: Deployed) -> None:
    """The enforcement is real: the function's credentials cannot make calls its policy has no action for."""
    creds = {"AccessKeyId": lambda_run.function_env["AWS_ACCESS_KEY_ID"],
             "SecretAccessKey": lambda_run.function_env["AWS_SECRET_ACCESS_KEY"]}
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="not authorized to perform: dynamodb:ListTables"):
        lambda_run.moto.client("dynamodb", creds).list_tables()
    with pytest.raises(ClientError, match="not authorized to perform: ssm:PutParameter"):
        lambda_run.moto.client("ssm", creds).put_parameter(Name="/keyturn/dev/x", Value="x", Type="String")



# --- the provisioning functions, under their own policies -----------------------------------

PROVISIONED_LINE = {**ORDER_CUSTOM, "orderId": "offline-1", "lineItem": "1", "kind": "license-order"}
KEY_LINE = {"orderId": "offline-1", "lineItem": "2", "kind": "license-key", "customer": {"name": "Zoë Ltd"},
            "typeEnum": "CPU", "count": 4, "expirationDate": None}


def _run_function(deployed: Deployed, package: Path, logical: str, events: list[dict[str, Any]],
                  task_root: Path) -> tuple[list[Any], str]:
    if not any(task_root.iterdir()):
        harness.unzip(package / "deployment.zip", task_root)
    python = harness.runtime_python(Path(sys.prefix) / "lambda-runtime")
    deployed.moto.enforce_iam()
    function = harness.LambdaProcess(python, task_root,
                                     {**deployed.environments[logical], "LAMBDA_TASK_ROOT": str(task_root)})
    try:
        answers = [function.call({"event": event})["response"] for event in events]
    finally:
        logs = function.close()
    return answers, logs


def _refused(logs: str) -> list[str]:
    return sorted(set(re.findall(r"is not authorized to perform: [\w:]+", logs)))


def _sqs(*bodies: Any) -> dict[str, Any]:
    return {"Records": [{"messageId": f"offline-msg-{i}", "receiptHandle": "rh", "eventSource": "aws:sqs",
                         "body": body if isinstance(body, str) else json.dumps(body), "attributes": {},
                         "messageAttributes": {}, "md5OfBody": "", "awsRegion": REGION,
                         "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:keyturn-dev-provisioning"}
                        for i, body in enumerate(bodies)]}


def test_the_provisioning_functions_provision_once_under_their_own_policies(
        deployed: Deployed, package: Path, tmp_path: Path) -> None:
    batch = _sqs(PROVISIONED_LINE, "{not json", PROVISIONED_LINE, {**PROVISIONED_LINE, "lineItem": "3", "bulkMax": 0})
    (queue_answer, again), queue_logs = _run_function(deployed, package, "ProvisionQueue", [batch, batch], tmp_path)
    assert _refused(queue_logs) == []
    assert queue_answer == again == {"batchItemFailures": []}
    event = {"version": "0", "id": "offline-evt", "detail-type": "OrderPlaced", "source": "com.example.shop",
             "account": ACCOUNT, "time": "2026-12-01T00:00:00Z", "region": REGION, "resources": [], "detail": KEY_LINE}
    (first, second), events_logs = _run_function(deployed, package, "ProvisionEvents", [event, event], tmp_path)
    assert _refused(events_logs) == []
    assert first == second and first["ok"] is True and first["results"][0]["kind"] == "license-key"
    admin = deployed.moto.client("dynamodb", deployed.admin)
    orders = admin.scan(TableName="keyturn-dev-orders")["Items"]
    assert [o["bulk_max"]["N"] for o in orders if o.get("external_order_id", {}).get("S") == "keyturn#offline-1"] == ["5"]
    lines = {i["line_item"]["S"]: json.loads(i["result"]["S"])["status"]
             for i in admin.scan(TableName="keyturn-dev-provisioning")["Items"] if i["order_key"]["S"] == "keyturn#offline-1"}
    assert lines == {"1": "provisioned", "2": "provisioned", "3": "rejected"}
    sqs = deployed.moto.client("sqs", deployed.admin)
    published = []
    while True:
        batch_of = sqs.receive_message(QueueUrl=deployed.results_queue, MaxNumberOfMessages=10).get("Messages", [])
        if not batch_of:
            break
        published += [json.loads(m["Body"]) for m in batch_of]
    assert {(p["lineItem"], p["status"]) for p in published if p.get("orderId") == "offline-1"} == {
        ("1", "provisioned"), ("2", "provisioned"), ("3", "rejected")}


def test_the_operator_function_serves_its_sample_events_under_its_own_policy(
        deployed: Deployed, package: Path, tmp_path: Path) -> None:
    samples = harness.PROJECT / "events" / "operator"
    created_event = json.loads((samples / "create-order.json").read_text())
    (created,), logs = _run_function(deployed, package, "Operator", [created_event], tmp_path)
    assert created["ok"] is True, created
    key = created["result"]["activationKey"]
    events = [{**json.loads((samples / f"{name}.json").read_text()), "activationKey": key}
              for name in ("show-order", "disable-order", "enable-order")]
    events.append(json.loads((samples / "mint-key.json").read_text()))
    events.append({"action": "show-order", "activationKey": "not a key"})
    answers, more_logs = _run_function(deployed, package, "Operator", events, tmp_path)
    assert _refused(logs + more_logs) == []
    assert [(a["ok"], a.get("action")) for a in answers] == [
        (True, "show-order"), (True, "disable-order"), (True, "enable-order"), (True, "mint-key"), (False, None)]
    assert [a["result"]["enabled"] for a in answers[:3]] == [True, False, True]
    assert answers[-1] == {"ok": False, "error": {"code": "invalid_activation_key",
                                                  "message": "Invalid activation key specified."}}
