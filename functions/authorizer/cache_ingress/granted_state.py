"""ElastiCache adapter: what every cache security group grants now, read once per sweep.

`describe_cache_security_groups` without a name lists every cache security group of the
account and region with its EC2 security group pairs, so one paginated read (a page holds
up to 100 cache groups) answers "is this pair granted?" for every tagged group of the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.cache_security_groups import CLASSIC_UNAVAILABLE
from cache_ingress.errors import AwsCallError

ACTION = "elasticache:DescribeCacheSecurityGroups"
PAGE_SIZE_MAX = 100
# The model documents Status without an enum; RDS reports these two while a pair grants
# access. Any other status ("revoking", or one AWS adds later) counts as not granted: the
# sweep then asks authorize, which answers AuthorizationAlreadyExists if it was granted.
GRANTING_STATUSES = frozenset({"authorized", "authorizing"})


@dataclass(frozen=True, slots=True)
class GrantedState:
    """Per cache security group (by lower-case name, as AWS stores it), its granted pairs
    of (EC2 security group name, owner account id).
    """

    pairs: Mapping[str, frozenset[tuple[str, str]]] = field(default_factory=dict)

    def exists(self, cache_security_group: str) -> bool:
        return cache_security_group.lower() in self.pairs

    def grants(self, cache_security_group: str, group_name: str, owner_id: str) -> bool:
        granted = self.pairs.get(cache_security_group.lower(), frozenset())
        return (group_name, owner_id) in granted


def read_granted_state(elasticache: Any, *, page_size: int = PAGE_SIZE_MAX) -> GrantedState:
    """Every cache security group and its granted pairs; raises AwsCallError.

    An account without EC2-Classic answers InvalidParameterValue; that is reported as the
    permanent `CacheSecurityGroupsUnavailable`, as the authorize adapter does.
    """
    pairs: dict[str, frozenset[tuple[str, str]]] = {}
    marker: str | None = None
    try:
        while True:
            request: dict[str, Any] = {"MaxRecords": page_size}
            if marker:
                request["Marker"] = marker
            page = elasticache.describe_cache_security_groups(**request)
            for group in page.get("CacheSecurityGroups", []):
                pairs[str(group["CacheSecurityGroupName"]).lower()] = frozenset(
                    (str(pair["EC2SecurityGroupName"]), str(pair["EC2SecurityGroupOwnerId"]))
                    for pair in group.get("EC2SecurityGroups", [])
                    if pair.get("Status") in GRANTING_STATUSES
                )
            marker = page.get("Marker")
            if not marker:
                return GrantedState(pairs)
    except ClientError as exc:
        error = aws_call_error(exc, ACTION)
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
