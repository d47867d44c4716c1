"""Peak RSS of the deployed package serving every route once, in the Lambda-like runtime, and per route.

The unzipped package runs in ``tests/deploy``'s runtime (a clean Python 3.11 with only
boto3/botocore, read-only task root, the function's own environment from the
template) against a moto server standing in for AWS (no IAM enforcement here: that is
``tests/deploy``'s job).  The routes are ``tests/deploy``'s ``run_flows``, the same
"every route once" the offline deployment test runs; after each one the process
reports its peak resident set (``VmHWM``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.deploy import harness
from tests.deploy.test_offline_deployment import ORDER_CUSTOM, PASSWORD, run_flows

CREATE_TABLES = ("import sys; from chalicelib import config, models; "
                 "config.bind(config.Settings(stage='dev', table_prefix='keyturn-dev-', region=sys.argv[1], "
                 "endpoint_url=sys.argv[2])); models.create_tables()")


def _aws_env(moto: harness.MotoServer) -> dict[str, str]:
    env = harness.without_aws_configuration()
    env.update({"AWS_ENDPOINT_URL": moto.url, "AWS_DEFAULT_REGION": harness.REGION,
                "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    return env


def _cli(moto: harness.MotoServer, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "tooling.cli", "--stage", "dev", *args], cwd=harness.PROJECT,
                            env=_aws_env(moto), input=stdin, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"tooling.cli {' '.join(args[:1])} failed: {result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def function_environment(sam: dict[str, Any], logical: str = "APIHandler") -> dict[str, str]:
    properties = sam["Resources"][logical]["Properties"]
    refs = {"NotificationsTopic": f"arn:aws:sns:{harness.REGION}:{harness.ACCOUNT}:keyturn-dev-notifications"}
    variables = {k: harness.resolve_ref(v, refs) for k, v in properties["Environment"]["Variables"].items()}
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": ":UTC", **variables,
            "AWS_REGION": harness.REGION, "AWS_DEFAULT_REGION": harness.REGION,
            "AWS_LAMBDA_FUNCTION_NAME": "keyturn-dev-api", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(
                properties.get("MemorySize", sam.get("Globals", {}).get("Function", {}).get("MemorySize", 128))),
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11", "_HANDLER": properties["Handler"],
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}


def run(task_root: Path, sam: dict[str, Any], python: Path) -> dict[str, Any]:
    with harness.MotoServer() as moto:
        subprocess.run([sys.executable, "-c", CREATE_TABLES, harness.REGION, moto.url], cwd=harness.PROJECT,
                       env=_aws_env(moto), check=True, capture_output=True, timeout=300)
        _cli(moto, "init-secrets")
        _cli(moto, "set-password", "admin", "--password", PASSWORD)
        license_key = _cli(moto, "mint-key", "--type", "OSI", "--count", "10", "--expires", "2027-12-31")
        activation_key = _cli(moto, "create-order", "-", stdin=json.dumps(ORDER_CUSTOM))
        routes = harness.Routes(sam["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"])
        env = {**function_environment(sam), "AWS_ENDPOINT_URL": moto.url, "LAMBDA_TASK_ROOT": str(task_root)}
        function = harness.LambdaProcess(python, task_root, env)
        started = [moto.process.pid if moto.process else 0, function.process.pid]
        steps: list[dict[str, Any]] = []
        try:
            ready_kb = function.call({"peak": True})["vmhwm_kb"]

            def send(method: str, path: str, headers: dict[str, str], body: str | None) -> tuple[int, dict[str, str],
                                                                                                    str]:
                start = time.perf_counter()
                response = function.call({"event": harness.proxy_event(routes, method, path, headers, body)})
                elapsed = time.perf_counter() - start
                answer = response["response"]
                peak = function.call({"peak": True})["vmhwm_kb"]
                template, _ = routes.match(path.partition("?")[0])
                steps.append({"method": method, "path": template, "status": answer["statusCode"],
                              "peak_mb": peak / 1024, "ms": elapsed * 1000})
                return answer["statusCode"], {k.lower(): v for k, v in answer.get("headers", {}).items()}, \
                    answer.get("body") or ""

            answers, _ = run_flows(send, license_key, activation_key)
        finally:
            function.close()
    previous = ready_kb / 1024
    for step, answer in zip(steps, answers, strict=True):
        step["route"] = answer.step
        step["rise_mb"] = step["peak_mb"] - previous
        previous = step["peak_mb"]
    return {"after_import_mb": ready_kb / 1024, "peak_mb": max(s["peak_mb"] for s in steps), "steps": steps,
            "server_errors": [s["route"] for s in steps if s["status"] >= 500], "started_pids": started}
