"""Pages, the time budget, and the resume token: large accounts across several runs."""

# The integration fixtures are imported by name, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cache_ingress.errors import TransientFailureError
from cache_ingress.reconcile import CURSOR_KEY, ReconcileOptions, Reconciler
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.conftest import (  # noqa: F401 - fixtures
    authorize_calls,
    aws,
    clients,
)
from tests.reconcile import (
    ClockedContext,
    classic_environment,
    count_calls,
    granted_pairs,
    seed_classic_world,
)
from tests.reconcile import make_reconciler as wire_reconciler
from tests.support.faults import Fault
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

MakeReconciler = Callable[..., Reconciler]
EXTRA_GROUPS = 23
TAGGED = 5 + EXTRA_GROUPS  # the scenario's five tagged groups and the extra ones
ALLOWED = 2 + EXTRA_GROUPS  # orders-app, reporting-app and every extra group
PLENTY = FakeLambdaContext(remaining_millis=900_000)


@pytest.fixture
def world(clients: dict[str, Any], tmp_path: Path) -> SeededWorld:
    """The classic world (tests/reconcile/__init__.py), not the growing default one."""
    return seed_classic_world(clients, tmp_path)


@pytest.fixture
def reconciler(world: SeededWorld, clients: dict[str, Any], tmp_path: Path) -> MakeReconciler:
    def make(page_size: int = 5, **options: int) -> Reconciler:
        return wire_reconciler(
            classic_environment(world, tmp_path),
            clients,
            options=ReconcileOptions(page_size=page_size, time_reserve_ms=10_000, **options),
        )

    return make


@pytest.fixture
def extra_groups(world: SeededWorld, clients: dict[str, Any]) -> list[str]:
    """Tagged groups the policy allows, beyond the scenario's: more than one page holds."""
    return [
        clients["ec2"].create_security_group(
            GroupName=f"service-{index:02d}",
            Description="a service",
            VpcId=world.vpc_id,
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
        for index in range(EXTRA_GROUPS)
    ]


def cursor_item(clients: dict[str, Any], world: SeededWorld) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        clients["dynamodb"]
        .get_item(TableName=world.scenario.idempotency_table, Key={"id": {"S": CURSOR_KEY}})
        .get("Item")
    )
    return item


def put_cursor(clients: dict[str, Any], world: SeededWorld, **fields: dict[str, str]) -> None:
    clients["dynamodb"].put_item(
        TableName=world.scenario.idempotency_table,
        Item={"id": {"S": CURSOR_KEY}, **fields},
    )


def group_ids(report: Any) -> set[str]:
    return {pair.decision.group_id for pair in report.pairs}


@pytest.mark.parametrize(("page_size", "pages"), [(5, 6), (10, 3), (1000, 1)])
def test_calls_grow_with_pages_not_groups(
    reconciler: MakeReconciler,
    clients: dict[str, Any],
    extra_groups: list[str],
    page_size: int,
    pages: int,
) -> None:
    listings = count_calls(clients["ec2"], "DescribeSecurityGroups")
    granted_reads = count_calls(clients["elasticache"], "DescribeCacheSecurityGroups")

    report = reconciler(page_size).run(PLENTY)

    assert (report.status, report.pages, len(listings)) == ("completed", pages, pages)
    assert all(
        call["MaxResults"] == page_size
        and call["Filters"] == [{"Name": "tag-key", "Values": ["cache-ingress"]}]
        for call in listings
    )
    assert ["NextToken" in call for call in listings] == [False] + [True] * (pages - 1)
    assert report.groups_seen == TAGGED
    assert group_ids(report) >= set(extra_groups)
    # Each cache security group a tagged group asks for is read once per run, by name,
    # however many pages and groups name it.
    assert sorted(call["CacheSecurityGroupName"] for call in granted_reads) == [
        "inventory-cache-sg",
        "orders-cache-sg",
        "payments-cache-sg",
    ]
    assert report.counts()["repaired"] == ALLOWED


def test_a_run_out_of_time_stops_between_pages_and_the_next_resumes_there(
    reconciler: MakeReconciler, clients: dict[str, Any], world: SeededWorld, extra_groups: list[str]
) -> None:
    listings = count_calls(clients["ec2"], "DescribeSecurityGroups")
    # Time runs short once three pages are listed (a dry run only checks between pages)
    short = ClockedContext(lambda _: 100_000 if len(listings) < 3 else 1_000)

    first = reconciler().run(short, dry_run=True)

    assert (first.status, first.pages, first.groups_seen) == ("stopped", 3, 15)
    assert first.resume_token_saved is True
    saved = cursor_item(clients, world)
    assert saved is not None
    assert saved["version"] == {"N": "1"}
    assert int(saved["expiration"]["N"]) > time.time()
    listed_first = len(listings)

    second = reconciler().run(PLENTY, dry_run=True)

    assert second.status == "completed"
    assert second.resumed is True
    assert listings[listed_first]["NextToken"] == saved["next_token"]["S"]
    assert second.groups_seen == TAGGED - 15
    assert group_ids(first).isdisjoint(group_ids(second))
    assert len(group_ids(first) | group_ids(second)) == TAGGED
    assert cursor_item(clients, world) is None


def test_a_run_out_of_time_in_the_middle_of_a_page_redoes_that_page_and_loses_nothing(
    reconciler: MakeReconciler,
    clients: dict[str, Any],
    world: SeededWorld,
    authorize_calls: list[dict[str, Any]],
    extra_groups: list[str],
) -> None:
    ec2 = clients["ec2"]
    listings = count_calls(ec2, "DescribeSecurityGroups")
    authorized_when_listed: list[int] = []
    ec2.meta.events.register(
        "after-call.ec2.DescribeSecurityGroups",
        lambda **_: authorized_when_listed.append(len(authorize_calls)),
    )

    def remaining(_: int) -> int:
        # Time runs short after the first repair on the second page. Every page holds at
        # least two repairs: only three of the tagged groups need none.
        on_second_page = len(listings) == 2 and len(authorize_calls) > authorized_when_listed[1]
        return 1_000 if on_second_page else 100_000

    first = reconciler().run(ClockedContext(remaining))

    assert first.status == "stopped"
    listed_first = len(listings)
    assert listed_first == 2
    assert first.counts()["repaired"] == len(authorize_calls)

    second = reconciler().run(PLENTY)

    assert second.status == "completed"
    assert second.resumed is True
    assert listings[listed_first]["NextToken"] == listings[1]["NextToken"]
    # Every allowed pair is granted exactly once: the page in progress is redone, and its
    # first repair is in sync by then.
    assert second.counts()["in-sync"] >= 1
    assert len(authorize_calls) == ALLOWED
    assert len({c["EC2SecurityGroupName"] for c in authorize_calls}) == ALLOWED
    names_granted = granted_pairs(clients["elasticache"], "orders-cache-sg")
    assert len(names_granted) == ALLOWED
    assert cursor_item(clients, world) is None


def test_a_token_ec2_rejects_restarts_the_sweep_from_the_beginning(
    reconciler: MakeReconciler, clients: dict[str, Any], world: SeededWorld, extra_groups: list[str]
) -> None:
    sweep = reconciler()
    put_cursor(
        clients,
        world,
        next_token={"S": "token-from-an-older-listing"},
        listing={"S": sweep.listing},
        saved_at={"N": str(int(time.time()))},
        run_id={"S": "reconcile-earlier"},
        version={"N": "4"},
    )
    listings = count_calls(clients["ec2"], "DescribeSecurityGroups")

    report = sweep.run(PLENTY)

    assert listings[0]["NextToken"] == "token-from-an-older-listing"
    assert "NextToken" not in listings[1]
    assert (report.status, report.resumed, report.groups_seen) == ("completed", False, TAGGED)
    assert cursor_item(clients, world) is None


@pytest.mark.parametrize(
    "stale",
    [
        pytest.param({"saved_at": {"N": str(int(time.time()) - 30 * 86_400)}}, id="too-old"),
        pytest.param(
            {"listing": {"S": "123456789012/us-east-1/tag-key=other"}}, id="other-listing"
        ),
        pytest.param({"version": {"S": "not a number"}}, id="unreadable"),
        pytest.param({"next_token": {"N": "7"}}, id="wrong-type"),
    ],
)
def test_a_stale_or_unreadable_token_is_discarded_and_never_blocks(
    reconciler: MakeReconciler,
    clients: dict[str, Any],
    world: SeededWorld,
    extra_groups: list[str],
    stale: dict[str, dict[str, str]],
) -> None:
    sweep = reconciler()
    fields = {
        "next_token": {"S": "some-token"},
        "listing": {"S": sweep.listing},
        "saved_at": {"N": str(int(time.time()))},
        "run_id": {"S": "reconcile-earlier"},
        "version": {"N": "2"},
        **stale,
    }
    put_cursor(clients, world, **fields)
    listings = count_calls(clients["ec2"], "DescribeSecurityGroups")

    report = sweep.run(PLENTY)

    assert "NextToken" not in listings[0]
    assert (report.status, report.resumed, report.groups_seen) == ("completed", False, TAGGED)
    assert cursor_item(clients, world) is None


def test_a_cursor_moved_by_another_run_is_left_to_it_and_wedges_nothing(
    reconciler: MakeReconciler, clients: dict[str, Any], world: SeededWorld, extra_groups: list[str]
) -> None:
    listings = count_calls(clients["ec2"], "DescribeSecurityGroups")
    reconciler().run(
        ClockedContext(lambda _: 100_000 if len(listings) < 2 else 1_000), dry_run=True
    )
    saved = cursor_item(clients, world)
    assert saved is not None

    def another_run_saves(**_: Any) -> None:
        if len(listings) == len_before + 1:
            put_cursor(clients, world, **{**saved, "version": {"N": "9"}})

    len_before = len(listings)
    clients["ec2"].meta.events.register("after-call.ec2.DescribeSecurityGroups", another_run_saves)
    overlapping = reconciler().run(PLENTY, dry_run=True)
    clients["ec2"].meta.events.unregister(
        "after-call.ec2.DescribeSecurityGroups", another_run_saves
    )

    assert overlapping.status == "completed"
    left = cursor_item(clients, world)
    assert left is not None
    assert left["version"] == {"N": "9"}

    following = reconciler().run(PLENTY, dry_run=True)

    assert (following.status, following.resumed) == ("completed", True)
    assert cursor_item(clients, world) is None


def test_a_transient_listing_failure_raises_and_the_retry_resumes_at_the_failed_page(
    reconciler: MakeReconciler,
    clients: dict[str, Any],
    world: SeededWorld,
    authorize_calls: list[dict[str, Any]],
    extra_groups: list[str],
) -> None:
    ec2 = clients["ec2"]
    listings = count_calls(ec2, "DescribeSecurityGroups")
    faults: list[Fault] = []

    def throttle_the_third(**_: Any) -> None:
        if len(listings) == 2 and not faults:
            faults.append(Fault(ec2, "DescribeSecurityGroups", "throttling", times=1))

    ec2.meta.events.register("after-call.ec2.DescribeSecurityGroups", throttle_the_third)

    with pytest.raises(TransientFailureError, match="Throttling"):
        reconciler().run(PLENTY)

    assert faults[0].calls == 1
    failed_page = listings[2]["NextToken"]
    saved = cursor_item(clients, world)
    assert saved is not None
    assert saved["next_token"]["S"] == failed_page

    retry = reconciler().run(PLENTY)

    assert listings[3]["NextToken"] == failed_page
    assert (retry.status, retry.resumed) == ("completed", True)
    assert len(granted_pairs(clients["elasticache"], "orders-cache-sg")) == ALLOWED
    assert len(authorize_calls) == ALLOWED
