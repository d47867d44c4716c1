"""The offline deployment: package, transform, create in moto's CloudFormation, run under IAM.

What belongs to the test and not to the template (moto's gaps, all listed in
``adapt_for_moto``): moto rejects ``AWS::Serverless::*`` (the template is transformed
first, with aws-sam-translator, as CloudFormation would), wants ``Name`` on the RestApi
(ours has one), ignores ``Body`` (its swagger paths become Resource/Method resources
here), silently skips Stage, GatewayResponse and CloudWatch alarms (removed here, and
checked in the transformed template instead), and checks IAM by action only: it ignores
``Resource`` and wants ``dynamodb:TransactWriteItems`` where AWS authorises the items of
a transaction by their own actions.  Resource scoping is proven by ``tests/test_iam.py``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import requests

from tests.e2e.stack import free_port
from tooling.procs import die_with_parent

PROJECT = Path(__file__).resolve().parents[2]
REGION, ACCOUNT = "eu-west-1", "123456789012"  # not us-east-1: nothing may fall back to a default region
BUCKET, KEY = "keyturn-deploy", "deployment.zip"
SKIPPED_BY_MOTO = ("AWS::ApiGateway::Stage", "AWS::ApiGateway::Deployment", "AWS::CloudWatch::Alarm",
                   "AWS::Lambda::EventInvokeConfig")


def pinned(name: str) -> str:
    for line in (PROJECT / "requirements.txt").read_text().splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.strip()
    raise LookupError(name)


def without_aws_configuration() -> dict[str, str]:
    """This environment with no AWS configuration at all: no variables, no config or credentials file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KEYTURN_"))}
    env.update({"AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-creds",
                "AWS_EC2_METADATA_DISABLED": "true"})
    return env


def build_package(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tooling.package", "--stage", "dev", "--out", str(out)],
                          cwd=PROJECT, env=without_aws_configuration(), capture_output=True, text=True, timeout=900)


def transform(sam: dict[str, Any]) -> dict[str, Any]:
    """SAM → CloudFormation, offline, as CloudFormation's transform would."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = copy.deepcopy(sam)
    for resource in sam["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{BUCKET}/{KEY}"  # what `sam deploy` uploads it as
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    cfn: dict[str, Any] = translator.translate(sam, parameter_values={"AWS::Region": REGION, "AWS::AccountId": ACCOUNT},
                                              get_managed_policy_map=lambda: {})
    return cfn


def _logical(path: str) -> str:
    return "".join(part.capitalize() for part in re.sub(r"[^A-Za-z0-9]+", " ", path).split()) or "Root"


def adapt_for_moto(cfn: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The template moto can create, and what was removed for it."""
    cfn = copy.deepcopy(cfn)
    resources = cfn["Resources"]
    removed = sorted(f"{name} ({r['Type']})" for name, r in resources.items() if r["Type"] in SKIPPED_BY_MOTO)
    for name in [n for n, r in resources.items() if r["Type"] in SKIPPED_BY_MOTO]:
        del resources[name]
    (api_name,) = [n for n, r in resources.items() if r["Type"] == "AWS::ApiGateway::RestApi"]
    body = resources[api_name]["Properties"].pop("Body")
    removed.append(f"{api_name}.Body (turned into Resource/Method resources)")
    for path, operations in body["paths"].items():
        parent: Any = {"Fn::GetAtt": [api_name, "RootResourceId"]}
        segments = path.strip("/").split("/")
        for depth in range(1, len(segments) + 1):
            logical = "Res" + _logical("/".join(segments[:depth]))
            resources.setdefault(logical, {"Type": "AWS::ApiGateway::Resource", "Properties": {
                "RestApiId": {"Ref": api_name}, "ParentId": parent, "PathPart": segments[depth - 1]}})
            parent = {"Ref": logical}
        for method, operation in operations.items():
            integration = operation["x-amazon-apigateway-integration"]
            resources[f"Method{_logical(path)}{method.capitalize()}"] = {"Type": "AWS::ApiGateway::Method", "Properties": {
                "RestApiId": {"Ref": api_name}, "ResourceId": parent, "HttpMethod": method.upper(),
                "AuthorizationType": "NONE", "Integration": {
                    "Type": "AWS_PROXY", "IntegrationHttpMethod": "POST", "Uri": integration["uri"]}}}
    return cfn, removed


class MotoServer:
    """A moto server on 127.0.0.1, in its own process group, stopped by pid."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "MotoServer":
        env = without_aws_configuration()
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/moto-api/", timeout=2)
                return self
            except requests.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError("the moto server exited while starting") from None
                time.sleep(0.2)
        raise RuntimeError("the moto server did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def enforce_iam(self) -> None:
        """From now on every request must be signed by an IAM user and allowed by its policy."""
        response = requests.post(f"{self.url}/moto-api/reset-auth", data=b"0", timeout=10)
        response.raise_for_status()

    def client(self, service: str, credentials: dict[str, str]) -> Any:
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.url,
                            aws_access_key_id=credentials["AccessKeyId"],
                            aws_secret_access_key=credentials["SecretAccessKey"])


def resolve_ref(value: Any, refs: dict[str, str]) -> Any:
    """An environment variable's value as CloudFormation gives it to the function (``Ref`` resolved)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return refs[value["Ref"]]
    return value


def iam_user(iam: Any, name: str, document: dict[str, Any]) -> dict[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def as_moto_checks_it(document: dict[str, Any]) -> dict[str, Any]:
    """The same actions in the form moto evaluates: any resource, transactions by their own action."""
    statements = []
    for statement in document["Statement"]:
        actions = list(statement["Action"])
        if any(a in actions for a in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")):
            actions.append("dynamodb:TransactWriteItems")
        statements.append({"Effect": statement["Effect"], "Action": actions, "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": statements}


def runtime_python(cache: Path) -> Path:
    """A clean Python 3.11 with only boto3 and botocore, as Lambda's runtime has (made once, then reused)."""
    pins = [pinned("boto3"), pinned("botocore")]
    stamp = cache / f".installed-{'-'.join(pins)}"
    python = cache / "bin" / "python"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(cache)], check=True, timeout=300)
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                        "--disable-pip-version-check", *pins], check=True, timeout=600)
        stamp.touch()
    return python


def unzip(zip_path: Path, task_root: Path) -> None:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(task_root)
    for path in [task_root, *task_root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)  # Lambda's task root is read-only


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime) for p in root.rglob("*")}


def read_only_as_root() -> list[str]:
    """A command prefix under which even root cannot write a 0444 file (root ignores file modes)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return []
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


class LambdaProcess:
    """The unzipped package in the runtime interpreter, one event per call (tests/deploy/lambda_runtime.py)."""

    def __init__(self, python: Path, task_root: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([*read_only_as_root(), str(python),
                                         str(Path(__file__).with_name("lambda_runtime.py"))],
                                        cwd=task_root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True,
                                        preexec_fn=die_with_parent)
        assert json.loads(self._line()) == {"ready": True}

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise RuntimeError(f"the function's process died:\n{self.process.stderr.read()[-5000:]}")
        return line

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._line())
        return answer

    def close(self) -> str:
        """Stop it; returns what it logged."""
        assert self.process.stdin is not None and self.process.stderr is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return self.process.stderr.read()


class Routes:
    """The deployed API's routes (the swagger paths), matched as API Gateway matches them."""

    def __init__(self, paths: dict[str, Any]) -> None:
        self.templates = sorted(paths, key=lambda t: (t.count("{"), -len(t)))  # literal segments win

    def match(self, path: str) -> tuple[str, dict[str, str]]:
        for template in self.templates:
            names = re.findall(r"{([^}]+)}", template)
            pattern = "^" + re.sub(r"{[^}]+}", "([^/]+)", template) + "$"
            found = re.match(pattern, path)
            if found:
                return template, dict(zip(names, found.groups(), strict=True))
        raise LookupError(path)


HOST = "abc123defg.execute-api.eu-west-1.amazonaws.com"
STAGE = "api"


def proxy_event(routes: Routes, method: str, path: str, headers: dict[str, str], body: str | None) -> dict[str, Any]:
    """An API Gateway REST proxy integration event (payload version 1.0) for ``method path``."""
    path, _, query = path.partition("?")
    template, parameters = routes.match(path)
    headers = {"Host": HOST, "X-Forwarded-Proto": "https", "User-Agent": "offline-test", **headers}
    query_parameters = dict(pair.split("=", 1) for pair in query.split("&")) if query else None
    return {
        "resource": template, "path": path, "httpMethod": method,
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query_parameters,
        "multiValueQueryStringParameters": {k: [v] for k, v in query_parameters.items()} if query_parameters else None,
        "pathParameters": parameters or None, "stageVariables": None,
        "requestContext": {"resourcePath": template, "httpMethod": method, "path": f"/{STAGE}{path}",
                           "stage": STAGE, "requestId": f"req-{time.monotonic_ns()}", "domainName": HOST,
                           "apiId": "abc123defg", "accountId": ACCOUNT, "identity": {"sourceIp": "198.51.100.7"}},
        "body": body, "isBase64Encoded": False,
    }

