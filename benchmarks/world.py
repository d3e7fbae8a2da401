"""What both handlers run against: the Lambda environment, the events, and AWS answered in process.

AWS is answered by a `before-send` hook on boto3's default session, so every call still goes
through botocore's real serialization, signing and response parsing (the floor pays those too),
but no socket is opened and no emulator runs: only the handlers' own work is measured. The
answers are prepared once per distinct request body, so the hook costs both handlers the same
small, fixed amount per call.

Imports only the standard library at module level: the cold-start probe imports this module
before its clock starts, and must not pre-load boto3 for the handler it measures.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

REPO = Path(__file__).resolve().parents[1]
TASK_ROOT = REPO / "functions" / "authorizer"
EVENTS_DIR = REPO / "events"

ACCOUNT = "123456789012"
REGION = "us-east-1"
PRINCIPAL = "arn:aws:sts::123456789012:assumed-role/platform/alice"
FUNCTION_NAME = "cache-ingress"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION_NAME}"
IDEMPOTENCY_TABLE = "cache-ingress-idempotency"
DEAD_LETTER_QUEUE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/cache-ingress-dlq"
# A sampled trace, as the Lambda runtime sets it per invocation when tracing is active.
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

ORDERS_GROUP = "sg-0a1b2c3d4e5f60718"
STAGING_GROUP = "sg-0b2c3d4e5f6071829"
DELETED_GROUP = "sg-0d4e5f60718293041"
PLATFORM_GROUP = "sg-0a9b8c7d6e5f40312"

# The groups as EC2 describes them now: id -> (name, tags). DELETED_GROUP is absent on purpose.
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    ORDERS_GROUP: ("orders-app", {"cache-ingress": "orders", "env": "prod"}),
    STAGING_GROUP: ("orders-staging-app", {"cache-ingress": "orders", "env": "staging"}),
    PLATFORM_GROUP: (
        "platform-app",
        {"cache-ingress": "orders, payments, inventory", "env": "prod"},
    ),
}

# The four kinds of event measured, with the outcomes both handlers must reach for each.
KINDS: dict[str, list[tuple[str, str | None, str]]] = {
    "one grant": [(ORDERS_GROUP, "orders", "authorized")],
    "three grants": [
        (PLATFORM_GROUP, "orders", "authorized"),
        (PLATFORM_GROUP, "payments", "authorized"),
        (PLATFORM_GROUP, "inventory", "authorized"),
    ],
    "denied tag": [(STAGING_GROUP, "orders", "denied")],
    "not applicable": [(DELETED_GROUP, None, "not-applicable")],
}


def _sample(name: str) -> dict[str, Any]:
    loaded = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise TypeError(f"{name} is not a JSON object")
    return loaded


def _tag_change(group_id: str, tags: dict[str, str]) -> dict[str, Any]:
    event = _sample("tag-change-authorized.json")
    event["resources"] = [f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{group_id}"]
    event["detail"]["tags"] = tags
    return event


def _create_tags(group_id: str) -> dict[str, Any]:
    event = _sample("cloudtrail-create-tags.json")
    detail = event["detail"]
    detail["userIdentity"]["arn"] = PRINCIPAL
    detail["requestParameters"]["resourcesSet"]["items"] = [{"resourceId": group_id}]
    detail["requestParameters"]["tagSet"]["items"] = [
        {"key": "cache-ingress", "value": GROUPS[group_id][1]["cache-ingress"]}
    ]
    return event


def base_event(kind: str) -> dict[str, Any]:
    """One sample event of the kind (from events/, with the benchmark's groups)."""
    if kind == "one grant":
        return _tag_change(ORDERS_GROUP, GROUPS[ORDERS_GROUP][1])
    if kind == "three grants":
        # A CloudTrail event, because the payments target requires a listed principal.
        return _create_tags(PLATFORM_GROUP)
    if kind == "denied tag":
        return _tag_change(STAGING_GROUP, GROUPS[STAGING_GROUP][1])
    if kind == "not applicable":
        return _tag_change(DELETED_GROUP, {"cache-ingress": "orders", "env": "prod"})
    raise ValueError(f"unknown event kind {kind!r}")


def events(kind: str, count: int, prefix: str) -> list[dict[str, Any]]:
    """`count` events of one kind, each with its own id (so each grant is a new record)."""
    base = base_event(kind)
    made = []
    for index in range(count):
        event = copy.deepcopy(base)
        event["id"] = f"{prefix}-{kind.replace(' ', '-')}-{index:06d}"
        made.append(event)
    return made


def outcomes(summary: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """The (group, target, outcome) triples of a handler's summary, in order."""
    return [(str(d["group_id"]), d.get("target"), str(d["outcome"])) for d in summary["decisions"]]


def lambda_environment(*, tracing: bool) -> dict[str, str]:
    """The variables the Lambda runtime and the template give the function (fake credentials)."""
    return {
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "ASIABENCHMARKFAKE000",
        "AWS_SECRET_ACCESS_KEY": "benchmark/fake/secret/key/0000000000000",
        "AWS_SESSION_TOKEN": "benchmark-fake-session-token",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "LAMBDA_TASK_ROOT": str(TASK_ROOT),
        "_X_AMZN_TRACE_ID": TRACE_HEADER,
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_ENDPOINT_URL": "",
        "ACCOUNT_ID": ACCOUNT,
        "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
        "DEAD_LETTER_QUEUE_URL": DEAD_LETTER_QUEUE_URL,
        "TAG_KEY": "cache-ingress",
        "DRY_RUN": "false",
        "POWERTOOLS_SERVICE_NAME": FUNCTION_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": "CacheIngress",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_TRACE_DISABLED": "false" if tracing else "true",
    }


@dataclass
class BenchContext:
    """The Lambda context object, with the fields Powertools reads."""

    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    function_name: str = FUNCTION_NAME
    function_version: str = "$LATEST"
    invoked_function_arn: str = FUNCTION_ARN
    memory_limit_in_mb: int = 128
    log_group_name: str = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name: str = "2026/11/25/[$LATEST]benchmark"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class _Body:
    """The raw stream botocore reads a response body from."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> list[bytes]:
        return [self._content]


_EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
_ELASTICACHE_NS = "http://elasticache.amazonaws.com/doc/2015-02-02/"


def _describe_groups_xml(body: bytes) -> bytes:
    form = parse_qs(body.decode())
    wanted = [value for key, values in form.items() if ".Value." in key for value in values]
    items = []
    for group_id in wanted:
        if group_id not in GROUPS:
            continue
        name, tags = GROUPS[group_id]
        tag_items = "".join(
            f"<item><key>{key}</key><value>{value}</value></item>" for key, value in tags.items()
        )
        items.append(
            f"<item><ownerId>{ACCOUNT}</ownerId><groupId>{group_id}</groupId>"
            f"<groupName>{name}</groupName><groupDescription>{name}</groupDescription>"
            "<vpcId>vpc-0bench0000000000a</vpcId><ipPermissions/><ipPermissionsEgress/>"
            f"<tagSet>{tag_items}</tagSet></item>"
        )
    return (
        f'<DescribeSecurityGroupsResponse xmlns="{_EC2_NS}">'
        "<requestId>5f1d3c1a-bench-0000-0000-000000000001</requestId>"
        f"<securityGroupInfo>{''.join(items)}</securityGroupInfo>"
        "</DescribeSecurityGroupsResponse>"
    ).encode()


def _authorize_xml(body: bytes) -> bytes:
    form = parse_qs(body.decode())
    cache_group = form["CacheSecurityGroupName"][0]
    group_name = form["EC2SecurityGroupName"][0]
    owner = form["EC2SecurityGroupOwnerId"][0]
    return (
        f'<AuthorizeCacheSecurityGroupIngressResponse xmlns="{_ELASTICACHE_NS}">'
        "<AuthorizeCacheSecurityGroupIngressResult><CacheSecurityGroup>"
        f"<OwnerId>{ACCOUNT}</OwnerId><CacheSecurityGroupName>{cache_group}"
        f"</CacheSecurityGroupName><Description>{cache_group}</Description>"
        "<EC2SecurityGroups><EC2SecurityGroup><Status>authorizing</Status>"
        f"<EC2SecurityGroupName>{group_name}</EC2SecurityGroupName>"
        f"<EC2SecurityGroupOwnerId>{owner}</EC2SecurityGroupOwnerId>"
        "</EC2SecurityGroup></EC2SecurityGroups>"
        f"<ARN>arn:aws:elasticache:{REGION}:{ACCOUNT}:securitygroup:{cache_group}</ARN>"
        "</CacheSecurityGroup></AuthorizeCacheSecurityGroupIngressResult>"
        "<ResponseMetadata><RequestId>5f1d3c1a-bench-0000-0000-000000000002</RequestId>"
        "</ResponseMetadata></AuthorizeCacheSecurityGroupIngressResponse>"
    ).encode()


_XML = {"content-type": "text/xml;charset=UTF-8"}
_JSON = {"content-type": "application/x-amz-json-1.0"}


class Responder:
    """Answers every AWS call in process and counts the calls by operation."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._answers: dict[tuple[str, bytes], tuple[int, dict[str, str], bytes]] = {}

    def install(self) -> None:
        """Register on boto3's default session; call before any client is created."""
        import boto3

        session = boto3._get_default_session()  # the session boto3.client uses
        session.events.register("before-send", self._answer)

    def _answer(self, request: Any, event_name: str, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        operation = event_name.rsplit(".", 2)
        key = f"{operation[1]}.{operation[2]}"
        self.calls[key] += 1
        raw = request.body or b""
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
        answer = self._answers.get((key, body))
        if answer is None:
            answer = self._prepare(key, body)
            self._answers[(key, body)] = answer
        status, headers, content = answer
        fresh_headers: Any = dict(headers)
        return AWSResponse(request.url, status, fresh_headers, _Body(content))

    @staticmethod
    def _prepare(key: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if key == "ec2.DescribeSecurityGroups":
            return 200, _XML, _describe_groups_xml(body)
        if key == "elasticache.AuthorizeCacheSecurityGroupIngress":
            return 200, _XML, _authorize_xml(body)
        if key.startswith("dynamodb."):
            # PutItem (the in-progress record), UpdateItem (completed), DeleteItem: all succeed.
            return 200, _JSON, b"{}"
        raise AssertionError(f"the benchmark does not expect a call to {key}")
