"""The moto world is shared by a module's tests and emptied before each one: no test sees
what another left, in any service the function uses or in the emulation's own state.

The same test runs twice in this module; each first checks that it starts from exactly the
seeded scenario, then leaves something behind everywhere. Whichever runs second (in any
order) checks the reset after the other.
"""

from __future__ import annotations

from typing import Any

import pytest

from cache_ingress_tools.emulator.cache_security_groups import set_classic_enabled
from cache_ingress_tools.emulator.scenario import SeededWorld

pytestmark = pytest.mark.integration


def state(clients: dict[str, Any], world: SeededWorld) -> dict[str, Any]:
    """What a test could have changed, as plain data."""
    ec2, elasticache = clients["ec2"], clients["elasticache"]
    groups = ec2.describe_security_groups()["SecurityGroups"]
    cache_groups = elasticache.describe_cache_security_groups()["CacheSecurityGroups"]
    table = world.scenario.idempotency_table
    return {
        "vpcs": len(ec2.describe_vpcs()["Vpcs"]),
        "groups": sorted((g["GroupName"], g.get("VpcId") != world.vpc_id) for g in groups),
        "tags": sorted(
            (g["GroupName"], t["Key"], t["Value"]) for g in groups for t in g.get("Tags", [])
        ),
        "rules from groups": sorted(
            (g["GroupName"], pair["GroupId"])
            for g in groups
            for permission in g.get("IpPermissions", [])
            for pair in permission.get("UserIdGroupPairs", [])
        ),
        "cache groups": sorted(
            (c["CacheSecurityGroupName"], len(c["EC2SecurityGroups"])) for c in cache_groups
        ),
        "replication groups": sorted(
            r["ReplicationGroupId"]
            for r in elasticache.describe_replication_groups()["ReplicationGroups"]
        ),
        "clusters": sorted(
            c["CacheClusterId"] for c in elasticache.describe_cache_clusters()["CacheClusters"]
        ),
        "tables": clients["dynamodb"].list_tables()["TableNames"],
        "records": clients["dynamodb"].scan(TableName=table)["Count"],
        "ledger entries": clients["dynamodb"].scan(TableName=str(world.scenario.ledger_table))[
            "Count"
        ],
        "queues": clients["sqs"].list_queues().get("QueueUrls", []),
        "messages": clients["sqs"].get_queue_attributes(
            QueueUrl=world.dead_letter_queue_url, AttributeNames=["All"]
        )["Attributes"]["ApproximateNumberOfMessages"],
        "parameters": clients["ssm"].describe_parameters()["Parameters"],
    }


def expected(world: SeededWorld) -> dict[str, Any]:
    """The seeded scenario, from the scenario file alone."""
    scenario = world.scenario
    return {
        "vpcs": 1 + len(scenario.vpcs),
        "groups": sorted(
            [(g.name, g.vpc is not None) for g in scenario.security_groups]
            + [("default", False)]
            + [("default", True) for _ in scenario.vpcs]
        ),
        "tags": sorted(
            (g.name, key, value) for g in scenario.security_groups for key, value in g.tags.items()
        ),
        "rules from groups": [],
        "cache groups": sorted((name, 0) for name in scenario.cache_security_groups),
        "replication groups": sorted(r.replication_group_id for r in scenario.replication_groups),
        "clusters": sorted(
            [c.cache_cluster_id for c in scenario.cache_clusters]
            + [m for r in scenario.replication_groups for m in r.member_clusters]
        ),
        "tables": sorted([scenario.idempotency_table, str(scenario.ledger_table)]),
        "records": 0,
        "ledger entries": 0,
        "queues": [world.dead_letter_queue_url],
        "messages": "0",
        "parameters": [],
    }


def leave_something_everywhere(clients: dict[str, Any], world: SeededWorld) -> None:
    ec2, elasticache = clients["ec2"], clients["elasticache"]
    scenario = world.scenario
    group = scenario.security_groups[0]
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    stray = ec2.create_security_group(GroupName="stray", Description="s", VpcId=vpc)["GroupId"]
    ec2.create_tags(Resources=[group.group_id], Tags=[{"Key": "left", "Value": "behind"}])
    cache_group = scenario.replication_groups[0].security_groups[0]
    ec2.authorize_security_group_ingress(
        GroupId=cache_group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 6379,
                "ToPort": 6379,
                "UserIdGroupPairs": [{"GroupId": group.group_id}],
            }
        ],
    )
    elasticache.authorize_cache_security_group_ingress(
        CacheSecurityGroupName=scenario.cache_security_groups[0],
        EC2SecurityGroupName=group.name,
        EC2SecurityGroupOwnerId=scenario.account_id,
    )
    elasticache.create_cache_security_group(CacheSecurityGroupName="stray", Description="s")
    elasticache.create_replication_group(
        ReplicationGroupId="stray",
        ReplicationGroupDescription="s",
        Engine="redis",
        CacheNodeType="cache.t4g.micro",
        NumCacheClusters=1,
        SecurityGroupIds=[stray],
    )
    clients["dynamodb"].put_item(
        TableName=scenario.idempotency_table, Item={"id": {"S": "left-behind"}}
    )
    clients["dynamodb"].put_item(
        TableName=str(scenario.ledger_table),
        Item={"pk": {"S": "rule#left"}, "sk": {"S": "entry#behind"}},
    )
    clients["dynamodb"].create_table(
        TableName="stray",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    clients["sqs"].send_message(QueueUrl=world.dead_letter_queue_url, MessageBody="left")
    clients["sqs"].create_queue(QueueName="stray")
    clients["ssm"].put_parameter(Name="/stray", Value="s", Type="String")


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_starts_from_the_seeded_scenario_alone(
    clients: dict[str, Any], world: SeededWorld, turn: str
) -> None:
    assert state(clients, world) == expected(world), turn

    leave_something_everywhere(clients, world)

    assert state(clients, world) != expected(world)
    # The emulation's account switch too: no EC2-Classic, so no cache security groups
    set_classic_enabled(world.scenario.account_id, world.scenario.region, False)
    with pytest.raises(clients["elasticache"].exceptions.ClientError, match="not permitted"):
        clients["elasticache"].describe_cache_security_groups()
