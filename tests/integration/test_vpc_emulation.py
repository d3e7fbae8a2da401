"""The VPC world of the default scenario, as the VPC tests use it, checked against moto.

The emulation of what moto lacks for VPC caches lives in
src/cache_ingress_tools/emulator/vpc_caches.py (its own tests: tests/emulation) and is
installed with the rest of the embedded AWS, so the `world` fixture seeds the VPC caches,
their groups and the tagged application groups from default-scenario.yaml. The names
below are the scenario's fixed ids, for the tests that meet them; `vpc_world` reads the
ids moto drew (the VPCs').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from cache_ingress_tools.emulator.scenario import SeededWorld, load_scenario

pytestmark = pytest.mark.integration

# Fixed ids, as the default scenario fixes them, so sample events can name them.
CACHE_GROUP = "sg-0c1a2b3c4d5e6f701"  # sessions-redis's security group
MEMCACHED_GROUP = "sg-0c2b3c4d5e6f70812"  # legacy-memcached's security group
REPORTS_GROUP = "sg-0c3c4d5e6f7081923"  # named explicitly by the reports target
SESSIONS_APP = "sg-0a2b3c4d5e6f70812"  # tagged cache-ingress=sessions, same VPC
OTHER_VPC_APP = "sg-0b3c4d5e6f7081923"  # tagged cache-ingress=sessions, another VPC
SEARCH_APP = "sg-0d4e5f60718293a4b"  # tagged cache-ingress=search; search-redis is missing
LEGACY_APP = "sg-0e5f60718293a4b5c"  # tagged cache-ingress=legacy,reports
OTHER_VPC = "elsewhere"  # the scenario's name for the second VPC
REDIS_PORT = 6379
MEMCACHED_PORT = 11211
REPORTS_PORT = 6380

# The bundled policy's VPC targets, and one classic target, for tests that read a file.
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


def vpc_world(world: SeededWorld) -> VpcWorld:
    """The default scenario's VPCs: the caches' (the default VPC) and the other one."""
    return VpcWorld(vpc_id=world.vpc_id, other_vpc_id=world.vpc_ids[OTHER_VPC])


# --- the seeded world is what the VPC tests assume -----------------------------------------


def test_the_constants_are_the_default_scenario_s_groups() -> None:
    scenario = load_scenario()
    named = {
        CACHE_GROUP: "sessions-cache",
        MEMCACHED_GROUP: "legacy-cache",
        REPORTS_GROUP: "reports-cache",
        SESSIONS_APP: "sessions-app",
        OTHER_VPC_APP: "sessions-app-elsewhere",
        SEARCH_APP: "search-app",
        LEGACY_APP: "legacy-app",
    }

    for group_id, name in named.items():
        seeded = scenario.security_group(group_id)
        assert seeded is not None and seeded.name == name, group_id
    [other] = scenario.vpcs
    assert other.name == OTHER_VPC


def test_application_groups_sit_in_the_caches_vpc_or_the_other(
    world: SeededWorld, clients: dict[str, Any]
) -> None:
    vpc = vpc_world(world)
    groups = clients["ec2"].describe_security_groups(
        GroupIds=[CACHE_GROUP, MEMCACHED_GROUP, REPORTS_GROUP, SESSIONS_APP, OTHER_VPC_APP]
    )["SecurityGroups"]

    assert {g["GroupId"]: g["VpcId"] for g in groups} == {
        CACHE_GROUP: vpc.vpc_id,
        MEMCACHED_GROUP: vpc.vpc_id,
        REPORTS_GROUP: vpc.vpc_id,
        SESSIONS_APP: vpc.vpc_id,
        OTHER_VPC_APP: vpc.other_vpc_id,
    }
    assert vpc.other_vpc_id != vpc.vpc_id


def test_the_caches_show_their_group_and_port(world: SeededWorld, clients: dict[str, Any]) -> None:
    elasticache = clients["elasticache"]
    [group] = elasticache.describe_replication_groups(ReplicationGroupId="sessions-redis")[
        "ReplicationGroups"
    ]
    found = {}
    for cluster_id in [*group["MemberClusters"], "legacy-memcached"]:
        [cluster] = elasticache.describe_cache_clusters(
            CacheClusterId=cluster_id, ShowCacheNodeInfo=True
        )["CacheClusters"]
        found[cluster_id] = (
            [g["SecurityGroupId"] for g in cluster["SecurityGroups"]],
            {node["Endpoint"]["Port"] for node in cluster["CacheNodes"]},
            cluster["CacheSubnetGroupName"],
        )

    assert found == {
        "sessions-redis-001": ([CACHE_GROUP], {REDIS_PORT}, "caches"),
        "sessions-redis-002": ([CACHE_GROUP], {REDIS_PORT}, "caches"),
        "legacy-memcached": ([MEMCACHED_GROUP], {MEMCACHED_PORT}, "caches"),
    }
    with pytest.raises(elasticache.exceptions.ReplicationGroupNotFoundFault):
        elasticache.describe_replication_groups(ReplicationGroupId="search-redis")
