"""EC2 adapter: admit the tagged group to a VPC cache by a rule on the cache's security group,
and take that rule away again.

The rule is TCP on the cache's port only, from the tagged group (a group reference, never a
CIDR), with a description that traces it back to its tag: the target and the event id.
EC2 identifies a rule by protocol, ports and source; the description is not part of it, so
a second event for the same pair meets `InvalidPermission.Duplicate`: already authorized.

Each rule also has an id of its own (`SecurityGroupRuleId`), which the ledger records. A
revocation names that id: if the rule was removed and made again by someone else, the new
rule has another id, and the revocation leaves it alone.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.models import Authorized, FoundRule, Grant, Outcome

ACTION = "ec2:AuthorizeSecurityGroupIngress"
REVOKE_ACTION = "ec2:RevokeSecurityGroupIngress"
FIND_ACTION = "ec2:DescribeSecurityGroupRules"
DUPLICATE = "InvalidPermission.Duplicate"
# A rule id (or permission, or the whole group) the cache no longer has: the rule is gone.
GONE = frozenset(
    {"InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound", "InvalidGroup.NotFound"}
)
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
    return authorize_rule(ec2, grant).outcome


def authorize_rule(ec2: Any, grant: Grant) -> Authorized:
    """Add the rule, and say which rule id EC2 gave it (None when it was there already)."""
    permissions = ip_permissions(grant)
    try:
        response = ec2.authorize_security_group_ingress(
            GroupId=grant.vpc_security_group, IpPermissions=permissions
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == DUPLICATE:
            return Authorized(Outcome.ALREADY_AUTHORIZED)
        raise aws_call_error(exc, ACTION) from exc
    except BotoCoreError as exc:
        raise aws_call_error(exc, ACTION) from exc
    rules = response.get("SecurityGroupRules") or []
    rule_id = next(
        (str(r["SecurityGroupRuleId"]) for r in rules if "SecurityGroupRuleId" in r), None
    )
    return Authorized(Outcome.AUTHORIZED, rule_id)


def find_rule(ec2: Any, grant: Grant) -> FoundRule | None:
    """The rule this grant asks for as it stands now: inbound, TCP on exactly the port, from
    the grant's group; None if the cache's security group has no such rule."""
    request: dict[str, Any] = {
        "Filters": [{"Name": "group-id", "Values": [grant.vpc_security_group]}]
    }
    try:
        while True:
            page = ec2.describe_security_group_rules(**request)
            for rule in page.get("SecurityGroupRules", []):
                if _is_the_rule(rule, grant):
                    return FoundRule(str(rule["SecurityGroupRuleId"]), rule.get("Description"))
            if not page.get("NextToken"):
                return None
            request["NextToken"] = page["NextToken"]
    except (ClientError, BotoCoreError) as exc:
        raise aws_call_error(exc, FIND_ACTION) from exc


def _is_the_rule(rule: dict[str, Any], grant: Grant) -> bool:
    referenced = rule.get("ReferencedGroupInfo") or {}
    return (
        not rule.get("IsEgress", False)
        and str(rule.get("IpProtocol")) in ("tcp", "6")
        and rule.get("FromPort") == grant.port
        and rule.get("ToPort") == grant.port
        and referenced.get("GroupId") == grant.group_id
    )


def revoke(ec2: Any, grant: Grant, rule_id: str) -> bool:
    """Remove the rule with this id; False if the group no longer has it (gone already)."""
    try:
        response = ec2.revoke_security_group_ingress(
            GroupId=grant.vpc_security_group, SecurityGroupRuleIds=[rule_id]
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in GONE:
            return False
        raise aws_call_error(exc, REVOKE_ACTION) from exc
    except BotoCoreError as exc:
        raise aws_call_error(exc, REVOKE_ACTION) from exc
    # EC2 may answer success and list what it did not find instead of failing.
    return response.get("Return", True) is not False and not response.get("UnknownIpPermissions")
