"""The sweep's EC2 adapter: one page of the security groups that carry the tag key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.models import SecurityGroupFacts
from cache_ingress.security_groups import _facts as group_facts

LIST_ACTION = "ec2:DescribeSecurityGroups"


@dataclass(frozen=True, slots=True)
class GroupPage:
    """One page of tagged groups, with the token that fetched it (None: the first page)."""

    token: str | None
    groups: tuple[SecurityGroupFacts, ...]
    next_token: str | None


def tagged_group_page(
    ec2: Any, tag_key: str, region: str, *, page_size: int, token: str | None
) -> GroupPage:
    """One `describe_security_groups` call filtered on the tag key; raises AwsCallError.

    EC2 may answer a filtered page with fewer groups than asked, even none, and a token.
    """
    request: dict[str, Any] = {
        "Filters": [{"Name": "tag-key", "Values": [tag_key]}],
        "MaxResults": page_size,
    }
    if token:
        request["NextToken"] = token
    try:
        response = ec2.describe_security_groups(**request)
    except (ClientError, BotoCoreError) as exc:
        raise aws_call_error(exc, LIST_ACTION) from exc
    groups = tuple(group_facts(group, region) for group in response.get("SecurityGroups", []))
    return GroupPage(token, groups, response.get("NextToken") or None)
