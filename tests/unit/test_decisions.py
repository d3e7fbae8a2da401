"""The decision, with plain data and no mocks: every rule, allowed and denied."""

from __future__ import annotations

import pytest

from cache_ingress.decisions import decide, target_names
from cache_ingress.models import Grant, Outcome, SecurityGroupFacts, TagRequest, TrailCall
from cache_ingress.policy import parse_policy

pytestmark = pytest.mark.unit

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
REGION = "us-east-1"
POLICY = parse_policy(
    """
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
    allow:
      required_tags: {env: [prod, staging]}
  shared:
    cache_security_group: shared-cache-sg
    allow:
      owner_accounts: ["111122223333", "444455556666"]
  payments:
    cache_security_group: payments-cache-sg
    allow:
      principals: ["arn:aws:sts::111122223333:assumed-role/platform/*"]
  europe:
    cache_security_group: europe-cache-sg
    region: eu-west-1
""",
    source="test",
)


def group(
    tag: str | None = "orders",
    *,
    owner: str = ACCOUNT,
    region: str = REGION,
    group_id: str = "sg-0123456789abcdef0",
    **tags: str,
) -> SecurityGroupFacts:
    all_tags = {"env": "prod", **tags}
    if tag is not None:
        all_tags["cache-ingress"] = tag
    return SecurityGroupFacts(group_id, "app", owner, "vpc-1", region, all_tags)


def request(
    *group_ids: str,
    principal: str | None = None,
    sets: str | None = None,
    call: str = "CreateTags",
    account: str = ACCOUNT,
    region: str = REGION,
    replayed: bool = False,
) -> TagRequest:
    """A Tag Change request; with `principal` (or `sets`), the CloudTrail `call` by that
    principal, which set the tag to `sets` (default: "payments")."""
    group_ids = group_ids or ("sg-0123456789abcdef0",)
    if principal is None and sets is None:
        return TagRequest("evt-1", "aws.tag", "Tag Change on Resource", account, region, group_ids)
    tags = (
        () if call == "DeleteTags" else (("cache-ingress", "payments" if sets is None else sets),)
    )
    trail = TrailCall("trail-1", call, principal, group_ids, tags)
    return TagRequest(
        "evt-1",
        "aws.ec2",
        "AWS API Call via CloudTrail",
        account,
        region,
        group_ids,
        principal,
        event_name=call,
        trail=trail,
        replayed=replayed,
    )


def run(facts: SecurityGroupFacts | None, req: TagRequest | None = None):  # type: ignore[no-untyped-def]
    req = req or request()
    groups = {facts.group_id: facts} if facts else {}
    return decide(req, groups, POLICY, account_id=ACCOUNT, region=REGION)


def only_denial(facts: SecurityGroupFacts, req: TagRequest | None = None) -> tuple[str | None, str]:
    plan = run(facts, req)
    assert plan.grants == []
    [decision] = plan.decisions
    assert decision.outcome is Outcome.DENIED
    return decision.rule, decision.reason


def test_an_allowed_pair_becomes_one_grant_keyed_by_the_event() -> None:
    plan = run(group())
    assert plan.decisions == []
    assert plan.grants == [
        Grant("evt-1", "orders", "orders-cache-sg", "sg-0123456789abcdef0", "app", ACCOUNT)
    ]


def test_each_named_target_is_decided_once() -> None:
    plan = run(group(" orders , ,shared,orders,"))
    assert [g.target for g in plan.grants] == ["orders", "shared"]


def test_unknown_target_is_denied_and_others_still_decided() -> None:
    plan = run(group("orders,analytics"))
    assert [g.target for g in plan.grants] == ["orders"]
    [denied] = plan.decisions
    assert (denied.target, denied.outcome, denied.rule) == (
        "analytics",
        Outcome.DENIED,
        "unknown-target",
    )


def test_a_group_without_the_tag_now_is_not_applicable() -> None:
    plan = run(group(None))
    [decision] = plan.decisions
    assert decision.outcome is Outcome.NOT_APPLICABLE
    assert "no cache-ingress tag now" in decision.reason
    assert plan.grants == []


def test_a_tag_naming_nothing_is_not_applicable() -> None:
    [decision] = run(group(" , ")).decisions
    assert decision.outcome is Outcome.NOT_APPLICABLE
    assert "names no target" in decision.reason


def test_a_group_that_no_longer_exists_is_not_applicable() -> None:
    [decision] = run(None).decisions
    assert (decision.outcome, decision.reason) == (
        Outcome.NOT_APPLICABLE,
        "the group no longer exists",
    )


def test_owner_outside_the_default_allow_list_is_denied() -> None:
    assert only_denial(group(owner=OTHER_ACCOUNT))[0] == "owner-accounts"


def test_owner_in_an_explicit_allow_list_is_granted() -> None:
    assert [g.owner_id for g in run(group("shared", owner=OTHER_ACCOUNT)).grants] == [OTHER_ACCOUNT]


@pytest.mark.parametrize("owner", ["", "12345", "1111222233334", "11112222333x"])
def test_owner_ids_that_are_not_12_digits_are_denied(owner: str) -> None:
    assert only_denial(group("shared", owner=owner))[0] == "owner-id"


def test_missing_required_tag_is_denied_by_key() -> None:
    facts = SecurityGroupFacts(
        "sg-0123456789abcdef0", "app", ACCOUNT, None, REGION, {"cache-ingress": "orders"}
    )
    rule, reason = only_denial(facts)
    assert (rule, reason) == ("required-tags", "required tag 'env' is missing")


def test_required_tag_with_another_value_is_denied() -> None:
    rule, reason = only_denial(group(env="dev"))
    assert (rule, reason) == ("required-tags", "required tag 'env' has a value not accepted")


def test_any_listed_required_value_is_accepted() -> None:
    assert len(run(group(env="staging")).grants) == 1


def test_principal_targets_deny_events_without_a_principal() -> None:
    rule, reason = only_denial(group("payments"))
    assert rule == "principals"
    assert "names none" in reason


def test_principal_matching_the_pattern_is_granted() -> None:
    req = request(principal="arn:aws:sts::111122223333:assumed-role/platform/alice")
    assert len(run(group("payments"), req).grants) == 1


@pytest.mark.parametrize(
    "principal",
    [
        "arn:aws:sts::111122223333:assumed-role/platformX/alice",
        "arn:aws:sts::999999999999:assumed-role/platform/alice",
        "arn:aws:iam::111122223333:user/platform",
        "xarn:aws:sts::111122223333:assumed-role/platform/alice",
    ],
)
def test_principal_not_matching_is_denied(principal: str) -> None:
    assert only_denial(group("payments"), request(principal=principal))[0] == "principals"


def test_regex_characters_in_patterns_are_literal() -> None:
    policy = parse_policy(
        "version: 1\ntargets: {a: {cache_security_group: x, allow: "
        "{principals: ['arn:aws:iam::111122223333:user/a.b']}}}",
        source="t",
    )
    plan = decide(
        request(principal="arn:aws:iam::111122223333:user/aXb", sets="a"),
        {"sg-0123456789abcdef0": group("a")},
        policy,
        account_id=ACCOUNT,
        region=REGION,
    )
    assert plan.grants == []


def test_target_in_another_region_is_denied() -> None:
    assert only_denial(group("europe"))[0] == "same-region"


def test_events_from_another_region_or_account_are_denied_per_group() -> None:
    for req, rule in [
        (request("sg-1", "sg-2", region="eu-west-1"), "event-region"),
        (request("sg-1", account=OTHER_ACCOUNT), "event-account"),
    ]:
        plan = decide(req, {}, POLICY, account_id=ACCOUNT, region=REGION)
        assert plan.grants == []
        assert {(d.group_id, d.rule) for d in plan.decisions} == {(g, rule) for g in req.group_ids}


def test_every_named_group_gets_a_decision_or_grant() -> None:
    req = request("sg-00000000000000001", "sg-00000000000000002", "sg-00000000000000003")
    groups = {
        "sg-00000000000000001": group(group_id="sg-00000000000000001"),
        "sg-00000000000000002": group(None, group_id="sg-00000000000000002"),
    }
    plan = decide(req, groups, POLICY, account_id=ACCOUNT, region=REGION)
    seen = [d.group_id for d in plan.decisions] + [g.group_id for g in plan.grants]
    assert sorted(seen) == sorted(req.group_ids)


@pytest.mark.parametrize(
    ("value", "names"),
    [("a", ("a",)), ("a,b", ("a", "b")), (" a , b ,", ("a", "b")), ("", ()), ("b,a,b", ("b", "a"))],
)
def test_target_names(value: str, names: tuple[str, ...]) -> None:
    assert target_names(value) == names
