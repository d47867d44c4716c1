"""``make package STAGE=dev``: the deployable SAM template and a lean, precompiled Lambda zip.

1. ``tooling.template`` writes what Chalice does not (tables, the role, log group,
   alarms, API settings) to ``build/<stage>-merge.json``;
2. ``chalice package --merge-template`` builds ``build/<stage>/sam.json`` and
   ``deployment.zip`` (the app, ``chalicelib/`` and ``requirements.txt``'s packages as
   Lambda wheels; Chalice adds its own runtime module, ``chalice/app.py``);
3. the zip is rebuilt without the botocore models of services no function calls
   (``tooling.iam.services``: a call to any other service is refused by the role anyway),
   and with bytecode for Python 3.11 beside every source file, compiled
   last, as ``unchecked-hash`` ``.pyc`` files: Lambda's file system is read-only, so
   without them every cold start compiles every module it imports, and an unchecked
   hash makes the interpreter use the ``.pyc`` without looking at the source's time;
   entries are sorted with fixed times, so the same inputs give the same zip;
4. ``cfn-lint`` checks the template; the zip's size is printed.

``chalice package`` asks botocore for a region only to name service principals, which
are the same in every region, so it is given one (no credentials, no AWS calls): the
output does not depend on it, and ``make package`` needs no AWS configuration.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tooling import iam, stages, template

LAMBDA_TASK_ROOT = "/var/task"  # where Lambda unpacks the zip: the paths tracebacks show
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Present in Lambda's Python runtime; --runtime-sdk leaves them out (measured in docs/deploy.md).
RUNTIME_SDK = {"boto3": "boto3-", "botocore": "botocore-", "s3transfer": "s3transfer-", "jmespath": "jmespath-",
               "dateutil": "python_dateutil-", "urllib3": "urllib3-", "six.py": "six-"}  # module: its dist-info


def chalice_package(stage: str, merge: Path, out: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "PYTHONDONTWRITEBYTECODE": "1"})  # no stray chalicelib/__pycache__ in the zip
    chalice = Path(sys.executable).with_name("chalice")
    subprocess.run([str(chalice), "package", "--stage", stage, "--merge-template", str(merge), str(out)],
                   cwd=stages.PROJECT_DIR, env=env, check=True)


def _excluded(name: str, runtime_sdk: bool, services: set[str]) -> bool:
    parts = name.split("/")
    if "__pycache__" in parts or name.endswith((".pyc", ".pyo")):
        return True  # whatever was compiled before is replaced by what is compiled last
    top = parts[0]
    if runtime_sdk and (top in RUNTIME_SDK or top.startswith(tuple(RUNTIME_SDK.values()))):
        return True
    if top in ("botocore", "boto3") and len(parts) > 3 and parts[1] == "data":
        return parts[2] not in services  # models of services no function calls (16 of botocore's 17 MB)
    return False


def precompile(zip_path: Path, runtime_sdk: bool = False) -> dict[str, int]:
    """Rebuild ``zip_path`` with unchecked-hash bytecode for every ``.py``; returns counts and sizes."""
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("the package must be compiled by Python 3.11, the Lambda runtime's version")
    services = set().union(*(iam.services(grants) for grants in iam.FUNCTIONS.values()))
    with tempfile.TemporaryDirectory(prefix="keyturn-package-") as work:
        root = Path(work)
        with zipfile.ZipFile(zip_path) as source:
            modes = {}
            for info in source.infolist():
                if info.is_dir() or _excluded(info.filename, runtime_sdk, services):
                    continue
                source.extract(info, root)
                modes[info.filename] = (info.external_attr >> 16) & 0o777 or 0o644
        sources = sorted(p for p in root.rglob("*.py"))
        for path in sources:  # the last step: no source changes after it
            relative = path.relative_to(root).as_posix()
            py_compile.compile(str(path), cfile=importlib.util.cache_from_source(str(path)),
                               dfile=f"{LAMBDA_TASK_ROOT}/{relative}", doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        temporary = zip_path.with_suffix(".tmp")
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
            for path in files:
                relative = path.relative_to(root).as_posix()
                info = zipfile.ZipInfo(relative, date_time=FIXED_TIME)
                info.external_attr = (0o100000 | (modes.get(relative, 0o644) | 0o444)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(info, path.read_bytes(), compresslevel=9)
        unzipped = sum(p.stat().st_size for p in files)
        os.replace(temporary, zip_path)
    return {"files": len(files), "sources": len(sources), "unzipped": unzipped, "zipped": zip_path.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.package", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--out", type=Path, help="folder for sam.json and deployment.zip (default build/STAGE)")
    parser.add_argument("--runtime-sdk", action="store_true",
                        help="leave boto3/botocore out and use the Lambda runtime's (for measuring; not the default)")
    parser.add_argument("--no-lint", action="store_true", help="skip cfn-lint")
    args = parser.parse_args(argv)
    out: Path = (args.out or stages.PROJECT_DIR / "build" / args.stage).resolve()
    merge = out.parent / f"{args.stage}-merge.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    merge.write_text(json.dumps(template.template(args.stage), indent=2) + "\n")
    if out.exists():
        left = {p.name for p in out.iterdir()}
        if not left <= {"sam.json", "deployment.zip"}:  # never delete a folder this did not write
            raise SystemExit(f"{out} holds other files than a package ({', '.join(sorted(left))}): choose another --out")
        shutil.rmtree(out)
    chalice_package(args.stage, merge, out)
    figures = precompile(out / "deployment.zip", runtime_sdk=args.runtime_sdk)
    if not args.no_lint:
        subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(out / "sam.json")], check=True)
    print(f"{out / 'deployment.zip'}: {figures['zipped'] / 1e6:.1f} MB zipped, {figures['unzipped'] / 1e6:.1f} MB "
          f"unzipped, {figures['files']} files ({figures['sources']} Python sources, each with its .pyc)")
    print(f"{out / 'sam.json'}: deploy with `sam deploy` (docs/deploy.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
