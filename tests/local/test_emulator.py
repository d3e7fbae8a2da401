"""The embedded AWS: real HTTP that unmodified boto3 clients use; scenario validation; the
`cache-ingress emulator` command.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from cache_ingress_tools.commands.emulator import container_env_vars
from cache_ingress_tools.emulator.scenario import (
    DEFAULT_SCENARIO,
    CacheClusterSeed,
    ReplicationGroupSeed,
    Scenario,
    ScenarioError,
    VpcSeed,
    load_scenario,
)
from cache_ingress_tools.emulator.server import EmbeddedAws, EmulatorError
from cache_ingress_tools.local_invoke import FUNCTION_ID, rebase
from tests.local import (
    CHILD_DEADLINE_SECONDS,
    REPO_ROOT,
    LineReader,
    cli_command,
    interruptible_cli_command,
)
from tests.support.events import (
    INVENTORY_GROUP,
    ORDERS_GROUP,
    PAYMENTS_GROUP,
    RETIRED_GROUP,
    STAGING_GROUP,
)

DEFAULT_TEXT = DEFAULT_SCENARIO.read_text(encoding="utf-8")


@pytest.fixture
def aws() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(port=0) as embedded:
        yield embedded


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the server -------------------------------------------------------------------------


@pytest.mark.integration
def test_unmodified_boto3_clients_reach_the_seeded_world_through_aws_endpoint_url(
    aws: EmbeddedAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The function's clients name no endpoint: only the environment variable points them.
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
    scenario = aws.scenario

    ec2 = boto3.client("ec2", region_name=scenario.region)
    seeded = {g.group_id: g for g in scenario.security_groups}
    groups = ec2.describe_security_groups(GroupIds=list(seeded))["SecurityGroups"]
    elasticache = boto3.client("elasticache", region_name=scenario.region)
    cache_groups = elasticache.describe_cache_security_groups()["CacheSecurityGroups"]
    table = boto3.client("dynamodb", region_name=scenario.region).describe_table(
        TableName=scenario.idempotency_table
    )["Table"]
    queue_url = boto3.client("sqs", region_name=scenario.region).get_queue_url(
        QueueName=scenario.dead_letter_queue
    )["QueueUrl"]

    assert {g["GroupId"]: g["GroupName"] for g in groups} == {
        group_id: seed.name for group_id, seed in seeded.items()
    }
    for group in groups:
        tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
        assert tags == dict(seeded[group["GroupId"]].tags)
        assert group["OwnerId"] == scenario.account_id
        vpc = seeded[group["GroupId"]].vpc
        assert group["VpcId"] == (aws.world.vpc_ids[vpc] if vpc else aws.world.vpc_id)
    assert [g["CacheSecurityGroupName"] for g in cache_groups] == list(
        scenario.cache_security_groups
    )
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert queue_url == aws.world.dead_letter_queue_url
    assert aws.world.function_environment()["DEAD_LETTER_QUEUE_URL"] == queue_url


@pytest.mark.integration
def test_the_vpc_caches_are_seeded_and_described_as_aws_describes_them(
    aws: EmbeddedAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
    scenario = aws.scenario
    ec2 = boto3.client("ec2", region_name=scenario.region)
    elasticache = boto3.client("elasticache", region_name=scenario.region)

    [other_vpc] = ec2.describe_vpcs(VpcIds=[aws.world.vpc_ids["elsewhere"]])["Vpcs"]
    [group] = elasticache.describe_replication_groups(ReplicationGroupId="sessions-redis")[
        "ReplicationGroups"
    ]
    described = {
        cluster_id: elasticache.describe_cache_clusters(
            CacheClusterId=cluster_id, ShowCacheNodeInfo=True
        )["CacheClusters"][0]
        for cluster_id in [*group["MemberClusters"], "legacy-memcached"]
    }
    [subnet_group] = elasticache.describe_cache_subnet_groups(CacheSubnetGroupName="caches")[
        "CacheSubnetGroups"
    ]

    assert (other_vpc["CidrBlock"], other_vpc["Tags"]) == (
        "10.20.0.0/16",
        [{"Key": "Name", "Value": "elsewhere"}],
    )
    assert subnet_group["VpcId"] == aws.world.vpc_id
    assert {
        cluster_id: (
            cluster["Engine"],
            cluster["CacheNodeType"],
            cluster.get("ReplicationGroupId"),
            [g["SecurityGroupId"] for g in cluster["SecurityGroups"]],
            [node["Endpoint"]["Port"] for node in cluster["CacheNodes"]],
        )
        for cluster_id, cluster in described.items()
    } == {
        "sessions-redis-001": (
            "redis",
            "cache.t4g.micro",
            "sessions-redis",
            ["sg-0c1a2b3c4d5e6f701"],
            [6379],
        ),
        "sessions-redis-002": (
            "redis",
            "cache.t4g.micro",
            "sessions-redis",
            ["sg-0c1a2b3c4d5e6f701"],
            [6379],
        ),
        "legacy-memcached": (
            "memcached",
            "cache.t4g.micro",
            None,
            ["sg-0c2b3c4d5e6f70812"],
            [11211, 11211],
        ),
    }
    assert described["legacy-memcached"]["ConfigurationEndpoint"]["Port"] == 11211


@pytest.mark.integration
def test_a_rule_again_with_another_description_is_a_duplicate_over_http(
    aws: EmbeddedAws,
) -> None:
    ec2 = aws.client("ec2")

    def rule(description: str) -> list[dict[str, object]]:
        pair = {"GroupId": "sg-0a2b3c4d5e6f70812", "Description": description}
        return [{"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "UserIdGroupPairs": [pair]}]

    ec2.authorize_security_group_ingress(GroupId="sg-0c1a2b3c4d5e6f701", IpPermissions=rule("a"))
    with pytest.raises(ClientError) as duplicate:
        ec2.authorize_security_group_ingress(
            GroupId="sg-0c1a2b3c4d5e6f701", IpPermissions=rule("b")
        )

    assert duplicate.value.response["Error"]["Code"] == "InvalidPermission.Duplicate"


@pytest.mark.integration
def test_it_answers_plain_http_on_loopback_by_default(aws: EmbeddedAws) -> None:
    # An SQS ListQueues request written by hand: no boto3, no moto client-side patching.
    connection = http.client.HTTPConnection("127.0.0.1", aws.port, timeout=30)
    try:
        connection.request(
            "POST",
            "/",
            body="{}",
            headers={
                "X-Amz-Target": "AmazonSQS.ListQueues",
                "Content-Type": "application/x-amz-json-1.0",
                "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261120/us-east-1/sqs/"
                "aws4_request, SignedHeaders=host, Signature=0",
            },
        )
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()

    assert aws.endpoint_url == f"http://127.0.0.1:{aws.port}"
    assert response.status == 200
    assert body == {"QueueUrls": [aws.world.dead_letter_queue_url]}


@pytest.mark.integration
def test_modeled_cache_security_group_faults_come_back_over_http(aws: EmbeddedAws) -> None:
    elasticache = aws.client("elasticache")

    with pytest.raises(ClientError) as missing:
        elasticache.authorize_cache_security_group_ingress(
            CacheSecurityGroupName="inventory-cache-sg",
            EC2SecurityGroupName="inventory-app",
            EC2SecurityGroupOwnerId=aws.scenario.account_id,
        )

    assert missing.value.response["Error"]["Code"] == "CacheSecurityGroupNotFound"
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.integration
def test_a_grant_made_by_one_client_is_seen_by_another(aws: EmbeddedAws) -> None:
    aws.client("elasticache").authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders-cache-sg",
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId=aws.scenario.account_id,
    )

    [group] = aws.client("elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="orders-cache-sg"
    )["CacheSecurityGroups"]
    assert group["EC2SecurityGroups"] == [
        {
            "Status": "authorized",
            "EC2SecurityGroupName": "orders-app",
            "EC2SecurityGroupOwnerId": aws.scenario.account_id,
        }
    ]


@pytest.mark.integration
def test_reset_forgets_the_run_and_seeds_again(aws: EmbeddedAws) -> None:
    elasticache, sqs = aws.client("elasticache"), aws.client("sqs")
    elasticache.authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders-cache-sg",
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId=aws.scenario.account_id,
    )
    sqs.send_message(QueueUrl=aws.world.dead_letter_queue_url, MessageBody="{}")

    world = aws.reset()

    groups = elasticache.describe_cache_security_groups()["CacheSecurityGroups"]
    assert [g["EC2SecurityGroups"] for g in groups] == [[], []]
    attributes = sqs.get_queue_attributes(
        QueueUrl=world.dead_letter_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert aws.client("ec2").describe_security_groups(GroupIds=[ORDERS_GROUP])["SecurityGroups"]
    # The caches (and their subnet group) are seeded again too, not left over or refused.
    [group] = elasticache.describe_replication_groups(ReplicationGroupId="sessions-redis")[
        "ReplicationGroups"
    ]
    assert group["MemberClusters"] == ["sessions-redis-001", "sessions-redis-002"]
    assert world.vpc_ids["elsewhere"] != world.vpc_id


@pytest.mark.integration
def test_stopping_closes_the_port_and_a_new_one_starts_empty() -> None:
    with EmbeddedAws(port=0) as first:
        port = first.port
        first.client("sqs").create_queue(QueueName="left-behind")

    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    with EmbeddedAws(port=port) as second:
        queues = second.client("sqs").list_queues().get("QueueUrls", [])
    assert queues == [second_queue_url(port)]


def second_queue_url(port: int) -> str:
    scenario = load_scenario()
    return f"http://127.0.0.1:{port}/{scenario.account_id}/{scenario.dead_letter_queue}"


@pytest.mark.integration
def test_only_one_embedded_aws_runs_in_a_process(aws: EmbeddedAws) -> None:
    with pytest.raises(EmulatorError, match="already runs in this process"):
        EmbeddedAws(port=0).start()

    assert aws.client("sqs").get_queue_url(QueueName=aws.scenario.dead_letter_queue)


@pytest.mark.integration
def test_a_port_in_use_is_reported_with_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(EmulatorError) as failure:
            EmbeddedAws(port=port).start()

    assert f"127.0.0.1:{port}" in str(failure.value)
    assert "in use" in str(failure.value)
    assert "--port" in str(failure.value)
    # Refused before it started: another can start at once.
    with EmbeddedAws(port=0) as aws:
        assert aws.port != port


@pytest.mark.integration
def test_an_address_this_machine_does_not_have_is_reported() -> None:
    # 192.0.2.0/24 is reserved for documentation: no interface here has it. Nothing is sent.
    with pytest.raises(EmulatorError, match="no network interface"):
        EmbeddedAws(host="192.0.2.10", port=_closed_port()).start()


@pytest.mark.integration
def test_a_scenario_in_another_account_is_served_as_that_account(tmp_path: Path) -> None:
    path = tmp_path / "other-account.yaml"
    path.write_text(DEFAULT_TEXT.replace('"123456789012"', '"210987654321"'), encoding="utf-8")
    before = os.environ.get("MOTO_ACCOUNT_ID")

    with EmbeddedAws(load_scenario(path), port=0) as aws:
        groups = aws.client("ec2").describe_security_groups(GroupIds=[ORDERS_GROUP])
        queue_url = aws.world.dead_letter_queue_url

    assert groups["SecurityGroups"][0]["OwnerId"] == "210987654321"
    assert "/210987654321/" in queue_url
    assert os.environ.get("MOTO_ACCOUNT_ID") == before


# --- the scenario file ------------------------------------------------------------------


@pytest.mark.unit
def test_the_default_scenario_holds_the_groups_the_sample_events_name() -> None:
    scenario = load_scenario()

    ids = {g.group_id for g in scenario.security_groups}
    assert {ORDERS_GROUP, STAGING_GROUP, PAYMENTS_GROUP, RETIRED_GROUP, INVENTORY_GROUP} <= ids
    assert isinstance(scenario, Scenario)
    assert scenario.security_group(ORDERS_GROUP) is not None
    assert scenario.security_group("sg-00000000") is None
    # The VPC sample events' groups, and the caches the bundled policy names.
    other_vpc_app = scenario.security_group("sg-0b3c4d5e6f7081923")
    assert other_vpc_app is not None and other_vpc_app.vpc == "elsewhere"
    assert scenario.vpcs == (VpcSeed(name="elsewhere", cidr="10.20.0.0/16"),)
    assert scenario.replication_groups == (
        ReplicationGroupSeed("sessions-redis", "redis", 6379, 2, ("sg-0c1a2b3c4d5e6f701",)),
    )
    assert scenario.cache_clusters == (
        CacheClusterSeed("legacy-memcached", "memcached", 11211, 2, ("sg-0c2b3c4d5e6f70812",)),
    )


BAD_SCENARIOS = {
    "unknown top-level field": (
        ("security_groups:", "secuirty_groups:"),
        "secuirty_groups: unknown field (did you mean 'security_groups'?",
    ),
    "unknown group field": (
        ("    tags: {cache-ingress: orders, env: prod}", "    tag: {env: prod}"),
        "security_groups[0].tag: unknown field (did you mean 'tags'?",
    ),
    "unknown cache group field": (
        ("  - name: orders-cache-sg", "  - name: orders-cache-sg\n    region: us-east-1"),
        "cache_security_groups[0].region: unknown field",
    ),
    "unquoted account": (
        ('account_id: "123456789012"', "account_id: 123456789012"),
        "account_id: must be a quoted 12-digit account id, got int 123456789012",
    ),
    "missing region": (("region: us-east-1\n", ""), "region: required field is missing"),
    "bad region": (
        ("region: us-east-1", "region: us-east"),
        "region: must be an AWS region such as us-east-1, got 'us-east'",
    ),
    "bad group id": (
        ("id: sg-0b2c3d4e5f6071829", "id: sg-NOT-HEX"),
        "security_groups[1].id: must be a security group id",
    ),
    "duplicate group id": (
        ("id: sg-0b2c3d4e5f6071829", "id: sg-0a1b2c3d4e5f60718"),
        "security_groups[1].id: sg-0a1b2c3d4e5f60718 is already the id of security_groups[0]",
    ),
    "duplicate group name": (
        ("name: orders-staging-app", "name: orders-app"),
        "security_groups[1].name: 'orders-app' is already the name of security_groups[0]",
    ),
    "group name like an id": (
        ("name: payments-app", "name: sg-payments"),
        "security_groups[2].name: EC2 group names cannot start with 'sg-'",
    ),
    "boolean tag value": (
        ("{cache-ingress: orders, env: prod}", "{cache-ingress: orders, env: yes}"),
        "security_groups[0].tags.env: must be a string, got bool (quote it)",
    ),
    "reserved tag key": (
        ("{cache-ingress: orders, env: prod}", "{cache-ingress: orders, 'aws:env': prod}"),
        "security_groups[0].tags.aws:env: tag keys starting with 'aws:' are reserved",
    ),
    "tags not a mapping": (
        ("{cache-ingress: orders, env: prod}", "[cache-ingress, env]"),
        "security_groups[0].tags: must be a mapping",
    ),
    "default cache group": (
        ("name: payments-cache-sg", "name: Default"),
        "cache_security_groups[1].name: 'default' is reserved by ElastiCache",
    ),
    "cache group twice in other case": (
        ("name: payments-cache-sg", "name: Orders-Cache-SG"),
        "cache_security_groups[1].name: 'Orders-Cache-SG' is already the name of "
        "cache_security_groups[0] (names ignore case)",
    ),
    "cache groups not a list": (
        (
            "cache_security_groups:\n  - name: orders-cache-sg\n  - name: payments-cache-sg\n",
            "cache_security_groups: {orders-cache-sg: {}}\n",
        ),
        "cache_security_groups: must be a list, got dict",
    ),
    "bad table name": (
        ("idempotency_table: cache-ingress-idempotency", "idempotency_table: t"),
        "idempotency_table: must be a DynamoDB table name",
    ),
    "fifo queue": (
        ("dead_letter_queue: cache-ingress-dlq", "dead_letter_queue: dlq.fifo"),
        "dead_letter_queue: must be an SQS queue name",
    ),
    "duplicate key": (
        ("region: us-east-1", "region: us-east-1\nregion: eu-west-1"),
        "not valid YAML",
    ),
    "unknown vpc field": (
        ("    cidr: 10.20.0.0/16", "    cidr: 10.20.0.0/16\n    region: us-east-1"),
        "vpcs[0].region: unknown field",
    ),
    "vpc named default": (
        ("  - name: elsewhere", "  - name: default"),
        "vpcs[0].name: 'default' is the default VPC",
    ),
    "vpc cidr with host bits": (
        ("cidr: 10.20.0.0/16", "cidr: 10.20.0.1/16"),
        "vpcs[0].cidr: '10.20.0.1/16' has host bits set (did you mean 10.20.0.0/16?)",
    ),
    "vpc cidr too large": (
        ("cidr: 10.20.0.0/16", "cidr: 10.0.0.0/8"),
        "vpcs[0].cidr: must be an IPv4 CIDR block from /16 to /28 such as 10.20.0.0/16, "
        "got '10.0.0.0/8'",
    ),
    "vpc cidr not an address": (
        ("cidr: 10.20.0.0/16", "cidr: elsewhere/16"),
        "vpcs[0].cidr: must be an IPv4 CIDR block",
    ),
    "group in an unknown vpc": (
        ("    vpc: elsewhere", "    vpc: nowhere"),
        "security_groups[10].vpc: must name one of the scenario's vpcs (elsewhere), "
        "got 'nowhere'; leave it out for the default VPC",
    ),
    "unknown replication group field": (
        ("    num_cache_clusters: 2", "    num_cache_cluster: 2"),
        "replication_groups[0].num_cache_cluster: unknown field "
        "(did you mean 'num_cache_clusters'?",
    ),
    "replication group without groups": (
        ("    security_groups: [sg-0c1a2b3c4d5e6f701]\n", ""),
        "replication_groups[0].security_groups: required field is missing",
    ),
    "upper-case replication group id": (
        ("  - id: sessions-redis", "  - id: Sessions-Redis"),
        "replication_groups[0].id: must be a replication group id (1-40 lower-case letters",
    ),
    "memcached replication group": (
        ("engine: redis", "engine: memcached"),
        "replication_groups[0].engine: must be one of redis, valkey, got 'memcached'",
    ),
    "too many cache clusters": (
        ("num_cache_clusters: 2", "num_cache_clusters: 7"),
        "replication_groups[0].num_cache_clusters: must be from 1 to 6, got int 7",
    ),
    "cache group in another vpc": (
        ("security_groups: [sg-0c1a2b3c4d5e6f701]", "security_groups: [sg-0b3c4d5e6f7081923]"),
        "replication_groups[0].security_groups[0]: sg-0b3c4d5e6f7081923 is in VPC "
        "'elsewhere'; caches are seeded in the default VPC",
    ),
    "cache group not in the scenario": (
        ("security_groups: [sg-0c2b3c4d5e6f70812]", "security_groups: [sg-0123456789abcdef0]"),
        "cache_clusters[0].security_groups[0]: must be the id of one of the scenario's "
        "security_groups, got 'sg-0123456789abcdef0'",
    ),
    "cache groups empty": (
        ("security_groups: [sg-0c2b3c4d5e6f70812]", "security_groups: []"),
        "cache_clusters[0].security_groups: must list at least one security group id",
    ),
    "cache group twice": (
        (
            "security_groups: [sg-0c2b3c4d5e6f70812]",
            "security_groups: [sg-0c2b3c4d5e6f70812, sg-0c2b3c4d5e6f70812]",
        ),
        "cache_clusters[0].security_groups[1]: sg-0c2b3c4d5e6f70812 is listed twice",
    ),
    "cluster id of a replication group member": (
        ("  - id: legacy-memcached", "  - id: sessions-redis-002"),
        "cache_clusters[0].id: 'sessions-redis-002' is already a member of replication_groups[0]",
    ),
    "cluster id with two hyphens": (
        ("id: legacy-memcached", "id: legacy--memcached"),
        "cache_clusters[0].id: must be a cache cluster id (1-50 lower-case letters",
    ),
    "quoted port": (
        ("port: 11211", "port: '11211'"),
        "cache_clusters[0].port: must be a TCP port (1-65535), got '11211'",
    ),
    "several redis nodes outside a replication group": (
        ("engine: memcached\n    port: 11211", "engine: redis\n    port: 6379"),
        "cache_clusters[0].num_cache_nodes: must be 1, got int 2",
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(BAD_SCENARIOS))
def test_a_bad_scenario_names_the_file_and_the_field(case: str, tmp_path: Path) -> None:
    (old, new), expected = BAD_SCENARIOS[case]
    assert old in DEFAULT_TEXT, "the case no longer edits the default scenario"
    path = tmp_path / "scenario.yaml"
    path.write_text(DEFAULT_TEXT.replace(old, new, 1), encoding="utf-8")

    with pytest.raises(ScenarioError) as failure:
        load_scenario(path)

    message = str(failure.value)
    assert message.startswith(f"scenario {path}: ")
    assert expected in message


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "(top level): the file is empty"),
        ("- a\n- b\n", "(top level): must be a mapping, got list"),
        ("region: [\n", "not valid YAML"),
    ],
)
def test_a_scenario_that_is_not_a_mapping_is_refused(
    text: str, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ScenarioError, match=r"^scenario ") as failure:
        load_scenario(path)

    assert expected in str(failure.value)


@pytest.mark.unit
def test_a_missing_scenario_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ScenarioError, match=f"^scenario {path}: cannot be read"):
        load_scenario(path)


@pytest.mark.unit
def test_a_scenario_may_leave_out_the_optional_parts(tmp_path: Path) -> None:
    path = tmp_path / "minimal.yaml"
    path.write_text(
        'account_id: "123456789012"\nregion: eu-west-1\nidempotency_table: t-1\n'
        "dead_letter_queue: q\nsecurity_groups:\n  - {id: sg-0123456789abcdef0, name: app}\n",
        encoding="utf-8",
    )

    scenario = load_scenario(path)

    assert scenario.cache_security_groups == ()
    assert (scenario.vpcs, scenario.replication_groups, scenario.cache_clusters) == ((), (), ())
    [group] = scenario.security_groups
    assert (group.description, dict(group.tags), group.vpc) == ("app", {}, None)


@pytest.mark.unit
def test_a_cache_left_without_port_or_size_gets_its_engine_s_defaults(tmp_path: Path) -> None:
    path = tmp_path / "caches.yaml"
    path.write_text(
        'account_id: "123456789012"\nregion: eu-west-1\nidempotency_table: t-1\n'
        "dead_letter_queue: q\nsecurity_groups:\n  - {id: sg-0123456789abcdef0, name: cache}\n"
        "replication_groups:\n"
        "  - {id: r, engine: valkey, security_groups: [sg-0123456789abcdef0]}\n"
        "cache_clusters:\n"
        "  - {id: m, engine: memcached, security_groups: [sg-0123456789abcdef0]}\n"
        "  - {id: s, engine: redis, security_groups: [sg-0123456789abcdef0]}\n",
        encoding="utf-8",
    )

    scenario = load_scenario(path)

    [group] = scenario.replication_groups
    assert (group.port, group.num_cache_clusters, group.member_clusters) == (6379, 1, ("r-001",))
    assert [(c.port, c.num_cache_nodes) for c in scenario.cache_clusters] == [(11211, 1), (6379, 1)]


# --- the emulator command ---------------------------------------------------------------


@pytest.mark.integration
def test_events_env_json_is_what_the_default_emulator_needs(aws: EmbeddedAws) -> None:
    needed = container_env_vars(aws, "host.docker.internal")[FUNCTION_ID]
    on_port_5000 = rebase(
        needed, f"http://host.docker.internal:{aws.port}", "http://host.docker.internal:5000"
    )
    shipped = json.loads((REPO_ROOT / "events" / "env.json").read_text(encoding="utf-8"))

    assert {name: shipped[FUNCTION_ID].get(name) for name in on_port_5000} == on_port_5000


@pytest.mark.cli
def test_the_emulator_command_serves_until_interrupted(tmp_path: Path) -> None:
    env_file = tmp_path / "env.json"
    child = subprocess.Popen(  # noqa: S603 - our own console script
        interruptible_cli_command("emulator", "--port", "0", "--env-vars-out", str(env_file)),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        reader = LineReader(child.stdout)
        lines = reader.wait_for("stops it.")
        endpoint = lines[0].split()[-1]
        port = int(endpoint.rsplit(":", 1)[1])
        cache_groups = boto3.client(
            "elasticache", endpoint_url=endpoint, region_name="us-east-1"
        ).describe_cache_security_groups()["CacheSecurityGroups"]
        written = json.loads(env_file.read_text(encoding="utf-8"))
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(timeout=CHILD_DEADLINE_SECONDS)
    # The reader owns stdout: it alone reads it, to the end.
    banner = "".join(reader.wait_closed())
    errors = child.stderr.read() if child.stderr else ""

    assert lines[0].startswith("embedded AWS listening on http://127.0.0.1:")
    assert [g["CacheSecurityGroupName"] for g in cache_groups] == [
        "orders-cache-sg",
        "payments-cache-sg",
    ]
    assert (
        f"cache-ingress invoke events/tag-change-authorized.json --endpoint-url {endpoint}"
        in banner
    )
    assert (
        f"sam local invoke IngressFunction -e events/tag-change-authorized.json "
        f"--env-vars {env_file} --region us-east-1"
    ) in banner
    assert "--add-host host.docker.internal:host-gateway" in banner
    assert "--host 172.17.0.1" in banner
    assert written[FUNCTION_ID]["AWS_ENDPOINT_URL"] == f"http://host.docker.internal:{port}"
    assert written[FUNCTION_ID]["DEAD_LETTER_QUEUE_URL"] == (
        f"http://host.docker.internal:{port}/123456789012/cache-ingress-dlq"
    )
    assert child.returncode == 0, errors
    assert "stopping" in banner
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


@pytest.mark.cli
def test_the_emulator_command_refuses_a_bad_scenario(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(DEFAULT_TEXT.replace("region:", "regoin:"), encoding="utf-8")

    completed = subprocess.run(  # noqa: S603 - our own console script
        cli_command("emulator", "--port", "0", "--scenario", str(path)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_SECONDS,
        check=False,
    )

    assert completed.returncode == 2
    assert f"cache-ingress emulator: scenario {path}: regoin: unknown field" in completed.stderr
