"""AWS answered in process, and the Lambda context: all a cold-start process needs besides
the handler it measures.

A `before-send` hook on boto3's default session answers every call, so each still goes
through botocore's real serialization, signing and response parsing (the floor pays those
too), but no socket is opened and no emulator runs: only the handlers' own work is measured.
The answers are prepared once per distinct request body, so the hook costs both handlers the
same small, fixed amount per call.

Lean on purpose: the whole-process figure (benchmarks/first_response.py) times every import,
so this module imports only what botocore loads anyway, and boto3 only when installed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import parse_qs

ACCOUNT = "123456789012"
REGION = "us-east-1"
FUNCTION_NAME = "cache-ingress"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION_NAME}"

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


class BenchContext:
    """The Lambda context object, with the fields Powertools reads."""

    aws_request_id = "00000000-0000-4000-8000-000000000000"
    function_name = FUNCTION_NAME
    function_version = "$LATEST"
    invoked_function_arn = FUNCTION_ARN
    memory_limit_in_mb = 128
    log_group_name = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name = "2026/11/25/[$LATEST]benchmark"

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
            # PutItem (the in-progress record), UpdateItem (completed; the ledger entry),
            # DeleteItem: all succeed; BatchGetItem (holds) finds none, Query finds nothing.
            return 200, _JSON, b"{}"
        raise AssertionError(f"the benchmark does not expect a call to {key}")
