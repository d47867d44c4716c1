"""Cold start of the deployed package, against a bare Chalice + boto3 package made and run the same way.

``python -m benchmarks.coldstart [--runs N]`` prints the table alone.  From the one
package ``tooling.package`` builds (bytecode shipped, unchecked-hash ``.pyc`` beside
every source), five task roots, each unzipped read-only:

- Keyturn as shipped, and as shipped without its bytecode;
- Keyturn with boto3/botocore left to the runtime's own (what ``--runtime-sdk`` leaves
  out, removed from the shipped zip), reported only;
- a bare app: Chalice's runtime module and the same bundled boto3/botocore/... taken
  from the shipped package, with a two-route ``app.py`` that makes a DynamoDB client,
  with its bytecode compiled the same way, and without any.

Each round starts a fresh process of ``tests/deploy``'s runtime interpreter (a clean
Python 3.11 with only boto3/botocore) per root, alternating, so the machine's noise
reaches each alike: ``import app``, then the first request of each API (``GET
/api/v1/version``, and a LAC lookup of a malformed key, a 404 made without any AWS
call).  Medians over the rounds; the first round warms the page cache and is dropped.
Wall time is what is judged (a cold start is waited for); CPU time (user + system) is
recorded beside it, as it moves less with the load of a shared machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import py_compile
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from tests.deploy import harness
from tooling import package

CHILD = r"""
import json, os, resource, sys, time
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
wall0, cpu0 = time.perf_counter(), cpu()
sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
import app
imported, imported_cpu = time.perf_counter() - wall0, cpu() - cpu0
for event in json.loads(sys.stdin.read()):
    response = app.app(event, None)
    assert response["statusCode"] < 500, response
served, served_cpu = time.perf_counter() - wall0, cpu() - cpu0
print(json.dumps({"import": imported, "first_requests": served,
                  "import_cpu": imported_cpu, "first_requests_cpu": served_cpu}))
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

KEYTURN, KEYTURN_NO_PYC = "keyturn, bytecode shipped", "keyturn, no bytecode"
BARE, BARE_NO_PYC = "bare, bytecode shipped", "bare, no bytecode"
RUNTIME_SDK = "keyturn, runtime's boto3"
PAIRS = ((KEYTURN, BARE), (KEYTURN_NO_PYC, BARE_NO_PYC))


def _sdk_entry(name: str) -> bool:
    top = name.split("/")[0]
    return top in package.RUNTIME_SDK or top.startswith(tuple(package.RUNTIME_SDK.values()))


def filtered_zip(source: Path, target: Path, drop: Any) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if not drop(info.filename):
                dst.writestr(info, src.read(info))
    return target


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)


def bare_root(shipped_root: Path, root: Path, bytecode: bool) -> Path:
    """Chalice's module and the bundled SDK from the shipped package, and the bare app.py."""
    root.mkdir(parents=True)
    ignore = None if bytecode else shutil.ignore_patterns("__pycache__")
    for entry in shipped_root.iterdir():
        if entry.name == "chalice" or _sdk_entry(entry.name):
            if entry.is_dir():
                shutil.copytree(entry, root / entry.name, ignore=ignore)
            else:
                shutil.copy2(entry, root / entry.name)
    (root / "app.py").write_text(BARE_APP)
    if bytecode:
        sources = [root / "app.py", *(root / name for name in ("six.py",) if (root / name).exists())]
        for source in sources:
            py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)), doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    _read_only(root)
    return root


def measure(shipped_zip: Path, sam: dict[str, Any], python: Path, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="keyturn-coldstart-") as work:
        tmp = Path(work)
        zips = {KEYTURN: shipped_zip,
                KEYTURN_NO_PYC: filtered_zip(shipped_zip, tmp / "nopyc.zip", lambda n: n.endswith(".pyc")),
                RUNTIME_SDK: filtered_zip(shipped_zip, tmp / "runtime-sdk.zip", _sdk_entry)}
        roots: dict[str, Path] = {}
        for name, path in zips.items():
            roots[name] = tmp / f"root-{len(roots)}"
            harness.unzip(path, roots[name])
        roots[BARE] = bare_root(roots[KEYTURN], tmp / "root-bare", bytecode=True)
        roots[BARE_NO_PYC] = bare_root(roots[KEYTURN], tmp / "root-bare-nopyc", bytecode=False)
        routes = harness.Routes(sam["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"])
        events = json.dumps([harness.proxy_event(routes, "GET", "/api/v1/version", {}, None),
                             harness.proxy_event(routes, "GET", "/rest/v1/license-orders/not-a-key", {}, None)])
        function = sam["Resources"]["APIHandler"]["Properties"]
        refs = {"NotificationsTopic": f"arn:aws:sns:{harness.REGION}:{harness.ACCOUNT}:keyturn-dev-notifications"}
        variables = {k: harness.resolve_ref(v, refs) for k, v in function["Environment"]["Variables"].items()}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **variables,
               "AWS_REGION": harness.REGION, "AWS_DEFAULT_REGION": harness.REGION, "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in roots}
        for _ in range(runs + 1):  # the first round warms the page cache and is not counted
            for name, root in roots.items():
                result = subprocess.run([*harness.read_only_as_root(), str(python), "-c", CHILD], input=events,
                                        env={**env, "LAMBDA_TASK_ROOT": str(root)}, capture_output=True, text=True,
                                        check=True, cwd=root, timeout=120)
                samples[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
        sizes = {name: path.stat().st_size for name, path in zips.items()}
    medians = {name: {what: statistics.median(s[what] for s in counted[1:]) * 1000
                      for what in ("import", "first_requests", "import_cpu", "first_requests_cpu")}
               for name, counted in samples.items()}
    return {"runs": runs, "medians_ms": medians, "zip_bytes": sizes,
            "ratios": {keyturn: {what: medians[keyturn][what] / medians[bare][what]
                                 for what in ("import", "first_requests", "import_cpu", "first_requests_cpu")}
                       for keyturn, bare in PAIRS},
            "runtime_sdk_ratio": {what: medians[RUNTIME_SDK][what] / medians[BARE][what]
                                  for what in ("import", "first_requests")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keyturn-package-") as work:
        out = Path(work) / "dev"
        subprocess.run([sys.executable, "-m", "tooling.package", "--stage", "dev", "--out", str(out), "--no-lint"],
                       cwd=harness.PROJECT, env=harness.without_aws_configuration(), check=True,
                       stdout=subprocess.DEVNULL)
        python = harness.runtime_python(Path(sys.prefix) / "lambda-runtime")
        found = measure(out / "deployment.zip", json.loads((out / "sam.json").read_text()), python, args.runs)
    print(f"median of {args.runs} fresh processes each (ms)")
    for name, median in found["medians_ms"].items():
        print(f"{name:28} import app {median['import']:7.0f}   + first request of each API "
              f"{median['first_requests']:7.0f}")
    for name, ratio in found["ratios"].items():
        print(f"{name:28} ratio to bare: import {ratio['import']:.2f}x, first requests {ratio['first_requests']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
