"""The decision's trace (`explain`): every rule in the documented order, the fact it read
and its verdict, and an outcome that is always the one `decide()` gives.

The order is read from the README's "Deny rules" table, the document reviewers read; the
generated worlds cover every rule, VPC caches and replayed principals.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_ingress.decisions import PairTrace, Verdict, decide, explain
from cache_ingress.models import (
    Decision,
    FailureKind,
    Grant,
    Outcome,
    Provenance,
    ProvenanceStatus,
    SecurityGroupFacts,
    TagRequest,
    TargetKind,
    TrailCall,
    UnresolvedDestination,
    VpcCacheFacts,
)
from cache_ingress.policy import parse_policy

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"
ACCOUNT = "111122223333"
PEER = "444455556666"
REGION = "us-east-1"
PLATFORM = "arn:aws:sts::111122223333:assumed-role/platform/alice"
DEVELOPER = "arn:aws:sts::111122223333:assumed-role/developer/bob"
POLICY = parse_policy(
    """
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
    allow:
      required_tags: {env: [prod, staging], tier: web}
  shared:
    cache_security_group: shared-cache-sg
    allow:
      owner_accounts: ["111122223333", "444455556666"]
  payments:
    cache_security_group: payments-cache-sg
    allow:
      principals: ["arn:aws:sts::111122223333:assumed-role/platform/*"]
      required_tags: {env: prod}
  europe:
    cache_security_group: europe-cache-sg
    region: eu-west-1
  sessions:
    replication_group: sessions-redis
    allow:
      principals: ["arn:aws:sts::111122223333:assumed-role/platform/*"]
  reports:
    vpc_security_group: {group_id: sg-0123456789abcdef0, port: 6380}
  legacy:
    cache_cluster: legacy-mc
    region: eu-west-1
""",
    source="test",
)
VPC_DESTINATIONS = tuple(t.vpc for t in POLICY.targets.values() if t.vpc is not None)


def _documented_rule_order() -> list[str]:
    """The rules of the README's "Deny rules" table, top to bottom."""
    text = README.read_text(encoding="utf-8")
    table = text.split("Deny rules, checked in this order", 1)[1].split("\n\n", 2)[1]
    rules: list[str] = []
    for line in table.splitlines()[2:]:
        first_cell = line.split("|")[1]
        rules.extend(re.findall(r"`([a-z-]+)`", first_cell))
    return rules


DOCUMENTED = _documented_rule_order()
# What the trace adds between the event's origin and the targets: steps that decide "nothing
# to decide" (not-applicable), documented in the Outcomes table.
GROUP_STEPS = ("group-exists", "tag")


def group(tag: str | None = "orders", **tags: str) -> SecurityGroupFacts:
    all_tags = {"env": "prod", "tier": "web", **tags}
    if tag is not None:
        all_tags["cache-ingress"] = tag
    return SecurityGroupFacts("sg-0aaaaaaaaaaaaaaaa", "app", ACCOUNT, "vpc-1", REGION, all_tags)


def tag_change(*group_ids: str) -> TagRequest:
    return TagRequest(
        "evt-1",
        "aws.tag",
        "Tag Change on Resource",
        ACCOUNT,
        REGION,
        group_ids or ("sg-0aaaaaaaaaaaaaaaa",),
    )


def create_tags(principal: str, value: str, *, replayed: bool = False) -> TagRequest:
    ids = ("sg-0aaaaaaaaaaaaaaaa",)
    trail = TrailCall("trail-1", "CreateTags", principal, ids, (("cache-ingress", value),))
    return TagRequest(
        "evt-1",
        "aws.ec2",
        "AWS API Call via CloudTrail",
        ACCOUNT,
        REGION,
        ids,
        principal,
        event_name="CreateTags",
        trail=trail,
        replayed=replayed,
    )


def trace_of(request: TagRequest, facts: SecurityGroupFacts | None, **kwargs: object) -> PairTrace:
    groups = {facts.group_id: facts} if facts is not None else {}
    [trace] = explain(request, groups, POLICY, account_id=ACCOUNT, region=REGION, **kwargs)  # type: ignore[arg-type]
    return trace


def verdicts(trace: PairTrace) -> list[tuple[str, Verdict]]:
    return [(check.rule, check.verdict) for check in trace.checks]


def test_the_readme_table_lists_the_rules_in_order() -> None:
    assert DOCUMENTED[:4] == [
        "event-account",
        "event-region",
        "account-agreement",
        "unknown-target",
    ]
    # The policy's rules end with provenance; an operator's hold is read after all of them.
    assert DOCUMENTED[-2:] == ["principal-provenance", "hold"]


def test_a_grant_shows_every_rule_holding_with_the_fact_it_read() -> None:
    trace = trace_of(tag_change(), group("orders"))

    assert isinstance(trace.result, Grant)
    assert trace.deciding is None
    assert verdicts(trace) == [
        ("event-account", Verdict.HOLDS),
        ("event-region", Verdict.HOLDS),
        ("group-exists", Verdict.HOLDS),
        ("tag", Verdict.HOLDS),
        ("unknown-target", Verdict.HOLDS),
        ("same-region", Verdict.HOLDS),
        ("owner-id", Verdict.HOLDS),
        ("owner-accounts", Verdict.HOLDS),
        ("required-tags", Verdict.HOLDS),
        ("required-tags", Verdict.HOLDS),
        ("principals", Verdict.NOT_SET),
        ("principal-binding", Verdict.NOT_SET),
        ("principal-provenance", Verdict.NOT_SET),
    ]
    facts = {check.rule: check.fact for check in trace.checks}
    assert "cache-ingress = 'orders'" in facts["tag"]
    assert "cache security group orders-cache-sg" in facts["unknown-target"]
    assert f"{ACCOUNT} (the function's own account)" in facts["owner-accounts"]


def test_rules_after_the_deciding_one_are_shown_but_the_first_decides() -> None:
    # A Tag Change names no principal, and the group's env is not accepted either.
    trace = trace_of(tag_change(), group("payments", env="dev"))

    assert isinstance(trace.result, Decision)
    assert (trace.result.outcome, trace.result.rule) == (Outcome.DENIED, "required-tags")
    denied = [rule for rule, verdict in verdicts(trace) if verdict is Verdict.DENIES]
    assert denied == ["required-tags", "principals", "principal-binding"]
    deciding = trace.deciding
    assert deciding is not None
    assert deciding.rule == "required-tags"
    assert "env = 'dev'; accepted: prod" in deciding.fact
    assert deciding.reason == trace.result.reason


def test_an_unknown_target_ends_its_trace() -> None:
    trace = trace_of(tag_change(), group("analytics"))

    assert verdicts(trace)[-1] == ("unknown-target", Verdict.DENIES)
    assert "'analytics' is not a target of the policy" in trace.checks[-1].fact


@pytest.mark.parametrize(
    ("facts", "request_", "rule", "verdict"),
    [
        (None, tag_change(), "group-exists", Verdict.NOT_APPLICABLE),
        (group(None), tag_change(), "tag", Verdict.NOT_APPLICABLE),
        (group(" , "), tag_change(), "tag", Verdict.NOT_APPLICABLE),
    ],
)
def test_a_group_with_nothing_to_decide_has_one_trace_without_a_target(
    facts: SecurityGroupFacts | None, request_: TagRequest, rule: str, verdict: Verdict
) -> None:
    trace = trace_of(request_, facts)

    assert trace.target is None
    assert verdicts(trace)[-1] == (rule, verdict)
    assert isinstance(trace.result, Decision)
    assert trace.result.outcome is Outcome.NOT_APPLICABLE


def test_an_event_from_another_region_is_decided_before_the_group_is_read() -> None:
    request = TagRequest("e", "aws.tag", "Tag Change on Resource", ACCOUNT, "eu-west-1", ("sg-1",))

    trace = trace_of(request, None)

    assert verdicts(trace) == [
        ("event-account", Verdict.HOLDS),
        ("event-region", Verdict.DENIES),
    ]


def test_a_vpc_target_shows_what_was_read_of_the_cache() -> None:
    facts = VpcCacheFacts("sg-0ccccccccccccccc1", "vpc-2", ACCOUNT, 6379)
    tagged = group("sessions")
    tagged = SecurityGroupFacts(
        tagged.group_id,
        tagged.group_name,
        tagged.owner_id,
        tagged.vpc_id,
        tagged.region,
        tagged.tags,
        {POLICY.targets["sessions"].vpc: facts},  # type: ignore[dict-item]
    )

    trace = trace_of(create_tags(PLATFORM, "sessions"), tagged)

    deciding = trace.deciding
    assert deciding is not None
    assert deciding.rule == "same-vpc"
    assert "replication group sessions-redis has security group sg-0ccccccccccccccc1 in vpc-2" in (
        deciding.fact
    )


def test_a_replayed_principal_waits_for_cloudtrail_then_shows_its_answer() -> None:
    request = create_tags(PLATFORM, "payments", replayed=True)
    waiting = trace_of(request, group("payments"))

    assert waiting.unverified
    assert verdicts(waiting)[-1] == ("principal-provenance", Verdict.PENDING)

    refuted = Provenance(ProvenanceStatus.REFUTED, "CloudTrail has no event trail-1")
    answered = trace_of(request, group("payments"), provenance=refuted)

    assert verdicts(answered)[-1] == ("principal-provenance", Verdict.DENIES)
    assert "CloudTrail has no event trail-1" in answered.checks[-1].fact
    assert isinstance(answered.result, Decision)
    assert answered.result.rule == "principal-provenance"


def test_cloudtrail_is_not_asked_for_a_pair_an_earlier_rule_denies() -> None:
    trace = trace_of(create_tags(DEVELOPER, "payments", replayed=True), group("payments"))

    assert verdicts(trace)[-1] == ("principal-provenance", Verdict.NOT_ASKED)
    assert not trace.unverified


# --- the trace and the decision never disagree -------------------------------------------

names = st.sampled_from(
    ["orders", "shared", "payments", "sessions", "europe", "reports", "legacy", "nope", " orders"]
)
tag_values = st.one_of(
    st.lists(names, max_size=3).map(",".join), st.sampled_from(["payments", "sessions"])
)
cache_facts = st.one_of(
    st.builds(
        VpcCacheFacts,
        st.sampled_from(["sg-0ccccccccccccccc1", "sg-0ccccccccccccccc2"]),
        st.sampled_from(["vpc-1", "vpc-1", "vpc-2", None]),
        st.sampled_from([ACCOUNT, PEER]),
        st.sampled_from([6379, 6380]),
    ),
    st.builds(
        UnresolvedDestination,
        st.just("the cache does not exist"),
        st.sampled_from(["ReplicationGroupNotFoundFault", "Throttling"]),
        st.sampled_from(list(FailureKind)),
    ),
)


@st.composite
def security_groups(draw: st.DrawFn, group_id: str) -> SecurityGroupFacts:
    tags: dict[str, str] = {}
    if draw(st.integers(0, 5)):
        tags["cache-ingress"] = draw(tag_values)
    for key, values in (("env", ["prod", "staging", "dev"]), ("tier", ["web", "api"])):
        if draw(st.integers(0, 3)):
            tags[key] = draw(st.sampled_from(values))
    return SecurityGroupFacts(
        group_id,
        "app",
        draw(st.sampled_from([ACCOUNT, ACCOUNT, PEER, "not-an-account"])),
        draw(st.sampled_from(["vpc-1", "vpc-1", "vpc-2", None])),
        draw(st.sampled_from([REGION, REGION, "eu-west-1"])),
        tags,
        {d: draw(cache_facts) for d in VPC_DESTINATIONS if draw(st.integers(0, 5))},
    )


@st.composite
def worlds(
    draw: st.DrawFn,
) -> tuple[TagRequest, dict[str, SecurityGroupFacts], Provenance | None]:
    ids = draw(
        st.lists(st.sampled_from(["sg-1", "sg-2", "sg-3"]), min_size=1, max_size=3, unique=True)
    )
    groups = {i: draw(security_groups(i)) for i in ids if draw(st.integers(0, 7))}
    principal = draw(st.sampled_from([None, PLATFORM, PLATFORM, DEVELOPER]))
    trail = None
    if principal is not None or draw(st.booleans()):
        call = draw(
            st.sampled_from(["CreateTags", "CreateTags", "DeleteTags", "CreateSecurityGroup"])
        )
        keys = st.sampled_from(["cache-ingress", "cache-ingress", "env"])
        request_tags = draw(st.lists(st.tuples(keys, tag_values), max_size=2))
        trail = TrailCall("trail-1", call, principal, tuple(ids), tuple(request_tags))
    request = TagRequest(
        "evt-1",
        "aws.ec2" if trail else "aws.tag",
        "AWS API Call via CloudTrail" if trail else "Tag Change on Resource",
        draw(st.sampled_from([ACCOUNT] * 9 + [PEER])),
        draw(st.sampled_from([REGION] * 9 + ["us-west-2"])),
        tuple(ids),
        principal,
        event_name=trail.event_name if trail else None,
        trail=trail,
        replayed=draw(st.booleans()),
    )
    provenance = draw(
        st.one_of(
            st.none(),
            st.builds(
                Provenance,
                st.sampled_from(list(ProvenanceStatus)),
                st.just("CloudTrail's answer"),
                st.sampled_from([None, "ThrottlingException"]),
                st.sampled_from([None, *FailureKind]),
            ),
        )
    )
    return request, groups, provenance


_OUTCOME_OF_VERDICT = {
    Verdict.DENIES: Outcome.DENIED,
    Verdict.NOT_APPLICABLE: Outcome.NOT_APPLICABLE,
    Verdict.UNKNOWN: Outcome.FAILED,
}


def _documented_position(rule: str) -> float:
    if rule in GROUP_STEPS:
        # After the event's origin, before the targets (README, "Outcomes").
        return DOCUMENTED.index("event-region") + 0.5
    return DOCUMENTED.index(rule)


@pytest.mark.property
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds())
def test_the_first_deciding_rule_of_every_trace_is_the_decisions(
    world: tuple[TagRequest, dict[str, SecurityGroupFacts], Provenance | None],
) -> None:
    request, groups, provenance = world
    options = {"account_id": ACCOUNT, "region": REGION, "provenance": provenance}
    plan = decide(request, groups, POLICY, **options)  # type: ignore[arg-type]
    traces = explain(request, groups, POLICY, **options)  # type: ignore[arg-type]

    # The same pairs, in the same order, with the same outcomes.
    assert [t.result for t in traces if isinstance(t.result, Decision)] == plan.decisions
    assert [t.result for t in traces if isinstance(t.result, Grant) and not t.unverified] == (
        plan.grants
    )
    assert [t.result for t in traces if t.unverified] == plan.unverified
    for trace in traces:
        deciding = trace.deciding
        if isinstance(trace.result, Grant):
            expected = Verdict.PENDING if trace.unverified else None
            assert (deciding.verdict if deciding else None) == expected
            continue
        assert deciding is not None
        assert _OUTCOME_OF_VERDICT[deciding.verdict] is trace.result.outcome
        assert trace.result.reason == deciding.reason
        if trace.result.outcome is Outcome.DENIED:
            assert trace.result.rule == deciding.rule
        # Every rule is shown in the documented order.
        positions = [_documented_position(check.rule) for check in trace.checks]
        assert positions == sorted(positions)


def test_the_generated_worlds_use_every_kind_of_target() -> None:
    assert {target.kind for target in POLICY.targets.values()} == set(TargetKind)
