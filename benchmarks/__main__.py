"""``make bench``: every figure against its target, in one run; a table and a verdict on stdout, nothing else.

1. DynamoDB requests and capacity units per operation (``benchmarks.operations``),
   against the design's floors (or the floor the code is held to, with its reason);
2. dollars per million operations and for a monthly mix (``benchmarks.prices``);
3. cold start of the deployed package against a bare Chalice + boto3 package
   (``benchmarks.coldstart``), with and without shipped bytecode;
4. handler overhead against a bare boto3 handler making the same DynamoDB calls;
5. peak RSS of the deployed package after every route, and per route (``benchmarks.memory``);
6. parallel activations on one order on the local stack (``benchmarks.concurrency``).

Everything the run logs (the handlers' JSON lines, the stacks' output) goes to
``build/bench.log``.  Writes ``benchmarks/results.json`` and ``docs/benchmarks.md``
(``--out DIR`` writes both into DIR instead; ``--size tiny`` is the smoke test's size:
seconds, not minutes, and figures that mean little).  Exit status 0 when every
target is met, 1 when one is missed, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

SIZES: dict[str, dict[str, Any]] = {
    "full": {"repeats": 15, "coldstart_runs": 11, "levels": (1, 8, 32), "requests": 96, "seats": 64},
    "tiny": {"repeats": 1, "coldstart_runs": 1, "levels": (1, 2), "requests": 4, "seats": 2},
}


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[int]:
    """File descriptors 1 and 2 (ours and every child's) go to ``log``; yields a descriptor of the real stdout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    with log.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield saved_out
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_err)


def clean_environment(state: Path) -> Any:
    for name in [n for n in os.environ if n.startswith(("AWS_", "KEYTURN_"))]:
        del os.environ[name]
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    from chalicelib import config

    return config.Settings(stage="test", table_prefix="keyturn-bench-", region="us-east-1", local_dir=state,
                           public_base_url="https://license.example.com")


def measure(size: dict[str, Any], state: Path) -> dict[str, Any]:
    import subprocess

    from benchmarks import coldstart, concurrency, memory, operations
    from tests.deploy import harness
    from tooling import template

    found: dict[str, Any] = {"memory_mb": template.deployment("dev").memory_mb}
    print("== operations (in process, moto)", flush=True)
    found.update(operations.run(clean_environment(state), size["repeats"]))
    with tempfile.TemporaryDirectory(prefix="keyturn-bench-package-") as work:
        out = Path(work) / "dev"
        print("== package", flush=True)
        subprocess.run([sys.executable, "-m", "tooling.package", "--stage", "dev", "--out", str(out), "--no-lint"],
                       cwd=PROJECT, env=harness.without_aws_configuration(), check=True)
        sam = json.loads((out / "sam.json").read_text())
        python = harness.runtime_python(Path(sys.prefix) / "lambda-runtime")
        print("== cold start", flush=True)
        found["coldstart"] = coldstart.measure(out / "deployment.zip", sam, python, size["coldstart_runs"])
        print("== memory", flush=True)
        task_root = Path(work) / "task"
        harness.unzip(out / "deployment.zip", task_root)
        found["memory"] = memory.run(task_root, sam, python)
    print("== concurrency (local stack)", flush=True)
    found["concurrency"] = concurrency.run(size["levels"], size["requests"], size["seats"])
    return found


def figures(found: dict[str, Any]) -> list[Any]:
    from benchmarks import prices
    from benchmarks.report import Figure

    result: list[Figure] = []
    memory_mb = found["memory_mb"]
    by_name = {op["name"]: op for op in found["operations"]}
    for op in found["operations"]:
        measured = f"{op['requests']}; {op['rru']:g} RRU, {op['wru']:g} WRU"
        if not op["ok"]:
            measured = f"unexpected answer {op['result'][:80]}; {measured}"
        result.append(Figure("DynamoDB", op["name"], op["floor"], measured, op["reads"] + op["writes"], "requests",
                             op["ok"] and op["within_floor"],
                             {"reason": op["floor_reason"], "rru": op["rru"], "wru": op["wru"]}))
    costs = {name: prices.per_operation(op, memory_mb) for name, op in by_name.items()}
    for name, cost in costs.items():
        op = by_name[name]
        gateway = "" if op["billed_as"] == "api" else f" (no API Gateway; {op['billed_as']})"
        result.append(Figure("$ per million", name, "reported",
                             f"${cost['total_rest'] * 1e6:.2f} REST / ${cost['total_http'] * 1e6:.2f} HTTP API"
                             f"{gateway}; Lambda {op['duration_ms']:.0f} ms, {op['logged_bytes']} B logged",
                             cost["total_rest"] * 1e6, "USD per million operations", None,
                             {k: v * 1e6 for k, v in cost.items()}))
    mix_rest = sum(count * costs[name]["total_rest"] for name, count in prices.MONTHLY_MIX.items())
    mix_http = sum(count * costs[name]["total_http"] for name, count in prices.MONTHLY_MIX.items())
    result.append(Figure("$ per month", "the stated mix (docs/benchmarks.md)", "reported",
                         f"${mix_rest:,.2f} REST / ${mix_http:,.2f} HTTP API", mix_rest, "USD per month", None,
                         {"mix": prices.MONTHLY_MIX, "rest": mix_rest, "http": mix_http}))
    cold = found["coldstart"]
    for name, ratio in cold["ratios"].items():
        for what, label in (("import", "import app"), ("first_requests", "import app + first request of each API")):
            keyturn_ms = cold["medians_ms"][name][what]
            result.append(Figure("cold start", f"{label}, {name}", "<= 1.3x bare",
                                 f"{ratio[what]:.2f}x ({keyturn_ms:.0f} ms)", ratio[what], "ratio",
                                 ratio[what] <= 1.3))
    sdk = cold["runtime_sdk_ratio"]
    result.append(Figure("cold start", "import app + first requests, keyturn with the runtime's boto3", "reported",
                         f"{sdk['first_requests']:.2f}x bare", sdk["first_requests"], "ratio", None))
    for case in found["overhead"]:
        result.append(Figure("handler overhead", case["name"], "<= 1.5x bare boto3 handler",
                             f"{case['ratio']:.2f}x ({1000 / case['keyturn_ms']:.0f} vs {1000 / case['bare_ms']:.0f} "
                             f"requests/s in process)",
                             case["ratio"], "ratio", case["ratio"] <= 1.5))
    mem = found["memory"]
    limit = memory_mb * 0.75
    errors = mem["server_errors"]
    measured = f"{mem['peak_mb']:.0f} MB ({mem['peak_mb'] / memory_mb:.0%} of {memory_mb} MB)"
    if errors:
        measured += f"; 5xx from {', '.join(errors)}"
    result.append(Figure("memory", "peak RSS after every route once (deployed runtime)",
                         f"<= {limit:.0f} MB (25 % under {memory_mb} MB)", measured, mem["peak_mb"], "MB",
                         mem["peak_mb"] <= limit and not errors))
    rises = sorted(mem["steps"], key=lambda s: -s["rise_mb"])[:3]
    result.append(Figure("memory", "largest rises per route", "reported",
                         f"import {mem['after_import_mb']:.0f} MB; "
                         + ", ".join(f"{s['route']} +{s['rise_mb']:.1f}" for s in rises), mem["after_import_mb"],
                         "MB", None))
    for level in found["concurrency"]["levels"]:
        result.append(Figure(
            "concurrency", f"{level['clients']} clients, {level['requests']} activations on bulkMax "
                           f"{level['bulk_max']}",
            f"exactly {level['bulk_max']} activated",
            f"{level['granted']} granted, counter {level['counter']}, stored {level['stored']}; "
            f"{level['requests_per_second']:.0f} req/s, p50 {level['p50_ms']:.0f} ms, p99 {level['p99_ms']:.0f} ms",
            level["requests_per_second"], "requests per second", bool(level["invariant"])))
    return result


def sections(found: dict[str, Any]) -> str:
    """The generated detail of docs/benchmarks.md: floors, costs, prices, cold start, memory per route."""
    from benchmarks import prices

    memory_mb = found["memory_mb"]
    lines = ["## DynamoDB requests per operation, and the floor each is held to", "",
             "| operation | floor | measured | RRU | WRU | why the floor is what it is |", "|---|---|---|---|---|---|"]
    for op in found["operations"]:
        lines.append(f"| {op['name']} | {op['floor']} | {op['requests']} | {op['rru']:g} | {op['wru']:g} | "
                     f"{op['floor_reason']} |")
    lines += ["", "## Dollars per million operations", "",
              f"At the configured {memory_mb} MB, x86_64, at each operation's measured duration (the median of "
              "its repeats in process on this machine: see the notes below for why Lambda's would differ) "
              "and at the bytes its handlers logged.", "",
              "| operation | Lambda ms | logged bytes | API Gateway REST | API Gateway HTTP | SQS or EventBridge | "
              "Lambda | DynamoDB reads | DynamoDB writes | CloudWatch Logs | total (REST) | total (HTTP API) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for op in found["operations"]:
        c = {k: v * 1e6 for k, v in prices.per_operation(op, memory_mb).items()}
        lines.append(f"| {op['name']} | {op['duration_ms']:.1f} | {op['logged_bytes']} | "
                     f"${c['api_gateway_rest']:.2f} | ${c['api_gateway_http']:.2f} | ${c['sqs'] + c['eventbridge']:.2f} | "
                     f"${c['lambda_requests'] + c['lambda_duration']:.2f} | ${c['dynamodb_reads']:.3f} | "
                     f"${c['dynamodb_writes']:.2f} | ${c['cloudwatch_logs']:.4f} | ${c['total_rest']:.2f} | "
                     f"${c['total_http']:.2f} |")
    by_name = {op["name"]: op for op in found["operations"]}
    lines += ["", "### A month", "", "| operation | per month | REST | HTTP API |", "|---|---|---|---|"]
    total_rest = total_http = 0.0
    for name, count in prices.MONTHLY_MIX.items():
        c = prices.per_operation(by_name[name], memory_mb)
        total_rest += count * c["total_rest"]
        total_http += count * c["total_http"]
        lines.append(f"| {name} | {count:,} | ${count * c['total_rest']:,.2f} | ${count * c['total_http']:,.2f} |")
    lines += [f"| **total** | | **${total_rest:,.2f}** | **${total_http:,.2f}** |", "",
              "SQS is counted as three requests a message (sent, received, deleted, in batches of one), EventBridge "
              "as one event published.  Not in these sums: DynamoDB storage and backups (point-in-time recovery), "
              "Lambda's empty long-poll receives on the queue, SNS for published results, CloudWatch metrics and "
              "alarms, data transfer, free tiers, and Lambda's own START/END/REPORT log lines (not measured here).",
              "",
              "### The licensing services a vendor would otherwise pay", "",
              "| service | how it charges | list price at these volumes | source |", "|---|---|---|---|"]
    for service in prices.SERVICES:
        lines.append(f"| {service['service']} | {service['model']} | {service['price']} | {service['source']} |")
    lines += ["", "### Prices used", "",
              f"Region {prices.REGION}, on-demand, USD, first tier; read on {prices.READ_ON} from stored copies of "
              "public pages (this machine has no internet access).", "", "| price | USD | source |", "|---|---|---|"]
    for price in prices.PRICES.values():
        lines.append(f"| {price['what']} | {price['usd']:.10f}".rstrip("0").rstrip(".") + f" | {price['source']} |")
    lines += ["", prices.TRANSACTIONS + ".", "", "**HTTP API with Chalice.** " + prices.HTTP_API_WITH_CHALICE, ""]
    cold = found["coldstart"]
    lines += ["## Cold start (deployed package, Lambda-like runtime)", "",
              f"Median of {cold['runs']} fresh processes each, alternated in every round.", "",
              "| package | zip MB | import app (ms) | + first request of each API (ms) | the same, CPU ms | "
              "ratio to bare, wall (CPU) |", "|---|---|---|---|---|---|"]
    for name, median in cold["medians_ms"].items():
        size = cold["zip_bytes"].get(name)
        ratio = cold["ratios"].get(name)
        ratio_text = (f"{ratio['import']:.2f} ({ratio['import_cpu']:.2f}), "
                      f"{ratio['first_requests']:.2f} ({ratio['first_requests_cpu']:.2f})") if ratio else "-"
        lines.append(f"| {name} | {f'{size / 1e6:.1f}' if size else '-'} | {median['import']:.0f} | "
                     f"{median['first_requests']:.0f} | {median['import_cpu']:.0f}, "
                     f"{median['first_requests_cpu']:.0f} | {ratio_text} |")
    mem = found["memory"]
    lines += ["", "## Memory per route (deployed package, one process, every route once)", "",
              f"Peak RSS after `import app`: {mem['after_import_mb']:.1f} MB.", "",
              "| route | status | peak RSS after it (MB) | rise (MB) | wall ms |", "|---|---|---|---|---|"]
    for step in mem["steps"]:
        lines.append(f"| {step['route']} (`{step['method']} {step['path']}`) | {step['status']} | "
                     f"{step['peak_mb']:.1f} | {step['rise_mb']:.1f} | {step['ms']:.0f} |")
    lines += ["", "## Handler overhead", "", "| request | keyturn ms | bare boto3 ms | ratio | the bare handler's calls |",
              "|---|---|---|---|---|"]
    for case in found["overhead"]:
        lines.append(f"| {case['name']} | {case['keyturn_ms']:.2f} | {case['bare_ms']:.2f} | {case['ratio']:.2f} | "
                     f"{', '.join(case['calls'])} |")
    lines += ["", "## Concurrency (local stack)", "",
              "| clients | activations | bulkMax | 202 | 403 | other | counter | stored | req/s | p50 ms | p99 ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for level in found["concurrency"]["levels"]:
        lines.append(f"| {level['clients']} | {level['requests']} | {level['bulk_max']} | {level['granted']} | "
                     f"{level['refused']} | {level['other']} | {level['counter']} | {level['stored']} | "
                     f"{level['requests_per_second']:.1f} | {level['p50_ms']:.0f} | {level['p99_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--out", type=Path, help="write results.json and benchmarks.md here "
                                                 "(default: benchmarks/results.json and docs/benchmarks.md)")
    parser.add_argument("--log", type=Path, default=PROJECT / "build" / "bench.log")
    args = parser.parse_args(argv)
    from benchmarks import report

    started, wall = datetime.now(timezone.utc), time.monotonic()
    context = {"machine": report.machine(), "versions": report.versions()}
    args.log.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="keyturn-bench-") as state, output_to(args.log) as stdout:
        try:
            found = measure(SIZES[args.size], Path(state))
            measured = figures(found)
        except Exception:
            traceback.print_exc()
            found = {}
    if not found:
        sys.stderr.write(f"make bench failed; the log: {args.log}\n")
        return 2
    context["run"] = {"date": started.strftime("%Y-%m-%d %H:%M"), "commit": report.commit(), "size": args.size,
                      "seconds": time.monotonic() - wall}
    data = report.results(measured, context)
    data["details"] = {key: value for key, value in found.items()}
    for op in data["details"]["operations"]:
        op["calls"] = [call["operation"] for call in op["calls"]]
    from benchmarks import prices

    data["prices"] = {"region": prices.REGION, "read_on": prices.READ_ON, "list": prices.PRICES,
                      "transactions": prices.TRANSACTIONS, "http_api_with_chalice": prices.HTTP_API_WITH_CHALICE,
                      "services": prices.SERVICES, "monthly_mix": prices.MONTHLY_MIX}
    results_path = (args.out / "results.json") if args.out else PROJECT / "benchmarks" / "results.json"
    docs_path = (args.out / "benchmarks.md") if args.out else PROJECT / "docs" / "benchmarks.md"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    docs_path.parent.mkdir(parents=True, exist_ok=True)
    report.write_json(results_path, data)
    notes = (PROJECT / "benchmarks" / "notes.md").read_text()
    docs_path.write_text(report.markdown(data, sections(found) + "\n" + notes))
    os.write(stdout, (report.table(measured) + "\n" + report.verdict(measured) + "\n").encode())
    os.close(stdout)
    return 0 if all(f.passed is not False for f in measured) else 1


if __name__ == "__main__":
    sys.exit(main())
