"""What ``tooling.template`` merges into ``chalice package``: tables, function settings, API, alarms.

The deployment itself is exercised in ``tests/deploy/`` (transformed, created in moto's
CloudFormation, the package run under its own policy); these check the template's
promises quickly, from the generator.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.models import ALL_MODELS
from tooling import template

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_model_gets_an_on_demand_table_retained_except_on_create(stage: str) -> None:
    resources = template.template(stage)["Resources"]
    tables = {name: r for name, r in resources.items() if r.get("Type") == "AWS::DynamoDB::Table"}
    assert set(tables) == {f"{model.__name__}Table" for model in ALL_MODELS}
    for resource in tables.values():
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("RetainExceptOnCreate", "Retain")
        properties = resource["Properties"]
        assert properties["TableName"].startswith(f"keyturn-{stage}-")
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert properties["DeletionProtectionEnabled"] is (stage == "prod")
    assert tables["SessionTable"]["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "purge_at",
                                                                               "Enabled": True}
    assert tables["RateLimitTable"]["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "purge_at",
                                                                                 "Enabled": True}
    assert tables["LicenseKeyTable"]["Properties"]["GlobalSecondaryIndexes"][0]["IndexName"] == "by-id"
    assert [k["AttributeName"] for k in tables["ActivationTable"]["Properties"]["KeySchema"]] == [
        "activation_key", "hostids_key"]


def test_the_api_function_answers_before_api_gateway_gives_up_and_logs_to_its_own_group() -> None:
    resources = template.template("dev")["Resources"]
    function = resources["APIHandler"]["Properties"]
    assert function["FunctionName"] == "keyturn-dev-api"
    assert function["Timeout"] < 29  # API Gateway REST cuts an integration off at 29 s
    assert resources["ApiHandlerLogGroup"]["Properties"] == {"LogGroupName": "/aws/lambda/keyturn-dev-api",
                                                            "RetentionInDays": 14}
    assert template.template("prod")["Resources"]["ApiHandlerLogGroup"]["Properties"]["RetentionInDays"] == 365


def test_the_api_has_one_stage_throttling_and_gateway_answers_in_both_error_formats() -> None:
    api = template.template("dev")["Resources"]["RestAPI"]["Properties"]
    assert api["OpenApiVersion"] == "3.0.1"  # else SAM adds a second public stage named "Stage"
    assert api["MethodSettings"] == [{"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": 20.0,
                                      "ThrottlingBurstLimit": 40}]
    unknown = api["GatewayResponses"]["MISSING_AUTHENTICATION_TOKEN"]
    assert unknown == {"StatusCode": "404", "ResponseTemplates": {
        "application/json": '{"errorMessage": "No such resource.", "message": "No such resource."}'}}
    assert api["GatewayResponses"]["THROTTLED"]["StatusCode"] == "429"
    assert "StatusCode" not in api["GatewayResponses"]["DEFAULT_4XX"]  # a 403 of API Gateway's stays a 403


def test_alarms_watch_errors_throttles_5xx_dynamodb_throttling_and_dead_letters_on_one_topic() -> None:
    resources = template.template("dev")["Resources"]
    alarms = {name: r["Properties"] for name, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Alarm"}
    assert {(a.get("Namespace"), a.get("MetricName")) for a in alarms.values()} == {
        ("AWS/Lambda", "Errors"), ("AWS/Lambda", "Throttles"), ("AWS/ApiGateway", "5XXError"), (None, None),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible")}
    watched = {a["Dimensions"][0]["Value"] for a in alarms.values() if a.get("Namespace") == "AWS/Lambda"}
    assert watched == {"keyturn-dev-api", "keyturn-dev-provision-queue", "keyturn-dev-provision-events",
                       "keyturn-dev-operator"}
    for model in ALL_MODELS:  # one alarm a table: a metric-math alarm takes at most 10 metrics
        throttled = alarms[f"{model.__name__}ThrottledAlarm"]["Metrics"]
        assert len(throttled) <= 11 and throttled[-1]["Expression"] == "SUM(METRICS())"
    by_id = [m["MetricStat"]["Metric"]["Dimensions"] for m in alarms["LicenseKeyThrottledAlarm"]["Metrics"][:-1]]
    assert [{"Name": "TableName", "Value": "keyturn-dev-license-keys"},
            {"Name": "GlobalSecondaryIndexName", "Value": "by-id"}] in by_id  # the index throttles apart
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())


def test_local_stages_are_not_deployed() -> None:
    result = subprocess.run([sys.executable, "-m", "tooling.template", "--stage", "local"], cwd=PROJECT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not deployed" in result.stderr


def test_kms_decrypt_is_granted_only_for_a_customer_key_the_stage_names() -> None:
    from tooling import iam

    def statements(kms_key_arn: str | None) -> dict[str, dict]:
        document = iam.policy_document(iam.API, table_prefix="keyturn-dev-", ssm_prefix="/keyturn/dev/",
                                       function_name="keyturn-dev-api", kms_key_arn=kms_key_arn)
        return {s["Sid"]: s for s in document["Statement"]}

    assert "SecretsKey" not in statements(None)  # the AWS-managed aws/ssm key needs no grant
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert statements(key)["SecretsKey"] == {"Sid": "SecretsKey", "Effect": "Allow", "Action": ["kms:Decrypt"],
                                             "Resource": [key]}
    assert statements(None)["OwnLogGroup"]["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/keyturn-dev-api:*"}]


def test_the_queue_redelivers_only_transient_failures_then_parks_them_in_a_dead_letter_queue() -> None:
    resources = template.template("dev")["Resources"]
    queue = resources["ProvisioningQueue"]["Properties"]
    function = resources["ProvisionQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == 6 * function["Timeout"]
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["ProvisioningDeadLetterQueue", "Arn"]},
                                      "maxReceiveCount": 5}
    assert function["Events"]["Orders"]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    events = resources["ProvisionEvents"]["Properties"]
    assert events["Events"]["OrderPlaced"]["Properties"]["Pattern"] == {"detail-type": ["OrderPlaced"]}
    assert events["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Type"] == "SQS"
    assert function["Environment"] == events["Environment"] == {
        "Variables": {"KEYTURN_NOTIFICATIONS_TOPIC_ARN": {"Ref": "NotificationsTopic"}}}


def test_configured_partner_event_sources_deliver_to_the_provisioning_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    from tooling import stages

    assert "ShopifyEventsRule" not in template.template("dev")["Resources"]  # none configured: no rule
    data = stages.chalice_config()
    data["stages"]["dev"]["keyturn_deploy"].update({
        "shopify_event_source": "aws.partner/shopify.com/4785147/keyturn",
        "stripe_event_source": "aws.partner/stripe.com/ed_61RyQ7mKLt5Zc0VxA16RyPqWeLSQ8Wq0OzSHiT1d6D0y"})
    monkeypatch.setattr(stages, "chalice_config", lambda: data)
    resources = template.template("dev")["Resources"]
    shopify, stripe = resources["ShopifyEventsRule"]["Properties"], resources["StripeEventsRule"]["Properties"]
    assert shopify["EventBusName"] == "aws.partner/shopify.com/4785147/keyturn"
    assert shopify["EventPattern"] == {"source": [{"prefix": "aws.partner/shopify.com/"}],
                                       "detail-type": ["shopifyWebhook"]}
    assert "invoice.paid" in stripe["EventPattern"]["detail-type"]
    for rule in (shopify, stripe):
        assert rule["Targets"] == [{"Id": "provisioning-queue", "Arn": {"Fn::GetAtt": ["ProvisioningQueue", "Arn"]}}]
    (statement,) = resources["ProvisioningQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": [
        {"Fn::GetAtt": ["ShopifyEventsRule", "Arn"]}, {"Fn::GetAtt": ["StripeEventsRule", "Arn"]}]}}
    assert resources["StripeEventsRuleFailedAlarm"]["Properties"]["MetricName"] == "FailedInvocations"
    data["stages"]["dev"]["keyturn_deploy"]["stripe_event_source"] = "stripe"
    with pytest.raises(SystemExit, match="stripe_event_source must be the partner event source's name"):
        template.template("dev")
