"""The CloudFormation that ``chalice package`` does not write, merged into its SAM template.

``make package STAGE=dev`` merges this into Chalice's template (Chalice merges dicts
key by key and replaces everything else), so a stage deploys as one stack:

- one DynamoDB table per model, generated from the PynamoDB models (the keys and
  indexes the code queries): on-demand, point-in-time recovery, encryption at rest,
  TTL on sessions; ``RetainExceptOnCreate`` (a failed first deploy can be retried, a
  deleted stack never deletes licenses), ``Retain`` on replacement, deletion protection
  where the stage asks for it;
- each function's fixed name, memory, timeout, its own role (``tooling.iam``) and its
  log group with the stage's retention (Chalice 1.34's ``log_retention_in_days`` names a
  resource that does not exist);
- the REST API's name, ``OpenApiVersion`` (else SAM adds a second public stage named
  ``Stage``), stage throttling, and Gateway Responses in the APIs' error formats;
- the provisioning queue (partial batch responses, a dead-letter queue after five
  receives, a visibility timeout six times the function's), the EventBridge rule
  (``detail-type`` ``OrderPlaced`` from any source unless the stage says otherwise) with
  an on-failure destination, and the results topic;
- alarms (Lambda errors and throttles per function, API 5XX, DynamoDB throttled
  requests, dead letters waiting) on a topic.

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

TTL_ATTRIBUTES = {"Session": "purge_at", "RateLimit": "purge_at"}
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
    provisioning_event_pattern: dict[str, Any]
    shopify_event_source: str | None = None  # aws.partner/shopify.com/<app id>/<name>, associated with its bus
    stripe_event_source: str | None = None  # aws.partner/stripe.com/<destination id>


SHOPIFY_PATTERN = {"source": [{"prefix": "aws.partner/shopify.com/"}], "detail-type": ["shopifyWebhook"]}
STRIPE_PATTERN = {"source": [{"prefix": "aws.partner/stripe.com/"}], "detail-type": [
    "checkout.session.completed", "checkout.session.async_payment_succeeded", "invoice.paid",
    "customer.subscription.deleted", "charge.refunded"]}


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
        provisioning_event_pattern=extra.get("provisioning_event_pattern") or {"detail-type": ["OrderPlaced"]},
        shopify_event_source=_partner_source(extra, "shopify_event_source", "aws.partner/shopify.com/"),
        stripe_event_source=_partner_source(extra, "stripe_event_source", "aws.partner/stripe.com/"),
    )


def _partner_source(extra: dict[str, Any], name: str, prefix: str) -> str | None:
    value = extra.get(name) or None
    if value is not None and (not isinstance(value, str) or not value.startswith(prefix)):
        raise SystemExit(f"keyturn_deploy.{name} must be the partner event source's name, {prefix}..., "
                         f"not {value!r}")
    return value


def _shop_rules(d: Deployment) -> dict[str, Any]:
    """A rule on each partner event bus that is configured, delivering to the provisioning queue."""
    resources: dict[str, Any] = {}
    rules = []
    for logical, shop, source, pattern in (("ShopifyEventsRule", "shopify", d.shopify_event_source, SHOPIFY_PATTERN),
                                           ("StripeEventsRule", "stripe", d.stripe_event_source, STRIPE_PATTERN)):
        if source is None:
            continue
        name = f"keyturn-{d.stage}-{shop}"
        resources[logical] = {"Type": "AWS::Events::Rule", "Properties": {
            "Name": name, "EventBusName": source, "EventPattern": pattern, "State": "ENABLED",
            "Description": f"{shop.capitalize()} events to Keyturn's provisioning queue",
            "Targets": [{"Id": "provisioning-queue", "Arn": {"Fn::GetAtt": [QUEUE, "Arn"]}}]}}
        resources[f"{logical}FailedAlarm"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmName": f"{name}-failed-invocations",
            "AlarmDescription": f"EventBridge could not deliver {shop.capitalize()} events to the provisioning queue",
            "Namespace": "AWS/Events", "MetricName": "FailedInvocations",
            "Dimensions": [{"Name": "EventBusName", "Value": source}, {"Name": "RuleName", "Value": name}],
            "Statistic": "Sum", "Period": 300, "EvaluationPeriods": 1, "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": "AlarmTopic"}], "OKActions": [{"Ref": "AlarmTopic"}]}}
        rules.append({"Fn::GetAtt": [logical, "Arn"]})
    if rules:
        resources["ProvisioningQueuePolicy"] = {"Type": "AWS::SQS::QueuePolicy", "Properties": {
            "Queues": [{"Ref": QUEUE}], "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Sid": "ShopEvents", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": [QUEUE, "Arn"]},
                "Condition": {"ArnEquals": {"aws:SourceArn": rules}}}]}}}
    return resources


def table_resource(model: Any, d: Deployment) -> dict[str, Any]:
    schema = model._get_schema()  # from the model's attributes: no connection, no region
    properties: dict[str, Any] = {
        "TableName": d.table_prefix + model.Meta.table_suffix,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": schema["attribute_definitions"],
        "KeySchema": _hash_first(schema["key_schema"]),
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
        "DeletionProtectionEnabled": d.deletion_protection,
    }
    if schema["global_secondary_indexes"]:
        properties["GlobalSecondaryIndexes"] = [
            {"IndexName": index["index_name"], "KeySchema": _hash_first(index["key_schema"]),
             "Projection": index["projection"]}
            for index in schema["global_secondary_indexes"]
        ]
    ttl = TTL_ATTRIBUTES.get(model.__name__)
    if ttl:
        properties["TimeToLiveSpecification"] = {"AttributeName": ttl, "Enabled": True}
    return {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "RetainExceptOnCreate",
            "UpdateReplacePolicy": "Retain", "Properties": properties}


def _hash_first(key_schema: list[dict[str, str]]) -> list[dict[str, str]]:
    """CloudFormation wants the HASH key first; PynamoDB lists keys in no fixed order."""
    return sorted(key_schema, key=lambda key: key["KeyType"] != "HASH")


def _gateway_response(status: int | None, message: str) -> dict[str, Any]:
    # One body for both APIs: Log Insight clients read errorMessage, LAC clients message
    # (API Gateway's own key).  Gateway Responses cannot tell the two prefixes apart.
    # No status: the response keeps API Gateway's own (a 403 stays a 403).
    body = json.dumps({"errorMessage": message, "message": message})
    response: dict[str, Any] = {"ResponseTemplates": {"application/json": body}}
    if status is not None:
        response["StatusCode"] = str(status)
    return response


UNKNOWN_ROUTE = _gateway_response(404, "No such resource.")
GATEWAY_RESPONSES = {
    "MISSING_AUTHENTICATION_TOKEN": UNKNOWN_ROUTE,  # an unknown route or method
    "INCOMPLETE_SIGNATURE": UNKNOWN_ROUTE,  # the same with an Authorization header (no route signs with SigV4)
    "THROTTLED": _gateway_response(429, "Too many requests."),
    "REQUEST_TOO_LARGE": _gateway_response(413, "The request is too large."),
    "DEFAULT_4XX": _gateway_response(None, "The request was refused."),
    "DEFAULT_5XX": _gateway_response(None, "Internal server error."),
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


def _throttled_requests_alarm(table: dict[str, Any]) -> dict[str, Any]:
    """Throttled reads or writes on one table or its indexes (a metric-math alarm takes at most 10 metrics)."""
    name = table["Properties"]["TableName"]
    scopes = [[{"Name": "TableName", "Value": name}]] + [
        [{"Name": "TableName", "Value": name}, {"Name": "GlobalSecondaryIndexName", "Value": index["IndexName"]}]
        for index in table["Properties"].get("GlobalSecondaryIndexes", [])]
    metrics: list[dict[str, Any]] = [
        {"Id": f"m{i * 2 + j}", "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": "AWS/DynamoDB", "MetricName": f"{kind}ThrottleEvents", "Dimensions": dimensions},
            "Period": 300, "Stat": "Sum"}}
        for i, dimensions in enumerate(scopes) for j, kind in enumerate(("Read", "Write"))]
    metrics.append({"Id": "throttled", "Expression": "SUM(METRICS())", "ReturnData": True,
                    "Label": f"throttled reads and writes on {name}"})
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmName": f"{name}-throttled",
        "AlarmDescription": f"DynamoDB throttled reads or writes on {name} or its indexes",
        "Metrics": metrics, "EvaluationPeriods": 1, "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching",
        "AlarmActions": [{"Ref": "AlarmTopic"}], "OKActions": [{"Ref": "AlarmTopic"}],
    }}


@dataclass(frozen=True)
class Function:
    """One Lambda function of the package: Chalice's logical id, its name suffix, its grants."""

    logical: str
    suffix: str  # keyturn-<stage>-<suffix>
    grants: iam.FunctionGrants
    role: str
    log_group: str
    alarm_prefix: str


FUNCTIONS = (
    Function(API_FUNCTION, "api", iam.API, API_ROLE, "ApiHandlerLogGroup", "Api"),
    Function("ProvisionQueue", "provision-queue", iam.PROVISION_QUEUE, "ProvisionQueueRole",
             "ProvisionQueueLogGroup", "ProvisionQueue"),
    Function("ProvisionEvents", "provision-events", iam.PROVISION_EVENTS, "ProvisionEventsRole",
             "ProvisionEventsLogGroup", "ProvisionEvents"),
    Function("Operator", "operator", iam.OPERATOR, "OperatorRole", "OperatorLogGroup", "Operator"),
)
NOTIFICATIONS_TOPIC, QUEUE, DEAD_LETTER_QUEUE = "NotificationsTopic", "ProvisioningQueue", "ProvisioningDeadLetterQueue"
MAX_RECEIVES = 5  # deliveries of a message before it moves to the dead-letter queue
RETENTION_S = 14 * 24 * 3600  # SQS's longest


def _function_resources(function: Function, d: Deployment) -> dict[str, Any]:
    name = f"keyturn-{d.stage}-{function.suffix}"
    policy = iam.policy_document(function.grants, table_prefix=d.table_prefix, ssm_prefix=d.ssm_prefix,
                                 function_name=name, kms_key_arn=d.ssm_kms_key_arn, name_prefix=f"keyturn-{d.stage}-")
    properties: dict[str, Any] = {
        "FunctionName": name,  # fixed, so the role can name its log group without a cycle
        "MemorySize": d.memory_mb, "Timeout": d.timeout_s,
        "Role": {"Fn::GetAtt": [function.role, "Arn"]},  # the stages set manage_iam_role false: the role is ours
    }
    if function.grants.topics:
        properties["Environment"] = {"Variables": {"KEYTURN_NOTIFICATIONS_TOPIC_ARN": {"Ref": NOTIFICATIONS_TOPIC}}}
    return {
        function.logical: {"Properties": properties, "DependsOn": [function.log_group]},
        function.role: {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
            "Policies": [{"PolicyName": f"{function.role}Policy", "PolicyDocument": policy}]}},
        function.log_group: {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete", "Properties": {
            "LogGroupName": f"/aws/lambda/{name}", "RetentionInDays": d.log_retention_days}},
        f"{function.alarm_prefix}ErrorsAlarm": _alarm(
            f"{name}-errors", f"The {function.suffix} function failed (an unhandled error)", "AWS/Lambda", "Errors",
            {"FunctionName": name}),
        f"{function.alarm_prefix}ThrottlesAlarm": _alarm(
            f"{name}-throttles", f"Lambda throttled the {function.suffix} function", "AWS/Lambda", "Throttles",
            {"FunctionName": name}),
    }


def _provisioning_resources(d: Deployment) -> dict[str, Any]:
    queue_name = f"keyturn-{d.stage}-provisioning"
    return {
        NOTIFICATIONS_TOPIC: {"Type": "AWS::SNS::Topic",
                        "Properties": {"TopicName": f"keyturn-{d.stage}-notifications"}},
        QUEUE: {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": queue_name,
            "VisibilityTimeout": 6 * d.timeout_s,  # AWS's advice for a Lambda event source: six times its timeout
            "MessageRetentionPeriod": RETENTION_S, "SqsManagedSseEnabled": True,
            "RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": [DEAD_LETTER_QUEUE, "Arn"]},
                              "maxReceiveCount": MAX_RECEIVES}}},
        DEAD_LETTER_QUEUE: {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": f"{queue_name}-dlq", "MessageRetentionPeriod": RETENTION_S, "SqsManagedSseEnabled": True}},
        "ProvisionQueue": {"Properties": {"Events": {"Orders": {"Type": "SQS", "Properties": {
            "Queue": {"Fn::GetAtt": [QUEUE, "Arn"]}, "BatchSize": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"]}}}}},
        "ProvisionEvents": {"Properties": {
            "Events": {"OrderPlaced": {"Type": "EventBridgeRule", "Properties": {
                "Pattern": d.provisioning_event_pattern}}},
            "EventInvokeConfig": {"MaximumRetryAttempts": 2, "DestinationConfig": {"OnFailure": {
                "Type": "SQS", "Destination": {"Fn::GetAtt": [DEAD_LETTER_QUEUE, "Arn"]}}}}}},
        "DeadLettersAlarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmName": f"{queue_name}-dead-letters",
            "AlarmDescription": "Provisioning events that kept failing wait in the dead-letter queue",
            "Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": f"{queue_name}-dlq"}],
            "Statistic": "Maximum", "Period": 300, "EvaluationPeriods": 1, "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": "AlarmTopic"}], "OKActions": [{"Ref": "AlarmTopic"}]}},
    }


def _merge(target: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


def template(stage: str) -> dict[str, Any]:
    from chalicelib.models import ALL_MODELS

    d = deployment(stage)
    tables = {f"{model.__name__}Table": table_resource(model, d) for model in ALL_MODELS}
    api_name = f"keyturn-{stage}"
    resources: dict[str, Any] = {
        **tables,
        REST_API: {"Properties": {
            "Name": api_name,
            "OpenApiVersion": "3.0.1",
            "MethodSettings": [{"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": d.throttle_rate,
                                "ThrottlingBurstLimit": d.throttle_burst}],
            "GatewayResponses": GATEWAY_RESPONSES,
        }},
        "AlarmTopic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": f"keyturn-{stage}-alarms"}},
        "Api5xxAlarm": _alarm(f"keyturn-{stage}-api-5xx", "API Gateway answered 5XX",
                              "AWS/ApiGateway", "5XXError", {"ApiName": api_name}),
    }
    for model in ALL_MODELS:
        resources[f"{model.__name__}ThrottledAlarm"] = _throttled_requests_alarm(tables[f"{model.__name__}Table"])
    for function in FUNCTIONS:
        _merge(resources, _function_resources(function, d))
    _merge(resources, _provisioning_resources(d))
    _merge(resources, _shop_rules(d))
    outputs = {f"{name}Name": {"Value": {"Ref": name}} for name in tables}
    outputs.update({"AlarmTopicArn": {"Value": {"Ref": "AlarmTopic"}},
                    "NotificationsTopicArn": {"Value": {"Ref": NOTIFICATIONS_TOPIC}},
                    "ProvisioningQueueUrl": {"Value": {"Ref": QUEUE}}})
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
