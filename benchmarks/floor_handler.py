"""The floor: the least a Python Lambda doing this job must run, written with boto3 alone.

Per event it makes exactly the AWS calls the job needs: one `ec2:DescribeSecurityGroups`
(filtered on the event's group ids); when the event would grant, one `dynamodb:BatchGetItem`
of the holds on those pairs; and per grant the conditional `dynamodb:PutItem` of an
in-progress idempotency record, the ledger entry written `pending` (`dynamodb:UpdateItem`),
one `elasticache:AuthorizeCacheSecurityGroupIngress`, the entry resolved (`UpdateItem`), and
the `dynamodb:UpdateItem` that completes the record. Same clients, same client configuration, same
decisions on the same policy (the bundled policy, as a literal), one JSON log line per decision
and one embedded-metric document per event (the job's logs and metrics, printed by hand).
No framework, no tracing unless FLOOR_XRAY=1 (then aws-xray-sdk patches botocore only: the
least any traced function pays). No dead-letter queue, no replay, and only the validation the
benchmark events need: it is a yardstick, used only by the benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from typing import Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

if os.environ.get("FLOOR_XRAY") == "1":
    from aws_xray_sdk.core import patch

    patch(("botocore",))

# Must equal cache_ingress.aws.CLIENT_CONFIG; benchmarks.run checks that before measuring.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=3,
    read_timeout=10,
)

ACCOUNT_ID = os.environ["ACCOUNT_ID"]
REGION = os.environ["AWS_REGION"]
TABLE = os.environ["IDEMPOTENCY_TABLE"]
LEDGER = os.environ["LEDGER_TABLE"]
TAG_KEY = os.environ.get("TAG_KEY", "cache-ingress")
EXPIRY_SECONDS = 86_400
KEY_PREFIX = "cache-ingress.grant"

# The bundled policy (functions/authorizer/cache_ingress/policy.yaml) as a literal:
# target -> (cache security group, required tags, principal patterns or None).
POLICY: dict[str, tuple[str, dict[str, tuple[str, ...]], tuple[str, ...] | None]] = {
    "orders": ("orders-cache-sg", {"env": ("prod",)}, None),
    "payments": (
        "payments-cache-sg",
        {"env": ("prod",)},
        ("arn:aws:sts::123456789012:assumed-role/platform/*",),
    ),
    "inventory": ("inventory-cache-sg", {"env": ("prod",)}, None),
}

METRIC_NAMES = {
    "authorized": "Authorized",
    "already-authorized": "AlreadyAuthorized",
    "denied": "Denied",
    "not-applicable": "NotApplicable",
}
_GROUP_ARN = re.compile(r"arn:aws[a-z-]*:ec2:[a-z0-9-]+:\d{12}:security-group/(sg-[0-9a-f]{8,17})")
_PUT_CONDITION = (
    "attribute_not_exists(#id) OR #expiry < :now OR "
    "(#status = :inprogress AND attribute_exists(#in_progress_expiry) "
    "AND #in_progress_expiry < :now_in_millis)"
)
_clients: dict[str, Any] = {}


def _client(service: str) -> Any:
    # Created on first use, once per execution environment, as the project does.
    client = _clients.get(service)
    if client is None:
        client = boto3.client(service, region_name=REGION, config=CLIENT_CONFIG)  # type: ignore[call-overload]
        _clients[service] = client
    return client


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    event_id = str(event["id"])
    request = _request(event)
    if request is None:
        _log("event ignored", event_id=event_id)
        return {"eventId": event_id, "status": "ignored", "decisions": []}
    group_ids, principal = request
    groups = _describe(group_ids)
    decisions: list[dict[str, Any]] = []
    for group_id in group_ids:
        group = groups.get(group_id)
        if group is None:
            decisions.append({"group_id": group_id, "target": None, "outcome": "not-applicable"})
            continue
        decisions.extend(_decide(group, principal, event_id, context))
    for decision in decisions:
        _log(f"ingress {decision['outcome']}", event_id=event_id, **decision)
    _emit_metrics([d["outcome"] for d in decisions])
    return {"eventId": event_id, "status": "completed", "decisions": decisions}


def _request(event: dict[str, Any]) -> tuple[list[str], str | None] | None:
    """(group ids, principal) the event names, or None when it is not for this function."""
    if (event["account"], event["region"]) != (ACCOUNT_ID, REGION):
        return None
    detail = event["detail"]
    if event["source"] == "aws.tag":
        ids = [m.group(1) for m in map(_GROUP_ARN.fullmatch, event["resources"]) if m]
        return ids, None
    if event["source"] == "aws.ec2" and "errorCode" not in detail:
        items = detail["requestParameters"]["resourcesSet"]["items"]
        ids = [i["resourceId"] for i in items if i["resourceId"].startswith("sg-")]
        return ids, detail.get("userIdentity", {}).get("arn")
    return None


def _describe(group_ids: list[str]) -> dict[str, dict[str, Any]]:
    response = _client("ec2").describe_security_groups(
        Filters=[{"Name": "group-id", "Values": group_ids}]
    )
    return {group["GroupId"]: group for group in response["SecurityGroups"]}


def _decide(
    group: dict[str, Any], principal: str | None, event_id: str, context: Any
) -> list[dict[str, Any]]:
    tags = {tag["Key"]: tag.get("Value", "") for tag in group.get("Tags", [])}
    names = dict.fromkeys(n.strip() for n in tags.get(TAG_KEY, "").split(",") if n.strip())
    if not names:
        return [{"group_id": group["GroupId"], "target": None, "outcome": "not-applicable"}]
    decisions = []
    allowed = []
    for name in names:
        decision = {"group_id": group["GroupId"], "target": name, "outcome": "denied"}
        target = POLICY.get(name)
        if target is not None and _allowed(group, tags, principal, target):
            allowed.append((decision, name, target[0]))
        decisions.append(decision)
    held = _holds(group["GroupId"], [name for _, name, _ in allowed]) if allowed else set()
    for decision, name, cache_group in allowed:
        if name not in held:
            decision["outcome"] = _grant_once(group, name, cache_group, event_id, context)
    return decisions


def _holds(group_id: str, targets: list[str]) -> set[str]:
    """The targets an operator holds for this group: one read for all of them."""
    response = _client("dynamodb").batch_get_item(
        RequestItems={
            LEDGER: {
                "Keys": [
                    {"pk": {"S": f"hold#{group_id}"}, "sk": {"S": f"target#{target}"}}
                    for target in targets
                ],
                "ConsistentRead": True,
            }
        }
    )
    return {
        item["held_target"]["S"]
        for item in response.get("Responses", {}).get(LEDGER, [])
        if item.get("state", {}).get("S") == "held"
    }


def _ledger_entry(
    group: dict[str, Any], target: str, cache_group: str, event_id: str, status: str
) -> None:
    """The grant's ledger entry: `pending` before the call, its outcome after it."""
    rule = f"classic:{cache_group}:{group['OwnerId']}:{group['GroupName']}"
    _client("dynamodb").update_item(
        TableName=LEDGER,
        Key={
            "pk": {"S": f"rule#{rule}"},
            "sk": {"S": f"entry#{event_id}#{target}#{group['GroupId']}"},
        },
        UpdateExpression="SET #status = :status, #group = :group, #event = :event",
        ExpressionAttributeNames={"#status": "status", "#group": "group_id", "#event": "event_id"},
        ExpressionAttributeValues={
            ":status": {"S": status},
            ":group": {"S": group["GroupId"]},
            ":event": {"S": event_id},
        },
    )


def _allowed(
    group: dict[str, Any],
    tags: dict[str, str],
    principal: str | None,
    target: tuple[str, dict[str, tuple[str, ...]], tuple[str, ...] | None],
) -> bool:
    _, required_tags, principals = target
    if group.get("OwnerId") != ACCOUNT_ID:
        return False
    if any(tags.get(key) not in accepted for key, accepted in required_tags.items()):
        return False
    if principals is None:
        return True
    return principal is not None and any(
        re.fullmatch(re.escape(p).replace(r"\*", ".*"), principal) for p in principals
    )


def _grant_once(
    group: dict[str, Any], target: str, cache_group: str, event_id: str, context: Any
) -> str:
    """Authorize once per (event, grant): a conditional in-progress record guards the call."""
    grant = {
        "event_id": event_id,
        "target": target,
        "cache_security_group": cache_group,
        "group_id": group["GroupId"],
        "group_name": group["GroupName"],
        "owner_id": group["OwnerId"],
    }
    digest = hashlib.md5(json.dumps(grant, sort_keys=True).encode(), usedforsecurity=False)
    key = {"id": {"S": f"{KEY_PREFIX}#{digest.hexdigest()}"}}
    dynamodb = _client("dynamodb")
    now = time.time()
    try:
        dynamodb.put_item(
            TableName=TABLE,
            Item={
                **key,
                "expiration": {"N": str(int(now) + EXPIRY_SECONDS)},
                "status": {"S": "INPROGRESS"},
                "in_progress_expiration": {
                    "N": str(int(now * 1000) + context.get_remaining_time_in_millis())
                },
            },
            ConditionExpression=_PUT_CONDITION,
            ExpressionAttributeNames={
                "#id": "id",
                "#expiry": "expiration",
                "#status": "status",
                "#in_progress_expiry": "in_progress_expiration",
            },
            ExpressionAttributeValues={
                ":now": {"N": str(int(now))},
                ":now_in_millis": {"N": str(int(now * 1000))},
                ":inprogress": {"S": "INPROGRESS"},
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        stored: dict[str, Any] = cast(dict[str, Any], exc.response).get("Item", {})
        if stored.get("status", {}).get("S") == "COMPLETED":
            return str(json.loads(stored["data"]["S"])["outcome"])
        raise
    try:
        _ledger_entry(group, target, cache_group, event_id, "pending")
        outcome = _authorize(group, cache_group)
        _ledger_entry(group, target, cache_group, event_id, outcome)
    except Exception:
        dynamodb.delete_item(TableName=TABLE, Key=key)
        raise
    dynamodb.update_item(
        TableName=TABLE,
        Key=key,
        UpdateExpression="SET #data = :data, #expiry = :expiry, #status = :status",
        ExpressionAttributeNames={"#data": "data", "#expiry": "expiration", "#status": "status"},
        ExpressionAttributeValues={
            ":data": {"S": json.dumps({"outcome": outcome})},
            ":expiry": {"N": str(int(now) + EXPIRY_SECONDS)},
            ":status": {"S": "COMPLETED"},
        },
    )
    return outcome


def _authorize(group: dict[str, Any], cache_group: str) -> str:
    try:
        _client("elasticache").authorize_cache_security_group_ingress(
            CacheSecurityGroupName=cache_group,
            EC2SecurityGroupName=group["GroupName"],
            EC2SecurityGroupOwnerId=group["OwnerId"],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "AuthorizationAlreadyExists":
            return "already-authorized"
        raise
    return "authorized"


def _emit_metrics(outcomes: list[str]) -> None:
    """One CloudWatch embedded-metric document per event: events and a count per outcome,
    as the job requires (issue 2); the least a function publishing them must print."""
    counts = {"Events": 1}
    for outcome in outcomes:
        name = METRIC_NAMES[outcome]
        counts[name] = counts.get(name, 0) + 1
    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": "CacheIngress",
                    "Dimensions": [["service"]],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in counts],
                }
            ],
        },
        "service": "cache-ingress",
        **counts,
    }
    sys.stdout.write(json.dumps(document) + "\n")


def _log(message: str, **fields: Any) -> None:
    record = {"level": "INFO", "message": message, "service": "cache-ingress", **fields}
    sys.stdout.write(json.dumps(record) + "\n")
