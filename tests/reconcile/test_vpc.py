"""The sweep for VPC targets: the rule on the cache's security group, looked up once per run."""

# The integration fixtures are imported by name, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cache_ingress.errors import TransientFailureError
from cache_ingress.reconcile import ReconcileOptions, Reconciler
from cache_ingress_tools.emulator.cache_security_groups import set_classic_enabled
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.conftest import aws, clients, world  # noqa: F401 - fixtures
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
from tests.reconcile import count_calls
from tests.reconcile import make_reconciler as wire_reconciler
from tests.support.events import ACCOUNT, REGION
from tests.support.faults import Fault
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

MakeReconciler = Callable[..., Reconciler]
REPORTS_PORT = 6380
VPC_ONLY_POLICY = """
version: 1
targets:
  sessions:
    replication_group: sessions-redis
    allow: {required_tags: {env: prod}}
"""
CONTEXT = FakeLambdaContext(remaining_millis=900_000)


@pytest.fixture
def vpc(world: SeededWorld) -> VpcWorld:
    """The default scenario seeds the VPC caches, their groups and the tagged groups."""
    return vpc_world(world)


@pytest.fixture
def reconciler(
    vpc: VpcWorld, world: SeededWorld, clients: dict[str, Any], tmp_path: Path
) -> MakeReconciler:
    def make(policy: str = VPC_POLICY) -> Reconciler:
        path = tmp_path / "policy.yaml"
        path.write_text(policy)
        return wire_reconciler(
            {**world.function_environment(), "POLICY_FILE": str(path)},
            clients,
            options=ReconcileOptions(page_size=5, time_reserve_ms=1_000),
        )

    return make


@pytest.fixture
def calls(clients: dict[str, Any]) -> Counter[str]:
    seen: Counter[str] = Counter()
    for service in ("elasticache", "ec2"):
        clients[service].meta.events.register(
            f"before-call.{service}", lambda model, **_: seen.update([model.name])
        )
    return seen


def admitted(clients: dict[str, Any], group_id: str) -> set[tuple[str, int, int, str]]:
    [group] = clients["ec2"].describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return {
        (rule["IpProtocol"], rule.get("FromPort", -1), rule.get("ToPort", -1), pair["GroupId"])
        for rule in group["IpPermissions"]
        for pair in rule.get("UserIdGroupPairs", [])
    }


def by_pair(report: Any) -> dict[tuple[str, str | None], str]:
    return {(p.decision.group_id, p.decision.target): str(p.status) for p in report.pairs}


def test_a_sweep_adds_the_missing_rules_on_the_caches_security_groups(
    reconciler: MakeReconciler, clients: dict[str, Any], calls: Counter[str]
) -> None:
    rules = count_calls(clients["ec2"], "AuthorizeSecurityGroupIngress")

    report = reconciler().run(CONTEXT)

    assert report.status == "completed"
    statuses = by_pair(report)
    assert statuses[(SESSIONS_APP, "sessions")] == "repaired"
    assert statuses[(LEGACY_APP, "legacy")] == "repaired"
    assert statuses[(LEGACY_APP, "reports")] == "repaired"
    assert statuses[(OTHER_VPC_APP, "sessions")] == "denied"
    assert statuses[(SEARCH_APP, "search")] == "failed"
    assert admitted(clients, CACHE_GROUP) == {("tcp", REDIS_PORT, REDIS_PORT, SESSIONS_APP)}
    assert admitted(clients, MEMCACHED_GROUP) == {
        ("tcp", MEMCACHED_PORT, MEMCACHED_PORT, LEGACY_APP)
    }
    assert admitted(clients, REPORTS_GROUP) == {("tcp", REPORTS_PORT, REPORTS_PORT, LEGACY_APP)}
    # The rule traces back to the sweep run that made it.
    sessions_rule = next(r for r in rules if r["GroupId"] == CACHE_GROUP)
    description = sessions_rule["IpPermissions"][0]["UserIdGroupPairs"][0]["Description"]
    assert description == f"cache-ingress sessions event {report.run_id}"
    # Each cache is looked up once per run, whatever the number of pages.
    assert report.pages > 1
    assert calls["DescribeReplicationGroups"] == 2  # sessions-redis, search-redis (missing)
    assert calls["DescribeCacheClusters"] == 2  # legacy-memcached, sessions-redis's member


def test_an_in_sync_vpc_account_adds_no_rule(
    reconciler: MakeReconciler, clients: dict[str, Any]
) -> None:
    reconciler().run(CONTEXT)
    rules = count_calls(clients["ec2"], "AuthorizeSecurityGroupIngress")

    report = reconciler().run(CONTEXT)

    assert rules == []
    statuses = by_pair(report)
    assert statuses[(SESSIONS_APP, "sessions")] == "in-sync"
    assert statuses[(LEGACY_APP, "reports")] == "in-sync"
    [sessions] = [p for p in report.pairs if p.decision.group_id == SESSIONS_APP]
    assert sessions.decision.reason == (
        f"the cache's security group already allows this group on tcp/{REDIS_PORT}"
    )


def test_a_rule_revoked_by_hand_comes_back(
    reconciler: MakeReconciler, clients: dict[str, Any]
) -> None:
    reconciler().run(CONTEXT)
    clients["ec2"].revoke_security_group_ingress(
        GroupId=CACHE_GROUP,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": REDIS_PORT,
                "ToPort": REDIS_PORT,
                "UserIdGroupPairs": [{"GroupId": SESSIONS_APP}],
            }
        ],
    )
    assert admitted(clients, CACHE_GROUP) == set()

    report = reconciler().run(CONTEXT)

    assert by_pair(report)[(SESSIONS_APP, "sessions")] == "repaired"
    assert admitted(clients, CACHE_GROUP) == {("tcp", REDIS_PORT, REDIS_PORT, SESSIONS_APP)}


def test_a_wider_rule_that_already_admits_the_group_counts_as_in_sync(
    reconciler: MakeReconciler, clients: dict[str, Any]
) -> None:
    clients["ec2"].authorize_security_group_ingress(
        GroupId=CACHE_GROUP,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 6000,
                "ToPort": 7000,
                "UserIdGroupPairs": [{"GroupId": SESSIONS_APP}],
            }
        ],
    )
    rules = count_calls(clients["ec2"], "AuthorizeSecurityGroupIngress")

    report = reconciler().run(CONTEXT)

    assert by_pair(report)[(SESSIONS_APP, "sessions")] == "in-sync"
    assert [r["GroupId"] for r in rules if r["GroupId"] == CACHE_GROUP] == []


def test_a_vpc_only_account_never_reads_cache_security_groups(
    reconciler: MakeReconciler, clients: dict[str, Any], calls: Counter[str]
) -> None:
    set_classic_enabled(ACCOUNT, REGION, enabled=False)

    report = reconciler(VPC_ONLY_POLICY).run(CONTEXT)

    assert report.status == "completed"
    assert calls["DescribeCacheSecurityGroups"] == 0
    assert report.counts()["failed"] == 0
    assert by_pair(report)[(SESSIONS_APP, "sessions")] == "repaired"


def test_a_cache_lookup_that_fails_transiently_retries_the_run(
    reconciler: MakeReconciler, clients: dict[str, Any]
) -> None:
    Fault(clients["elasticache"], "DescribeReplicationGroups", "throttling")

    with pytest.raises(TransientFailureError, match="transiently"):
        reconciler().run(CONTEXT)

    assert admitted(clients, CACHE_GROUP) == set()
