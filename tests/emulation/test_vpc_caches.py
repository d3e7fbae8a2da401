"""The VPC-cache emulation answers as AWS would, checked through botocore's own parsing.

Every call goes through an unmodified boto3 client, in process (``mock_aws``) and through
the moto server, as the function's calls do.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import boto3
import pytest
from moto.elasticache.models import CacheCluster
from moto.server import ThreadedMotoServer

from cache_ingress_tools.emulator import cache_security_groups, vpc_caches

pytestmark = pytest.mark.emulation

REGION = "us-east-1"


@pytest.fixture
def clients(aws: None) -> dict[str, Any]:
    """Clients of the suite's moto world (tests/support/fixtures.py), emptied for this test."""
    return {name: boto3.client(name, region_name=REGION) for name in ("ec2", "elasticache")}


def test_a_cluster_names_its_security_groups(clients: dict[str, Any]) -> None:
    ec2, elasticache = clients["ec2"], clients["elasticache"]
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


def test_show_cache_node_info_adds_the_nodes_with_their_port(clients: dict[str, Any]) -> None:
    elasticache = clients["elasticache"]
    elasticache.create_cache_cluster(
        CacheClusterId="c2", Engine="redis", CacheNodeType="cache.t4g.micro", Port=6390
    )

    [cluster] = elasticache.describe_cache_clusters(CacheClusterId="c2", ShowCacheNodeInfo=True)[
        "CacheClusters"
    ]

    assert [node["Endpoint"]["Port"] for node in cluster["CacheNodes"]] == [6390]
    assert cluster["CacheClusterId"] == "c2"
    assert "ConfigurationEndpoint" not in cluster


def test_a_memcached_cluster_has_a_configuration_endpoint(clients: dict[str, Any]) -> None:
    elasticache = clients["elasticache"]
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


def test_replication_group_members_are_cache_clusters(clients: dict[str, Any]) -> None:
    ec2, elasticache = clients["ec2"], clients["elasticache"]
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
    assert created["MemberClusters"] == ["rg1-001", "rg1-002"]
    for member in created["MemberClusters"]:
        [cluster] = elasticache.describe_cache_clusters(
            CacheClusterId=member, ShowCacheNodeInfo=True
        )["CacheClusters"]
        assert cluster["ReplicationGroupId"] == "rg1"
        assert cluster["SecurityGroups"] == [{"SecurityGroupId": group, "Status": "active"}]
        assert cluster["CacheNodes"][0]["Endpoint"]["Port"] == 6391


def test_a_rule_differing_only_in_description_is_a_duplicate(clients: dict[str, Any]) -> None:
    ec2 = clients["ec2"]
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


def _rule_from(ec2: Any, cache_group: str, source: str, description: str) -> str:
    made = ec2.authorize_security_group_ingress(
        GroupId=cache_group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 6379,
                "ToPort": 6379,
                "UserIdGroupPairs": [{"GroupId": source, "Description": description}],
            }
        ],
    )
    return str(made["SecurityGroupRules"][0]["SecurityGroupRuleId"])


def test_a_group_referencing_rule_is_described_with_its_description(
    clients: dict[str, Any],
) -> None:
    ec2 = clients["ec2"]
    vpc = ec2.create_vpc(CidrBlock="10.3.0.0/16")["Vpc"]["VpcId"]
    cache = ec2.create_security_group(GroupName="cache", Description="c", VpcId=vpc)["GroupId"]
    app = ec2.create_security_group(GroupName="app", Description="a", VpcId=vpc)["GroupId"]
    rule_id = _rule_from(ec2, cache, app, "cache-ingress sessions event e-1")

    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [cache]}])

    [rule] = [r for r in rules["SecurityGroupRules"] if not r["IsEgress"]]
    assert rule["SecurityGroupRuleId"] == rule_id
    assert rule["ReferencedGroupInfo"]["GroupId"] == app
    assert rule["Description"] == "cache-ingress sessions event e-1"


def test_a_referenced_group_cannot_be_deleted_until_its_rule_is_gone(
    clients: dict[str, Any],
) -> None:
    ec2 = clients["ec2"]
    vpc = ec2.create_vpc(CidrBlock="10.4.0.0/16")["Vpc"]["VpcId"]
    cache = ec2.create_security_group(GroupName="cache", Description="c", VpcId=vpc)["GroupId"]
    app = ec2.create_security_group(GroupName="app", Description="a", VpcId=vpc)["GroupId"]
    rule_id = _rule_from(ec2, cache, app, "x")

    with pytest.raises(ec2.exceptions.ClientError) as refused:
        ec2.delete_security_group(GroupId=app)
    assert refused.value.response["Error"]["Code"] == "DependencyViolation"

    ec2.revoke_security_group_ingress(GroupId=cache, SecurityGroupRuleIds=[rule_id])
    ec2.delete_security_group(GroupId=app)
    assert app not in {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}


def test_rules_from_cidr_ranges_keep_moto_s_own_identity(clients: dict[str, Any]) -> None:
    # Only group-referencing rules are compared without their description; the function
    # never writes a CIDR rule, so moto's own behaviour for those is left as it is.
    ec2 = clients["ec2"]
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="c", Description="c", VpcId=vpc)["GroupId"]
    permission = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}

    ec2.authorize_security_group_ingress(
        GroupId=group, IpPermissions=[{**permission, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]
    )
    ec2.authorize_security_group_ingress(
        GroupId=group, IpPermissions=[{**permission, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]}]
    )

    [described] = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    ranges = [r["CidrIp"] for p in described["IpPermissions"] for r in p["IpRanges"]]
    assert sorted(ranges) == ["10.0.0.0/8", "10.1.0.0/16"]


def test_install_is_idempotent_and_part_of_the_cache_security_group_install(
    clients: dict[str, Any],
) -> None:
    installed = CacheCluster.__dict__["security_groups"]

    vpc_caches.install()
    cache_security_groups.install()

    assert CacheCluster.__dict__["security_groups"] is installed
    clients["elasticache"].create_cache_cluster(
        CacheClusterId="c4", Engine="redis", CacheNodeType="cache.t4g.micro", Port=6379
    )
    [cluster] = clients["elasticache"].describe_cache_clusters(
        CacheClusterId="c4", ShowCacheNodeInfo=True
    )["CacheClusters"]
    # Wrapped once, not twice: one node for a one-node cluster.
    assert len(cluster["CacheNodes"]) == 1


def test_install_refuses_to_hide_moto_s_own_security_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CacheCluster, "security_groups", property(lambda _: []))

    with pytest.raises(RuntimeError, match="retire this part of the emulation"):
        vpc_caches.install()


def test_the_moto_server_answers_with_the_emulation(aws: None) -> None:
    # The server serves the module's (emptied) moto state; its reset at the end empties it.
    cache_security_groups.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        elasticache = boto3.client(
            "elasticache", region_name=REGION, endpoint_url=f"http://{host}:{port}"
        )
        elasticache.create_replication_group(
            ReplicationGroupId="rg2",
            ReplicationGroupDescription="d",
            Engine="redis",
            CacheNodeType="cache.t4g.micro",
            NumCacheClusters=1,
            Port=6392,
            SecurityGroupIds=["sg-0123456789abcdef0"],
        )

        [cluster] = elasticache.describe_cache_clusters(
            CacheClusterId="rg2-001", ShowCacheNodeInfo=True
        )["CacheClusters"]
    finally:
        # moto's state is process-wide: leave none behind for the next test.
        reset = urllib.request.Request(
            f"http://{host}:{port}/moto-api/reset", data=b"", method="POST"
        )
        with urllib.request.urlopen(reset, timeout=10):  # noqa: S310 - as above
            pass
        server.stop()

    assert cluster["SecurityGroups"] == [
        {"SecurityGroupId": "sg-0123456789abcdef0", "Status": "active"}
    ]
    assert cluster["CacheNodes"][0]["Endpoint"]["Port"] == 6392
