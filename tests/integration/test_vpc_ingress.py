"""VPC targets end to end: the Authorizer (and the Lambda handler) against moto, with the
cache lookups, the rule EC2 ends up holding, idempotency, dry run and the dead-letter queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cache_ingress.authorizer import Authorizer
from cache_ingress.errors import TransientFailureError
from cache_ingress.handler import lambda_handler
from cache_ingress.intake import parse_event
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.conftest import dead_letters
from tests.integration.test_vpc_emulation import (
    CACHE_GROUP,
    LEGACY_APP,
    MEMCACHED_GROUP,
    MEMCACHED_PORT,
    OTHER_VPC_APP,
    REDIS_PORT,
    REPORTS_GROUP,
    SEARCH_APP,
    SESSIONS_APP,
    VPC_POLICY,
    VpcWorld,
    vpc_world,
)
from tests.support.events import ACCOUNT, EVENTS_DIR, ORDERS_GROUP, create_tags, tag_change
from tests.support.faults import Fault
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

MakeAuthorizer = Callable[..., Authorizer]
SESSIONS_TAGS = {"cache-ingress": "sessions", "env": "prod"}


@pytest.fixture
def vpc(world: SeededWorld) -> VpcWorld:
    return vpc_world(world)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(VPC_POLICY)
    return path


@pytest.fixture
def make_vpc_authorizer(
    vpc: VpcWorld, policy_file: Path, make_authorizer: MakeAuthorizer
) -> MakeAuthorizer:
    def make(**environment: str) -> Authorizer:
        return make_authorizer(POLICY_FILE=str(policy_file), **environment)

    return make


@pytest.fixture
def rule_calls(clients: dict[str, Any]) -> list[dict[str, Any]]:
    """Every AuthorizeSecurityGroupIngress request, as sent."""
    calls: list[dict[str, Any]] = []
    clients["ec2"].meta.events.register(
        "provide-client-params.ec2.AuthorizeSecurityGroupIngress",
        lambda params, **_: calls.append(params),
    )
    return calls


def inbound(clients: dict[str, Any], group_id: str) -> list[dict[str, Any]]:
    [group] = clients["ec2"].describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    permissions: list[dict[str, Any]] = group["IpPermissions"]
    return permissions


def vpc_event(name: str) -> dict[str, Any]:
    """A sample event from events/, checked against intake before use (as load_event does;
    that helper also wants the catalog entry, which the lead adds with the scenario).
    """
    event: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    parse_event(event)
    return event


def test_a_tagged_group_gets_exactly_one_rule_on_the_caches_group(
    make_vpc_authorizer: MakeAuthorizer, rule_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    event = tag_change(SESSIONS_APP, SESSIONS_TAGS, event_id="e-vpc-1")

    summary = make_vpc_authorizer().handle(event, FakeLambdaContext())

    assert summary["status"] == "completed"
    assert rule_calls == [
        {
            "GroupId": CACHE_GROUP,
            "IpPermissions": [
                {
                    "IpProtocol": "tcp",
                    "FromPort": REDIS_PORT,
                    "ToPort": REDIS_PORT,
                    "UserIdGroupPairs": [
                        {
                            "GroupId": SESSIONS_APP,
                            "Description": "cache-ingress sessions event e-vpc-1",
                        }
                    ],
                }
            ],
        }
    ]
    assert inbound(clients, CACHE_GROUP) == [
        {
            "IpProtocol": "tcp",
            "FromPort": REDIS_PORT,
            "ToPort": REDIS_PORT,
            "UserIdGroupPairs": [
                {
                    "Description": "cache-ingress sessions event e-vpc-1",
                    "UserId": ACCOUNT,
                    "GroupId": SESSIONS_APP,
                }
            ],
            "IpRanges": [],
            "Ipv6Ranges": [],
            "PrefixListIds": [],
        }
    ]
    assert summary["decisions"] == [
        {
            "group_id": SESSIONS_APP,
            "target": "sessions",
            "outcome": "authorized",
            "reason": "ingress authorized",
            "group_name": "sessions-app",
            "owner_id": ACCOUNT,
            "vpc_security_group": CACHE_GROUP,
            "port": REDIS_PORT,
            "cache": "replication-group:sessions-redis",
        }
    ]


def test_a_cache_cluster_and_an_explicit_group_are_granted_on_their_own_ports(
    make_vpc_authorizer: MakeAuthorizer, clients: dict[str, Any]
) -> None:
    summary = make_vpc_authorizer().handle(create_tags([LEGACY_APP]), FakeLambdaContext())

    assert sorted((d["target"], d["outcome"]) for d in summary["decisions"]) == [
        ("legacy", "authorized"),
        ("reports", "authorized"),
    ]
    for group_id, port in [(MEMCACHED_GROUP, MEMCACHED_PORT), (REPORTS_GROUP, 6380)]:
        [permission] = inbound(clients, group_id)
        assert (permission["IpProtocol"], permission["FromPort"], permission["ToPort"]) == (
            "tcp",
            port,
            port,
        )
        assert [pair["GroupId"] for pair in permission["UserIdGroupPairs"]] == [LEGACY_APP]
        assert permission["IpRanges"] == permission["Ipv6Ranges"] == []


def test_an_existing_identical_rule_is_already_authorized(
    make_vpc_authorizer: MakeAuthorizer, clients: dict[str, Any]
) -> None:
    clients["ec2"].authorize_security_group_ingress(
        GroupId=CACHE_GROUP,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": REDIS_PORT,
                "ToPort": REDIS_PORT,
                "UserIdGroupPairs": [{"GroupId": SESSIONS_APP, "Description": "added by hand"}],
            }
        ],
    )

    summary = make_vpc_authorizer().handle(
        tag_change(SESSIONS_APP, SESSIONS_TAGS), FakeLambdaContext()
    )

    assert summary["status"] == "completed"
    [decision] = summary["decisions"]
    assert decision["outcome"] == "already-authorized"
    assert (
        decision["reason"]
        == f"the cache's security group already allows this group on tcp/{REDIS_PORT}"
    )
    [permission] = inbound(clients, CACHE_GROUP)
    assert [pair["Description"] for pair in permission["UserIdGroupPairs"]] == ["added by hand"]


def test_duplicate_delivery_authorizes_once(
    make_vpc_authorizer: MakeAuthorizer,
    rule_calls: list[dict[str, Any]],
    world: SeededWorld,
    clients: dict[str, Any],
) -> None:
    event = tag_change(SESSIONS_APP, SESSIONS_TAGS, event_id="e-vpc-dup")

    first = make_vpc_authorizer().handle(event, FakeLambdaContext())
    second = make_vpc_authorizer().handle(event, FakeLambdaContext(aws_request_id="again"))

    assert len(rule_calls) == 1
    assert (first["counts"], second["counts"]) == ({"authorized": 1}, {"already-authorized": 1})
    [record] = clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)["Items"]
    assert record["id"]["S"].startswith("cache-ingress.grant#")
    assert record["status"]["S"] == "COMPLETED"


def test_a_later_event_for_the_same_pair_meets_the_rule_and_adds_none(
    make_vpc_authorizer: MakeAuthorizer, rule_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    authorizer = make_vpc_authorizer()
    first = authorizer.handle(
        tag_change(SESSIONS_APP, SESSIONS_TAGS, event_id="e-1"), FakeLambdaContext()
    )
    second = authorizer.handle(
        tag_change(SESSIONS_APP, SESSIONS_TAGS, event_id="e-2"), FakeLambdaContext()
    )

    assert (first["counts"], second["counts"]) == ({"authorized": 1}, {"already-authorized": 1})
    assert len(rule_calls) == 2
    [permission] = inbound(clients, CACHE_GROUP)
    assert [pair["Description"] for pair in permission["UserIdGroupPairs"]] == [
        "cache-ingress sessions event e-1"
    ]


def test_an_event_replayed_after_its_target_moved_grants_at_the_new_destination(
    make_authorizer: MakeAuthorizer,
    vpc: VpcWorld,
    rule_calls: list[dict[str, Any]],
    world: SeededWorld,
    clients: dict[str, Any],
    tmp_path: Path,
) -> None:
    # The idempotency key names the destination: a record for the old one must not stand
    # in for a grant the new policy asks for.
    event = tag_change(SESSIONS_APP, SESSIONS_TAGS, event_id="e-moved")
    before, after = tmp_path / "before.yaml", tmp_path / "after.yaml"
    before.write_text(VPC_POLICY)
    after.write_text(
        VPC_POLICY.replace(
            "replication_group: sessions-redis",
            f"vpc_security_group: {{group_id: {REPORTS_GROUP}, port: 6380}}",
        )
    )

    first = make_authorizer(POLICY_FILE=str(before)).handle(event, FakeLambdaContext())
    moved = make_authorizer(POLICY_FILE=str(after)).handle(event, FakeLambdaContext())

    assert first["counts"] == moved["counts"] == {"authorized": 1}
    assert [(c["GroupId"], c["IpPermissions"][0]["FromPort"]) for c in rule_calls] == [
        (CACHE_GROUP, REDIS_PORT),
        (REPORTS_GROUP, 6380),
    ]
    records = clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)["Items"]
    assert len(records) == 2


def test_a_group_in_another_vpc_is_denied_and_nothing_is_called(
    make_vpc_authorizer: MakeAuthorizer,
    rule_calls: list[dict[str, Any]],
    vpc: VpcWorld,
    clients: dict[str, Any],
) -> None:
    summary = make_vpc_authorizer().handle(
        tag_change(OTHER_VPC_APP, SESSIONS_TAGS), FakeLambdaContext()
    )

    assert summary["status"] == "completed"
    [decision] = summary["decisions"]
    assert (decision["outcome"], decision["rule"]) == ("denied", "same-vpc")
    assert vpc.other_vpc_id in decision["reason"]
    assert vpc.vpc_id in decision["reason"]
    assert rule_calls == []
    assert inbound(clients, CACHE_GROUP) == []


def test_a_missing_replication_group_dead_letters_and_a_replay_grants_once_it_exists(
    make_vpc_authorizer: MakeAuthorizer,
    rule_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    authorizer = make_vpc_authorizer()
    event = tag_change(SEARCH_APP, {"cache-ingress": "search", "env": "prod"})

    failed = authorizer.handle(event, FakeLambdaContext())

    assert failed["status"] == "dead-lettered"
    assert failed["errorType"] == "GrantFailed"
    [decision] = failed["decisions"]
    assert decision["outcome"] == "failed"
    assert decision["failure"] == "permanent"
    assert decision["error_code"] == "ReplicationGroupNotFoundFault"
    assert decision["reason"] == "replication group search-redis does not exist in us-east-1"
    assert rule_calls == []
    [message] = dead_letters(clients["sqs"], world.dead_letter_queue_url)
    assert message["body"]["requestPayload"] == event

    # The operator creates the cache, then replays the dead-lettered event.
    clients["elasticache"].create_replication_group(
        ReplicationGroupId="search-redis",
        ReplicationGroupDescription="search",
        Engine="redis",
        CacheNodeType="cache.t4g.micro",
        Port=REDIS_PORT,
        CacheSubnetGroupName="caches",
        SecurityGroupIds=[REPORTS_GROUP],
    )
    replayed = authorizer.handle(event, FakeLambdaContext(), replay=True)

    assert replayed["status"] == "completed"
    assert replayed["counts"] == {"authorized": 1}
    assert [call["GroupId"] for call in rule_calls] == [REPORTS_GROUP]


def test_dry_run_looks_up_and_decides_but_adds_no_rule(
    make_vpc_authorizer: MakeAuthorizer, rule_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    summary = make_vpc_authorizer(DRY_RUN="true").handle(
        create_tags([SESSIONS_APP, OTHER_VPC_APP]), FakeLambdaContext()
    )

    assert summary["dryRun"] is True
    assert sorted(
        (d["group_id"], d["outcome"], d.get("rule")) for d in summary["decisions"]
    ) == sorted([(SESSIONS_APP, "dry-run", None), (OTHER_VPC_APP, "denied", "same-vpc")])
    assert rule_calls == []
    assert inbound(clients, CACHE_GROUP) == []


@pytest.mark.parametrize("kind", ["throttling", "server-error", "timeout"])
def test_transient_rule_faults_are_retried_and_leave_no_record(
    kind: str,
    make_vpc_authorizer: MakeAuthorizer,
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    Fault(clients["ec2"], "AuthorizeSecurityGroupIngress", kind)

    with pytest.raises(TransientFailureError, match="will be retried"):
        make_vpc_authorizer().handle(tag_change(SESSIONS_APP, SESSIONS_TAGS), FakeLambdaContext())

    assert dead_letters(clients["sqs"], world.dead_letter_queue_url) == []
    assert clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)["Items"] == []


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("access-denied", "UnauthorizedOperation"),
        ("RulesPerSecurityGroupLimitExceeded", "RulesPerSecurityGroupLimitExceeded"),
    ],
)
def test_permanent_rule_faults_dead_letter_the_event(
    kind: str,
    code: str,
    make_vpc_authorizer: MakeAuthorizer,
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    Fault(clients["ec2"], "AuthorizeSecurityGroupIngress", kind, code=code, status=400)

    summary = make_vpc_authorizer().handle(
        tag_change(SESSIONS_APP, SESSIONS_TAGS), FakeLambdaContext()
    )

    assert summary["status"] == "dead-lettered"
    [decision] = summary["decisions"]
    assert decision["error_code"] == code
    assert decision["vpc_security_group"] == CACHE_GROUP
    assert len(dead_letters(clients["sqs"], world.dead_letter_queue_url)) == 1


def test_a_throttled_lookup_retries_the_event_and_grants_nothing(
    make_vpc_authorizer: MakeAuthorizer,
    rule_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    Fault(clients["elasticache"], "DescribeReplicationGroups", "throttling")

    with pytest.raises(TransientFailureError, match="DescribeReplicationGroups"):
        make_vpc_authorizer().handle(tag_change(SESSIONS_APP, SESSIONS_TAGS), FakeLambdaContext())

    assert rule_calls == []
    assert dead_letters(clients["sqs"], world.dead_letter_queue_url) == []


def test_classic_events_make_no_elasticache_lookup(
    make_vpc_authorizer: MakeAuthorizer, clients: dict[str, Any]
) -> None:
    described: list[str] = []
    clients["elasticache"].meta.events.register(
        "before-call.elasticache", lambda model, **_: described.append(model.name)
    )

    summary = make_vpc_authorizer().handle(tag_change(ORDERS_GROUP), FakeLambdaContext())

    assert summary["counts"] == {"authorized": 1}
    assert described == ["AuthorizeCacheSecurityGroupIngress"]


def test_the_lookups_follow_the_policy_read_for_the_decision_without_reading_it_again(
    make_vpc_authorizer: MakeAuthorizer, clients: dict[str, Any]
) -> None:
    clients["ssm"].put_parameter(Name="/cache-ingress/policy", Value=VPC_POLICY, Type="String")
    reads: list[str] = []
    clients["ssm"].meta.events.register(
        "before-call.ssm.GetParameter", lambda model, **_: reads.append(model.name)
    )
    authorizer = make_vpc_authorizer(
        POLICY_PARAMETER="/cache-ingress/policy", POLICY_MAX_AGE_SECONDS="0"
    )

    summary = authorizer.handle(tag_change(SESSIONS_APP, SESSIONS_TAGS), FakeLambdaContext())

    assert summary["counts"] == {"authorized": 1}
    assert reads == ["GetParameter"]


# The sample events in events/vpc-*.json, through the real Lambda handler, with the VPC
# world seeded and the VPC policy. Once the default scenario seeds the same world and the
# bundled policy has these targets, test_sample_events covers them through the catalog.
SAMPLE_OUTCOMES = {
    "vpc-tag-change-authorized.json": (
        "completed",
        [[SESSIONS_APP, "sessions", "authorized"]],
    ),
    "vpc-tag-change-other-vpc.json": (
        "completed",
        [[OTHER_VPC_APP, "sessions", "denied", "same-vpc"]],
    ),
    "vpc-tag-change-cache-missing.json": (
        "dead-lettered",
        [[SEARCH_APP, "search", "failed"]],
    ),
    "vpc-cloudtrail-create-tags.json": (
        "completed",
        [[LEGACY_APP, "legacy", "authorized"], [LEGACY_APP, "reports", "authorized"]],
    ),
}


def test_every_vpc_sample_event_is_checked_here() -> None:
    assert {p.name for p in EVENTS_DIR.glob("vpc-*.json")} == set(SAMPLE_OUTCOMES)


@pytest.mark.parametrize("name", sorted(SAMPLE_OUTCOMES))
def test_vpc_sample_event_through_the_handler(
    name: str,
    vpc: VpcWorld,
    policy_file: Path,
    function_environment: dict[str, str],
    clients: dict[str, Any],
    world: SeededWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLICY_FILE", str(policy_file))
    status, outcomes = SAMPLE_OUTCOMES[name]

    summary = lambda_handler(vpc_event(name), FakeLambdaContext())

    assert summary["status"] == status
    assert sorted(
        [d["group_id"], d["target"], d["outcome"], *([d["rule"]] if "rule" in d else [])]
        for d in summary["decisions"]
    ) == sorted(outcomes)
    messages = dead_letters(clients["sqs"], world.dead_letter_queue_url)
    assert len(messages) == (1 if status == "dead-lettered" else 0)
