"""The decision for VPC targets, with plain data and no mocks: the cache's facts arrive on
the group, and nothing grants unless they are known and in the group's VPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache_ingress.decisions import decide, named_vpc_destinations
from cache_ingress.models import (
    DestinationFacts,
    FailureKind,
    Grant,
    Outcome,
    SecurityGroupFacts,
    TagRequest,
    TargetKind,
    UnresolvedDestination,
    VpcCacheFacts,
    VpcDestination,
)
from cache_ingress.policy import parse_policy

pytestmark = pytest.mark.unit

ACCOUNT = "111122223333"
PEER_ACCOUNT = "444455556666"
REGION = "us-east-1"
APP = "sg-0a0a0a0a0a0a0a0a0"
CACHE_GROUP = "sg-0c0c0c0c0c0c0c0c0"
VPC = "vpc-11111111"
OTHER_VPC = "vpc-22222222"
POLICY = parse_policy(
    """
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
  sessions:
    replication_group: sessions-redis
    allow:
      required_tags: {env: prod}
  legacy:
    cache_cluster: legacy-memcached
  reports:
    vpc_security_group: {group_id: sg-0d0d0d0d0d0d0d0d0, port: 6380}
  shared:
    replication_group: shared-redis
    allow:
      owner_accounts: ["111122223333", "444455556666"]
  europe:
    replication_group: europe-redis
    region: eu-west-1
""",
    source="test",
)
SESSIONS = VpcDestination(TargetKind.REPLICATION_GROUP, "sessions-redis")
LEGACY = VpcDestination(TargetKind.CACHE_CLUSTER, "legacy-memcached")
REPORTS = VpcDestination(TargetKind.VPC_SECURITY_GROUP, "sg-0d0d0d0d0d0d0d0d0", 6380)
SHARED = VpcDestination(TargetKind.REPLICATION_GROUP, "shared-redis")
FACTS = VpcCacheFacts(CACHE_GROUP, VPC, ACCOUNT, 6379)


def group(
    tag: str | None = "sessions",
    *,
    vpc_id: str | None = VPC,
    owner: str = ACCOUNT,
    destinations: Mapping[VpcDestination, DestinationFacts] | None = None,
    **tags: str,
) -> SecurityGroupFacts:
    all_tags = {"env": "prod", **tags}
    if tag is not None:
        all_tags["cache-ingress"] = tag
    return SecurityGroupFacts(
        APP,
        "app",
        owner,
        vpc_id,
        REGION,
        all_tags,
        {SESSIONS: FACTS} if destinations is None else destinations,
    )


def run(facts: SecurityGroupFacts, principal: str | None = None):  # type: ignore[no-untyped-def]
    request = TagRequest(
        "evt-1", "aws.tag", "Tag Change on Resource", ACCOUNT, REGION, (APP,), principal
    )
    return decide(request, {APP: facts}, POLICY, account_id=ACCOUNT, region=REGION)


def only_decision(facts: SecurityGroupFacts):  # type: ignore[no-untyped-def]
    plan = run(facts)
    assert plan.grants == []
    [decision] = plan.decisions
    return decision


def test_an_allowed_pair_in_one_vpc_grants_on_the_caches_group_and_port() -> None:
    plan = run(group())
    assert plan.decisions == []
    assert plan.grants == [
        Grant(
            "evt-1",
            "sessions",
            None,
            APP,
            "app",
            ACCOUNT,
            vpc_security_group=CACHE_GROUP,
            port=6379,
            cache="replication-group:sessions-redis",
            cross_account=False,
        )
    ]


def test_the_policy_rules_come_before_the_cache_facts() -> None:
    # Not allowed by the policy: denied, whatever the cache looks like (even unknown).
    unknown = UnresolvedDestination("gone", "ReplicationGroupNotFoundFault", FailureKind.PERMANENT)
    decision = only_decision(group(env="dev", destinations={SESSIONS: unknown}))
    assert (decision.outcome, decision.rule) == (Outcome.DENIED, "required-tags")
    assert decision.cache == "replication-group:sessions-redis"
    assert decision.cache_security_group is None


def test_a_group_in_another_vpc_is_denied_same_vpc_naming_both() -> None:
    decision = only_decision(group(vpc_id=OTHER_VPC))
    assert (decision.outcome, decision.rule) == (Outcome.DENIED, "same-vpc")
    assert OTHER_VPC in decision.reason
    assert VPC in decision.reason
    assert "peering" in decision.reason
    assert (decision.vpc_security_group, decision.port) == (CACHE_GROUP, 6379)


def test_a_group_outside_any_vpc_is_denied_same_vpc() -> None:
    decision = only_decision(group(vpc_id=None))
    assert (decision.outcome, decision.rule) == (Outcome.DENIED, "same-vpc")
    assert "not in a VPC" in decision.reason


def test_a_cache_group_outside_any_vpc_is_denied_same_vpc() -> None:
    facts = {SESSIONS: replace(FACTS, vpc_id=None)}
    decision = only_decision(group(destinations=facts))
    assert (decision.outcome, decision.rule) == (Outcome.DENIED, "same-vpc")


@pytest.mark.parametrize("failure", [FailureKind.PERMANENT, FailureKind.TRANSIENT])
def test_a_cache_that_could_not_be_looked_up_fails_with_the_lookups_reason(
    failure: FailureKind,
) -> None:
    unresolved = UnresolvedDestination(
        "replication group sessions-redis does not exist in us-east-1",
        "ReplicationGroupNotFoundFault",
        failure,
    )
    decision = only_decision(group(destinations={SESSIONS: unresolved}))
    assert decision.outcome is Outcome.FAILED
    assert decision.failure is failure
    assert decision.error_code == "ReplicationGroupNotFoundFault"
    assert decision.reason == unresolved.reason
    assert decision.rule is None


def test_a_cache_missing_from_the_facts_fails_for_a_retry_and_never_grants() -> None:
    decision = only_decision(group(destinations={LEGACY: FACTS}))
    assert decision.outcome is Outcome.FAILED
    assert decision.failure is FailureKind.TRANSIENT
    assert decision.error_code == "DestinationNotLookedUp"
    assert "replication group sessions-redis" in decision.reason


def test_an_explicit_group_grants_on_the_policys_port_and_names_no_cache() -> None:
    facts = VpcCacheFacts(REPORTS.identifier, VPC, ACCOUNT, 6380)
    [grant] = run(group("reports", destinations={REPORTS: facts})).grants
    assert (grant.vpc_security_group, grant.port, grant.cache) == (REPORTS.identifier, 6380, None)


def test_an_explicit_groups_denial_names_the_group_and_port_from_the_policy() -> None:
    decision = only_decision(group("reports", owner=PEER_ACCOUNT, destinations={}))
    assert (decision.rule, decision.vpc_security_group, decision.port) == (
        "owner-accounts",
        REPORTS.identifier,
        6380,
    )


def test_an_allowed_group_of_another_account_in_a_shared_vpc_is_granted_naming_its_owner() -> None:
    facts = {SHARED: FACTS}
    [grant] = run(group("shared", owner=PEER_ACCOUNT, destinations=facts)).grants
    assert grant.cross_account
    assert grant.owner_id == PEER_ACCOUNT


def test_a_vpc_target_in_another_region_is_denied_without_facts() -> None:
    decision = only_decision(group("europe", destinations={}))
    assert (decision.outcome, decision.rule) == (Outcome.DENIED, "same-region")


def test_classic_and_vpc_targets_are_decided_side_by_side() -> None:
    plan = run(group("orders,sessions"))
    assert [(g.target, g.cache_security_group, g.vpc_security_group) for g in plan.grants] == [
        ("orders", "orders-cache-sg", None),
        ("sessions", None, CACHE_GROUP),
    ]


def test_named_vpc_destinations_are_what_the_tag_names_in_this_region_once() -> None:
    facts = group("orders, sessions, legacy, nope, europe, sessions, reports")
    assert named_vpc_destinations(facts, POLICY, REGION) == (SESSIONS, LEGACY, REPORTS)
    assert named_vpc_destinations(group(None), POLICY, REGION) == ()
    assert named_vpc_destinations(group("orders"), POLICY, REGION) == ()


def test_a_classic_grants_idempotency_key_is_the_six_fields_it_always_was() -> None:
    grant = Grant("evt-1", "orders", "orders-cache-sg", APP, "app", ACCOUNT)
    assert grant.idempotency_data() == {
        "event_id": "evt-1",
        "target": "orders",
        "cache_security_group": "orders-cache-sg",
        "group_id": APP,
        "group_name": "app",
        "owner_id": ACCOUNT,
    }


def test_vpc_grants_to_different_destinations_have_different_keys() -> None:
    [grant] = run(group()).grants
    keys = {
        str(sorted(g.idempotency_data().items()))
        for g in [
            grant,
            replace(grant, vpc_security_group="sg-0e0e0e0e0e0e0e0e0"),
            replace(grant, port=6380),
            replace(grant, cache="cache-cluster:other"),
            replace(grant, cross_account=True),
        ]
    }
    assert len(keys) == 5
    assert grant.idempotency_data()["vpc_security_group"] == CACHE_GROUP


vpcs = st.sampled_from([VPC, OTHER_VPC, None])
resolutions = st.one_of(
    st.builds(
        VpcCacheFacts,
        st.just(CACHE_GROUP),
        vpcs,
        st.sampled_from([ACCOUNT, PEER_ACCOUNT]),
        st.integers(1, 65535),
    ),
    st.builds(
        UnresolvedDestination,
        st.just("unreadable"),
        st.sampled_from(["Throttling", "CacheClusterNotFound"]),
        st.sampled_from(list(FailureKind)),
    ),
)


@pytest.mark.property
@given(
    tag=st.sampled_from(["sessions", "legacy", "shared", "sessions,legacy,shared"]),
    vpc_id=vpcs,
    owner=st.sampled_from([ACCOUNT, PEER_ACCOUNT]),
    env=st.sampled_from(["prod", "dev"]),
    facts=st.dictionaries(st.sampled_from([SESSIONS, LEGACY, SHARED]), resolutions),
)
def test_no_vpc_grant_without_known_facts_in_the_groups_own_vpc(
    tag: str,
    vpc_id: str | None,
    owner: str,
    env: str,
    facts: dict[VpcDestination, DestinationFacts],
) -> None:
    tagged = group(tag, vpc_id=vpc_id, owner=owner, env=env, destinations=facts)
    plan = run(tagged)
    for grant in plan.grants:
        target = POLICY.targets[grant.target]
        assert target.vpc is not None
        known = facts[target.vpc]
        assert isinstance(known, VpcCacheFacts)
        assert vpc_id is not None
        assert known.vpc_id == vpc_id
        assert (grant.vpc_security_group, grant.port) == (known.group_id, known.port)
        assert owner in (target.allow.owner_accounts or (ACCOUNT,))
        assert grant.cross_account == (owner != known.owner_id)
    assert len(plan.grants) + len(plan.decisions) == len(tag.split(","))
