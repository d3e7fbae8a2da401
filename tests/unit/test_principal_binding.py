"""A principal vouches only for what its own call set, and a replayed event's principal only
counts once CloudTrail confirms it. Plain data, no mocks: the rules of README "Deny rules".
"""

from __future__ import annotations

import pytest

from cache_ingress.decisions import decide, target_names
from cache_ingress.models import (
    FailureKind,
    Provenance,
    ProvenanceStatus,
    SecurityGroupFacts,
    TagRequest,
    TrailCall,
)
from cache_ingress.policy import parse_policy

pytestmark = pytest.mark.unit

ACCOUNT = "111122223333"
REGION = "us-east-1"
GROUP = "sg-0123456789abcdef0"
ALICE = "arn:aws:sts::111122223333:assumed-role/platform/alice"
MALLORY = "arn:aws:sts::111122223333:assumed-role/developer/mallory"
POLICY = parse_policy(
    """
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
  payments:
    cache_security_group: payments-cache-sg
    allow:
      principals: ["arn:aws:sts::111122223333:assumed-role/platform/*"]
""",
    source="test",
)


def group(tag: str) -> SecurityGroupFacts:
    return SecurityGroupFacts(GROUP, "app", ACCOUNT, "vpc-1", REGION, {"cache-ingress": tag})


def call(
    name: str = "CreateTags",
    *,
    principal: str | None = ALICE,
    tags: tuple[tuple[str, str], ...] = (("cache-ingress", "payments"),),
    replayed: bool = False,
) -> TagRequest:
    trail = TrailCall("trail-1", name, principal, (GROUP,), tags)
    return TagRequest(
        "evt-1",
        "aws.ec2",
        "AWS API Call via CloudTrail",
        ACCOUNT,
        REGION,
        (GROUP,),
        principal,
        event_name=name,
        trail=trail,
        replayed=replayed,
    )


def outcomes(request: TagRequest, tag: str, provenance: Provenance | None = None):  # type: ignore[no-untyped-def]
    plan = decide(
        request, {GROUP: group(tag)}, POLICY, account_id=ACCOUNT, region=REGION,
        provenance=provenance,
    )  # fmt: skip
    found = {g.target: ("granted", None) for g in plan.grants}
    found |= {d.target: (str(d.outcome), d.rule) for d in plan.decisions}
    found |= {g.target: ("unverified", None) for g in plan.unverified}
    return found, plan


def test_the_call_that_set_the_value_by_an_allowed_principal_grants() -> None:
    found, _ = outcomes(call(), "payments")
    assert found == {"payments": ("granted", None)}


def test_a_value_set_by_someone_else_is_not_granted_by_a_later_allowed_call() -> None:
    # The platform role tagged "orders"; the group now says "orders,payments" because a
    # developer re-tagged it before the event was processed.
    request = call(tags=(("cache-ingress", "orders"),))
    found, plan = outcomes(request, "orders,payments")
    assert found == {"orders": ("granted", None), "payments": ("denied", "principal-binding")}
    [denial] = plan.decisions
    assert "set cache-ingress to 'orders', which does not name payments" in denial.reason


def test_delete_tags_never_grants_a_gated_target() -> None:
    # A DeleteTags of a value the group does not even carry deletes nothing, and no errorCode.
    request = call("DeleteTags", tags=(("cache-ingress", "legacy"),))
    found, plan = outcomes(request, "orders,payments")
    assert found == {"orders": ("granted", None), "payments": ("denied", "principal-binding")}
    assert "DeleteTags event never grants" in plan.decisions[0].reason


def test_a_call_that_did_not_set_the_tag_key_grants_no_gated_target() -> None:
    request = call(tags=(("env", "prod"),))
    found, plan = outcomes(request, "payments")
    assert found == {"payments": ("denied", "principal-binding")}
    assert "did not set the cache-ingress tag" in plan.decisions[0].reason


def test_a_call_that_set_the_key_twice_binds_nothing() -> None:
    request = call(tags=(("cache-ingress", "payments"), ("cache-ingress", "orders")))
    assert outcomes(request, "payments")[0] == {"payments": ("denied", "principal-binding")}


def test_create_security_group_binds_the_tags_it_created_the_group_with() -> None:
    request = call("CreateSecurityGroup", tags=(("cache-ingress", " payments , orders"),))
    found, _ = outcomes(request, "orders,payments")
    assert found == {"orders": ("granted", None), "payments": ("granted", None)}


def test_the_current_tag_must_still_name_the_target() -> None:
    found, _ = outcomes(call(), "orders")
    assert found == {"orders": ("granted", None)}


def test_a_principal_outside_the_patterns_is_denied_before_binding() -> None:
    found, _ = outcomes(call(principal=MALLORY), "payments")
    assert found == {"payments": ("denied", "principals")}


def test_a_tag_change_event_names_no_principal() -> None:
    request = TagRequest("evt-1", "aws.tag", "Tag Change on Resource", ACCOUNT, REGION, (GROUP,))
    found, _ = outcomes(request, "payments")
    assert found == {"payments": ("denied", "principals")}


@pytest.mark.parametrize(
    ("pattern", "principal", "matches"),
    [
        ("arn:aws:sts::1:assumed-role/platform/*", "arn:aws:sts::1:assumed-role/platform/a", True),
        (
            "arn:aws:sts::1:assumed-role/platform/*",
            "arn:aws:sts::1:assumed-role/platform/a/b",
            False,
        ),
        (
            "arn:aws:sts::1:assumed-role/platform/a*",
            "arn:aws:sts::1:assumed-role/platform/a/b",
            False,
        ),
        ("arn:aws:sts::1:assumed-role/platform", "arn:aws:sts::1:assumed-role/platform/a", False),
        ("arn:aws:iam::1:user/dev*", "arn:aws:iam::1:user/dev-x", True),
        ("arn:aws:iam::1:user/dev*", "arn:aws:iam::1:user/dev/x", False),
        ("arn:aws:sts::1:federated-user/*", "arn:aws:sts::1:federated-user/bob", True),
        ("arn:aws:iam::1:user/*", "arn:aws:iam::1:user/team/alice", False),
        ("arn:aws:iam::1:user/?ob", "arn:aws:iam::1:user/bob", True),
        ("arn:aws:iam::1:user/a?b", "arn:aws:iam::1:user/a/b", False),
        ("arn:aws:iam::1:user/a?b", "arn:aws:iam::1:user/a:b", False),
        ("arn:aws:sts::*:assumed-role/p/a", "arn:aws:sts::1:2:assumed-role/p/a", False),
    ],
)
def test_wildcards_stay_inside_one_segment(pattern: str, principal: str, matches: bool) -> None:
    policy = parse_policy(
        "version: 1\ntargets: {t: {cache_security_group: x, allow: {owner_accounts: ['"
        + ACCOUNT
        + "'], principals: ['"
        + pattern
        + "']}}}",
        source="test",
    )
    request = call(principal=principal, tags=(("cache-ingress", "t"),))
    plan = decide(request, {GROUP: group("t")}, policy, account_id=ACCOUNT, region=REGION)
    assert bool(plan.grants) is matches


# --- replayed events: the principal counts once CloudTrail confirms it ----------------------


def test_a_replayed_gated_grant_waits_for_provenance() -> None:
    found, plan = outcomes(call(replayed=True), "orders,payments")
    assert found == {"orders": ("granted", None), "payments": ("unverified", None)}
    assert [g.target for g in plan.unverified] == ["payments"]


def test_a_replayed_event_without_a_gated_grant_needs_no_lookup() -> None:
    found, plan = outcomes(call(replayed=True, principal=MALLORY), "orders,payments")
    assert found == {"orders": ("granted", None), "payments": ("denied", "principals")}
    assert plan.unverified == []


def test_a_verified_principal_grants() -> None:
    verified = Provenance(ProvenanceStatus.VERIFIED, "CloudTrail records it")
    found, _ = outcomes(call(replayed=True), "payments", verified)
    assert found == {"payments": ("granted", None)}


def test_a_refuted_principal_is_denied_with_what_to_do() -> None:
    refuted = Provenance(ProvenanceStatus.REFUTED, "CloudTrail has no event trail-1")
    found, plan = outcomes(call(replayed=True), "payments", refuted)
    assert found == {"payments": ("denied", "principal-provenance")}
    reason = plan.decisions[0].reason
    assert "CloudTrail has no event trail-1" in reason
    assert "re-tags the group" in reason


@pytest.mark.parametrize("failure", [FailureKind.TRANSIENT, FailureKind.PERMANENT])
def test_a_lookup_that_could_not_be_made_fails_the_pair(failure: FailureKind) -> None:
    unavailable = Provenance(
        ProvenanceStatus.UNAVAILABLE, "throttled", error_code="Throttling", failure=failure
    )
    found, plan = outcomes(call(replayed=True), "payments", unavailable)
    assert found == {"payments": ("failed", None)}
    assert plan.decisions[0].failure is failure
    assert plan.decisions[0].error_code == "Throttling"


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("\u00a0orders", ("\u00a0orders",)),
        ("\torders", ("\torders",)),
        ("orders\u200b", ("orders\u200b",)),
        ("  orders  ,payments ", ("orders", "payments")),
    ],
)
def test_only_ascii_spaces_are_trimmed(value: str, names: tuple[str, ...]) -> None:
    assert target_names(value) == names
