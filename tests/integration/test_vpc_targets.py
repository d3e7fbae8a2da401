"""The VPC lookup adapter against moto (with the emulation of its gaps): each lookup path,
each way a lookup fails, and one describe per cache per lookup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from cache_ingress.models import (
    FailureKind,
    SecurityGroupFacts,
    TargetKind,
    UnresolvedDestination,
    VpcCacheFacts,
    VpcDestination,
)
from cache_ingress.security_groups import describe_groups
from cache_ingress.vpc_targets import resolve_destinations
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.test_vpc_emulation import (
    CACHE_GROUP,
    MEMCACHED_GROUP,
    MEMCACHED_PORT,
    REDIS_PORT,
    REPORTS_GROUP,
    VpcWorld,
    vpc_world,
)
from tests.support.events import ACCOUNT, REGION
from tests.support.faults import Fault

pytestmark = pytest.mark.integration

SESSIONS = VpcDestination(TargetKind.REPLICATION_GROUP, "sessions-redis")
SESSIONS_MEMBER = VpcDestination(TargetKind.CACHE_CLUSTER, "sessions-redis-001")
LEGACY = VpcDestination(TargetKind.CACHE_CLUSTER, "legacy-memcached")
REPORTS = VpcDestination(TargetKind.VPC_SECURITY_GROUP, REPORTS_GROUP, 6380)


@pytest.fixture
def vpc(world: SeededWorld) -> VpcWorld:
    return vpc_world(world)


@pytest.fixture
def calls(clients: dict[str, Any]) -> Counter[str]:
    """How many requests each ElastiCache and EC2 describe operation received."""
    seen: Counter[str] = Counter()
    for service in ("elasticache", "ec2"):
        clients[service].meta.events.register(
            f"before-call.{service}",
            lambda model, **_: seen.update([model.name]),
        )
    return seen


def resolve(clients: dict[str, Any], destinations: Sequence[VpcDestination]) -> dict[Any, Any]:
    def groups(group_ids: Sequence[str]) -> dict[str, SecurityGroupFacts]:
        return describe_groups(clients["ec2"], group_ids, REGION)

    return resolve_destinations(clients["elasticache"], groups, destinations, REGION)


def test_a_replication_group_resolves_to_its_members_group_and_its_port(
    vpc: VpcWorld, clients: dict[str, Any], calls: Counter[str]
) -> None:
    found = resolve(clients, [SESSIONS])

    assert found == {SESSIONS: VpcCacheFacts(CACHE_GROUP, vpc.vpc_id, ACCOUNT, REDIS_PORT)}
    assert calls["DescribeReplicationGroups"] == 1
    assert calls["DescribeCacheClusters"] == 1


def test_a_memcached_cluster_resolves_to_its_group_and_configuration_port(
    vpc: VpcWorld, clients: dict[str, Any]
) -> None:
    found = resolve(clients, [LEGACY])
    assert found == {LEGACY: VpcCacheFacts(MEMCACHED_GROUP, vpc.vpc_id, ACCOUNT, MEMCACHED_PORT)}


def test_an_explicit_group_is_read_from_ec2_only(
    vpc: VpcWorld, clients: dict[str, Any], calls: Counter[str]
) -> None:
    found = resolve(clients, [REPORTS])

    assert found == {REPORTS: VpcCacheFacts(REPORTS_GROUP, vpc.vpc_id, ACCOUNT, 6380)}
    assert calls["DescribeReplicationGroups"] == calls["DescribeCacheClusters"] == 0
    assert calls["DescribeSecurityGroups"] == 1


def test_each_cache_is_described_once_per_lookup(
    vpc: VpcWorld, clients: dict[str, Any], calls: Counter[str]
) -> None:
    # The replication group reads its first member, which another target also names.
    found = resolve(clients, [SESSIONS, SESSIONS_MEMBER, SESSIONS, LEGACY, REPORTS])

    assert set(found) == {SESSIONS, SESSIONS_MEMBER, LEGACY, REPORTS}
    assert found[SESSIONS] == found[SESSIONS_MEMBER]
    assert calls["DescribeReplicationGroups"] == 1
    assert calls["DescribeCacheClusters"] == 2
    assert calls["DescribeSecurityGroups"] == 1


@pytest.mark.parametrize(
    ("destination", "code", "reason"),
    [
        (
            VpcDestination(TargetKind.REPLICATION_GROUP, "search-redis"),
            "ReplicationGroupNotFoundFault",
            "replication group search-redis does not exist in us-east-1",
        ),
        (
            VpcDestination(TargetKind.CACHE_CLUSTER, "gone"),
            "CacheClusterNotFound",
            "cache cluster gone does not exist in us-east-1",
        ),
        (
            VpcDestination(TargetKind.VPC_SECURITY_GROUP, "sg-0ffffffffffffffff", 6379),
            "InvalidGroup.NotFound",
            "security group sg-0ffffffffffffffff does not exist in us-east-1",
        ),
    ],
)
def test_a_missing_cache_or_group_is_a_permanent_failure_saying_so(
    destination: VpcDestination, code: str, reason: str, vpc: VpcWorld, clients: dict[str, Any]
) -> None:
    assert resolve(clients, [destination]) == {
        destination: UnresolvedDestination(reason, code, FailureKind.PERMANENT)
    }


def test_a_cache_with_several_groups_is_not_guessed(vpc: VpcWorld, clients: dict[str, Any]) -> None:
    clients["elasticache"].create_cache_cluster(
        CacheClusterId="two-groups",
        Engine="redis",
        CacheNodeType="cache.t4g.micro",
        SecurityGroupIds=[CACHE_GROUP, REPORTS_GROUP],
    )
    destination = VpcDestination(TargetKind.CACHE_CLUSTER, "two-groups")

    [unresolved] = resolve(clients, [destination]).values()

    assert unresolved.error_code == "SeveralVpcSecurityGroups"
    assert unresolved.failure is FailureKind.PERMANENT
    assert f"({CACHE_GROUP}, {REPORTS_GROUP})" in unresolved.reason
    assert "vpc_security_group" in unresolved.reason


def test_a_cluster_with_no_vpc_group_points_at_the_classic_kind(
    vpc: VpcWorld, clients: dict[str, Any]
) -> None:
    clients["elasticache"].create_cache_cluster(
        CacheClusterId="classic", Engine="redis", CacheNodeType="cache.t4g.micro"
    )
    destination = VpcDestination(TargetKind.CACHE_CLUSTER, "classic")

    [unresolved] = resolve(clients, [destination]).values()

    assert (unresolved.error_code, unresolved.failure) == (
        "NoVpcSecurityGroup",
        FailureKind.PERMANENT,
    )
    assert "cache_security_group" in unresolved.reason


@pytest.mark.parametrize(
    ("kind", "code", "failure"),
    [
        ("throttling", "Throttling", FailureKind.TRANSIENT),
        ("server-error", "InternalFailure", FailureKind.TRANSIENT),
        ("timeout", "ReadTimeoutError", FailureKind.TRANSIENT),
        ("access-denied", "AccessDenied", FailureKind.PERMANENT),
    ],
)
def test_describe_faults_are_classified_per_cache(
    kind: str, code: str, failure: FailureKind, vpc: VpcWorld, clients: dict[str, Any]
) -> None:
    Fault(clients["elasticache"], "DescribeReplicationGroups", kind)

    found = resolve(clients, [SESSIONS, REPORTS])

    unresolved = found[SESSIONS]
    assert isinstance(unresolved, UnresolvedDestination)
    assert (unresolved.error_code, unresolved.failure) == (code, failure)
    assert "elasticache:DescribeReplicationGroups failed" in unresolved.reason
    assert isinstance(found[REPORTS], VpcCacheFacts)


@pytest.mark.parametrize(
    ("kind", "failure"),
    [("throttling", FailureKind.TRANSIENT), ("access-denied", FailureKind.PERMANENT)],
)
def test_an_unreadable_security_group_leaves_every_located_cache_unresolved(
    kind: str, failure: FailureKind, vpc: VpcWorld, clients: dict[str, Any]
) -> None:
    Fault(clients["ec2"], "DescribeSecurityGroups", kind)

    found = resolve(clients, [SESSIONS, LEGACY])

    assert {type(f) for f in found.values()} == {UnresolvedDestination}
    assert {f.failure for f in found.values() if isinstance(f, UnresolvedDestination)} == {failure}


# Shapes moto cannot produce (a cache still being created, cluster mode on) are answered
# through botocore's Stubber, which checks each response against the service model.


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("elasticache", region_name=REGION)
    with Stubber(client) as stubber:
        yield client, stubber


def no_groups(group_ids: Sequence[str]) -> dict[str, SecurityGroupFacts]:
    return {
        group_id: SecurityGroupFacts(group_id, "cache", ACCOUNT, "vpc-1", REGION)
        for group_id in group_ids
    }


def test_a_replication_group_being_created_is_not_ready_and_retried(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    stubber.add_response(
        "describe_replication_groups",
        {"ReplicationGroups": [{"ReplicationGroupId": "new", "Status": "creating"}]},
        {"ReplicationGroupId": "new"},
    )
    destination = VpcDestination(TargetKind.REPLICATION_GROUP, "new")

    [unresolved] = resolve_destinations(client, no_groups, [destination], REGION).values()

    assert isinstance(unresolved, UnresolvedDestination)
    assert (unresolved.error_code, unresolved.failure) == ("CacheNotReady", FailureKind.TRANSIENT)
    assert "no member clusters yet" in unresolved.reason


def test_a_cluster_without_an_endpoint_yet_is_not_ready(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response(
        "describe_cache_clusters",
        {
            "CacheClusters": [
                {
                    "CacheClusterId": "new",
                    "CacheClusterStatus": "creating",
                    "SecurityGroups": [{"SecurityGroupId": CACHE_GROUP, "Status": "active"}],
                }
            ]
        },
        {"CacheClusterId": "new", "ShowCacheNodeInfo": True},
    )
    destination = VpcDestination(TargetKind.CACHE_CLUSTER, "new")

    [unresolved] = resolve_destinations(client, no_groups, [destination], REGION).values()

    assert isinstance(unresolved, UnresolvedDestination)
    assert (unresolved.error_code, unresolved.failure) == ("CacheNotReady", FailureKind.TRANSIENT)


def test_a_member_cluster_that_cannot_be_found_fails_closed(
    stubbed: tuple[Any, Stubber],
) -> None:
    # What moto itself answers without the emulation: members listed but not describable.
    client, stubber = stubbed
    stubber.add_response(
        "describe_replication_groups",
        {"ReplicationGroups": [{"ReplicationGroupId": "rg", "MemberClusters": ["rg-001"]}]},
        {"ReplicationGroupId": "rg"},
    )
    stubber.add_client_error(
        "describe_cache_clusters",
        service_error_code="CacheClusterNotFound",
        service_message="Cache cluster rg-001 not found.",
        http_status_code=404,
        expected_params={"CacheClusterId": "rg-001", "ShowCacheNodeInfo": True},
    )
    destination = VpcDestination(TargetKind.REPLICATION_GROUP, "rg")

    [unresolved] = resolve_destinations(client, no_groups, [destination], REGION).values()

    assert unresolved == UnresolvedDestination(
        "cache cluster rg-001 does not exist in us-east-1",
        "CacheClusterNotFound",
        FailureKind.PERMANENT,
    )


def test_cluster_mode_uses_the_configuration_endpoints_port(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response(
        "describe_replication_groups",
        {
            "ReplicationGroups": [
                {
                    "ReplicationGroupId": "sharded",
                    "MemberClusters": ["sharded-0001-001"],
                    "ConfigurationEndpoint": {"Address": "clustercfg.sharded", "Port": 6400},
                    "NodeGroups": [{"NodeGroupId": "0001"}],
                }
            ]
        },
        {"ReplicationGroupId": "sharded"},
    )
    stubber.add_response(
        "describe_cache_clusters",
        {
            "CacheClusters": [
                {
                    "CacheClusterId": "sharded-0001-001",
                    "SecurityGroups": [{"SecurityGroupId": CACHE_GROUP, "Status": "active"}],
                }
            ]
        },
        {"CacheClusterId": "sharded-0001-001", "ShowCacheNodeInfo": True},
    )
    destination = VpcDestination(TargetKind.REPLICATION_GROUP, "sharded")

    found = resolve_destinations(client, no_groups, [destination], REGION)

    assert found == {destination: VpcCacheFacts(CACHE_GROUP, "vpc-1", ACCOUNT, 6400)}
