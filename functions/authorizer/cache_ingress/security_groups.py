"""EC2 adapter: read the named security groups as they are now."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.models import SecurityGroupFacts

# EC2 accepts at most 200 values in one filter.
FILTER_VALUES_MAX = 200


def describe_groups(
    ec2: Any, group_ids: Sequence[str], region: str
) -> dict[str, SecurityGroupFacts]:
    """The groups that exist now, by id. Missing ids are simply absent (a filter, not
    GroupIds, so that one deleted group does not fail the whole call).
    """
    found: dict[str, SecurityGroupFacts] = {}
    try:
        for start in range(0, len(group_ids), FILTER_VALUES_MAX):
            chunk = list(group_ids[start : start + FILTER_VALUES_MAX])
            request: dict[str, Any] = {"Filters": [{"Name": "group-id", "Values": chunk}]}
            # Without MaxResults EC2 returns every match at once; a token is followed anyway.
            # Called directly: a paginator costs ~130 us of CPU per event (docs/benchmarks.md).
            while True:
                page = ec2.describe_security_groups(**request)
                for group in page.get("SecurityGroups", []):
                    facts = _facts(group, region)
                    found[facts.group_id] = facts
                if not page.get("NextToken"):
                    break
                request["NextToken"] = page["NextToken"]
    except (ClientError, BotoCoreError) as exc:
        raise aws_call_error(exc, "ec2:DescribeSecurityGroups") from exc
    return found


def _facts(group: dict[str, Any], region: str) -> SecurityGroupFacts:
    return SecurityGroupFacts(
        group_id=group["GroupId"],
        group_name=group.get("GroupName", ""),
        owner_id=group.get("OwnerId", ""),
        vpc_id=group.get("VpcId"),
        region=region,
        tags={tag["Key"]: tag.get("Value", "") for tag in group.get("Tags", [])},
    )
