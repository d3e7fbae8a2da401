"""What is granted now, read once per sweep: the two kinds of ingress the function makes.

- Classic: `describe_cache_security_groups` for each cache security group the policy's
  targets name and a tagged group asks for, once per run: its EC2 security group pairs.
  Asking by name, not listing every group, lets IAM scope the read to the named groups,
  as it scopes authorize; a policy names a handful of them, so the calls stay a handful.
- VPC: the inbound rules of the caches' own VPC security groups
  (`ec2:DescribeSecurityGroups` filtered on their ids), read once for the few cache groups
  a run meets, however many tagged groups it decides.

`GrantedView` is the sweep's memory of both: each read made once, on first need, plus what
the sweep granted since.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.cache_security_groups import CLASSIC_UNAVAILABLE
from cache_ingress.errors import AwsCallError
from cache_ingress.models import Decision, Grant

ACTION = "elasticache:DescribeCacheSecurityGroups"
RULES_ACTION = "ec2:DescribeSecurityGroups"
NOT_FOUND = "CacheSecurityGroupNotFound"
# EC2 accepts at most 200 values in one filter.
FILTER_VALUES_MAX = 200
# The model documents Status without an enum; RDS reports these two while a pair grants
# access. Any other status ("revoking", or one AWS adds later) counts as not granted: the
# sweep then asks authorize, which answers AuthorizationAlreadyExists if it was granted.
GRANTING_STATUSES = frozenset({"authorized", "authorizing"})

Pairs = frozenset[tuple[str, str]]


def read_cache_security_group(elasticache: Any, name: str) -> Pairs | None:
    """The (EC2 security group name, owner id) pairs the named cache security group grants,
    or None if it does not exist; raises AwsCallError.

    An account without EC2-Classic answers InvalidParameterValue; that is reported as the
    permanent `CacheSecurityGroupsUnavailable`, as the authorize adapter does.
    """
    try:
        response = elasticache.describe_cache_security_groups(CacheSecurityGroupName=name)
    except ClientError as exc:
        error = aws_call_error(exc, ACTION)
        if error.code == NOT_FOUND:
            return None
        if error.code == "InvalidParameterValue" and CLASSIC_UNAVAILABLE in str(exc):
            raise AwsCallError(
                "this account has no EC2-Classic, so cache security groups cannot be read "
                f"({error})",
                code="CacheSecurityGroupsUnavailable",
                transient=False,
            ) from exc
        raise error from exc
    except BotoCoreError as exc:
        raise aws_call_error(exc, ACTION) from exc
    return frozenset(
        (str(pair["EC2SecurityGroupName"]), str(pair["EC2SecurityGroupOwnerId"]))
        for group in response.get("CacheSecurityGroups", [])
        for pair in group.get("EC2SecurityGroups", [])
        if pair.get("Status") in GRANTING_STATUSES
    )


@dataclass(frozen=True, slots=True)
class IngressRule:
    """One inbound permission of a VPC security group that names a source group."""

    protocol: str
    from_port: int | None
    to_port: int | None
    source_group: str

    def admits(self, source_group: str, port: int) -> bool:
        """Whether it lets `source_group` reach TCP `port`: the exact rule the function adds,
        or a wider one (a port range, or all traffic) that already gives the same access.
        """
        if self.source_group != source_group:
            return False
        if self.protocol == "-1":
            return True
        if self.protocol not in ("tcp", "6") or self.from_port is None or self.to_port is None:
            return False
        return self.from_port <= port <= self.to_port


def read_ingress_rules(ec2: Any, group_ids: Sequence[str]) -> dict[str, tuple[IngressRule, ...]]:
    """The group-referencing inbound rules of each VPC security group that exists, by id
    (a filter, not GroupIds, so that one deleted group does not fail the read); raises
    AwsCallError.
    """
    rules: dict[str, tuple[IngressRule, ...]] = {}
    paginator = ec2.get_paginator("describe_security_groups")
    try:
        for start in range(0, len(group_ids), FILTER_VALUES_MAX):
            chunk = list(group_ids[start : start + FILTER_VALUES_MAX])
            for page in paginator.paginate(Filters=[{"Name": "group-id", "Values": chunk}]):
                for group in page.get("SecurityGroups", []):
                    rules[str(group["GroupId"])] = tuple(_rules(group))
    except (ClientError, BotoCoreError) as exc:
        raise aws_call_error(exc, RULES_ACTION) from exc
    return rules


def _rules(group: Mapping[str, Any]) -> list[IngressRule]:
    return [
        IngressRule(
            protocol=str(permission.get("IpProtocol", "")),
            from_port=permission.get("FromPort"),
            to_port=permission.get("ToPort"),
            source_group=str(pair["GroupId"]),
        )
        for permission in group.get("IpPermissions", [])
        for pair in permission.get("UserIdGroupPairs", [])
        if pair.get("GroupId")
    ]


ReadClassic = Callable[[str], Pairs | None]
ReadRules = Callable[[Sequence[str]], Mapping[str, tuple[IngressRule, ...]]]


class GrantedView:
    """Whether a pair is granted, for one sweep. Each read is made at most once, when a pair
    first needs it, so a policy without classic targets never calls the classic API (an
    account without EC2-Classic would refuse it). A transient read failure raises
    AwsCallError (the sweep retries); a permanent one is kept and answered for every pair
    that needs it.
    """

    def __init__(self, read_classic: ReadClassic, read_rules: ReadRules) -> None:
        self._read_classic = read_classic
        self._read_rules = read_rules
        self._classic: dict[str, Pairs | AwsCallError | None] = {}
        self._rules: dict[str, tuple[IngressRule, ...] | AwsCallError] = {}
        self._added: set[tuple[str, ...]] = set()

    def granted(self, pair: Grant | Decision) -> bool | AwsCallError | None:
        """True or False; the error that kept it unknown; None if `pair` names no
        destination (a denial for a target the policy does not have).
        """
        if pair.cache_security_group is not None:
            if pair.group_name is None or pair.owner_id is None:
                return None
            pairs = self._pairs_of(pair.cache_security_group)
            if isinstance(pairs, AwsCallError):
                return pairs
            key = _classic_key(pair.cache_security_group, pair.group_name, pair.owner_id)
            return key in self._added or (pair.group_name, pair.owner_id) in (pairs or ())
        if pair.vpc_security_group is not None and pair.port is not None:
            rules = self._rules_of(pair.vpc_security_group)
            if isinstance(rules, AwsCallError):
                return rules
            key = _vpc_key(pair.vpc_security_group, pair.port, pair.group_id)
            return key in self._added or any(r.admits(pair.group_id, pair.port) for r in rules)
        return None

    def cache_group_exists(self, name: str) -> bool | AwsCallError:
        pairs = self._pairs_of(name)
        return pairs if isinstance(pairs, AwsCallError) else pairs is not None

    def record(self, grant: Grant) -> None:
        """The sweep made this grant: the rest of the run sees it granted."""
        if grant.cache_security_group is not None:
            self._added.add(
                _classic_key(grant.cache_security_group, grant.group_name, grant.owner_id)
            )
        elif grant.vpc_security_group is not None and grant.port is not None:
            self._added.add(_vpc_key(grant.vpc_security_group, grant.port, grant.group_id))

    def _pairs_of(self, name: str) -> Pairs | AwsCallError | None:
        # AWS stores cache security group names in lowercase and matches them so.
        key = name.lower()
        if key not in self._classic:
            try:
                self._classic[key] = self._read_classic(name)
            except AwsCallError as exc:
                if exc.transient:
                    raise
                self._classic[key] = exc
        return self._classic[key]

    def _rules_of(self, group_id: str) -> tuple[IngressRule, ...] | AwsCallError:
        if group_id not in self._rules:
            try:
                # A group that no longer exists has no rules: authorize then says why.
                self._rules[group_id] = self._read_rules([group_id]).get(group_id, ())
            except AwsCallError as exc:
                if exc.transient:
                    raise
                self._rules[group_id] = exc
        return self._rules[group_id]


def _classic_key(cache_security_group: str, group_name: str, owner_id: str) -> tuple[str, ...]:
    return ("classic", cache_security_group.lower(), group_name, owner_id)


def _vpc_key(vpc_security_group: str, port: int, group_id: str) -> tuple[str, ...]:
    return ("vpc", vpc_security_group, str(port), group_id)
