"""Ownership, holds and the policy's `revoke`, with plain data and no mocks: whether an
owner's reason is still there is decided by the same rules that grant (README, "Ownership
and revocation", "Holds")."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cache_ingress.decisions import Plan, decide
from cache_ingress.errors import MalformedEventError, PolicyError
from cache_ingress.holds import Hold, apply_holds
from cache_ingress.intake import parse_event
from cache_ingress.models import (
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
from cache_ingress.ownership import (
    Entry,
    EntryStatus,
    Ownership,
    entry_key,
    reason_now,
    revocable,
    rule_key,
)
from cache_ingress.policy import parse_policy
from cache_ingress.settings import ReconcileOptions, Settings
from tests.support.events import load_event

pytestmark = pytest.mark.unit

ACCOUNT = "111122223333"
REGION = "us-east-1"
PLATFORM = "arn:aws:sts::111122223333:assumed-role/platform/alice"
POLICY_TEXT = """
version: 1
targets:
  orders:
    cache_security_group: Orders-Cache-SG
    revoke: true
    allow: {required_tags: {env: prod}}
  payments:
    cache_security_group: payments-cache-sg
    revoke: true
    allow:
      principals: ["arn:aws:sts::111122223333:assumed-role/platform/*"]
  sessions:
    replication_group: sessions-redis
    revoke: true
  kept:
    cache_security_group: kept-cache-sg
"""
POLICY = parse_policy(POLICY_TEXT, source="test")
SESSIONS = VpcDestination(TargetKind.REPLICATION_GROUP, "sessions-redis")


def group(tag: str | None = "orders", **changes: object) -> SecurityGroupFacts:
    tags = {"env": "prod"}
    if tag is not None:
        tags["cache-ingress"] = tag
    facts = SecurityGroupFacts("sg-0123456789abcdef0", "app", ACCOUNT, "vpc-1", REGION, tags)
    return replace(facts, **changes)  # type: ignore[arg-type]


def grant(target: str = "orders", **changes: object) -> Grant:
    made = Grant(
        event_id="e-1",
        target=target,
        cache_security_group="Orders-Cache-SG" if target == "orders" else f"{target}-cache-sg",
        group_id="sg-0123456789abcdef0",
        group_name="app",
        owner_id=ACCOUNT,
    )
    return replace(made, **changes)  # type: ignore[arg-type]


def entry(made: Grant | None = None, *, principal: str | None = None) -> Entry:
    made = made or grant()
    return Entry(
        rule=rule_key(made),
        grant=made,
        status=EntryStatus.IN_FORCE,
        path="event",
        recorded_at="2026-11-20T10:41:38Z",
        ownership=Ownership.MADE,
        principal=principal,
        revoke=True,
    )


def judged(
    owner: Entry, now: SecurityGroupFacts | None, hold: Hold | None = None, policy_text: str = ""
) -> tuple[bool, str, str | None]:
    policy = parse_policy(policy_text, source="test") if policy_text else POLICY
    reason = reason_now(owner, now, policy, hold, account_id=ACCOUNT, region=REGION)
    return reason.remains, reason.why, reason.rule


# --- rule identity ------------------------------------------------------------------------


def test_a_classic_rule_is_its_cache_group_group_name_and_owner() -> None:
    # Two groups of one name and owner are one classic pair; the cache group name's case is AWS's.
    assert rule_key(grant()) == rule_key(grant(group_id="sg-0fedcba9876543210"))
    assert rule_key(grant()) == f"classic:orders-cache-sg:{ACCOUNT}:app"
    assert entry_key(grant()) == "entry#e-1#orders#sg-0123456789abcdef0"


def test_a_vpc_rule_is_its_group_port_and_source_whatever_the_target() -> None:
    one = grant("sessions", cache_security_group=None, vpc_security_group="sg-0c1", port=6379)
    other = replace(one, target="sessions-admin", cache="replication-group:x", event_id="e-2")
    assert rule_key(one) == rule_key(other) == "vpc:sg-0c1:tcp/6379:sg-0123456789abcdef0"
    assert rule_key(replace(one, port=6380)) != rule_key(one)


# --- the reason, now ----------------------------------------------------------------------


def test_the_reason_remains_while_the_policy_allows_the_pair_into_the_same_rule() -> None:
    assert judged(entry(), group()) == (
        True,
        "the policy allows the pair into the same rule now",
        None,
    )


@pytest.mark.parametrize(
    ("now", "why", "rule"),
    [
        (None, "the group no longer exists", None),
        (group(None), "the group's cache-ingress tag no longer names orders (now: no tag)", None),
        (
            group("payments"),
            "the group's cache-ingress tag no longer names orders (now: 'payments')",
            None,
        ),
        (
            group(tags={"cache-ingress": "orders", "env": "dev"}),
            "the policy no longer allows it: required tag 'env' has a value not accepted",
            "required-tags",
        ),
        (
            group(owner_id="999999999999"),
            "the policy no longer allows it: owner 999999999999 is not an allowed owner account",
            "owner-accounts",
        ),
    ],
    ids=["group-deleted", "tag-removed", "tag-changed", "required-tag-changed", "other-owner"],
)
def test_the_reason_is_gone_when_the_group_tag_or_policy_no_longer_allow_it(
    now: SecurityGroupFacts | None, why: str, rule: str | None
) -> None:
    assert judged(entry(), now) == (False, why, rule)


def test_a_hold_takes_the_reason_away() -> None:
    hold = Hold("sg-0123456789abcdef0", "orders", "incident 123", "arn:aws:iam::1:user/x", "T")
    remains, why, rule = judged(entry(), group(), hold)
    assert (remains, rule) == (False, "hold")
    assert "'incident 123' (held by arn:aws:iam::1:user/x since T)" in why


def test_a_target_removed_from_the_policy_or_sent_elsewhere_is_a_reason_gone() -> None:
    without = POLICY_TEXT.replace("  orders:\n", "  renamed:\n")
    assert judged(entry(), group(), policy_text=without)[:1] == (False,)
    moved = POLICY_TEXT.replace("cache_security_group: Orders-Cache-SG", "cache_security_group: o2")
    remains, why, rule = judged(entry(), group(), policy_text=moved)
    assert (remains, rule) == (False, "destination")
    assert "classic:o2:" in why


def test_a_principal_gated_grant_is_judged_by_the_principal_that_asked_for_it() -> None:
    payments = grant("payments")
    now = group("payments")

    assert judged(entry(payments, principal=PLATFORM), now)[0] is True
    # Asked for by nobody (a Tag Change, the sweep): gone once the target requires one.
    remains, _, rule = judged(entry(payments), now)
    assert (remains, rule) == (False, "principals")
    # Asked for by a principal the policy no longer lists.
    narrowed = POLICY_TEXT.replace("assumed-role/platform/*", "assumed-role/security/*")
    remains, _, rule = judged(entry(payments, principal=PLATFORM), now, policy_text=narrowed)
    assert (remains, rule) == (False, "principals")


def test_a_vpc_reason_that_cannot_be_judged_now_is_not_gone() -> None:
    sessions = grant(
        "sessions",
        cache_security_group=None,
        vpc_security_group="sg-0c1",
        port=6379,
        cache="replication-group:sessions-redis",
    )
    facts = VpcCacheFacts("sg-0c1", "vpc-1", ACCOUNT, 6379)
    unknown = UnresolvedDestination("throttled", "Throttling", FailureKind.TRANSIENT)

    assert judged(entry(sessions), group("sessions", destinations={SESSIONS: facts}))[0] is True
    reason = reason_now(
        entry(sessions),
        group("sessions", destinations={SESSIONS: unknown}),
        POLICY,
        None,
        account_id=ACCOUNT,
        region=REGION,
    )
    assert (reason.remains, reason.known, reason.failure) == (False, False, FailureKind.TRANSIENT)


def test_revoke_is_the_targets_flag_or_for_a_removed_target_the_one_recorded() -> None:
    assert revocable(entry(), POLICY) is True
    assert revocable(entry(grant("kept")), POLICY) is False
    gone = entry(grant("renamed"))
    assert revocable(gone, POLICY) is True
    assert revocable(replace(gone, revoke=False), POLICY) is False


def test_a_pending_entry_is_running_while_young_and_not_found_there() -> None:
    from datetime import UTC, datetime, timedelta

    pending = replace(entry(), status=EntryStatus.PENDING, updated_at="2026-11-20T10:41:38Z")
    written = datetime(2026, 11, 20, 10, 41, 38, tzinfo=UTC)

    assert pending.running(written + timedelta(minutes=14)) is True
    assert pending.running(written + timedelta(minutes=16)) is False
    assert replace(pending, found_there=True).running(written) is False
    assert entry().running(written) is False


# --- holds --------------------------------------------------------------------------------


def test_a_hold_denies_only_its_pair_by_rule_hold() -> None:
    request = TagRequest("e-1", "aws.tag", "Tag Change on Resource", ACCOUNT, REGION, ("sg-1",))
    plan = Plan(grants=[grant(), grant("kept")])
    hold = Hold("sg-0123456789abcdef0", "orders", "incident 7")

    held = apply_holds(plan, {hold.key: hold}, request.principal)

    assert [g.target for g in held.grants] == ["kept"]
    [denied] = held.decisions
    assert (denied.outcome, denied.rule, denied.target) == (Outcome.DENIED, "hold", "orders")
    assert "'incident 7'" in denied.reason and "`cache-ingress release` ends it" in denied.reason
    assert apply_holds(plan, {}, None) is plan


# --- the policy, intake and settings ------------------------------------------------------


def test_revoke_is_off_unless_a_target_says_true() -> None:
    assert POLICY.revokes is True
    assert (
        parse_policy(POLICY_TEXT.replace("revoke: true", "revoke: false"), source="t").revokes
        is False
    )
    with pytest.raises(PolicyError, match=r"targets\.orders\.revoke: must be true or false"):
        parse_policy(POLICY_TEXT.replace("revoke: true", "revoke: 'yes'", 1), source="t")


def test_the_digest_is_the_documents_whatever_its_format() -> None:
    as_json = json.dumps(
        {
            "version": 1,
            "targets": {
                "orders": {
                    "cache_security_group": "Orders-Cache-SG",
                    "revoke": True,
                    "allow": {"required_tags": {"env": "prod"}},
                },
                "payments": {
                    "cache_security_group": "payments-cache-sg",
                    "revoke": True,
                    "allow": {"principals": ["arn:aws:sts::111122223333:assumed-role/platform/*"]},
                },
                "sessions": {"replication_group": "sessions-redis", "revoke": True},
                "kept": {"cache_security_group": "kept-cache-sg"},
            },
        }
    )
    assert parse_policy(as_json, source="json").digest == POLICY.digest
    assert POLICY.digest.startswith("sha256:") and len(POLICY.digest) == 71
    changed = parse_policy(POLICY_TEXT.replace("env: prod", "env: dev"), source="t")
    assert changed.digest != POLICY.digest


def test_a_delete_security_group_call_names_its_group() -> None:
    event = load_event("cloudtrail-delete-security-group.json")

    parsed = parse_event(event)

    assert isinstance(parsed, TagRequest)
    assert (parsed.event_name, parsed.group_ids) == (
        "DeleteSecurityGroup",
        ("sg-0d4e5f60718293041",),
    )
    by_name = json.loads(json.dumps(event))
    by_name["detail"]["requestParameters"] = {"groupName": "default-vpc-app"}
    assert parse_event(by_name).reason == "DeleteSecurityGroup named no security group"  # type: ignore[union-attr]
    by_name["detail"]["requestParameters"] = {"groupId": "not-a-group"}
    with pytest.raises(MalformedEventError, match=r"requestParameters\.groupId is not a security"):
        parse_event(by_name)


def test_a_delete_security_group_call_never_grants_a_principal_gated_target() -> None:
    event = load_event("cloudtrail-delete-security-group.json")
    parsed = parse_event(event)
    assert isinstance(parsed, TagRequest)
    now = replace(group("payments"), group_id="sg-0d4e5f60718293041")

    plan = decide(parsed, {now.group_id: now}, POLICY, account_id=ACCOUNT, region=REGION)

    assert plan.grants == []


def test_the_ledger_and_enforce_settings() -> None:
    base = {
        "ACCOUNT_ID": ACCOUNT,
        "AWS_REGION": REGION,
        "IDEMPOTENCY_TABLE": "t",
        "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/111122223333/q",
    }
    assert Settings.from_environ(base).ledger_table is None
    assert Settings.from_environ({**base, "LEDGER_TABLE": " ledger "}).ledger_table == "ledger"
    assert ReconcileOptions.from_environ({}).enforce is False
    assert ReconcileOptions.from_environ({"RECONCILE_ENFORCE": "true"}).enforce is True
