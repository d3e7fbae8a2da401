"""ElastiCache adapter: the VPC security group and port of each cache that VPC targets name.

Where AWS keeps each fact:

- a cache cluster (`DescribeCacheClusters` with `ShowCacheNodeInfo`): its VPC security
  groups (`SecurityGroups`) and its port (`ConfigurationEndpoint` for Memcached, otherwise
  the nodes' `Endpoint`);
- a replication group (`DescribeReplicationGroups`): its port (`ConfigurationEndpoint` when
  cluster mode is on, otherwise the primary endpoint of its node group) and its member
  clusters; it has no `SecurityGroups` of its own, so they are read from its first member;
- the security group (`ec2:DescribeSecurityGroups`): its VPC and owner.

Every cache is described at most once per lookup, and the wiring makes one lookup per
invocation. A fact that cannot be read becomes an `UnresolvedDestination` with the reason,
the error code and whether a retry may help; the decision turns it into a failed pair and
never into a grant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.errors import AwsCallError
from cache_ingress.models import (
    DestinationFacts,
    FailureKind,
    SecurityGroupFacts,
    TargetKind,
    UnresolvedDestination,
    VpcCacheFacts,
    VpcDestination,
)

DescribeGroups = Callable[[Sequence[str]], Mapping[str, SecurityGroupFacts]]

NOT_FOUND_CODES = frozenset({"ReplicationGroupNotFoundFault", "CacheClusterNotFound"})
# Not an AWS code: the cache exists but has no endpoint or member yet (it is being created),
# so a retry a few minutes later may find it.
NOT_READY = "CacheNotReady"
NO_VPC_GROUP = "NoVpcSecurityGroup"
SEVERAL_VPC_GROUPS = "SeveralVpcSecurityGroups"
GROUP_NOT_FOUND = "InvalidGroup.NotFound"

_Described = dict[str, Any] | UnresolvedDestination


def resolve_destinations(
    elasticache: Any,
    describe_groups: DescribeGroups,
    destinations: Iterable[VpcDestination],
    region: str,
) -> dict[VpcDestination, DestinationFacts]:
    """Look up each destination once; every destination asked for gets an answer.

    `describe_groups` reads security groups by id (missing ids absent) and raises
    AwsCallError; it is the EC2 adapter the function already uses for tagged groups.
    """
    caches = _CacheDescriptions(elasticache, region)
    located: dict[VpcDestination, tuple[str, int]] = {}
    resolved: dict[VpcDestination, DestinationFacts] = {}
    for destination in dict.fromkeys(destinations):
        where = caches.locate(destination)
        if isinstance(where, UnresolvedDestination):
            resolved[destination] = where
        else:
            located[destination] = where
    if not located:
        return resolved
    try:
        groups = describe_groups(sorted({group_id for group_id, _ in located.values()}))
    except AwsCallError as exc:
        failure = FailureKind.TRANSIENT if exc.transient else FailureKind.PERMANENT
        unreadable = UnresolvedDestination(str(exc), exc.code, failure)
        return resolved | dict.fromkeys(located, unreadable)
    for destination, (group_id, port) in located.items():
        group = groups.get(group_id)
        if group is None:
            owner = "" if destination.cache is None else f" of {destination.label}"
            resolved[destination] = UnresolvedDestination(
                f"security group {group_id}{owner} does not exist in {region}",
                GROUP_NOT_FOUND,
                FailureKind.PERMANENT,
            )
        else:
            resolved[destination] = VpcCacheFacts(group_id, group.vpc_id, group.owner_id, port)
    return resolved


class _CacheDescriptions:
    """ElastiCache describe calls for one lookup, each made at most once."""

    def __init__(self, elasticache: Any, region: str) -> None:
        self._elasticache = elasticache
        self._region = region
        self._clusters: dict[str, _Described] = {}
        self._replication_groups: dict[str, _Described] = {}

    def locate(self, destination: VpcDestination) -> tuple[str, int] | UnresolvedDestination:
        """The cache's one VPC security group id and its port."""
        if destination.kind is TargetKind.VPC_SECURITY_GROUP and destination.port is not None:
            return destination.identifier, destination.port
        if destination.kind is TargetKind.CACHE_CLUSTER:
            cluster = self.cluster(destination.identifier)
            if isinstance(cluster, UnresolvedDestination):
                return cluster
            return _located(destination, _security_groups(cluster), _cluster_port(cluster))
        if destination.kind is TargetKind.REPLICATION_GROUP:
            return self._locate_replication_group(destination)
        raise ValueError(f"not a VPC destination: {destination}")

    def _locate_replication_group(
        self, destination: VpcDestination
    ) -> tuple[str, int] | UnresolvedDestination:
        group = self.replication_group(destination.identifier)
        if isinstance(group, UnresolvedDestination):
            return group
        members = group.get("MemberClusters") or []
        if not members:
            return _not_ready(destination, "has no member clusters yet")
        member = self.cluster(members[0])
        if isinstance(member, UnresolvedDestination):
            return member
        port = _replication_group_port(group) or _cluster_port(member)
        return _located(destination, _security_groups(member), port)

    def cluster(self, cluster_id: str) -> _Described:
        if cluster_id not in self._clusters:
            self._clusters[cluster_id] = self._describe(
                "elasticache:DescribeCacheClusters",
                f"cache cluster {cluster_id}",
                lambda: self._elasticache.describe_cache_clusters(
                    CacheClusterId=cluster_id, ShowCacheNodeInfo=True
                )["CacheClusters"],
            )
        return self._clusters[cluster_id]

    def replication_group(self, group_id: str) -> _Described:
        if group_id not in self._replication_groups:
            self._replication_groups[group_id] = self._describe(
                "elasticache:DescribeReplicationGroups",
                f"replication group {group_id}",
                lambda: self._elasticache.describe_replication_groups(ReplicationGroupId=group_id)[
                    "ReplicationGroups"
                ],
            )
        return self._replication_groups[group_id]

    def _describe(self, action: str, what: str, call: Callable[[], list[Any]]) -> _Described:
        try:
            found = call()
        except (ClientError, BotoCoreError) as exc:
            error = aws_call_error(exc, action)
            if error.code in NOT_FOUND_CODES:
                return UnresolvedDestination(
                    f"{what} does not exist in {self._region}", error.code, FailureKind.PERMANENT
                )
            failure = FailureKind.TRANSIENT if error.transient else FailureKind.PERMANENT
            return UnresolvedDestination(str(error), error.code, failure)
        if not found or not isinstance(found[0], dict):
            # Asked by id, AWS answers with that one cache or with a not-found fault.
            return UnresolvedDestination(
                f"{what}: {action} answered without it", "UnexpectedResponse", FailureKind.PERMANENT
            )
        return found[0]


def _located(
    destination: VpcDestination, group_ids: list[str], port: int | None
) -> tuple[str, int] | UnresolvedDestination:
    if not group_ids:
        return UnresolvedDestination(
            f"{destination.label} has no VPC security group, so it is not in a VPC; "
            "name a cluster outside a VPC with cache_security_group",
            NO_VPC_GROUP,
            FailureKind.PERMANENT,
        )
    if len(group_ids) > 1:
        # Opening all of them would widen access through groups other resources may share;
        # picking one would be a guess. The policy reviewer names the one to open.
        return UnresolvedDestination(
            f"{destination.label} has {len(group_ids)} VPC security groups "
            f"({', '.join(group_ids)}); name the one to open with vpc_security_group",
            SEVERAL_VPC_GROUPS,
            FailureKind.PERMANENT,
        )
    if port is None:
        return _not_ready(destination, "has no endpoint yet")
    return group_ids[0], port


def _not_ready(destination: VpcDestination, what: str) -> UnresolvedDestination:
    return UnresolvedDestination(
        f"{destination.label} {what}; it is probably being created",
        NOT_READY,
        FailureKind.TRANSIENT,
    )


def _security_groups(cluster: Mapping[str, Any]) -> list[str]:
    memberships = cluster.get("SecurityGroups") or []
    return list(
        dict.fromkeys(m["SecurityGroupId"] for m in memberships if m.get("SecurityGroupId"))
    )


def _cluster_port(cluster: Mapping[str, Any]) -> int | None:
    port = _port(cluster.get("ConfigurationEndpoint"))
    if port is not None:
        return port
    for node in cluster.get("CacheNodes") or []:
        port = _port(node.get("Endpoint"))
        if port is not None:
            return port
    return None


def _replication_group_port(group: Mapping[str, Any]) -> int | None:
    port = _port(group.get("ConfigurationEndpoint"))
    if port is not None:
        return port
    for node_group in group.get("NodeGroups") or []:
        port = _port(node_group.get("PrimaryEndpoint"))
        if port is not None:
            return port
        for member in node_group.get("NodeGroupMembers") or []:
            port = _port(member.get("ReadEndpoint"))
            if port is not None:
                return port
    return None


def _port(endpoint: object) -> int | None:
    if not isinstance(endpoint, Mapping):
        return None
    port = endpoint.get("Port")
    return port if isinstance(port, int) and not isinstance(port, bool) and port > 0 else None
