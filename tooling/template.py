"""The CloudFormation that ``chalice package`` does not write, merged into its SAM template.

``make package STAGE=dev`` merges this into Chalice's template (Chalice merges dicts
key by key and replaces everything else), so a stage deploys as one stack:

- one DynamoDB table per model, generated from the PynamoDB models (the keys and
  indexes the code queries): on-demand, point-in-time recovery, encryption at rest,
  TTL on sessions; ``RetainExceptOnCreate`` (a failed first deploy can be retried, a
  deleted stack never deletes licenses), ``Retain`` on replacement, deletion protection
  where the stage asks for it;
- the API function's fixed name, memory, timeout, role policy (``tooling.iam``) and its
  log group with the stage's retention (Chalice 1.34's ``log_retention_in_days`` names a
  resource that does not exist);
- the REST API's name, ``OpenApiVersion`` (else SAM adds a second public stage named
  ``Stage``), stage throttling, and Gateway Responses in the APIs' error formats;
- alarms (Lambda errors and throttles, API 5XX, DynamoDB throttled requests) on a topic.

Nothing here depends on the region or the account: ARNs use ``${AWS::Region}`` and
``${AWS::AccountId}``.  Run as ``python -m tooling.template --stage STAGE`` (prints it).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from chalicelib import config
from tooling import iam, stages

TTL_ATTRIBUTES = {"Session": "purge_at"}
API_FUNCTION = "APIHandler"  # Chalice's logical ids
API_ROLE = "ApiHandlerRole"
REST_API = "RestAPI"


@dataclass(frozen=True)
class Deployment:
    """A deployed stage's settings: ``.chalice/config.json``, stage key ``keyturn_deploy``."""

    stage: str
    table_prefix: str
    ssm_prefix: str
    memory_mb: int
    timeout_s: int
    log_retention_days: int
    throttle_rate: float
    throttle_burst: int
    deletion_protection: bool
    ssm_kms_key_arn: str | None

    @property
    def api_function_name(self) -> str:
        return f"keyturn-{self.stage}-api"


def deployment(stage: str) -> Deployment:
    if stage not in stages.DEPLOYED:
        raise SystemExit(f"stage {stage!r} is not deployed; deployed stages: {', '.join(stages.DEPLOYED)}")
    data = stages.chalice_config()
    stage_data = data["stages"][stage]
    env = stages.stage_environment(stage)
    extra = stage_data.get("keyturn_deploy", {})
    return Deployment(
        stage=stage, table_prefix=config.table_prefix(env, stage), ssm_prefix=config.ssm_prefix(env, stage),
        memory_mb=int(stage_data.get("lambda_memory_size", data.get("lambda_memory_size", 128))),
        timeout_s=int(stage_data.get("lambda_timeout", data.get("lambda_timeout", 60))),
        log_retention_days=int(extra["log_retention_days"]), throttle_rate=float(extra["throttle_rate_per_second"]),
        throttle_burst=int(extra["throttle_burst"]), deletion_protection=bool(extra["deletion_protection"]),
        ssm_kms_key_arn=extra.get("ssm_kms_key_arn") or None,
    )


def table_resource(model: Any, d: Deployment) -> dict[str, Any]:
    schema = model._get_schema()  # from the model's attributes: no connection, no region
    properties: dict[str, Any] = {
        "TableName": d.table_prefix + model.Meta.table_suffix,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": schema["attribute_definitions"],
        "KeySchema": schema["key_schema"],
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
        "DeletionProtectionEnabled": d.deletion_protection,
    }
    if schema["global_secondary_indexes"]:
        properties["GlobalSecondaryIndexes"] = [
            {"IndexName": index["index_name"], "KeySchema": index["key_schema"], "Projection": index["projection"]}
            for index in schema["global_secondary_indexes"]
        ]
    ttl = TTL_ATTRIBUTES.get(model.__name__)
    if ttl:
        properties["TimeToLiveSpecification"] = {"AttributeName": ttl, "Enabled": True}
    return {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "RetainExceptOnCreate",
            "UpdateReplacePolicy": "Retain", "Properties": properties}


def _gateway_response(status: int, message: str) -> dict[str, Any]:
    # One body for both APIs: Log Insight clients read errorMessage, LAC clients message
    # (API Gateway's own key).  Gateway Responses cannot tell the two prefixes apart.
    body = json.dumps({"errorMessage": message, "message": message})
    return {"StatusCode": str(status), "ResponseTemplates": {"application/json": body}}


UNKNOWN_ROUTE = _gateway_response(404, "No such resource.")
GATEWAY_RESPONSES = {
    "MISSING_AUTHENTICATION_TOKEN": UNKNOWN_ROUTE,  # an unknown route or method
    "INCOMPLETE_SIGNATURE": UNKNOWN_ROUTE,  # the same with an Authorization header (no route signs with SigV4)
    "THROTTLED": _gateway_response(429, "Too many requests."),
    "REQUEST_TOO_LARGE": _gateway_response(413, "The request is too large."),
    "DEFAULT_4XX": _gateway_response(400, "Bad request."),
    "DEFAULT_5XX": _gateway_response(502, "Internal server error."),
    "INTEGRATION_TIMEOUT": _gateway_response(504, "Internal server error."),
}


def _alarm(name: str, description: str, namespace: str, metric: str, dimensions: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmName": name, "AlarmDescription": description, "Namespace": namespace, "MetricName": metric,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
        "Statistic": "Sum", "Period": 300, "EvaluationPeriods": 1, "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching",
        "AlarmActions": [{"Ref": "AlarmTopic"}], "OKActions": [{"Ref": "AlarmTopic"}],
    }}


def _throttled_requests_alarm(d: Deployment, tables: dict[str, Any]) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = []
    for resource in tables.values():
        for kind in ("Read", "Write"):
            metrics.append({"Id": f"{kind.lower()}{len(metrics)}", "ReturnData": False, "MetricStat": {
                "Metric": {"Namespace": "AWS/DynamoDB", "MetricName": f"{kind}ThrottleEvents",
                           "Dimensions": [{"Name": "TableName", "Value": resource["Properties"]["TableName"]}]},
                "Period": 300, "Stat": "Sum"}})
    metrics.append({"Id": "throttled", "Expression": "SUM(METRICS())", "ReturnData": True,
                    "Label": "throttled reads and writes, all tables"})
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmName": f"keyturn-{d.stage}-dynamodb-throttled",
        "AlarmDescription": "DynamoDB throttled reads or writes on a Keyturn table",
        "Metrics": metrics, "EvaluationPeriods": 1, "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching",
        "AlarmActions": [{"Ref": "AlarmTopic"}], "OKActions": [{"Ref": "AlarmTopic"}],
    }}


def template(stage: str) -> dict[str, Any]:
    from chalicelib.models import ALL_MODELS

    d = deployment(stage)
    tables = {f"{model.__name__}Table": table_resource(model, d) for model in ALL_MODELS}
    policy = iam.policy_document(iam.API, table_prefix=d.table_prefix, ssm_prefix=d.ssm_prefix,
                                 function_name=d.api_function_name, kms_key_arn=d.ssm_kms_key_arn)
    api_name = f"keyturn-{stage}"
    resources: dict[str, Any] = {
        **tables,
        API_FUNCTION: {"Properties": {
            "FunctionName": d.api_function_name,  # fixed, so the role can name its log group without a cycle
            "MemorySize": d.memory_mb, "Timeout": d.timeout_s,
            "Role": {"Fn::GetAtt": [API_ROLE, "Arn"]},  # the stage sets manage_iam_role false: the role is ours
        }, "DependsOn": ["ApiHandlerLogGroup"]},
        API_ROLE: {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
            "Policies": [{"PolicyName": "ApiHandlerRolePolicy", "PolicyDocument": policy}]}},
        "ApiHandlerLogGroup": {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete", "Properties": {
            "LogGroupName": f"/aws/lambda/{d.api_function_name}", "RetentionInDays": d.log_retention_days}},
        REST_API: {"Properties": {
            "Name": api_name,
            "OpenApiVersion": "3.0.1",
            "MethodSettings": [{"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": d.throttle_rate,
                                "ThrottlingBurstLimit": d.throttle_burst}],
            "GatewayResponses": GATEWAY_RESPONSES,
        }},
        "AlarmTopic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": f"keyturn-{stage}-alarms"}},
        "ApiErrorsAlarm": _alarm(f"keyturn-{stage}-api-errors", "The API function failed (an unhandled error)",
                                 "AWS/Lambda", "Errors", {"FunctionName": d.api_function_name}),
        "ApiThrottlesAlarm": _alarm(f"keyturn-{stage}-api-throttles", "Lambda throttled the API function",
                                    "AWS/Lambda", "Throttles", {"FunctionName": d.api_function_name}),
        "Api5xxAlarm": _alarm(f"keyturn-{stage}-api-5xx", "API Gateway answered 5XX",
                              "AWS/ApiGateway", "5XXError", {"ApiName": api_name}),
        "DynamoDBThrottledAlarm": _throttled_requests_alarm(d, tables),
    }
    outputs = {f"{name}Name": {"Value": {"Ref": name}} for name in tables}
    outputs["AlarmTopicArn"] = {"Value": {"Ref": "AlarmTopic"}}
    return {"Resources": resources, "Outputs": outputs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.template", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True)
    args = parser.parse_args(argv)
    json.dump(template(args.stage), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
