"""`Reconciler.preview`: the sweep under several policies from one listing, reading only.

What a plan needs from the reconciliation code: each policy's report and each pair's trace,
one DescribeSecurityGroups per page whatever the number of policies, one read of each cache
security group, no grant, no idempotency record, no resume token.
"""

# The integration fixtures are imported by name, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cache_ingress.decisions import Verdict
from cache_ingress.models import Grant
from cache_ingress.policy import parse_policy
from cache_ingress.reconcile import PairStatus, ReconcileOptions
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.conftest import aws, clients, function_environment  # noqa: F401
from tests.reconcile import (
    CLASSIC_POLICY,
    ClockedContext,
    classic_environment,
    count_calls,
    make_reconciler,
    seed_classic_world,
)

pytestmark = pytest.mark.integration

STAGING_ALLOWED = CLASSIC_POLICY.replace(
    "allow: {required_tags: {env: prod}}\n  payments",
    "allow: {required_tags: {env: [prod, staging]}}\n  payments",
)


@pytest.fixture
def world(clients: dict[str, Any], tmp_path: Path) -> SeededWorld:
    """The classic world and a sixth tagged group: two pages of five."""
    seeded = seed_classic_world(clients, tmp_path)
    group_id = clients["ec2"].create_security_group(GroupName="extra-app", Description="x")[
        "GroupId"
    ]
    clients["ec2"].create_tags(
        Resources=[group_id],
        Tags=[{"Key": "cache-ingress", "Value": "orders"}, {"Key": "env", "Value": "prod"}],
    )
    return seeded


def test_both_policies_are_judged_from_one_listing_and_nothing_is_written(
    world: SeededWorld, clients: dict[str, Any], tmp_path: Path
) -> None:
    reconciler = make_reconciler(
        classic_environment(world, tmp_path), clients, options=ReconcileOptions(page_size=5)
    )
    listings = count_calls(clients["ec2"], "DescribeSecurityGroups")
    reads = count_calls(clients["elasticache"], "DescribeCacheSecurityGroups")
    authorizes = count_calls(clients["elasticache"], "AuthorizeCacheSecurityGroupIngress")
    writes = [
        count_calls(clients["dynamodb"], operation)
        for operation in ("PutItem", "UpdateItem", "DeleteItem", "GetItem")
    ]
    assert STAGING_ALLOWED != CLASSIC_POLICY

    previews = reconciler.preview(
        {
            "current": parse_policy(CLASSIC_POLICY, source="current"),
            "new": parse_policy(STAGING_ALLOWED, source="new"),
        }
    )

    current, new = previews["current"], previews["new"]
    assert current.report.status == new.report.status == "completed"
    assert current.report.pages == new.report.pages == 2  # 6 tagged groups, 5 a page
    listed = [call for call in listings if "Filters" in call and "tag-key" in str(call)]
    assert len(listed) == 2
    # Each cache security group read once, for both policies.
    assert sorted(call["CacheSecurityGroupName"] for call in reads) == [
        "inventory-cache-sg",
        "orders-cache-sg",
        "payments-cache-sg",
    ]
    assert authorizes == []
    assert all(calls == [] for calls in writes)
    # Every pair of each report has its trace, whose outcome is the report's decision.
    for preview in previews.values():
        assert {(p.decision.group_id, p.decision.target) for p in preview.report.pairs} == set(
            preview.traces
        )
    staging = ("sg-0b2c3d4e5f6071829", "orders")
    assert current.traces[staging].deciding is not None
    assert current.traces[staging].deciding.rule == "required-tags"  # type: ignore[union-attr]
    assert isinstance(new.traces[staging].result, Grant)
    [staging_now] = [p for p in new.report.pairs if p.decision.group_id == staging[0]]
    assert staging_now.status is PairStatus.DRIFT
    payments = ("sg-0c3d4e5f607182930", "payments")
    assert [c.verdict for c in new.traces[payments].checks if c.rule == "principals"] == [
        Verdict.DENIES
    ]


def test_a_preview_stops_when_its_time_runs_out(
    world: SeededWorld, clients: dict[str, Any], tmp_path: Path
) -> None:
    reconciler = make_reconciler(
        classic_environment(world, tmp_path), clients, options=ReconcileOptions(page_size=5)
    )
    # Time for the first page only: the second check finds none left.
    context = ClockedContext(lambda asked: 60_000 if asked == 0 else 0)

    previews = reconciler.preview(
        {"only": parse_policy(CLASSIC_POLICY, source="p")}, context, reserve_ms=0
    )

    assert previews["only"].report.status == "stopped"
    assert previews["only"].report.pages == 1
