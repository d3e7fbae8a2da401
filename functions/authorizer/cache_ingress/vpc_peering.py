"""EC2 adapter: the active VPC peering connections between the caches' VPCs and others.

A VPC cache admits a group of another VPC only if a security-group reference can cross to
it: the same VPC (shared with the member through RAM), or, for a target whose policy allows
peered VPCs, a VPC joined to the cache's by an active peering connection in the same region
(the `same-vpc` rule in the README). This reads those connections, as the cache account sees
them (it is the requester or the accepter of each), in at most two calls a lookup: one for
the connections the caches' VPCs asked for, one for those they accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.errors import AwsCallError
from cache_ingress.models import SecurityGroupFacts, VpcCacheFacts
from cache_ingress.observability import logger

if TYPE_CHECKING:
    from cache_ingress.policy import Policy

ACTION = "ec2:DescribeVpcPeeringConnections"
# EC2 accepts at most 200 values in one filter.
FILTER_VALUES_MAX = 200

# (one VPC, the other) -> the peering connection's id; both orders are keys.
Peerings = dict[tuple[str, str], str]
# The lookup, as the wiring gives it: the caches' VPCs -> their active peering connections.
ReadPeerings = Callable[[Sequence[str]], Peerings]


def active_peerings(ec2: Any, cache_vpcs: Iterable[str]) -> Peerings:
    """Every active peering connection of the caches' VPCs, by the pair of VPCs it joins
    (in both orders). Raises AwsCallError."""
    vpcs = sorted(set(cache_vpcs))
    found: Peerings = {}
    try:
        for side in ("requester-vpc-info.vpc-id", "accepter-vpc-info.vpc-id"):
            for start in range(0, len(vpcs), FILTER_VALUES_MAX):
                request: dict[str, Any] = {
                    "Filters": [
                        {"Name": "status-code", "Values": ["active"]},
                        {"Name": side, "Values": vpcs[start : start + FILTER_VALUES_MAX]},
                    ]
                }
                while True:
                    page = ec2.describe_vpc_peering_connections(**request)
                    for connection in page.get("VpcPeeringConnections", []):
                        _add(found, connection)
                    if not page.get("NextToken"):
                        break
                    request["NextToken"] = page["NextToken"]
    except (ClientError, BotoCoreError) as exc:
        raise aws_call_error(exc, ACTION) from exc
    return found


def _add(found: Peerings, connection: dict[str, Any]) -> None:
    if (connection.get("Status") or {}).get("Code") != "active":
        return
    requester = (connection.get("RequesterVpcInfo") or {}).get("VpcId")
    accepter = (connection.get("AccepterVpcInfo") or {}).get("VpcId")
    identifier = connection.get("VpcPeeringConnectionId")
    if requester and accepter and identifier:
        found[(str(requester), str(accepter))] = str(identifier)
        found[(str(accepter), str(requester))] = str(identifier)


def with_peerings(
    groups: dict[str, SecurityGroupFacts], policy: Policy, read: ReadPeerings
) -> dict[str, SecurityGroupFacts]:
    """`groups` (changed in place, and returned), each outside a cache's VPC whose tag names
    a target that admits peered VPCs given the active peering connections joining its VPC to
    the caches' (`SecurityGroupFacts.peerings`): one lookup for them all, none if no group
    needs it. Unreadable connections are logged and left out: such pairs are denied
    `same-vpc`, never granted."""
    peered = {t.vpc for t in policy.targets.values() if t.vpc is not None and t.allow.peered_vpcs}
    needs: dict[str, set[str]] = {}
    for group_id, group in groups.items():
        for destination, facts in group.destinations.items():
            if (
                destination in peered
                and isinstance(facts, VpcCacheFacts)
                and facts.vpc_id is not None
                and group.vpc_id is not None
                and facts.vpc_id != group.vpc_id
            ):
                needs.setdefault(group_id, set()).add(facts.vpc_id)
    if not needs:
        return groups
    try:
        joined = read(sorted({vpc for vpcs in needs.values() for vpc in vpcs}))
    except AwsCallError:
        # Unread peerings never grant: such pairs are denied same-vpc, and the log says why
        # (the sweep repairs them once the call answers again).
        logger.warning("peering connections unreadable", extra={"groups": sorted(needs)})
        return groups
    for group_id, cache_vpcs in needs.items():
        group = groups[group_id]
        found = {
            vpc: joined[(str(group.vpc_id), vpc)]
            for vpc in cache_vpcs
            if (str(group.vpc_id), vpc) in joined
        }
        if found:
            groups[group_id] = replace(group, peerings=found)
    return groups
