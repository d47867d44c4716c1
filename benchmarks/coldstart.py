"""Cold start of the deployed package, against a bare Chalice + boto3 package run the same way.

``python -m benchmarks.coldstart [--runs N]``: builds the package three ways (as shipped;
``--runtime-sdk``, with boto3/botocore from the runtime; as shipped without its
bytecode), unzips each read-only, and times fresh processes of the Lambda-like runtime
of ``tests/deploy`` (a clean Python 3.11 with only boto3/botocore): ``import app``, then
the first request of each API (``GET /api/v1/version``, and a LAC lookup of a malformed
key, a 404 made without any AWS call).  Variants alternate in every round, so the
machine's noise reaches each alike; medians of N rounds, and ratios to the bare package.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tests.deploy import harness

CHILD = r"""
import json, os, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
wall0, cpu0 = time.perf_counter(), cpu()
sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
import app
imported = (time.perf_counter() - wall0, cpu() - cpu0)
events = json.loads(sys.stdin.read())
for event in events:
    response = app.app(event, None)
    assert response["statusCode"] < 500, response
served = (time.perf_counter() - wall0, cpu() - cpu0)
print(json.dumps({"import": imported, "first_requests": served}))
"""

BARE_APP = """from chalice import Chalice
import boto3

app = Chalice(app_name="bare")
dynamodb = boto3.client("dynamodb")


@app.route("/api/v1/version")
def version():
    return {"version": "bare"}


@app.route("/rest/v1/license-orders/{key}")
def order(key):
    return {"key": key}
"""


def build(out: Path, *flags: str) -> Path:
    subprocess.run([sys.executable, "-m", "tooling.package", "--stage", "dev", "--out", str(out), "--no-lint",
                    *flags], cwd=harness.PROJECT, env=harness.without_aws_configuration(), check=True,
                   stdout=subprocess.DEVNULL)
    return out / "deployment.zip"


def without_bytecode(source: Path, target: Path) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if not info.filename.endswith(".pyc"):
                dst.writestr(info, src.read(info))
    return target


def bare_root(shipped_root: Path, root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copytree(shipped_root / "chalice", root / "chalice", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "app.py").write_text(BARE_APP)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keyturn-coldstart-") as work:
        tmp = Path(work)
        shipped = build(tmp / "shipped")
        zips = {"shipped": shipped, "runtime boto3": build(tmp / "runtime-sdk", "--runtime-sdk"),
                "no bytecode": without_bytecode(shipped, tmp / "nopyc.zip")}
        roots: dict[str, Path] = {}
        for name, path in zips.items():
            roots[name] = tmp / f"root-{len(roots)}"
            harness.unzip(path, roots[name])
        roots["bare Chalice+boto3"] = bare_root(roots["shipped"], tmp / "root-bare")
        sam = json.loads((tmp / "shipped" / "sam.json").read_text())
        function = sam["Resources"]["APIHandler"]["Properties"]
        routes = harness.Routes(sam["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"])
        events = json.dumps([harness.proxy_event(routes, "GET", "/api/v1/version", {}, None),
                             harness.proxy_event(routes, "GET", "/rest/v1/license-orders/not-a-key", {}, None)])
        python = harness.runtime_python(Path(sys.prefix) / "lambda-runtime")
        refs = {"NotificationsTopic": f"arn:aws:sns:{harness.REGION}:{harness.ACCOUNT}:keyturn-dev-notifications"}
        variables = {k: harness.resolve_ref(v, refs) for k, v in function["Environment"]["Variables"].items()}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **variables,
               "AWS_REGION": harness.REGION, "AWS_DEFAULT_REGION": harness.REGION, "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
        samples: dict[str, list[dict[str, list[float]]]] = {name: [] for name in roots}
        for _ in range(args.runs + 1):  # the first round warms the page cache and is not counted
            for name, root in roots.items():
                result = subprocess.run([*harness.read_only_as_root(), str(python), "-c", CHILD], input=events,
                                        env={**env, "LAMBDA_TASK_ROOT": str(root)}, capture_output=True, text=True,
                                        check=True, cwd=root)
                samples[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
        sizes = {name: path.stat().st_size for name, path in zips.items()}
    bare = {what: statistics.median(s[what][0] for s in samples["bare Chalice+boto3"][1:])
            for what in ("import", "first_requests")}
    print(f"cold start in the Lambda-like runtime, median of {args.runs} fresh processes each (ms; ratio to bare)")
    print(f"{'package':22} {'zip MB':>7} {'import app':>16} {'+ first request of each API':>30}")
    for name in roots:
        counted = samples[name][1:]
        imported = statistics.median(s["import"][0] for s in counted)
        served = statistics.median(s["first_requests"][0] for s in counted)
        size = f"{sizes[name] / 1e6:.1f}" if name in sizes else "-"
        print(f"{name:22} {size:>7} {imported * 1000:9.0f} ({imported / bare['import']:.2f}x) "
              f"{served * 1000:20.0f} ({served / bare['first_requests']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
