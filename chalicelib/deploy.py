"""The CloudFormation resources Chalice does not create: one DynamoDB table per model.

``make package STAGE=dev`` merges them into ``chalice package``'s SAM template, so a
stage deploys as one CloudFormation stack.  They are generated from the PynamoDB
models, so the tables always have the keys and indexes the code queries: on-demand
billing, point-in-time recovery, encryption at rest, DynamoDB TTL on sessions, and
``Retain`` on deletion (deleting a stack must never delete licenses).

Run as ``python -m chalicelib.deploy --stage STAGE`` (prints the template).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from chalicelib import stages

TTL_ATTRIBUTES = {"Session": "purge_at"}


def table_resource(model: Any) -> dict[str, Any]:
    schema = model._get_schema()
    properties: dict[str, Any] = {
        "TableName": model.Meta.table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": schema["attribute_definitions"],
        "KeySchema": schema["key_schema"],
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
    }
    if schema["global_secondary_indexes"]:
        properties["GlobalSecondaryIndexes"] = [
            {"IndexName": index["index_name"], "KeySchema": index["key_schema"], "Projection": index["projection"]}
            for index in schema["global_secondary_indexes"]
        ]
    ttl = TTL_ATTRIBUTES.get(model.__name__)
    if ttl:
        properties["TimeToLiveSpecification"] = {"AttributeName": ttl, "Enabled": True}
    return {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
            "Properties": properties}


def template() -> dict[str, Any]:
    from chalicelib.models import ALL_MODELS

    resources = {f"{model.__name__}Table": table_resource(model) for model in ALL_MODELS}
    outputs = {f"{name}Name": {"Value": {"Ref": name}} for name in resources}
    return {"Resources": resources, "Outputs": outputs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True)
    args = parser.parse_args(argv)
    if args.stage in ("local", "test"):
        raise SystemExit("local and test stages are not deployed")
    stages.use_stage(args.stage)  # table names come from the stage, before models are imported
    json.dump(template(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
