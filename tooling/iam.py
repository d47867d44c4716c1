"""What each Lambda function may do in AWS: the one place its IAM policy is written.

Every grant is an action on one of the stage's own resources (a table, an index, an
SSM parameter, the function's own log group).  ``tests/test_iam.py`` records every AWS
call the API tests make and fails when a call is not granted here, or when a grant is
never used; the offline deployment test runs the package under exactly this policy.

``TransactWriteItems`` is no IAM action of its own: AWS authorises each item in it by
its item action (``PutItem``, ``UpdateItem``, ``DeleteItem``, ``ConditionCheckItem``).
``BatchGetItem`` is an action of its own, on every table it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PARTITION, REGION, ACCOUNT = "${AWS::Partition}", "${AWS::Region}", "${AWS::AccountId}"


LOGS = ("logs:CreateLogStream", "logs:PutLogEvents")


@dataclass(frozen=True)
class FunctionGrants:
    """A function's grants: DynamoDB actions per table (by suffix), per index, SSM parameters, SNS topics.

    ``queues``: what Lambda itself does with the function's role, not the code: poll a
    queue (an event source) or send failed events to one (an on-failure destination);
    keyed by the queue's name suffix (``keyturn-<stage>-<suffix>``).
    """

    tables: dict[str, tuple[str, ...]]
    indexes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "table-suffix/index-name"
    ssm_parameters: tuple[str, ...] = ()  # names below the stage's SSM prefix, read with GetParameter
    topics: tuple[str, ...] = ()  # SNS topic name suffixes the code publishes to
    queues: dict[str, tuple[str, ...]] = field(default_factory=dict)  # Lambda's own use of the role, by queue

    @property
    def runtime_only(self) -> tuple[str, ...]:
        """The actions only Lambda makes with this role (the IAM test does not expect code to use them)."""
        return LOGS + tuple(action for actions in self.queues.values() for action in actions)


API = FunctionGrants(
    tables={
        "users": ("BatchGetItem", "UpdateItem"),  # login (read with its audit head), lockout counting
        "sessions": ("GetItem", "PutItem", "UpdateItem", "DeleteItem"),  # login, sliding expiry, logout
        "license-keys": ("PutItem", "Scan", "DeleteItem"),  # add (conditional), list, delete (conditional)
        "orders": ("BatchGetItem", "GetItem", "UpdateItem"),  # every LAC call; the seat counter in transactions
        "activations": ("BatchGetItem", "PutItem", "DeleteItem", "Query"),  # seats (transactions), license lists
        "audit": ("PutItem",),  # a record with every change (append-only: never updated or deleted)
        "audit-heads": ("BatchGetItem", "GetItem", "PutItem"),  # read with the change, moved in its transaction
        "rate-limits": ("UpdateItem",),  # one conditional count per activation attempt, when the stage limits them
    },
    indexes={"license-keys/by-id": ("Query",)},
    ssm_parameters=("license-key-secret", "signing-keys"),
    topics=("notifications",),  # SeatLimitReached
)

PROVISIONING_TABLES = {
    # the line's record: read, then written once (or a rejection); a shop line's on each change, under its
    # version; a deleted Stripe subscription's lines are queried
    "provisioning": ("GetItem", "PutItem", "Query"),
    "orders": ("PutItem", "UpdateItem"),  # a new order, in the line's transaction; a shop's seat change or revocation
    "license-keys": ("PutItem", "DeleteItem"),  # a new key; a shop's change replaces it, a revocation deletes it
    "plans": ("BatchGetItem", "GetItem"),  # the plans of a shop event's skus and prices
    "plan-claims": ("BatchGetItem",),  # which plan claims a sku or price
    "audit": ("PutItem",),
    "audit-heads": ("GetItem", "PutItem"),
}
PROVISION_QUEUE = FunctionGrants(
    tables=PROVISIONING_TABLES, ssm_parameters=("license-key-secret",), topics=("notifications",),
    queues={"provisioning": ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")},
)
PROVISION_EVENTS = FunctionGrants(
    tables=PROVISIONING_TABLES, ssm_parameters=("license-key-secret",), topics=("notifications",),
    queues={"provisioning-dlq": ("sqs:SendMessage",)},  # the on-failure destination
)

OPERATOR = FunctionGrants(
    tables={
        "orders": ("BatchGetItem", "GetItem", "PutItem", "UpdateItem"),  # create, show, enable/disable, allow, revoke
        "activations": ("BatchGetItem", "DeleteItem"),  # revoke-activation (in its transaction)
        "users": ("GetItem", "PutItem", "UpdateItem"),  # add-user (conditional put), reset-password (then read)
        "audit": ("PutItem", "Query"),  # records; show-audit and verify-audit read a chain
        "audit-heads": ("BatchGetItem", "GetItem", "PutItem"),
        "plans": ("GetItem", "PutItem", "DeleteItem", "Scan"),  # put-plan, show-plan, delete-plan, list-plans
        "plan-claims": ("BatchGetItem", "PutItem", "DeleteItem"),  # a plan's skus and prices, in its transaction
    },
    ssm_parameters=("license-key-secret",),  # mint-key
)

FUNCTIONS: dict[str, FunctionGrants] = {"api": API, "provision-queue": PROVISION_QUEUE,
                                        "provision-events": PROVISION_EVENTS, "operator": OPERATOR}


def services(grants: FunctionGrants) -> set[str]:
    """The AWS services the function's own code calls (the package keeps only their botocore models)."""
    called = {"dynamodb"} if grants.tables or grants.indexes else set()
    return called | ({"ssm"} if grants.ssm_parameters else set()) | ({"sns"} if grants.topics else set())


def table_arn(table_name: str, region: str = REGION, account: str = ACCOUNT, partition: str = PARTITION) -> str:
    return f"arn:{partition}:dynamodb:{region}:{account}:table/{table_name}"


def parameter_arn(name: str, region: str = REGION, account: str = ACCOUNT, partition: str = PARTITION) -> str:
    return f"arn:{partition}:ssm:{region}:{account}:parameter/{name.lstrip('/')}"


def topic_arn(name: str, region: str = REGION, account: str = ACCOUNT, partition: str = PARTITION) -> str:
    return f"arn:{partition}:sns:{region}:{account}:{name}"


def queue_arn(name: str, region: str = REGION, account: str = ACCOUNT, partition: str = PARTITION) -> str:
    return f"arn:{partition}:sqs:{region}:{account}:{name}"


def log_group_arn(function_name: str, region: str = REGION, account: str = ACCOUNT,
                  partition: str = PARTITION) -> str:
    return f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{function_name}:*"


def policy_document(grants: FunctionGrants, *, table_prefix: str, ssm_prefix: str, function_name: str,
                    kms_key_arn: str | None = None, name_prefix: str = "") -> dict[str, Any]:
    """The function's policy for a template: each ARN is an ``Fn::Sub`` of the stack's partition, region, account.

    ``name_prefix``: the stage's prefix of topic and queue names (``keyturn-<stage>-``).
    ``kms_key_arn``: the customer key that encrypts the stage's SecureStrings, if any.  With
    the AWS-managed ``aws/ssm`` key no ``kms:Decrypt`` grant is needed (its key policy
    lets SSM decrypt for the account), so none is given.
    """
    statements: list[dict[str, Any]] = []
    for suffix, actions in grants.tables.items():
        statements.append(_allow(f"Table{_camel(suffix)}", [f"dynamodb:{a}" for a in actions],
                                 [table_arn(table_prefix + suffix)]))
    for path, actions in grants.indexes.items():
        suffix, index = path.split("/")
        statements.append(_allow(f"Index{_camel(suffix)}{_camel(index)}", [f"dynamodb:{a}" for a in actions],
                                 [f"{table_arn(table_prefix + suffix)}/index/{index}"]))
    if grants.ssm_parameters:
        statements.append(_allow("Secrets", ["ssm:GetParameter"],
                                 [parameter_arn(ssm_prefix + name) for name in grants.ssm_parameters]))
        if kms_key_arn:
            statements.append(_allow("SecretsKey", ["kms:Decrypt"], [kms_key_arn]))
    if grants.topics:
        statements.append(_allow("Publish", ["sns:Publish"], [topic_arn(name_prefix + t) for t in grants.topics]))
    for suffix, actions in grants.queues.items():
        statements.append(_allow(f"Queue{_camel(suffix)}", list(actions), [queue_arn(name_prefix + suffix)]))
    statements.append(_allow("OwnLogGroup", list(LOGS), [log_group_arn(function_name)]))
    return {"Version": "2012-10-17", "Statement": statements}


def _allow(sid: str, actions: list[str], resources: list[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions,
            "Resource": [{"Fn::Sub": arn} if "${" in arn else arn for arn in resources]}


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def resolve(document: Any, *, region: str, account: str, partition: str = "aws") -> Any:
    """``document`` with the pseudo parameters filled in (tests, the IAM user of the offline run)."""
    if isinstance(document, dict):
        if set(document) == {"Fn::Sub"} and isinstance(document["Fn::Sub"], str):
            return resolve(document["Fn::Sub"], region=region, account=account, partition=partition)
        return {k: resolve(v, region=region, account=account, partition=partition) for k, v in document.items()}
    if isinstance(document, list):
        return [resolve(v, region=region, account=account, partition=partition) for v in document]
    if isinstance(document, str):
        return document.replace(PARTITION, partition).replace(REGION, region).replace(ACCOUNT, account)
    return document
