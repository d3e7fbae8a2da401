"""EC2 adapter: admit the tagged group to a VPC cache by a rule on the cache's security group.

The rule is TCP on the cache's port only, from the tagged group (a group reference, never a
CIDR), with a description that traces it back to its tag: the target and the event id.
EC2 identifies a rule by protocol, ports and source; the description is not part of it, so
a second event for the same pair meets `InvalidPermission.Duplicate`: already authorized.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.models import Grant, Outcome

ACTION = "ec2:AuthorizeSecurityGroupIngress"
DUPLICATE = "InvalidPermission.Duplicate"
DESCRIPTION_MAX = 255
# The characters EC2 accepts in a rule description (botocore's model, UserIdGroupPair).
_NOT_ALLOWED_IN_DESCRIPTION = re.compile(r"[^a-zA-Z0-9 ._\-:/()#,@\[\]+=;{}!$*]")


def rule_description(grant: Grant) -> str:
    """`cache-ingress <target> event <event id>`, cut to what EC2 accepts."""
    text = f"cache-ingress {grant.target} event {grant.event_id}"
    return _NOT_ALLOWED_IN_DESCRIPTION.sub("_", text)[:DESCRIPTION_MAX]


def ip_permissions(grant: Grant) -> list[dict[str, Any]]:
    """The one permission a VPC grant asks for."""
    if grant.vpc_security_group is None or grant.port is None:
        raise ValueError(f"not a VPC grant: {grant}")
    pair: dict[str, str] = {"GroupId": grant.group_id, "Description": rule_description(grant)}
    if grant.cross_account:
        pair["UserId"] = grant.owner_id
    return [
        {
            "IpProtocol": "tcp",
            "FromPort": grant.port,
            "ToPort": grant.port,
            "UserIdGroupPairs": [pair],
        }
    ]


def authorize(ec2: Any, grant: Grant) -> Outcome:
    """Add the rule; an existing identical rule counts as success."""
    permissions = ip_permissions(grant)
    try:
        ec2.authorize_security_group_ingress(
            GroupId=grant.vpc_security_group, IpPermissions=permissions
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == DUPLICATE:
            return Outcome.ALREADY_AUTHORIZED
        raise aws_call_error(exc, ACTION) from exc
    except BotoCoreError as exc:
        raise aws_call_error(exc, ACTION) from exc
    return Outcome.AUTHORIZED
