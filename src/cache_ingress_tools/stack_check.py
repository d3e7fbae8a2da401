"""Whether a stack can do what a policy asks, read from the stack's parameters, before deploy.

The function may only authorize into the cache security groups whose ARNs the stack lists
(`CacheSecurityGroupArns`, the IAM resources of `AuthorizeCacheSecurityGroupIngress`), and
only add inbound rules to the VPC security groups it lists (`CacheVpcSecurityGroupIds`, the
`ec2:SecurityGroupID` condition); its event rules deliver only changes to `TagKey`. A target
outside those would be refused by IAM after deploy (AccessDenied; EC2 says
UnauthorizedOperation), and a policy for another tag key would never see an event. This
module says so first, naming the target. Pure: plain data in, findings out.

IAM matches ARNs with `*` (any run of characters) and `?` (one character); so does this
check. The region and account are checked only when known (`--region`, the samconfig
file's region, `--account-id`); a replication group's or cache cluster's security group is
looked up when the function runs, so it can only be checked against the account
(`cache-ingress explain`), never here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from cache_ingress.models import TargetKind
from cache_ingress.policy import Policy, Target

TAG_KEY: Final = "TagKey"
CACHE_GROUP_ARNS: Final = "CacheSecurityGroupArns"
VPC_GROUP_IDS: Final = "CacheVpcSecurityGroupIds"
_DEFAULT_TAG_KEY: Final = "cache-ingress"
# arn:PARTITION:elasticache:REGION:ACCOUNT:securitygroup:NAME
_ARN_FIELDS: Final = 7


@dataclass(frozen=True, slots=True)
class StackParameters:
    """The parameters that bound what the function may do, and where the stack runs."""

    tag_key: str
    cache_security_group_arns: tuple[str, ...]
    vpc_security_group_ids: tuple[str, ...]
    region: str | None = None
    account_id: str | None = None

    @classmethod
    def from_values(
        cls, values: Mapping[str, Any], *, region: str | None, account_id: str | None
    ) -> StackParameters:
        """From resolved template parameters (a CommaDelimitedList is a list of strings)."""
        return cls(
            tag_key=str(values.get(TAG_KEY) or _DEFAULT_TAG_KEY),
            cache_security_group_arns=_items(values.get(CACHE_GROUP_ARNS)),
            vpc_security_group_ids=_items(values.get(VPC_GROUP_IDS)),
            region=region,
            account_id=account_id,
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the stack cannot do for the policy (`problem`), or cannot be told here.

    `path` is the policy field it is about, so it is listed at that field's line.
    """

    path: tuple[object, ...]
    message: str
    problem: bool = True


def stack_findings(policy: Policy, stack: StackParameters) -> list[Finding]:
    """Every target the stack's IAM would refuse, a tag key no event rule delivers, and
    notes on what only the account can tell."""
    findings: list[Finding] = []
    if policy.tag_key != stack.tag_key:
        findings.append(
            Finding(
                ("tag_key",),
                f"{policy.tag_key!r} differs from the stack's {TAG_KEY} {stack.tag_key!r}: "
                f"its event rules deliver changes to {stack.tag_key!r} only, and the "
                "function refuses a policy for another key (PolicyInvalid)",
            )
        )
    findings.extend(_malformed_arns(stack))
    for target in policy.targets.values():
        finding = _target_finding(target, stack)
        if finding is not None:
            findings.append(finding)
    return findings


def _target_finding(target: Target, stack: StackParameters) -> Finding | None:
    if target.kind is TargetKind.CACHE_SECURITY_GROUP and target.cache_security_group:
        return _classic_finding(target, target.cache_security_group, stack)
    if target.vpc is None:
        return None
    if target.vpc.kind is TargetKind.VPC_SECURITY_GROUP:
        group_id = target.vpc.identifier
        if group_id in stack.vpc_security_group_ids:
            return None
        listed = ", ".join(stack.vpc_security_group_ids) or "empty"
        return Finding(
            ("targets", target.name, "vpc_security_group", "group_id"),
            f"security group {group_id} is not among the stack's {VPC_GROUP_IDS} "
            f"({listed}): adding its inbound rule would fail with AccessDenied "
            f"(UnauthorizedOperation) after deploy; add {group_id}",
        )
    field = (
        "replication_group"
        if target.vpc.kind is TargetKind.REPLICATION_GROUP
        else ("cache_cluster")
    )
    where = ("targets", target.name, field)
    if not stack.vpc_security_group_ids:
        return Finding(
            where,
            f"the stack's {VPC_GROUP_IDS} is empty, so no inbound rule can be added for "
            f"{target.vpc.label}: it would fail with AccessDenied (UnauthorizedOperation) "
            "after deploy; add the cache's security group",
        )
    return Finding(
        where,
        f"{target.vpc.label}: its security group is looked up when the function runs; it "
        f"must be one of {VPC_GROUP_IDS} ({', '.join(stack.vpc_security_group_ids)}), which "
        "only the account can tell (`cache-ingress explain` shows it)",
        problem=False,
    )


def _classic_finding(target: Target, name: str, stack: StackParameters) -> Finding | None:
    region = target.region or stack.region
    if any(_arn_allows(arn, name, region, stack.account_id) for arn in _arns(stack)):
        return None
    listed = ", ".join(stack.cache_security_group_arns) or "empty"
    wanted = (
        f"arn:aws:elasticache:{region or 'REGION'}:{stack.account_id or 'ACCOUNT'}"
        f":securitygroup:{name.lower()}"
    )
    return Finding(
        ("targets", target.name, "cache_security_group"),
        f"cache security group {name} is not among the stack's {CACHE_GROUP_ARNS} "
        f"({listed}): authorizing into it would fail with AccessDenied after deploy; "
        f"add {wanted}",
    )


def _malformed_arns(stack: StackParameters) -> list[Finding]:
    return [
        Finding(
            (),
            f"the stack's {CACHE_GROUP_ARNS} holds {arn!r}, which is not a cache security "
            "group ARN (arn:aws:elasticache:REGION:ACCOUNT:securitygroup:NAME)",
        )
        for arn in stack.cache_security_group_arns
        if _split_arn(arn) is None
    ]


def _arns(stack: StackParameters) -> list[tuple[str, ...]]:
    return [fields for arn in stack.cache_security_group_arns if (fields := _split_arn(arn))]


def _split_arn(arn: str) -> tuple[str, ...] | None:
    fields = tuple(arn.split(":", _ARN_FIELDS - 1))
    if len(fields) != _ARN_FIELDS or fields[0] != "arn":
        return None
    return fields


def _arn_allows(
    fields: Sequence[str], name: str, region: str | None, account_id: str | None
) -> bool:
    _, _, service, arn_region, account, resource_type, resource = fields
    return (
        _matches(service, "elasticache")
        and _matches(resource_type, "securitygroup")
        # AWS keeps cache security group names in lowercase; IAM sees them so.
        and _matches(resource, name.lower())
        and (region is None or _matches(arn_region, region))
        and (account_id is None or _matches(account, account_id))
    )


def _matches(pattern: str, value: str) -> bool:
    return _glob(pattern).fullmatch(value) is not None


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    """IAM's ARN wildcards: `*` any run of characters (`:` included), `?` one character."""
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    )


def _items(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    raw = value if isinstance(value, list) else str(value).split(",")
    return tuple(item for item in (str(part).strip() for part in raw) if item)
