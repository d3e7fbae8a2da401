"""The sweep and the grant ledger: repairs written as entries, holds honoured, the revocation
phase (report-only by default, revoking in enforce mode), and the VPC denials that now know
whether their rule exists (docs/reconcile.md, "Ownership and revocation").
"""

# The integration fixtures are imported by name, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cache_ingress.aws import Clients
from cache_ingress.ledger import Ledger
from cache_ingress.reconcile import ReconcileOptions, Reconciler
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.conftest import aws, clients, world  # noqa: F401 - fixtures
from tests.integration.test_vpc_emulation import (
    CACHE_GROUP,
    OTHER_VPC_APP,
    REDIS_PORT,
    SESSIONS_APP,
)
from tests.reconcile import ClockedContext, count_calls
from tests.reconcile import make_reconciler as wire_reconciler
from tests.support.events import ACCOUNT, ORDERS_GROUP, PAYMENTS_GROUP, tag_change
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

CONTEXT = FakeLambdaContext(remaining_millis=900_000)
ORDERS = "orders-cache-sg"
POLICY = """
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
    revoke: true
    allow: {required_tags: {env: prod}}
  payments:
    cache_security_group: payments-cache-sg
    allow:
      required_tags: {env: prod}
      principals: ["arn:aws:sts::123456789012:assumed-role/platform/*"]
  sessions:
    replication_group: sessions-redis
    revoke: true
    allow: {required_tags: {env: prod}}
"""
NOT_REVOKING = POLICY.replace("revoke: true", "revoke: false")


@pytest.fixture
def files(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str) -> str:
        path = tmp_path / f"policy-{abs(hash(text))}.yaml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def reconciler(
    world: SeededWorld, clients: dict[str, Any], files: Callable[[str], str]
) -> Callable[..., Reconciler]:
    def make(policy: str = POLICY, *, enforce: bool = False, **options: Any) -> Reconciler:
        return wire_reconciler(
            {**world.function_environment(), "POLICY_FILE": files(policy)},
            clients,
            options=ReconcileOptions(time_reserve_ms=1_000, enforce=enforce, **options),
        )

    return make


@pytest.fixture
def grant_by_event(
    world: SeededWorld, clients: dict[str, Any], files: Callable[[str], str]
) -> Callable[..., dict[str, Any]]:
    """The event path, on the same world and policy: a grant the function owns."""

    def handle(event: dict[str, Any], policy: str = POLICY) -> dict[str, Any]:
        settings = Settings.from_environ(
            {**world.function_environment(), "POLICY_FILE": files(policy)}
        )
        injected = Clients(settings.region)
        for name, client in clients.items():
            injected.inject(name, client)
        return build_authorizer(settings, injected).handle(event, FakeLambdaContext())

    return handle


@pytest.fixture
def ledger(clients: dict[str, Any], world: SeededWorld) -> Ledger:
    return Ledger(clients["dynamodb"], str(world.scenario.ledger_table))


def statuses(report: Any) -> dict[tuple[str, str | None], str]:
    return {(p.decision.group_id, p.decision.target): str(p.status) for p in report.pairs}


def granted(clients: dict[str, Any], name: str) -> set[str]:
    response = clients["elasticache"].describe_cache_security_groups(CacheSecurityGroupName=name)
    return {
        pair["EC2SecurityGroupName"]
        for pair in response["CacheSecurityGroups"][0]["EC2SecurityGroups"]
    }


def untag(clients: dict[str, Any], group_id: str) -> None:
    clients["ec2"].delete_tags(Resources=[group_id], Tags=[{"Key": "cache-ingress"}])


def sessions_rules(clients: dict[str, Any]) -> list[dict[str, Any]]:
    rules = clients["ec2"].describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [CACHE_GROUP]}]
    )["SecurityGroupRules"]
    return [r for r in rules if not r["IsEgress"]]


# --- repairs and holds ----------------------------------------------------------------------


def test_a_repair_is_written_into_the_ledger_with_the_run_that_made_it(
    reconciler: Callable[..., Reconciler], ledger: Ledger, clients: dict[str, Any]
) -> None:
    report = reconciler().run(CONTEXT)

    assert statuses(report)[(ORDERS_GROUP, "orders")] == "repaired"
    [entry] = list(ledger.entries(group_id=ORDERS_GROUP))
    assert (entry.status, entry.ownership, entry.path) == ("in-force", "made", "reconcile")
    assert entry.grant.event_id == report.run_id
    [vpc] = list(ledger.entries(group_id=SESSIONS_APP))
    [rule] = sessions_rules(clients)
    assert vpc.rule_id == rule["SecurityGroupRuleId"]


def test_the_sweep_grants_no_held_pair_and_reports_a_held_grant_beyond_policy(
    reconciler: Callable[..., Reconciler], ledger: Ledger, clients: dict[str, Any]
) -> None:
    ledger.hold(ORDERS_GROUP, "orders", reason="incident 7", by="oncall")
    clients["ec2"].create_tags(
        Resources=[SESSIONS_APP], Tags=[{"Key": "cache-ingress", "Value": "sessions"}]
    )
    reconciler(NOT_REVOKING).run(CONTEXT)  # sessions granted, orders held
    ledger.hold(SESSIONS_APP, "sessions", reason="incident 8", by="oncall")

    report = reconciler(NOT_REVOKING).run(CONTEXT)

    assert "orders-app" not in granted(clients, ORDERS)
    held = {p.decision.group_id: p for p in report.pairs if p.decision.rule == "hold"}
    assert set(held) == {ORDERS_GROUP, SESSIONS_APP}
    assert (str(held[ORDERS_GROUP].status), held[ORDERS_GROUP].granted) == ("denied", False)
    assert (str(held[SESSIONS_APP].status), held[SESSIONS_APP].granted) == ("denied", True)
    assert "incident 7" in held[ORDERS_GROUP].decision.reason
    # Without revoke the sweep only reports it: granted beyond what holds allow.
    assert report.summary()["grantedBeyondPolicy"] == 1
    assert len(sessions_rules(clients)) == 1


# --- the revocation phase -------------------------------------------------------------------


def test_report_only_says_what_it_would_revoke_and_changes_nothing(
    reconciler: Callable[..., Reconciler],
    grant_by_event: Callable[..., dict[str, Any]],
    ledger: Ledger,
    clients: dict[str, Any],
) -> None:
    grant_by_event(tag_change(event_id="tag-1"))
    untag(clients, ORDERS_GROUP)
    writes = count_calls(clients["dynamodb"], "UpdateItem")

    report = reconciler().run(CONTEXT)

    assert statuses(report)[(ORDERS_GROUP, "orders")] == "would-revoke"
    assert "orders-app" in granted(clients, ORDERS)
    assert [e.status for e in ledger.entries(group_id=ORDERS_GROUP)] == ["in-force"]
    assert [w for w in writes if "orders-app" in str(w["Key"])] == []
    summary = report.summary()
    assert (summary["revocation"], summary["counts"]["would-revoke"]) == ("report-only", 1)


def test_enforce_revokes_what_an_untag_event_never_said(
    reconciler: Callable[..., Reconciler],
    grant_by_event: Callable[..., dict[str, Any]],
    ledger: Ledger,
    clients: dict[str, Any],
) -> None:
    # The untag's event was lost: only the ledger knows the grant is the function's.
    grant_by_event(tag_change(event_id="tag-1"))
    untag(clients, ORDERS_GROUP)

    report = reconciler(enforce=True).run(CONTEXT)

    assert statuses(report)[(ORDERS_GROUP, "orders")] == "revoked"
    assert "orders-app" not in granted(clients, ORDERS)
    [entry] = list(ledger.entries(group_id=ORDERS_GROUP))
    assert (entry.status, entry.closed_by) == ("revoked", report.run_id)
    assert report.summary()["revocation"] == "enforce"


def test_enforce_revokes_a_deleted_groups_grant(
    reconciler: Callable[..., Reconciler],
    grant_by_event: Callable[..., dict[str, Any]],
    clients: dict[str, Any],
) -> None:
    grant_by_event(tag_change(event_id="tag-1"))
    clients["ec2"].delete_security_group(GroupId=ORDERS_GROUP)

    report = reconciler(enforce=True).run(CONTEXT)

    [result] = [p for p in report.pairs if p.decision.group_id == ORDERS_GROUP]
    assert str(result.status) == "revoked"
    assert "no longer exists" in result.decision.reason
    assert "orders-app" not in granted(clients, ORDERS)


def test_a_tightened_policy_is_enforced_on_the_next_sweep(
    reconciler: Callable[..., Reconciler],
    grant_by_event: Callable[..., dict[str, Any]],
    clients: dict[str, Any],
) -> None:
    grant_by_event(tag_change(event_id="tag-1"))
    tightened = POLICY.replace(
        "allow: {required_tags: {env: prod}}\n  payments",
        "allow: {required_tags: {env: prod, tier: web}}\n  payments",
    )

    report = reconciler(tightened, enforce=True).run(CONTEXT)

    [result] = [
        p
        for p in report.pairs
        if p.decision.group_id == ORDERS_GROUP and str(p.status) == "revoked"
    ]
    assert result.decision.rule == "required-tags"
    # The listing, after the revocation, finds the pair denied and no longer granted.
    [listed] = [
        p
        for p in report.pairs
        if p.decision.group_id == ORDERS_GROUP and str(p.status) != "revoked"
    ]
    assert (str(listed.status), listed.granted) == ("denied", False)
    assert "orders-app" not in granted(clients, ORDERS)


def test_a_hand_made_grant_beyond_policy_is_reported_and_never_touched(
    reconciler: Callable[..., Reconciler], clients: dict[str, Any]
) -> None:
    clients["elasticache"].authorize_cache_security_group_ingress(
        CacheSecurityGroupName=ORDERS,
        EC2SecurityGroupName="orders-staging-app",
        EC2SecurityGroupOwnerId=ACCOUNT,
    )

    report = reconciler(enforce=True).run(CONTEXT)

    assert report.summary()["grantedBeyondPolicy"] == 1
    assert "orders-staging-app" in granted(clients, ORDERS)
    assert report.counts()["revoked"] == 0


def test_a_retagged_group_keeps_its_grant(
    reconciler: Callable[..., Reconciler],
    grant_by_event: Callable[..., dict[str, Any]],
    clients: dict[str, Any],
) -> None:
    grant_by_event(tag_change(event_id="tag-1"))
    untag(clients, ORDERS_GROUP)
    clients["ec2"].create_tags(
        Resources=[ORDERS_GROUP], Tags=[{"Key": "cache-ingress", "Value": "orders"}]
    )

    report = reconciler(enforce=True).run(CONTEXT)

    assert statuses(report)[(ORDERS_GROUP, "orders")] == "in-sync"
    assert "orders-app" in granted(clients, ORDERS)


def test_without_a_revoking_target_the_sweep_never_reads_the_ledgers_entries(
    reconciler: Callable[..., Reconciler],
    grant_by_event: Callable[..., dict[str, Any]],
    clients: dict[str, Any],
) -> None:
    grant_by_event(tag_change(event_id="tag-1"), NOT_REVOKING)
    untag(clients, ORDERS_GROUP)
    scans = count_calls(clients["dynamodb"], "Scan")

    report = reconciler(NOT_REVOKING, enforce=True).run(CONTEXT)

    assert scans == []
    assert set(report.counts()) == {
        "in-sync",
        "repaired",
        "drift",
        "denied",
        "needs-event",
        "not-applicable",
        "failed",
    }
    assert "revocation" not in report.summary()
    assert "orders-app" in granted(clients, ORDERS)


def test_a_revocation_phase_out_of_time_resumes_where_it_stopped(
    reconciler: Callable[..., Reconciler],
    grant_by_event: Callable[..., dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    # Seven owned grants of untagged groups: two pages of the ledger at five a page.
    ec2 = clients["ec2"]
    group_ids = []
    for number in range(7):
        group_ids.append(
            ec2.create_security_group(
                GroupName=f"paged-{number}",
                Description="paged",
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
        )
        grant_by_event(tag_change(group_ids[-1], event_id=f"tag-{number}", tags={}))
    for group_id in group_ids:
        untag(clients, group_id)
    # Time for the first page of the ledger only.
    plenty, none = 900_000, 0
    stopped = reconciler(enforce=True, page_size=5).run(
        ClockedContext(lambda asked: plenty if asked < 1 else none)
    )
    assert stopped.status == "stopped"
    assert stopped.entries_judged == 5
    assert stopped.pages == 0  # the listing waits for the revocation phase

    finished = reconciler(enforce=True, page_size=5).run(CONTEXT)

    assert finished.status == "completed"
    assert finished.entries_judged == 2
    assert {f"paged-{n}" for n in range(7)} & granted(clients, ORDERS) == set()
    revoked = [p for r in (stopped, finished) for p in r.pairs if str(p.status) == "revoked"]
    assert sorted(p.decision.group_id for p in revoked) == sorted(group_ids)


# --- VPC denials know whether their rule exists ---------------------------------------------


def test_a_denied_vpc_cache_pair_whose_rule_exists_counts_as_granted_beyond_policy(
    reconciler: Callable[..., Reconciler], clients: dict[str, Any]
) -> None:
    clients["ec2"].create_tags(Resources=[SESSIONS_APP], Tags=[{"Key": "env", "Value": "staging"}])
    clients["ec2"].create_tags(
        Resources=[SESSIONS_APP], Tags=[{"Key": "cache-ingress", "Value": "sessions"}]
    )
    clients["ec2"].authorize_security_group_ingress(
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

    report = reconciler(NOT_REVOKING).run(CONTEXT)

    [pair] = [p for p in report.pairs if p.decision.group_id == SESSIONS_APP]
    assert (str(pair.status), pair.decision.rule, pair.granted) == ("denied", "required-tags", True)
    assert (pair.decision.vpc_security_group, pair.decision.port) == (CACHE_GROUP, REDIS_PORT)
    assert report.summary()["grantedBeyondPolicy"] == 1


GATED_VPC = """
version: 1
targets:
  sessions:
    replication_group: sessions-redis
    allow:
      required_tags: {env: prod}
      principals: ["arn:aws:sts::123456789012:assumed-role/platform/*"]
"""


def test_a_gated_vpc_cache_pair_is_in_sync_when_its_rule_exists_and_not_needs_event_elsewhere(
    reconciler: Callable[..., Reconciler], clients: dict[str, Any]
) -> None:
    clients["ec2"].create_tags(
        Resources=[SESSIONS_APP], Tags=[{"Key": "cache-ingress", "Value": "sessions"}]
    )
    clients["ec2"].authorize_security_group_ingress(
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

    report = reconciler(GATED_VPC).run(CONTEXT)

    found = statuses(report)
    assert found[(SESSIONS_APP, "sessions")] == "in-sync"
    # Another VPC's group: no event could grant it, so it is denied, not needs-event.
    assert found[(OTHER_VPC_APP, "sessions")] == "denied"
    [other] = [p for p in report.pairs if p.decision.group_id == OTHER_VPC_APP]
    assert other.decision.rule == "same-vpc"
    assert report.counts()["needs-event"] == 0


def test_a_gated_pair_on_a_cache_that_cannot_be_looked_up_fails_and_is_not_needs_event(
    reconciler: Callable[..., Reconciler], clients: dict[str, Any]
) -> None:
    # The sweep names no principal, so `principals` denies every gated pair first; rules the
    # function checks after it still apply (docs/reconcile.md): an event could not grant a
    # pair on a cache that does not exist either, so it fails as an ungated pair would.
    clients["ec2"].create_tags(
        Resources=[SESSIONS_APP], Tags=[{"Key": "cache-ingress", "Value": "sessions"}]
    )

    report = reconciler(GATED_VPC.replace("sessions-redis", "no-such-redis")).run(CONTEXT)

    [pair] = [p for p in report.pairs if p.decision.group_id == SESSIONS_APP]
    assert str(pair.status) == "failed", pair
    assert pair.decision.error_code == "ReplicationGroupNotFoundFault"
    assert "no-such-redis" in pair.decision.reason
    assert report.counts()["needs-event"] == 0


def test_a_principal_gated_classic_pair_granted_by_its_event_stays_in_sync(
    reconciler: Callable[..., Reconciler],
    grant_by_event: Callable[..., dict[str, Any]],
    clients: dict[str, Any],
) -> None:
    from tests.support.events import create_tags

    grant_by_event(create_tags([PAYMENTS_GROUP], event_id="platform-1"))

    report = reconciler(enforce=True).run(CONTEXT)

    assert statuses(report)[(PAYMENTS_GROUP, "payments")] == "in-sync"
    assert granted(clients, "payments-cache-sg") == {"payments-app"}
