"""What moto 5.2.5 lacks for VPC caches, filled the way AWS answers, and checked through
botocore's own parsing. The other VPC tests use `emulate_vpc_caches` and `seed_vpc_world`.

Gaps found in moto 5.2.5 (read from moto/elasticache and moto/ec2, then observed):

1. `CreateCacheCluster` / `DescribeCacheClusters` omit `SecurityGroups`, although moto keeps
   the `SecurityGroupIds` it was given. AWS answers `[{SecurityGroupId, Status: active}]`.
2. `ShowCacheNodeInfo` is ignored: no `CacheNodes`, so no node `Endpoint` (the port of a
   Redis/Valkey cluster); Memcached clusters have no `ConfigurationEndpoint` either.
3. `CreateReplicationGroup` lists `MemberClusters` but creates no cache clusters, so
   describing a member fails with `CacheClusterNotFound`. In AWS every member is a cache
   cluster carrying the group's security groups, port and `ReplicationGroupId`.
4. EC2 keeps the rule `Description` inside the rule's identity, so a second rule for the
   same source group with another description is added. AWS identifies a rule by protocol,
   ports and source and answers `InvalidPermission.Duplicate`.

Not filled (the function does not depend on them): moto defaults every engine's port to
6379 (Memcached's is 11211, so tests pass ports explicitly); deleting a replication group
leaves its member clusters; moto accepts description characters EC2 rejects (the adapter
never sends them, see test_vpc_ingress) and references to groups in unpeered VPCs (the
same-vpc rule denies those before any call).

This belongs with the project's other moto emulation (src/cache_ingress_tools/emulator/)
once the local scenario seeds a VPC cache; until then it lives beside the tests using it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from moto.core.responses import PaginatedResult
from moto.ec2.models.security_groups import SecurityGroupRule
from moto.elasticache.models import CacheCluster, ElastiCacheBackend
from moto.elasticache.responses import ElastiCacheResponse

pytestmark = pytest.mark.integration

_MEMBERSHIP_ACTIVE = "active"


# --- the emulation ------------------------------------------------------------------------


def _security_groups(cluster: CacheCluster) -> list[dict[str, str]]:
    return [
        {"SecurityGroupId": group_id, "Status": _MEMBERSHIP_ACTIVE}
        for group_id in cluster.security_group_ids
    ]


def _configuration_endpoint(cluster: CacheCluster) -> dict[str, Any] | None:
    if cluster.engine != "memcached":
        return None
    return {
        "Address": f"{cluster.cache_cluster_id}.cfg.use1.cache.amazonaws.com",
        "Port": cluster.port,
    }


class _ClusterWithNodes:
    """A cluster as DescribeCacheClusters shows it with ShowCacheNodeInfo: its nodes too."""

    def __init__(self, cluster: CacheCluster) -> None:
        self._cluster = cluster

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cluster, name)

    @property
    def cache_nodes(self) -> list[dict[str, Any]]:
        cluster = self._cluster
        return [
            {
                "CacheNodeId": f"{index:04d}",
                "CacheNodeStatus": "available",
                "Endpoint": {
                    "Address": f"{cluster.cache_cluster_id}-{index:04d}.use1.cache.amazonaws.com",
                    "Port": cluster.port,
                },
            }
            for index in range(1, (cluster.num_cache_nodes or 1) + 1)
        ]


def _describe_cache_clusters(original: Any) -> Any:
    def describe(self: ElastiCacheResponse) -> Any:
        result = original(self)
        if str(self._get_param("ShowCacheNodeInfo", "")).lower() != "true":
            return result
        clusters = result.result["CacheClusters"]
        return PaginatedResult({"CacheClusters": [_ClusterWithNodes(c) for c in clusters]})

    return describe


def _create_replication_group(original: Any) -> Any:
    parameters = inspect.signature(ElastiCacheBackend.create_cache_cluster).parameters

    def create(self: ElastiCacheBackend, **kwargs: Any) -> Any:
        group = original(self, **kwargs)
        for member in group.member_clusters:
            if member in self.cache_clusters:
                continue
            arguments: dict[str, Any] = {name: None for name in parameters if name != "self"}
            arguments.update(
                cache_cluster_id=member,
                replication_group_id=group.replication_group_id,
                cache_node_type=group.cache_node_type,
                engine=group.engine,
                engine_version=kwargs.get("engine_version"),
                cache_subnet_group_name=kwargs.get("cache_subnet_group_name"),
                security_group_ids=list(kwargs.get("security_group_ids") or []),
                port=group.port,
                log_delivery_configurations=[],
            )
            self.create_cache_cluster(**arguments)
        return group

    return create


def _without_description(source_group: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in source_group.items() if key != "Description"}


def _rule_equality(original: Any) -> Any:
    def equal(self: SecurityGroupRule, other: SecurityGroupRule) -> bool:
        if not (self.source_group and other.source_group):
            return bool(original(self, other))
        mine = SimpleNamespace(
            **{**vars(self), "source_group": _without_description(self.source_group)}
        )
        theirs = SimpleNamespace(
            **{**vars(other), "source_group": _without_description(other.source_group)}
        )
        return bool(original(mine, theirs))

    return equal


@contextmanager
def emulate_vpc_caches() -> Iterator[None]:
    """Fill the four gaps above for as long as the context is open."""
    with ExitStack() as stack:
        stack.enter_context(
            mock.patch.object(
                CacheCluster, "security_groups", property(_security_groups), create=True
            )
        )
        stack.enter_context(
            mock.patch.object(
                CacheCluster,
                "configuration_endpoint",
                property(_configuration_endpoint),
                create=True,
            )
        )
        stack.enter_context(
            mock.patch.object(
                ElastiCacheResponse,
                "describe_cache_clusters",
                _describe_cache_clusters(ElastiCacheResponse.describe_cache_clusters),
            )
        )
        stack.enter_context(
            mock.patch.object(
                ElastiCacheBackend,
                "create_replication_group",
                _create_replication_group(ElastiCacheBackend.create_replication_group),
            )
        )
        stack.enter_context(
            mock.patch.object(SecurityGroupRule, "__eq__", _rule_equality(SecurityGroupRule.__eq__))
        )
        yield


# --- a VPC world on top of the default scenario ------------------------------------------

# Fixed ids, as the default scenario fixes its own, so sample events can name them.
CACHE_GROUP = "sg-0c1a2b3c4d5e6f701"  # sessions-redis's security group
MEMCACHED_GROUP = "sg-0c2b3c4d5e6f70812"  # legacy-memcached's security group
REPORTS_GROUP = "sg-0c3c4d5e6f7081923"  # named explicitly by the reports target
SESSIONS_APP = "sg-0a2b3c4d5e6f70812"  # tagged cache-ingress=sessions, same VPC
OTHER_VPC_APP = "sg-0b3c4d5e6f7081923"  # tagged cache-ingress=sessions, another VPC
SEARCH_APP = "sg-0d4e5f60718293a4b"  # tagged cache-ingress=search; search-redis is missing
LEGACY_APP = "sg-0e5f60718293a4b5c"  # tagged cache-ingress=legacy,reports
REDIS_PORT = 6379
MEMCACHED_PORT = 11211
REPORTS_PORT = 6380

VPC_POLICY = f"""
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
    allow: {{required_tags: {{env: prod}}}}
  sessions:
    replication_group: sessions-redis
    allow: {{required_tags: {{env: prod}}}}
  search:
    replication_group: search-redis
    allow: {{required_tags: {{env: prod}}}}
  legacy:
    cache_cluster: legacy-memcached
    allow: {{required_tags: {{env: prod}}}}
  reports:
    vpc_security_group: {{group_id: {REPORTS_GROUP}, port: {REPORTS_PORT}}}
    allow: {{required_tags: {{env: prod}}}}
"""


@dataclass(frozen=True, slots=True)
class VpcWorld:
    vpc_id: str
    other_vpc_id: str


def _create_group(ec2: Any, group_id: str, name: str, vpc_id: str, tags: Mapping[str, str]) -> None:
    with mock.patch(
        "moto.ec2.models.security_groups.random_security_group_id", return_value=group_id
    ):
        ec2.create_security_group(
            GroupName=name,
            Description=name,
            VpcId=vpc_id,
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ]
            if tags
            else [],
        )


def seed_vpc_world(clients: Mapping[str, Any], vpc_id: str) -> VpcWorld:
    """Caches in `vpc_id` (the scenario's VPC), their groups, and tagged application groups
    in it and in a second VPC. Call inside `emulate_vpc_caches`.
    """
    ec2, elasticache = clients["ec2"], clients["elasticache"]
    seeded = ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": [OTHER_VPC_APP]}])
    if seeded["SecurityGroups"]:
        # The scenario seeds this world already (same ids): use it as it is.
        return VpcWorld(vpc_id=vpc_id, other_vpc_id=seeded["SecurityGroups"][0]["VpcId"])
    other_vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"][0]
    prod = {"env": "prod"}
    for group_id, name, vpc, tags in [
        (CACHE_GROUP, "sessions-cache", vpc_id, {}),
        (MEMCACHED_GROUP, "legacy-cache", vpc_id, {}),
        (REPORTS_GROUP, "reports-cache", vpc_id, {}),
        (SESSIONS_APP, "sessions-app", vpc_id, {"cache-ingress": "sessions", **prod}),
        (OTHER_VPC_APP, "sessions-app-elsewhere", other_vpc, {"cache-ingress": "sessions", **prod}),
        (SEARCH_APP, "search-app", vpc_id, {"cache-ingress": "search", **prod}),
        (LEGACY_APP, "legacy-app", vpc_id, {"cache-ingress": "legacy,reports", **prod}),
    ]:
        _create_group(ec2, group_id, name, vpc, tags)
    elasticache.create_cache_subnet_group(
        CacheSubnetGroupName="caches",
        CacheSubnetGroupDescription="cache subnets",
        SubnetIds=[subnet["SubnetId"]],
    )
    elasticache.create_replication_group(
        ReplicationGroupId="sessions-redis",
        ReplicationGroupDescription="sessions",
        Engine="redis",
        CacheNodeType="cache.t4g.micro",
        NumCacheClusters=2,
        Port=REDIS_PORT,
        CacheSubnetGroupName="caches",
        SecurityGroupIds=[CACHE_GROUP],
    )
    elasticache.create_cache_cluster(
        CacheClusterId="legacy-memcached",
        Engine="memcached",
        CacheNodeType="cache.t4g.micro",
        NumCacheNodes=2,
        Port=MEMCACHED_PORT,
        CacheSubnetGroupName="caches",
        SecurityGroupIds=[MEMCACHED_GROUP],
    )
    return VpcWorld(vpc_id=vpc_id, other_vpc_id=other_vpc)


# --- the emulation answers as AWS would ---------------------------------------------------


@pytest.fixture
def vpc_clients(clients: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with emulate_vpc_caches():
        yield clients


def test_a_cluster_names_its_security_groups(vpc_clients: dict[str, Any]) -> None:
    ec2, elasticache = vpc_clients["ec2"], vpc_clients["elasticache"]
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="c", Description="c", VpcId=vpc)["GroupId"]

    created = elasticache.create_cache_cluster(
        CacheClusterId="c1",
        Engine="redis",
        CacheNodeType="cache.t4g.micro",
        SecurityGroupIds=[group],
    )["CacheCluster"]
    [described] = elasticache.describe_cache_clusters(CacheClusterId="c1")["CacheClusters"]

    expected = [{"SecurityGroupId": group, "Status": "active"}]
    assert created["SecurityGroups"] == described["SecurityGroups"] == expected
    assert "CacheNodes" not in described


def test_show_cache_node_info_adds_the_nodes_with_their_port(vpc_clients: dict[str, Any]) -> None:
    elasticache = vpc_clients["elasticache"]
    elasticache.create_cache_cluster(
        CacheClusterId="c2", Engine="redis", CacheNodeType="cache.t4g.micro", Port=6390
    )

    [cluster] = elasticache.describe_cache_clusters(CacheClusterId="c2", ShowCacheNodeInfo=True)[
        "CacheClusters"
    ]

    assert [node["Endpoint"]["Port"] for node in cluster["CacheNodes"]] == [6390]
    assert cluster["CacheClusterId"] == "c2"
    assert "ConfigurationEndpoint" not in cluster


def test_a_memcached_cluster_has_a_configuration_endpoint(vpc_clients: dict[str, Any]) -> None:
    elasticache = vpc_clients["elasticache"]
    elasticache.create_cache_cluster(
        CacheClusterId="m1",
        Engine="memcached",
        CacheNodeType="cache.t4g.micro",
        NumCacheNodes=3,
        Port=11211,
    )

    [cluster] = elasticache.describe_cache_clusters(CacheClusterId="m1", ShowCacheNodeInfo=True)[
        "CacheClusters"
    ]

    assert cluster["ConfigurationEndpoint"]["Port"] == 11211
    assert len(cluster["CacheNodes"]) == 3


def test_replication_group_members_are_cache_clusters(vpc_clients: dict[str, Any]) -> None:
    ec2, elasticache = vpc_clients["ec2"], vpc_clients["elasticache"]
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="c", Description="c", VpcId=vpc)["GroupId"]

    created = elasticache.create_replication_group(
        ReplicationGroupId="rg1",
        ReplicationGroupDescription="d",
        Engine="redis",
        CacheNodeType="cache.t4g.micro",
        NumCacheClusters=2,
        Port=6391,
        SecurityGroupIds=[group],
    )["ReplicationGroup"]

    assert "SecurityGroups" not in created  # as in AWS: a replication group has none itself
    for member in created["MemberClusters"]:
        [cluster] = elasticache.describe_cache_clusters(
            CacheClusterId=member, ShowCacheNodeInfo=True
        )["CacheClusters"]
        assert cluster["ReplicationGroupId"] == "rg1"
        assert cluster["SecurityGroups"] == [{"SecurityGroupId": group, "Status": "active"}]
        assert cluster["CacheNodes"][0]["Endpoint"]["Port"] == 6391


def test_a_rule_differing_only_in_description_is_a_duplicate(vpc_clients: dict[str, Any]) -> None:
    ec2 = vpc_clients["ec2"]
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    cache = ec2.create_security_group(GroupName="c", Description="c", VpcId=vpc)["GroupId"]
    app = ec2.create_security_group(GroupName="a", Description="a", VpcId=vpc)["GroupId"]

    def rule(port: int, description: str) -> list[dict[str, Any]]:
        pair = {"GroupId": app, "Description": description}
        return [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "UserIdGroupPairs": [pair]}]

    ec2.authorize_security_group_ingress(GroupId=cache, IpPermissions=rule(6379, "first"))
    with pytest.raises(ec2.exceptions.ClientError) as raised:
        ec2.authorize_security_group_ingress(GroupId=cache, IpPermissions=rule(6379, "second"))
    ec2.authorize_security_group_ingress(GroupId=cache, IpPermissions=rule(6380, "other port"))

    assert raised.value.response["Error"]["Code"] == "InvalidPermission.Duplicate"
    [permission_6379, permission_6380] = sorted(
        ec2.describe_security_groups(GroupIds=[cache])["SecurityGroups"][0]["IpPermissions"],
        key=lambda p: p["FromPort"],
    )
    assert [p["Description"] for p in permission_6379["UserIdGroupPairs"]] == ["first"]
    assert permission_6380["FromPort"] == 6380


def test_the_emulation_is_removed_on_exit(clients: dict[str, Any]) -> None:
    with emulate_vpc_caches():
        pass
    clients["elasticache"].create_cache_cluster(
        CacheClusterId="c3",
        Engine="redis",
        CacheNodeType="cache.t4g.micro",
        SecurityGroupIds=["sg-1"],
    )

    [cluster] = clients["elasticache"].describe_cache_clusters(CacheClusterId="c3")["CacheClusters"]

    assert "SecurityGroups" not in cluster
    assert not hasattr(CacheCluster, "security_groups")
