"""The sweep's logic on plain data: no AWS, no sockets (the adapters meet botocore's Stubber)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from cache_ingress.errors import AwsCallError, SettingsError
from cache_ingress.granted_state import IngressRule, Pairs, read_cache_security_group
from cache_ingress.models import Decision, Grant, Outcome, SecurityGroupFacts
from cache_ingress.policy_source import PolicySource
from cache_ingress.reconcile import (
    Budget,
    GroupPage,
    PairResult,
    PairStatus,
    ReconcileOptions,
    Reconciler,
    Report,
    new_run_id,
)
from cache_ingress.settings import BUNDLED_POLICY, Settings
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.unit

ACCOUNT = "123456789012"
REGION = "us-east-1"
SETTINGS = Settings.from_environ(
    {
        "ACCOUNT_ID": ACCOUNT,
        "AWS_REGION": REGION,
        "IDEMPOTENCY_TABLE": "table",
        "DEAD_LETTER_QUEUE_URL": "queue",
    }
)


ORDERS_TAGS = {"cache-ingress": "orders", "env": "prod"}
NOTHING_GRANTED = {"orders-cache-sg": frozenset[tuple[str, str]]()}


def group(group_id: str, name: str, **tags: str) -> SecurityGroupFacts:
    return SecurityGroupFacts(group_id, name, ACCOUNT, "vpc-1", REGION, dict(tags))


@dataclass
class FakeGranter:
    """Grants everything it is asked; remembers what."""

    granted: list[Grant] = field(default_factory=list)

    def register(self, context: Any) -> None:
        pass

    def grant(self, grant: Grant, principal: str | None, origin: object = None) -> Decision:
        del origin  # what the ledger would record: this double keeps none
        self.granted.append(grant)
        return Decision(
            grant.group_id,
            grant.target,
            Outcome.AUTHORIZED,
            "ingress authorized",
            group_name=grant.group_name,
            owner_id=grant.owner_id,
            cache_security_group=grant.cache_security_group,
            principal=principal,
        )


def sweep(
    pages: list[list[SecurityGroupFacts]], granted: dict[str, frozenset[tuple[str, str]]]
) -> tuple[Reconciler, FakeGranter, list[str]]:
    """A Reconciler over fixed pages and a fixed granted state; also what it read."""
    tokens = [None, *(f"page-{index}" for index in range(1, len(pages)))]
    by_token = {
        token: GroupPage(token, tuple(groups), tokens[i + 1] if i + 1 < len(pages) else None)
        for i, (token, groups) in enumerate(zip(tokens, pages, strict=True))
    }
    granter = FakeGranter()
    reads: list[str] = []

    def read_granted(name: str) -> Pairs | None:
        reads.append(name)
        return granted.get(name)

    reconciler = Reconciler(
        SETTINGS,
        ReconcileOptions(),
        policies=PolicySource(tag_key="cache-ingress", policy_file=BUNDLED_POLICY),
        list_groups=lambda token: by_token[token],
        read_granted=read_granted,
        read_rules=lambda ids: {},
        resolve_destinations=lambda destinations: {},
        granter=lambda: granter,  # type: ignore[arg-type, return-value]
    )
    return reconciler, granter, reads


def statuses(report: Report) -> list[tuple[str, str | None, str]]:
    return sorted(
        (p.decision.group_name or "", p.decision.target, str(p.status)) for p in report.pairs
    )


def test_each_pair_gets_one_status_and_only_missing_allowed_pairs_are_granted() -> None:
    reconciler, granter, _ = sweep(
        [
            [group("sg-1", "orders-app", **{"cache-ingress": "orders", "env": "prod"})],
            [
                group("sg-2", "granted-app", **{"cache-ingress": "orders", "env": "prod"}),
                group("sg-3", "staging-app", **{"cache-ingress": "orders", "env": "staging"}),
                group("sg-4", "empty-tag", **{"cache-ingress": " , "}),
            ],
        ],
        {"orders-cache-sg": frozenset({("granted-app", ACCOUNT)})},
    )

    report = reconciler.run()

    assert statuses(report) == [
        ("empty-tag", None, "not-applicable"),
        ("granted-app", "orders", "in-sync"),
        ("orders-app", "orders", "repaired"),
        ("staging-app", "orders", "denied"),
    ]
    assert [g.group_name for g in granter.granted] == ["orders-app"]
    assert (report.pages, report.groups_seen, report.status) == (2, 4, "completed")


def test_the_sweeps_grants_carry_its_run_id_as_their_event_id() -> None:
    reconciler, granter, _ = sweep(
        [[group("sg-1", "orders-app", **{"cache-ingress": "orders", "env": "prod"})]],
        NOTHING_GRANTED,
    )
    first, second = reconciler.run(), reconciler.run()

    assert [g.event_id for g in granter.granted] == [first.run_id, second.run_id]
    assert first.run_id != second.run_id


def test_a_principal_target_is_needs_event_only_when_every_other_rule_holds() -> None:
    # A group that also breaks another rule is denied by that rule, never reported as
    # something an event could fix.
    reconciler, granter, _ = sweep(
        [
            [
                group("sg-1", "payments-app", **{"cache-ingress": "payments", "env": "prod"}),
                group("sg-2", "payments-dev", **{"cache-ingress": "payments", "env": "dev"}),
                group("sg-3", "payments-old", **{"cache-ingress": "payments", "env": "prod"}),
            ]
        ],
        {"payments-cache-sg": frozenset({("payments-old", ACCOUNT)})},
    )

    report = reconciler.run()

    assert statuses(report) == [
        ("payments-app", "payments", "needs-event"),
        ("payments-dev", "payments", "denied"),
        ("payments-old", "payments", "in-sync"),
    ]
    assert granter.granted == []


def test_an_account_with_no_tagged_group_reads_nothing_else() -> None:
    reconciler, granter, reads = sweep([[]], {})

    report = reconciler.run()

    assert (report.status, report.groups_seen, reads, granter.granted) == ("completed", 0, [], [])


def test_each_cache_security_group_is_read_once_per_run_when_first_needed() -> None:
    tags = {"cache-ingress": "orders, payments", "env": "prod"}
    reconciler, _, reads = sweep(
        [[group(f"sg-{i}", f"app-{i}", **tags) for i in range(3)] for _ in range(3)],
        {"orders-cache-sg": frozenset(), "payments-cache-sg": frozenset()},
    )

    reconciler.run()

    assert sorted(reads) == ["orders-cache-sg", "payments-cache-sg"]


def test_a_dry_run_reports_drift_and_never_builds_a_granter() -> None:
    reconciler, granter, _ = sweep(
        [[group("sg-1", "orders-app", **{"cache-ingress": "orders", "env": "prod"})]],
        NOTHING_GRANTED,
    )

    report = reconciler.run(dry_run=True)

    assert statuses(report) == [("orders-app", "orders", "drift")]
    assert report.drift_found == 1
    assert granter.granted == []


def test_the_summary_counts_every_status_and_caps_the_findings() -> None:
    report = Report(run_id="reconcile-x", dry_run=False)
    report.pairs = [
        PairResult(PairStatus.DENIED, Decision(f"sg-{i}", "orders", Outcome.DENIED, "no"))
        for i in range(5)
    ] + [
        PairResult(PairStatus.IN_SYNC, Decision("sg-9", "orders", Outcome.ALREADY_AUTHORIZED, "ok"))
    ]

    summary = report.summary(findings_limit=3)

    assert summary["counts"] == {
        "in-sync": 1,
        "repaired": 0,
        "drift": 0,
        "denied": 5,
        "needs-event": 0,
        "not-applicable": 0,
        "failed": 0,
    }
    assert (len(summary["findings"]), summary["findingsOmitted"]) == (3, 2)


def test_run_ids_are_unique_and_say_when() -> None:
    ids = {new_run_id() for _ in range(1000)}

    assert len(ids) == 1000
    assert all(re.fullmatch(r"reconcile-\d{8}T\d{6}Z-[0-9a-f]{12}", run_id) for run_id in ids)


def test_the_budget_keeps_the_reserve_and_the_slowest_step() -> None:
    assert Budget(None, 60_000).exhausted() is False
    assert Budget(FakeLambdaContext(remaining_millis=59_999), 60_000).exhausted() is True
    budget = Budget(FakeLambdaContext(remaining_millis=62_000), 60_000)
    assert budget.exhausted() is False


def test_the_budget_grows_by_the_slowest_step_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock: the step below takes 5 s, so 62 s left no longer covers 60 s + 5 s.
    clock = iter([100.0, 105.0])
    monkeypatch.setattr("cache_ingress.reconcile.sweep.time.monotonic", lambda: next(clock))
    budget = Budget(FakeLambdaContext(remaining_millis=62_000), 60_000)

    with budget.step():
        pass

    assert budget.exhausted() is True


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, ReconcileOptions(1000, 60_000, 21_600)),
        (
            {
                "RECONCILE_PAGE_SIZE": "5",
                "RECONCILE_TIME_RESERVE_SECONDS": "30",
                "RECONCILE_RESUME_MAX_AGE_SECONDS": "3600",
            },
            ReconcileOptions(5, 30_000, 3600),
        ),
    ],
)
def test_options_come_from_the_environment(
    environment: dict[str, str], expected: ReconcileOptions
) -> None:
    assert ReconcileOptions.from_environ(environment) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RECONCILE_PAGE_SIZE", "4"),
        ("RECONCILE_PAGE_SIZE", "1001"),
        ("RECONCILE_PAGE_SIZE", "many"),
        ("RECONCILE_TIME_RESERVE_SECONDS", "0"),
        ("RECONCILE_RESUME_MAX_AGE_SECONDS", "10"),
    ],
)
def test_a_bad_option_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        ReconcileOptions.from_environ({name: value})


@pytest.mark.parametrize(
    ("rule", "admits"),
    [
        (IngressRule("tcp", 6379, 6379, "sg-app"), True),
        (IngressRule("tcp", 6000, 7000, "sg-app"), True),
        (IngressRule("-1", None, None, "sg-app"), True),
        (IngressRule("tcp", 11211, 11211, "sg-app"), False),
        (IngressRule("udp", 6379, 6379, "sg-app"), False),
        (IngressRule("tcp", 6379, 6379, "sg-other"), False),
    ],
)
def test_an_ingress_rule_admits_the_group_on_the_port_or_not(
    rule: IngressRule, admits: bool
) -> None:
    assert rule.admits("sg-app", 6379) is admits


def _stubbed_elasticache() -> tuple[Any, Stubber]:
    client = boto3.client(
        "elasticache",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return client, Stubber(client)


STATUSES = (("a", "authorized"), ("b", "authorizing"), ("c", "revoking"))


def test_a_cache_security_group_is_read_by_name_with_only_granting_pairs() -> None:
    client, stubber = _stubbed_elasticache()
    stubber.add_response(
        "describe_cache_security_groups",
        {
            "CacheSecurityGroups": [
                {
                    "CacheSecurityGroupName": "payments-cache-sg",
                    "EC2SecurityGroups": [
                        {
                            "Status": status,
                            "EC2SecurityGroupName": name,
                            "EC2SecurityGroupOwnerId": ACCOUNT,
                        }
                        for name, status in (
                            ("a", "authorized"),
                            ("b", "authorizing"),
                            ("c", "revoking"),
                        )
                    ],
                }
            ]
        },
        {"CacheSecurityGroupName": "payments-cache-sg"},
    )

    with stubber:
        pairs = read_cache_security_group(client, "payments-cache-sg")

    assert pairs == {("a", ACCOUNT), ("b", ACCOUNT)}


def test_a_missing_cache_security_group_reads_as_none() -> None:
    client, stubber = _stubbed_elasticache()
    stubber.add_client_error(
        "describe_cache_security_groups",
        service_error_code="CacheSecurityGroupNotFound",
        service_message="CacheSecurityGroup inventory-cache-sg not found.",
        http_status_code=404,
    )

    with stubber:
        assert read_cache_security_group(client, "inventory-cache-sg") is None


def test_granted_state_on_an_account_without_classic_is_a_permanent_named_error() -> None:
    client, stubber = _stubbed_elasticache()
    stubber.add_client_error(
        "describe_cache_security_groups",
        service_error_code="InvalidParameterValue",
        service_message=(
            "Use of cache security groups is not permitted in this API version for your account."
        ),
        http_status_code=400,
    )

    with stubber, pytest.raises(AwsCallError) as raised:
        read_cache_security_group(client, "orders-cache-sg")

    assert (raised.value.code, raised.value.transient) == ("CacheSecurityGroupsUnavailable", False)
