"""The sweep against moto and the emulation: what it repairs, what it leaves, what it says."""

# The integration fixtures are imported by name, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cache_ingress.authorizer import Authorizer
from cache_ingress.observability import metrics
from cache_ingress.reconcile import ReconcileOptions, Reconciler, current_reconciler
from cache_ingress.reconcile_handler import lambda_handler
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.conftest import (  # noqa: F401 - fixtures
    authorize_calls,
    aws,
    clients,
    function_environment,
    make_authorizer,
)
from tests.reconcile import (
    classic_environment,
    count_calls,
    granted_pairs,
    seed_classic_world,
)
from tests.reconcile import make_reconciler as wire_reconciler
from tests.support.events import (
    ACCOUNT,
    ORDERS_GROUP,
    PAYMENTS_GROUP,
    PLATFORM_PRINCIPAL,
    create_tags,
    load_event,
)
from tests.support.lambda_context import FakeLambdaContext
from tests.support.output import capture_function_output

pytestmark = pytest.mark.integration

MakeReconciler = Callable[..., Reconciler]
REPORTING_GROUP = "sg-01a2b3c4d5e6f7081"
STAGING_GROUP = "sg-0b2c3d4e5f6071829"
INVENTORY_GROUP = "sg-0f60718293041526a"
ORDERS = "orders-cache-sg"
PAYMENTS = "payments-cache-sg"
SCHEDULED_EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": ACCOUNT,
    "time": "2026-11-20T11:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/cache-ingress-reconcile"],
    "detail": {},
}


@pytest.fixture
def world(clients: dict[str, Any], tmp_path: Path) -> SeededWorld:
    """The classic world (tests/reconcile/__init__.py), not the growing default one."""
    return seed_classic_world(clients, tmp_path)


@pytest.fixture
def authorizer(
    make_authorizer: Callable[..., Authorizer], tmp_path: Path
) -> Callable[[], Authorizer]:
    """The event path, on the classic world's policy."""
    return lambda: make_authorizer(POLICY_FILE=str(tmp_path / "classic-policy.yaml"))


@pytest.fixture
def reconciler(world: SeededWorld, clients: dict[str, Any], tmp_path: Path) -> MakeReconciler:
    def make(options: ReconcileOptions | None = None, **environment: str) -> Reconciler:
        return wire_reconciler(
            {**classic_environment(world, tmp_path), **environment},
            clients,
            options=options or ReconcileOptions(time_reserve_ms=1_000),
        )

    return make


def statuses(report: Any) -> dict[tuple[str, str | None], str]:
    return {(p.decision.group_id, p.decision.target): str(p.status) for p in report.pairs}


def idempotency_items(clients: dict[str, Any], world: SeededWorld) -> list[dict[str, Any]]:
    table = world.scenario.idempotency_table
    items: list[dict[str, Any]] = clients["dynamodb"].scan(TableName=table)["Items"]
    return items


def test_a_missed_event_is_repaired_on_the_next_sweep(
    reconciler: MakeReconciler, authorize_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    # Given the default world, where no event was ever delivered
    report = reconciler().run(FakeLambdaContext())

    assert report.status == "completed"
    assert sorted(authorize_calls, key=lambda c: c["EC2SecurityGroupName"]) == [
        {
            "CacheSecurityGroupName": ORDERS,
            "EC2SecurityGroupName": "orders-app",
            "EC2SecurityGroupOwnerId": ACCOUNT,
        },
        {
            "CacheSecurityGroupName": ORDERS,
            "EC2SecurityGroupName": "reporting-app",
            "EC2SecurityGroupOwnerId": ACCOUNT,
        },
    ]
    assert granted_pairs(clients["elasticache"], ORDERS) == {
        ("orders-app", ACCOUNT),
        ("reporting-app", ACCOUNT),
    }
    assert statuses(report) == {
        (ORDERS_GROUP, "orders"): "repaired",
        (REPORTING_GROUP, "orders"): "repaired",
        (REPORTING_GROUP, "analytics"): "denied",
        (STAGING_GROUP, "orders"): "denied",
        (PAYMENTS_GROUP, "payments"): "needs-event",
        (INVENTORY_GROUP, "inventory"): "failed",
    }
    summary = report.summary()
    # retired-app lost its tag key: the listing never returns it
    assert summary["groupsSeen"] == 5
    assert summary["counts"] == {
        "in-sync": 0,
        "repaired": 2,
        "drift": 0,
        "denied": 2,
        "needs-event": 1,
        "not-applicable": 0,
        "failed": 1,
    }
    # the two repairs and the missing cache group were drift; needs-event is counted apart
    assert summary["driftFound"] == 3
    [inventory] = [f for f in summary["findings"] if f["group_id"] == INVENTORY_GROUP]
    assert inventory["error_code"] == "CacheSecurityGroupNotFound"
    assert inventory["failure"] == "permanent"


def test_an_in_sync_account_makes_no_authorize_call_and_writes_nothing(
    reconciler: MakeReconciler,
    authorizer: Callable[[], Authorizer],
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    clients["elasticache"].create_cache_security_group(
        CacheSecurityGroupName="inventory-cache-sg", Description="inventory"
    )
    authorizer().handle(create_tags([PAYMENTS_GROUP]), FakeLambdaContext())
    reconciler().run(FakeLambdaContext())
    authorize_calls.clear()
    writes = count_calls(clients["dynamodb"], "PutItem") + count_calls(
        clients["dynamodb"], "DeleteItem"
    )
    records_before = idempotency_items(clients, world)

    report = reconciler().run(FakeLambdaContext())

    assert authorize_calls == []
    assert writes == []
    assert idempotency_items(clients, world) == records_before
    summary = report.summary()
    assert summary["counts"]["in-sync"] == 4
    assert summary["counts"]["denied"] == 2
    assert summary["driftFound"] == 0
    assert {f["status"] for f in summary["findings"]} == {"denied"}


def test_a_grant_revoked_by_hand_comes_back_after_an_event_and_after_a_sweep(
    reconciler: MakeReconciler,
    authorizer: Callable[[], Authorizer],
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    elasticache = clients["elasticache"]
    authorizer().handle(load_event("tag-change-authorized.json"), FakeLambdaContext())
    event_records = idempotency_items(clients, world)
    assert len(event_records) == 1

    for attempt in range(2):
        # Someone revokes the grant the policy still requires...
        elasticache.revoke_cache_security_group_ingress(
            CacheSecurityGroupName=ORDERS,
            EC2SecurityGroupName="orders-app",
            EC2SecurityGroupOwnerId=ACCOUNT,
        )
        authorize_calls.clear()

        report = reconciler().run(FakeLambdaContext())

        # ...and the next sweep grants it again, although a record saying "authorized"
        # (the event's, then the previous sweep's) exists for the same pair.
        assert {c["EC2SecurityGroupName"] for c in authorize_calls} >= {"orders-app"}, attempt
        assert ("orders-app", ACCOUNT) in granted_pairs(elasticache, ORDERS)
        assert statuses(report)[(ORDERS_GROUP, "orders")] == "repaired"
    assert event_records[0] in idempotency_items(clients, world)


def test_dry_run_reports_drift_and_changes_nothing(
    reconciler: MakeReconciler,
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    for report in (
        reconciler().run(FakeLambdaContext(), dry_run=True),
        reconciler(DRY_RUN="true").run(FakeLambdaContext()),
    ):
        assert report.dry_run is True
        assert authorize_calls == []
        assert granted_pairs(clients["elasticache"], ORDERS) == set()
        assert idempotency_items(clients, world) == []
        drift = [p.as_fields() for p in report.pairs if str(p.status) == "drift"]
        assert {(d["group_id"], d["outcome"]) for d in drift} == {
            (ORDERS_GROUP, "dry-run"),
            (REPORTING_GROUP, "dry-run"),
        }
        assert report.summary()["driftFound"] == 3


def test_targets_requiring_a_principal_are_never_granted_by_the_sweep(
    reconciler: MakeReconciler,
    authorizer: Callable[[], Authorizer],
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    ec2 = clients["ec2"]
    # A second payments group that also fails another rule: that rule is what it is denied by.
    ec2.create_security_group(
        GroupName="payments-staging",
        Description="payments, staging",
        VpcId=world.vpc_id,
        TagSpecifications=[
            {
                "ResourceType": "security-group",
                "Tags": [
                    {"Key": "cache-ingress", "Value": "payments"},
                    {"Key": "env", "Value": "staging"},
                ],
            }
        ],
    )

    for _ in range(2):
        report = reconciler().run(FakeLambdaContext())
        assert not [c for c in authorize_calls if c["CacheSecurityGroupName"] == PAYMENTS]
        payments = [p for p in report.pairs if p.decision.target == "payments"]
        assert sorted(
            (p.decision.group_name, str(p.status), p.decision.rule) for p in payments
        ) == [
            ("payments-app", "needs-event", "principals"),
            ("payments-staging", "denied", "required-tags"),
        ]
    assert granted_pairs(clients["elasticache"], PAYMENTS) == set()

    # Once an event with an allowed principal granted it, the sweep finds it in sync.
    authorizer().handle(
        create_tags([PAYMENTS_GROUP], principal=PLATFORM_PRINCIPAL), FakeLambdaContext()
    )
    report = reconciler().run(FakeLambdaContext())
    [payments_app] = [p for p in report.pairs if p.decision.group_id == PAYMENTS_GROUP]
    assert (str(payments_app.status), payments_app.granted) == ("in-sync", True)


def test_a_grant_the_policy_does_not_allow_is_reported_and_never_revoked(
    reconciler: MakeReconciler, clients: dict[str, Any]
) -> None:
    elasticache = clients["elasticache"]
    revokes = count_calls(elasticache, "RevokeCacheSecurityGroupIngress")
    elasticache.authorize_cache_security_group_ingress(
        CacheSecurityGroupName=ORDERS,
        EC2SecurityGroupName="orders-staging-app",
        EC2SecurityGroupOwnerId=ACCOUNT,
    )

    report = reconciler().run(FakeLambdaContext())

    [staging] = [p for p in report.pairs if p.decision.group_id == STAGING_GROUP]
    assert (str(staging.status), staging.granted, staging.decision.rule) == (
        "denied",
        True,
        "required-tags",
    )
    assert report.summary()["grantedBeyondPolicy"] == 1
    assert revokes == []
    assert ("orders-staging-app", ACCOUNT) in granted_pairs(elasticache, ORDERS)


def test_two_groups_with_one_name_share_one_classic_grant(
    reconciler: MakeReconciler,
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
) -> None:
    # Classic ingress names a group by (name, owner); another VPC may reuse the name.
    ec2 = clients["ec2"]
    other_vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    twin = ec2.create_security_group(
        GroupName="orders-app",
        Description="orders, second VPC",
        VpcId=other_vpc,
        TagSpecifications=[
            {
                "ResourceType": "security-group",
                "Tags": [
                    {"Key": "cache-ingress", "Value": "orders"},
                    {"Key": "env", "Value": "prod"},
                ],
            }
        ],
    )["GroupId"]

    report = reconciler().run(FakeLambdaContext())

    assert [c["EC2SecurityGroupName"] for c in authorize_calls].count("orders-app") == 1
    orders_app = {
        p.decision.group_id: str(p.status)
        for p in report.pairs
        if p.decision.group_name == "orders-app"
    }
    assert sorted(orders_app.values()) == ["in-sync", "repaired"]
    assert set(orders_app) == {ORDERS_GROUP, twin}


@pytest.fixture
def handler_environment(
    function_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("POLICY_FILE", str(tmp_path / "classic-policy.yaml"))
    monkeypatch.setenv("RECONCILE_TIME_RESERVE_SECONDS", "5")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "cache-ingress-reconcile")
    current_reconciler.cache_clear()
    yield function_environment
    current_reconciler.cache_clear()
    metrics.clear_metrics()


def test_the_scheduled_handler_logs_each_drift_and_repair_and_publishes_metrics(
    handler_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = capture_function_output(monkeypatch)

    summary = lambda_handler(SCHEDULED_EVENT, FakeLambdaContext())

    assert summary["status"] == "completed"
    assert summary["counts"]["repaired"] == 2
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    drift = [line for line in lines if line.get("message") == "drift found"]
    assert sorted((d["group_id"], d["action"]) for d in drift) == sorted(
        [
            (ORDERS_GROUP, "repair"),
            (REPORTING_GROUP, "repair"),
            (PAYMENTS_GROUP, "needs-event"),
            (INVENTORY_GROUP, "cannot-repair"),
        ]
    )
    repaired = [line for line in lines if line.get("message") == "drift repaired"]
    assert sorted(r["group_id"] for r in repaired) == sorted([ORDERS_GROUP, REPORTING_GROUP])
    for line in drift + repaired:
        assert line["run_id"] == summary["runId"]
        assert line["correlation_id"] == SCHEDULED_EVENT["id"]
        assert {"group_id", "group_name", "owner_id", "target", "cache_security_group"} <= set(line)
    [finished] = [line for line in lines if line.get("message") == "reconcile finished"]
    assert (finished["groups_seen"], finished["repaired"], finished["failed"]) == (5, 2, 1)
    [emf] = [line for line in lines if "_aws" in line]
    assert emf["Drift"] == [3.0]
    assert emf["Repaired"] == [2.0]
    assert emf["NeedsEvent"] == [1.0]
    assert emf["ReconcileFailed"] == [1.0]
    assert emf["GroupsReconciled"] == [5.0]
