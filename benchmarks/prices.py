"""List prices (US East (N. Virginia), us-east-1, on-demand, USD) and where each was read.

This machine cannot reach the internet: every price was read on 2026-12-02 from stored
copies of public pages (their own dates given where they state one).  Check them at
https://aws.amazon.com/pricing/ before relying on them.  First-tier prices only (the
volumes below stay in the first tier); free tiers are left out.
"""

from __future__ import annotations

from typing import Any

READ_ON = "2026-12-02"
REGION = "us-east-1"

PRICES: dict[str, dict[str, Any]] = {
    "api_gateway_rest_per_million": {
        "usd": 3.50, "what": "API Gateway REST API, per million requests (first 333 million a month)",
        "source": "https://docs.aws.amazon.com/whitepapers/latest/best-practices-api-gateway-private-apis-integration/"
                  "cost-optimization.html (AWS whitepaper, Table 4; stored copy at the pt_br address; undated)"},
    "api_gateway_http_per_million": {
        "usd": 1.00, "what": "API Gateway HTTP API, per million requests (first 300 million a month; "
                             "metered in 512 KB increments)",
        "source": "the same AWS whitepaper, Table 4 (us-east-1); also https://www.learnaws.org/2021/01/10/"
                  "api-gateway-pricing/ (2021-01-10)"},
    "lambda_requests_per_million": {
        "usd": 0.20, "what": "Lambda, per million requests",
        "source": "https://cloudchipr.com/blog/aws-lambda-pricing (\"Ultimate Guide 2024\", US East)"},
    "lambda_gb_second": {
        "usd": 0.0000166667, "what": "Lambda x86_64 duration, per GB-second (first 6 billion GB-s a month; "
                                     "billed per 1 ms)",
        "source": "https://cloudchipr.com/blog/aws-lambda-pricing (2024, US East); the 1 ms rounding from "
                  "aws.amazon.com/lambda/pricing/ as stored"},
    "dynamodb_wru_per_million": {
        "usd": 0.625, "what": "DynamoDB on-demand, per million write request units (after the November 2024 cut)",
        "source": "https://airbyte.com/data-engineering-resources/dynamodb-pricing (2025-07-21, US East); "
                  "the cut: aws.amazon.com/blogs/aws/amazon-dynamodb-on-demand-no-capacity-planning-and-pay-per-"
                  "request-pricing (updated 2025-01-31)"},
    "dynamodb_rru_per_million": {
        "usd": 0.125, "what": "DynamoDB on-demand, per million read request units",
        "source": "https://airbyte.com/data-engineering-resources/dynamodb-pricing (2025-07-21, US East)"},
    "sqs_standard_per_million": {
        "usd": 0.40, "what": "SQS standard queue, per million requests (64 KB each; first 100 billion a month)",
        "source": "https://cloudburn.io/blog/amazon-sqs-pricing (2026-03-14, US East)"},
    "eventbridge_event_per_million": {
        "usd": 1.00, "what": "EventBridge custom or partner event published, per million (64 KB each)",
        "source": "https://cloudburn.io/blog/amazon-eventbridge-pricing (2026-03-13, US East); "
                  "https://blog.awsfundamentals.com/aws-eventbridge-pricing-guide"},
    "cloudwatch_logs_ingest_per_gb": {
        "usd": 0.50, "what": "CloudWatch Logs ingestion, standard class, per GB (taken as 10^9 bytes)",
        "source": "https://c3x.dev/blog/cloudwatch-logs-cost-optimization (\"us-east-1, June 2026\")"},
}

TRANSACTIONS = ("Transactional reads and writes take two units per item: aws.amazon.com/dynamodb/pricing/provisioned "
                "as stored (key terms, the same units on demand) and https://cloudblogcenter.com/2020/06/02/"
                "aws-dynamodb-capacity-management/ (on-demand read request units)")

HTTP_API_WITH_CHALICE = (
    "Chalice deploys REST APIs only: an HTTP API (API Gateway v2) is an open feature request "
    "(https://github.com/aws/chalice/issues/1321, open since 2019-12-10; "
    "https://github.com/aws/chalice/issues/1880, 2022-01-30: \"there is not\").  Using one means writing the "
    "HTTP API, its routes and integration into the template ourselves (payload format 1.0, which Chalice's "
    "handler reads), and giving up what only REST APIs have and this deployment uses: Gateway Responses, "
    "which answer API Gateway's own errors (throttled, too large, ...) in each API's error format "
    "(tooling/template.py).  Stage throttling exists on HTTP APIs too.")

# What a vendor would otherwise pay, at the same volumes.  None of these publish a price
# per activation in the stored material; what was found is said, nothing is invented.
SERVICES: list[dict[str, str]] = [
    {"service": "Keygen (keygen.sh, Cloud)",
     "model": "subscription tiers (Dev, Std, Ent) metered by active licensed users (ALUs: unique licenses that "
              "validate in a billing period), not by API request",
     "price": "not found: the stored pricing summaries name the tiers but no dollar figures",
     "source": "https://raw.githubusercontent.com/api-evangelist/keygen/refs/heads/main/plans/"
               "keygen-plans-pricing.yml (2026-07-01: \"not reconciled to specific dollar figures\"); keygen.sh/pricing "
               "itself is not in the stored material"},
    {"service": "Cryptlex",
     "model": "plans by number of activations (\"if your plan allows for 5000 activations ...\"; ten trial "
              "activations count as one); billed monthly in advance",
     "price": "not found in the stored material",
     "source": "https://cryptlex.com/help/activation; https://cryptlex.com/refund (undated)"},
    {"service": "LicenseSpring",
     "model": "not found",
     "price": "not found in the stored material",
     "source": "searched licensespring.com pages (metered licensing, basic concepts): no prices"},
    {"service": "AWS License Manager",
     "model": "no charge of its own (you pay for the AWS resources you run); its managed entitlements grant "
              "licenses to customers' AWS accounts, so it serves buyers who have one, not offline or "
              "desktop activation by host id",
     "price": "$0",
     "source": "https://aws.amazon.com/license-manager/pricing/ (as stored, undated)"},
]

# A month as a vendor might see it; every operation's count, per month.
MONTHLY_MIX: dict[str, int] = {
    "new activation": 1_000_000,
    "repeat activation": 1_000_000,
    "download": 10_000_000,
    "deactivation": 100_000,
    "shop event: Shopify orders/paid, one line (EventBridge)": 100_000,
    "login": 10_000,
    "list keys": 10_000,
    "add key": 10_000,
}


def usd(name: str) -> float:
    return float(PRICES[name]["usd"])


def per_operation(op: dict[str, Any], memory_mb: int) -> dict[str, float]:
    """Dollars for one operation, by component, at the measured duration and logged bytes."""
    import math

    duration_ms = math.ceil(op["duration_ms"] or 0)  # Lambda bills per started millisecond
    api = op["billed_as"] == "api"
    parts = {
        # SQS: the message sent, received and deleted (batches of one; Lambda's empty long-poll receives not counted)
        "sqs": 3 * usd("sqs_standard_per_million") / 1e6 if op["billed_as"] == "sqs" else 0.0,
        "eventbridge": usd("eventbridge_event_per_million") / 1e6 if op["billed_as"] == "eventbridge" else 0.0,
        "api_gateway_rest": usd("api_gateway_rest_per_million") / 1e6 if api else 0.0,
        "api_gateway_http": usd("api_gateway_http_per_million") / 1e6 if api else 0.0,
        "lambda_requests": usd("lambda_requests_per_million") / 1e6,
        "lambda_duration": memory_mb / 1024 * duration_ms / 1000 * usd("lambda_gb_second"),
        "dynamodb_reads": op["rru"] * usd("dynamodb_rru_per_million") / 1e6,
        "dynamodb_writes": op["wru"] * usd("dynamodb_wru_per_million") / 1e6,
        "cloudwatch_logs": op["logged_bytes"] / 1e9 * usd("cloudwatch_logs_ingest_per_gb"),
    }
    common = sum(v for k, v in parts.items() if not k.startswith("api_gateway"))
    parts["total_rest"] = common + parts["api_gateway_rest"]
    parts["total_http"] = common + parts["api_gateway_http"]
    return parts
