"""Faults during a sweep: transient ones raise (the run is retried), permanent ones are
reported per pair, and nothing is skipped without a word.
"""

# The integration fixtures are imported by name, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cache_ingress.errors import PolicyError, TransientFailureError
from cache_ingress.reconcile import ReconcileError, ReconcileOptions, Reconciler
from cache_ingress_tools.emulator.cache_security_groups import set_classic_enabled
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.conftest import (  # noqa: F401 - fixtures
    authorize_calls,
    aws,
    clients,
)
from tests.reconcile import (
    classic_environment,
    count_calls,
    granted_pairs,
    seed_classic_world,
)
from tests.reconcile import make_reconciler as wire_reconciler
from tests.support.events import ACCOUNT, ORDERS_GROUP, REGION
from tests.support.faults import Fault
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

MakeReconciler = Callable[..., Reconciler]
CONTEXT = FakeLambdaContext(remaining_millis=900_000)
ORDERS = "orders-cache-sg"


@pytest.fixture
def world(clients: dict[str, Any], tmp_path: Path) -> SeededWorld:
    """The classic world (tests/reconcile/__init__.py), not the growing default one."""
    return seed_classic_world(clients, tmp_path)


@pytest.fixture
def reconciler(world: SeededWorld, clients: dict[str, Any], tmp_path: Path) -> MakeReconciler:
    def make(**environment: str) -> Reconciler:
        return wire_reconciler(
            {**classic_environment(world, tmp_path), **environment},
            clients,
            options=ReconcileOptions(time_reserve_ms=1_000),
        )

    return make


def test_a_throttled_repair_finishes_the_page_then_raises_and_the_retry_repairs_it(
    reconciler: MakeReconciler, clients: dict[str, Any], authorize_calls: list[dict[str, Any]]
) -> None:
    throttle = Fault(
        clients["elasticache"], "AuthorizeCacheSecurityGroupIngress", "throttling", times=1
    )

    with pytest.raises(TransientFailureError, match="1 pair\\(s\\) failed transiently"):
        reconciler().run(CONTEXT)

    # The other repair on the page was made before the run raised.
    assert throttle.calls == 1
    assert len(granted_pairs(clients["elasticache"], ORDERS)) == 1

    retry = reconciler().run(CONTEXT)

    assert retry.status == "completed"
    assert retry.counts()["repaired"] == 1
    assert retry.counts()["in-sync"] == 1
    assert granted_pairs(clients["elasticache"], ORDERS) == {
        ("orders-app", ACCOUNT),
        ("reporting-app", ACCOUNT),
    }


def test_a_permanent_repair_failure_is_reported_per_pair_and_the_run_completes(
    reconciler: MakeReconciler, clients: dict[str, Any]
) -> None:
    Fault(clients["elasticache"], "AuthorizeCacheSecurityGroupIngress", "access-denied")

    report = reconciler().run(CONTEXT)

    assert report.status == "completed"
    failed = {p.decision.group_name: p.decision for p in report.pairs if str(p.status) == "failed"}
    assert set(failed) == {"orders-app", "reporting-app", "inventory-app"}
    for name in ("orders-app", "reporting-app"):
        assert (failed[name].error_code, str(failed[name].failure)) == ("AccessDenied", "permanent")
    assert report.summary()["driftFound"] == 3
    assert granted_pairs(clients["elasticache"], ORDERS) == set()


@pytest.mark.parametrize("kind", ["throttling", "server-error", "timeout"])
def test_a_transient_listing_failure_raises_before_any_change(
    reconciler: MakeReconciler,
    clients: dict[str, Any],
    authorize_calls: list[dict[str, Any]],
    kind: str,
) -> None:
    Fault(clients["ec2"], "DescribeSecurityGroups", kind)

    with pytest.raises(TransientFailureError, match="listing tagged groups failed"):
        reconciler().run(CONTEXT)

    assert authorize_calls == []


def test_a_listing_refused_for_good_fails_the_run_visibly(
    reconciler: MakeReconciler, clients: dict[str, Any]
) -> None:
    Fault(clients["ec2"], "DescribeSecurityGroups", "access-denied")

    with pytest.raises(ReconcileError, match="UnauthorizedOperation"):
        reconciler().run(CONTEXT)


def test_a_transient_failure_reading_grants_raises(
    reconciler: MakeReconciler, clients: dict[str, Any], authorize_calls: list[dict[str, Any]]
) -> None:
    Fault(clients["elasticache"], "DescribeCacheSecurityGroups", "throttling")

    with pytest.raises(TransientFailureError, match="reading granted ingress failed"):
        reconciler().run(CONTEXT)

    assert authorize_calls == []


def test_an_account_without_ec2_classic_fails_each_classic_pair_and_says_why(
    reconciler: MakeReconciler, authorize_calls: list[dict[str, Any]]
) -> None:
    set_classic_enabled(ACCOUNT, REGION, enabled=False)

    report = reconciler().run(CONTEXT)

    assert report.status == "completed"
    assert authorize_calls == []
    failed = [p for p in report.pairs if str(p.status) == "failed"]
    assert {p.decision.error_code for p in failed} == {"CacheSecurityGroupsUnavailable"}
    # orders-app, reporting-app, inventory-app (granted state unknown) and payments-app
    # (its principal rule is all that is left, and nobody can say whether it is granted)
    assert len(failed) == 4
    assert all("EC2-Classic" in p.decision.reason for p in failed)
    # Denials do not depend on what is granted
    assert report.counts()["denied"] == 2


def test_a_resume_token_store_that_refuses_reads_costs_only_the_resume(
    reconciler: MakeReconciler, clients: dict[str, Any], world: SeededWorld
) -> None:
    Fault(clients["dynamodb"], "GetItem", "access-denied")

    report = reconciler().run(CONTEXT)

    assert report.status == "completed"
    assert report.counts()["repaired"] == 2
    assert report.resume_token_saved is False


def test_a_throttled_resume_token_read_raises(
    reconciler: MakeReconciler, clients: dict[str, Any], authorize_calls: list[dict[str, Any]]
) -> None:
    Fault(clients["dynamodb"], "GetItem", "throttling")

    with pytest.raises(TransientFailureError, match="resume token"):
        reconciler().run(CONTEXT)

    assert authorize_calls == []


def test_an_invalid_policy_stops_the_run_before_any_call(
    reconciler: MakeReconciler, clients: dict[str, Any], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ntargets: {orders: {cache_security_group: orders, typo: 1}}\n")
    listings = count_calls(clients["ec2"], "DescribeSecurityGroups")

    with pytest.raises(PolicyError, match="typo"):
        reconciler(POLICY_FILE=str(policy)).run(CONTEXT)

    assert listings == []


def test_a_stopped_run_with_a_broken_store_still_reports_what_it_did(
    reconciler: MakeReconciler, clients: dict[str, Any], world: SeededWorld
) -> None:
    Fault(clients["dynamodb"], "PutItem", "access-denied")
    short = FakeLambdaContext(remaining_millis=500)

    report = reconciler().run(short, dry_run=True)

    # Out of time before the first page: nothing done, nothing to save, and no cursor left
    # behind that could block the next run.
    assert (report.status, report.pages, report.resume_token_saved) == ("stopped", 0, False)
    assert clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)["Items"] == []
    assert ORDERS_GROUP not in {p.decision.group_id for p in report.pairs}
