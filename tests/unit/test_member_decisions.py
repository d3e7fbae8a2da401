"""The decision for member accounts' events, with plain data and no mocks: the event must be
the function's or a member's, every account it names and the account its group was read in
must agree, and a VPC group reaches a cache through its VPC or an active peering connection
only where the target allows peered VPCs (README, "Deny rules")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cache_ingress.decisions import decide, explain
from cache_ingress.models import (
    Grant,
    Outcome,
    SecurityGroupFacts,
    TagRequest,
    TargetKind,
    VpcCacheFacts,
    VpcDestination,
)
from cache_ingress.policy import parse_policy

pytestmark = pytest.mark.unit

CACHE = "123456789012"
MEMBER = "111122223333"
OTHER = "444455556666"
REGION = "us-east-1"
APP = "sg-0a0a0a0a0a0a0a0a0"
CACHE_GROUP = "sg-0c0c0c0c0c0c0c0c0"
CACHE_VPC = "vpc-cccccccc"
MEMBER_VPC = "vpc-aaaaaaaa"
PEERING = "pcx-0123456789abcdef0"
POLICY = parse_policy(
    f"""
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
    allow: {{owner_accounts: ["{MEMBER}", "{OTHER}"]}}
  sessions:
    replication_group: sessions-redis
    allow: {{owner_accounts: ["{MEMBER}"], peered_vpcs: true}}
  reports:
    replication_group: reports-redis
    allow: {{owner_accounts: ["{MEMBER}"]}}
""",
    source="test",
)
SESSIONS = VpcDestination(TargetKind.REPLICATION_GROUP, "sessions-redis")
REPORTS = VpcDestination(TargetKind.REPLICATION_GROUP, "reports-redis")
CACHE_FACTS = VpcCacheFacts(CACHE_GROUP, CACHE_VPC, CACHE, 6379)


def members(account: str) -> bool:
    return account in {MEMBER, OTHER}


def request(account: str = MEMBER, **change: object) -> TagRequest:
    base = TagRequest(
        event_id="e-1",
        source="aws.tag",
        detail_type="Tag Change on Resource",
        account=account,
        region=REGION,
        group_ids=(APP,),
    )
    return replace(base, **change)  # type: ignore[arg-type]


def group(
    tag: str = "orders", *, owner: str = MEMBER, read: str | None = MEMBER, **change: object
) -> SecurityGroupFacts:
    facts = SecurityGroupFacts(
        group_id=APP,
        group_name="checkout-app",
        owner_id=owner,
        vpc_id=MEMBER_VPC,
        region=REGION,
        tags={"cache-ingress": tag},
        read_account=read,
        destinations={SESSIONS: CACHE_FACTS, REPORTS: CACHE_FACTS},
    )
    return replace(facts, **change)  # type: ignore[arg-type]


def outcomes(
    req: TagRequest, facts: SecurityGroupFacts | None, **options: object
) -> list[tuple[object, ...]]:
    plan = decide(
        req,
        {APP: facts} if facts is not None else {},
        POLICY,
        account_id=CACHE,
        region=REGION,
        members=options.get("members", members),  # type: ignore[arg-type]
    )
    return [(g.target, "grant", g.account, g.owner_id) for g in plan.grants] + [
        (d.target, str(d.outcome), d.rule, d.account) for d in plan.decisions
    ]


def test_a_members_group_read_in_its_own_account_is_granted_with_its_account() -> None:
    assert outcomes(request(), group()) == [("orders", "grant", MEMBER, MEMBER)]


def test_without_members_another_accounts_event_is_denied_as_before() -> None:
    assert outcomes(request(), group(), members=None) == [(None, "denied", "event-account", MEMBER)]


def test_an_account_that_is_no_member_is_denied_event_account() -> None:
    assert outcomes(request("210987654321"), None) == [
        (None, "denied", "event-account", "210987654321")
    ]


@pytest.mark.parametrize(
    "where",
    ["the ARN of sg-0a0a0a0a0a0a0a0a0", "CloudTrail's recipientAccountId"],
)
def test_an_event_naming_another_account_is_denied_account_agreement(where: str) -> None:
    req = request(other_accounts=((where, OTHER),))

    [(target, outcome, rule, account)] = outcomes(req, group(owner=OTHER, read=OTHER))

    assert (target, outcome, rule, account) == (None, "denied", "account-agreement", MEMBER)


def test_a_group_read_with_another_accounts_credentials_is_denied() -> None:
    assert outcomes(request(), group(read=OTHER)) == [(None, "denied", "account-agreement", MEMBER)]


def test_a_group_read_with_the_functions_own_credentials_is_denied_for_a_member() -> None:
    assert outcomes(request(), group(read=None)) == [(None, "denied", "account-agreement", MEMBER)]


def test_a_group_owned_by_another_account_is_denied_for_a_members_event() -> None:
    # A member's event never decides another account's group, even one the member can read.
    assert outcomes(request(), group(owner=OTHER)) == [
        (None, "denied", "account-agreement", MEMBER)
    ]


def test_the_cache_accounts_own_event_is_decided_as_before() -> None:
    own = group(owner=CACHE, read=None)
    assert outcomes(request(CACHE), own) == [("orders", "denied", "owner-accounts", None)]


def test_owner_accounts_still_decides_who_is_admitted() -> None:
    # OTHER is a member (its events are decided) but sessions admits only MEMBER's groups.
    assert outcomes(request(OTHER), group("sessions", owner=OTHER, read=OTHER)) == [
        ("sessions", "denied", "owner-accounts", OTHER)
    ]


def test_a_peered_vpc_is_admitted_only_for_a_target_that_allows_it() -> None:
    peered = group("sessions", peerings={CACHE_VPC: PEERING})

    plan = decide(
        request(), {APP: peered}, POLICY, account_id=CACHE, region=REGION, members=members
    )

    [grant] = plan.grants
    assert isinstance(grant, Grant)
    assert (grant.peering, grant.cross_account, grant.account) == (PEERING, True, MEMBER)
    assert outcomes(request(), group("reports", peerings={CACHE_VPC: PEERING})) == [
        ("reports", "denied", "same-vpc", MEMBER)
    ]


def test_a_vpc_with_no_active_peering_is_denied_same_vpc_saying_so() -> None:
    plan = decide(
        request(),
        {APP: group("sessions")},
        POLICY,
        account_id=CACHE,
        region=REGION,
        members=members,
    )

    [decision] = plan.decisions
    assert (decision.outcome, decision.rule) == (Outcome.DENIED, "same-vpc")
    assert "no active peering connection" in decision.reason


def test_a_shared_vpc_needs_no_peering() -> None:
    shared = group("reports", vpc_id=CACHE_VPC)

    plan = decide(
        request(), {APP: shared}, POLICY, account_id=CACHE, region=REGION, members=members
    )

    [grant] = plan.grants
    assert (grant.peering, grant.cross_account) == (None, True)


def test_the_trace_of_a_members_grant_shows_the_accounts_agreeing() -> None:
    [trace] = explain(
        request(), {APP: group()}, POLICY, account_id=CACHE, region=REGION, members=members
    )

    rules = [check.rule for check in trace.checks]
    assert rules[:4] == ["event-account", "event-region", "account-agreement", "account-agreement"]
    assert isinstance(trace.result, Grant)
