"""The grant ledger on the event path: every grant has its entry, revocation (opt-in) takes
away only what the function owns and only when no owner's reason remains, holds stop grants.

The stories the README tells ("Ownership and revocation", "Holds"), end to end against moto
and the emulation: untag, retag, delete-group, two owners of one rule, a grant made by hand,
holds; and with revocation off, nothing of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cache_ingress.authorizer import Authorizer
from cache_ingress.errors import TransientFailureError
from cache_ingress.ledger import Ledger
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.test_vpc_emulation import CACHE_GROUP, REDIS_PORT, SESSIONS_APP
from tests.support.events import (
    ACCOUNT,
    INVENTORY_GROUP,
    ORDERS_GROUP,
    PLATFORM_PRINCIPAL,
    create_tags,
    delete_security_group,
    tag_change,
)
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

MakeAuthorizer = Callable[..., Authorizer]
ORDERS = "orders-cache-sg"
POLICY = f"""
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
    revoke: true
    allow: {{required_tags: {{env: prod}}}}
  payments:
    cache_security_group: payments-cache-sg
    revoke: true
    allow:
      required_tags: {{env: prod}}
      principals: ["arn:aws:sts::123456789012:assumed-role/platform/*"]
  sessions:
    replication_group: sessions-redis
    revoke: true
    allow: {{required_tags: {{env: prod}}}}
  sessions-admin:
    vpc_security_group: {{group_id: {CACHE_GROUP}, port: {REDIS_PORT}}}
    revoke: true
    allow: {{required_tags: {{env: prod}}}}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str = POLICY) -> str:
        path = tmp_path / f"policy-{abs(hash(text))}.yaml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def handle(
    make_authorizer: MakeAuthorizer, policy_file: Callable[[str], str]
) -> Callable[..., dict[str, Any]]:
    """Deliver one event to a new execution environment, with the policy given (POLICY)."""

    def deliver(event: dict[str, Any], policy: str = POLICY, **environment: str) -> dict[str, Any]:
        authorizer = make_authorizer(POLICY_FILE=policy_file(policy), **environment)
        return authorizer.handle(event, FakeLambdaContext())

    return deliver


@pytest.fixture
def ledger(clients: dict[str, Any], world: SeededWorld) -> Ledger:
    assert world.scenario.ledger_table is not None
    return Ledger(clients["dynamodb"], world.scenario.ledger_table)


def granted(clients: dict[str, Any], cache_group: str) -> set[str]:
    response = clients["elasticache"].describe_cache_security_groups(
        CacheSecurityGroupName=cache_group
    )
    return {
        p["EC2SecurityGroupName"] for p in response["CacheSecurityGroups"][0]["EC2SecurityGroups"]
    }


def rules_from(clients: dict[str, Any], group_id: str) -> list[dict[str, Any]]:
    rules = clients["ec2"].describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [CACHE_GROUP]}]
    )["SecurityGroupRules"]
    return [r for r in rules if (r.get("ReferencedGroupInfo") or {}).get("GroupId") == group_id]


def outcomes(summary: dict[str, Any]) -> list[tuple[str | None, str]]:
    pairs = [(d.get("target"), d["outcome"]) for d in summary["decisions"]]
    return sorted(pairs, key=lambda pair: (pair[0] or "", pair[1]))


def untag(clients: dict[str, Any], group_id: str = ORDERS_GROUP) -> None:
    clients["ec2"].delete_tags(Resources=[group_id], Tags=[{"Key": "cache-ingress"}])


def retag(clients: dict[str, Any], value: str, group_id: str = ORDERS_GROUP) -> None:
    clients["ec2"].create_tags(
        Resources=[group_id], Tags=[{"Key": "cache-ingress", "Value": value}]
    )


def calls(clients: dict[str, Any], service: str, operation: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    hyphenized = clients[service].meta.service_model.service_id.hyphenize()
    clients[service].meta.events.register(
        f"provide-client-params.{hyphenized}.{operation}", lambda params, **_: seen.append(params)
    )
    return seen


# --- the entry ----------------------------------------------------------------------------


def test_a_grant_is_recorded_with_who_asked_when_and_by_which_policy(
    handle: Callable[..., dict[str, Any]], ledger: Ledger
) -> None:
    summary = handle(tag_change(event_id="tag-1"))

    assert outcomes(summary) == [("orders", "authorized")]
    [entry] = list(ledger.entries(group_id=ORDERS_GROUP))
    assert entry.status == "in-force"
    assert entry.ownership == "made"
    assert entry.rule == f"classic:{ORDERS}:{ACCOUNT}:orders-app"
    assert (entry.grant.event_id, entry.grant.target, entry.grant.group_name) == (
        "tag-1",
        "orders",
        "orders-app",
    )
    assert entry.grant.cache_security_group == ORDERS
    assert entry.path == "event"
    assert entry.revoke is True
    assert entry.policy_digest is not None and entry.policy_digest.startswith("sha256:")
    assert entry.recorded_at.endswith("Z")


def test_a_vpc_grant_records_the_rule_id_aws_gave_it(
    handle: Callable[..., dict[str, Any]], ledger: Ledger, clients: dict[str, Any]
) -> None:
    handle(tag_change(SESSIONS_APP, event_id="tag-vpc", tags={}))

    [entry] = list(ledger.entries(group_id=SESSIONS_APP))
    [rule] = rules_from(clients, SESSIONS_APP)
    assert entry.status == "in-force"
    assert entry.rule == f"vpc:{CACHE_GROUP}:tcp/{REDIS_PORT}:{SESSIONS_APP}"
    assert entry.rule_id == rule["SecurityGroupRuleId"]


def test_a_grant_that_was_there_already_is_not_owned(
    handle: Callable[..., dict[str, Any]], ledger: Ledger, clients: dict[str, Any]
) -> None:
    clients["elasticache"].authorize_cache_security_group_ingress(
        CacheSecurityGroupName=ORDERS,
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId=ACCOUNT,
    )

    summary = handle(tag_change(event_id="tag-hand"))

    assert outcomes(summary) == [("orders", "already-authorized")]
    [entry] = list(ledger.entries(group_id=ORDERS_GROUP))
    assert entry.status == "not-owned"


def test_a_duplicate_delivery_writes_no_second_entry(
    handle: Callable[..., dict[str, Any]], ledger: Ledger
) -> None:
    handle(tag_change(event_id="tag-twice"))
    handle(tag_change(event_id="tag-twice"))

    assert len(list(ledger.entries(group_id=ORDERS_GROUP))) == 1


def test_a_second_event_for_an_owned_grant_joins_it(
    handle: Callable[..., dict[str, Any]], ledger: Ledger
) -> None:
    handle(tag_change(event_id="tag-a"))
    handle(tag_change(event_id="tag-b"))

    entries = {e.grant.event_id: e for e in ledger.entries(group_id=ORDERS_GROUP)}
    assert (entries["tag-a"].status, entries["tag-a"].ownership) == ("in-force", "made")
    assert (entries["tag-b"].status, entries["tag-b"].ownership) == ("in-force", "joined")


# --- the stories --------------------------------------------------------------------------


def test_untag_revokes_the_owned_grant_and_marks_its_entry(
    handle: Callable[..., dict[str, Any]], ledger: Ledger, clients: dict[str, Any]
) -> None:
    handle(tag_change(event_id="tag-1"))
    untag(clients)

    summary = handle(tag_change(event_id="untag-1", tags={"env": "prod"}))

    assert outcomes(summary) == [(None, "not-applicable"), ("orders", "revoked")]
    assert granted(clients, ORDERS) == set()
    [entry] = list(ledger.entries(group_id=ORDERS_GROUP))
    assert entry.status == "revoked"
    assert entry.closed_by == "untag-1"
    assert entry.closed_reason is not None and "no longer names orders" in entry.closed_reason
    assert ledger.live(ORDERS_GROUP) == []


def test_a_late_untag_event_after_the_tag_came_back_revokes_nothing(
    handle: Callable[..., dict[str, Any]], ledger: Ledger, clients: dict[str, Any]
) -> None:
    handle(tag_change(event_id="tag-1"))
    untag(clients)
    retag(clients, "orders")

    summary = handle(tag_change(event_id="untag-late", tags={"env": "prod"}))

    assert outcomes(summary) == [("orders", "already-authorized")]
    assert granted(clients, ORDERS) == {"orders-app"}
    assert {e.status for e in ledger.entries(group_id=ORDERS_GROUP)} == {"in-force"}


def test_a_changed_tag_grants_the_new_target_and_revokes_the_old(
    handle: Callable[..., dict[str, Any]], clients: dict[str, Any]
) -> None:
    handle(tag_change(event_id="tag-1"))
    retag(clients, "sessions-admin")

    summary = handle(tag_change(event_id="tag-2"))

    assert outcomes(summary) == [("orders", "revoked"), ("sessions-admin", "authorized")]
    assert granted(clients, ORDERS) == set()
    assert len(rules_from(clients, ORDERS_GROUP)) == 1


def test_a_deleted_group_s_classic_grant_is_revoked(
    handle: Callable[..., dict[str, Any]], ledger: Ledger, clients: dict[str, Any]
) -> None:
    handle(tag_change(event_id="tag-1"))
    clients["ec2"].delete_security_group(GroupId=ORDERS_GROUP)

    summary = handle(delete_security_group(ORDERS_GROUP, event_id="delete-1"))

    assert outcomes(summary) == [(None, "not-applicable"), ("orders", "revoked")]
    assert granted(clients, ORDERS) == set()
    [entry] = list(ledger.entries(group_id=ORDERS_GROUP))
    assert entry.closed_reason is not None and "no longer exists" in entry.closed_reason


def test_a_grant_made_by_hand_is_never_revoked(
    handle: Callable[..., dict[str, Any]], clients: dict[str, Any]
) -> None:
    clients["elasticache"].authorize_cache_security_group_ingress(
        CacheSecurityGroupName=ORDERS,
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId=ACCOUNT,
    )
    handle(tag_change(event_id="tag-1"))
    untag(clients)

    summary = handle(tag_change(event_id="untag-1", tags={}))

    assert outcomes(summary) == [(None, "not-applicable"), ("orders", "not-owned")]
    assert granted(clients, ORDERS) == {"orders-app"}
    # Reported once: the next event finds nothing open.
    again = handle(tag_change(event_id="untag-2", tags={}))
    assert outcomes(again) == [(None, "not-applicable")]


def test_one_rule_of_two_owners_stays_until_the_last_reason_goes(
    handle: Callable[..., dict[str, Any]], ledger: Ledger, clients: dict[str, Any]
) -> None:
    # sessions (looked up) and sessions-admin (given) are the same rule: sg, port, source
    retag(clients, "sessions, sessions-admin", SESSIONS_APP)
    first = handle(tag_change(SESSIONS_APP, event_id="tag-both", tags={}))
    assert outcomes(first) == [("sessions", "authorized"), ("sessions-admin", "already-authorized")]
    assert {(e.grant.target, e.ownership) for e in ledger.entries(group_id=SESSIONS_APP)} == {
        ("sessions", "made"),
        ("sessions-admin", "joined"),
    }

    retag(clients, "sessions-admin", SESSIONS_APP)
    kept = handle(tag_change(SESSIONS_APP, event_id="drop-one", tags={}))
    assert outcomes(kept) == [("sessions", "retained"), ("sessions-admin", "already-authorized")]
    assert len(rules_from(clients, SESSIONS_APP)) == 1

    untag(clients, SESSIONS_APP)
    gone = handle(tag_change(SESSIONS_APP, event_id="drop-both", tags={}))
    assert (None, "not-applicable") in outcomes(gone)
    assert Counter(o for t, o in outcomes(gone) if t) == Counter({"revoked": 2})
    assert rules_from(clients, SESSIONS_APP) == []


def test_a_vpc_rule_made_again_by_hand_after_ours_went_is_left_alone(
    handle: Callable[..., dict[str, Any]], ledger: Ledger, clients: dict[str, Any]
) -> None:
    retag(clients, "sessions", SESSIONS_APP)
    handle(tag_change(SESSIONS_APP, event_id="tag-1", tags={}))
    [ours] = rules_from(clients, SESSIONS_APP)
    ec2 = clients["ec2"]
    ec2.revoke_security_group_ingress(
        GroupId=CACHE_GROUP, SecurityGroupRuleIds=[ours["SecurityGroupRuleId"]]
    )
    ec2.authorize_security_group_ingress(
        GroupId=CACHE_GROUP,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": REDIS_PORT,
                "ToPort": REDIS_PORT,
                "UserIdGroupPairs": [{"GroupId": SESSIONS_APP, "Description": "by hand"}],
            }
        ],
    )
    untag(clients, SESSIONS_APP)

    summary = handle(tag_change(SESSIONS_APP, event_id="untag-1", tags={}))

    [revoked] = [d for d in summary["decisions"] if d.get("target") == "sessions"]
    assert revoked["outcome"] == "revoked"
    assert "gone already" in revoked["reason"]
    [theirs] = rules_from(clients, SESSIONS_APP)
    assert theirs["Description"] == "by hand"


def test_a_vpc_grant_keeps_its_source_group_from_being_deleted(
    handle: Callable[..., dict[str, Any]], clients: dict[str, Any]
) -> None:
    retag(clients, "sessions", SESSIONS_APP)
    handle(tag_change(SESSIONS_APP, event_id="tag-1", tags={}))

    with pytest.raises(clients["ec2"].exceptions.ClientError, match="DependencyViolation"):
        clients["ec2"].delete_security_group(GroupId=SESSIONS_APP)

    # Untagged first, the function revokes its rule; then the group can go.
    untag(clients, SESSIONS_APP)
    handle(tag_change(SESSIONS_APP, event_id="untag-1", tags={}))
    clients["ec2"].delete_security_group(GroupId=SESSIONS_APP)


def test_a_duplicate_untag_delivery_revokes_once(
    handle: Callable[..., dict[str, Any]], clients: dict[str, Any]
) -> None:
    handle(tag_change(event_id="tag-1"))
    untag(clients)
    revokes = calls(clients, "elasticache", "RevokeCacheSecurityGroupIngress")

    first = handle(tag_change(event_id="untag-1", tags={}))
    second = handle(tag_change(event_id="untag-1", tags={}))
    other = handle(create_tags([ORDERS_GROUP], event_id="untag-2", name="DeleteTags"))

    assert len(revokes) == 1
    assert ("orders", "revoked") in outcomes(first)
    assert outcomes(second) == [(None, "not-applicable")]
    assert outcomes(other) == [(None, "not-applicable")]


def test_a_principal_gated_grant_is_judged_by_the_principal_that_asked(
    handle: Callable[..., dict[str, Any]], clients: dict[str, Any], policy_file: Any
) -> None:
    retag(clients, "payments", "sg-0c3d4e5f607182930")
    handle(
        create_tags(["sg-0c3d4e5f607182930"], event_id="platform-1", principal=PLATFORM_PRINCIPAL)
    )
    assert granted(clients, "payments-cache-sg") == {"payments-app"}

    # Any later event for the group (here a developer's, which grants nothing) keeps it...
    summary = handle(tag_change("sg-0c3d4e5f607182930", event_id="later", tags={}))
    assert outcomes(summary) == [("payments", "denied")]
    assert granted(clients, "payments-cache-sg") == {"payments-app"}

    # ...until the policy no longer lists the principal that asked.
    narrowed = POLICY.replace("assumed-role/platform/*", "assumed-role/security/*")
    summary = handle(tag_change("sg-0c3d4e5f607182930", event_id="after-review", tags={}), narrowed)
    assert ("payments", "revoked") in outcomes(summary)
    assert granted(clients, "payments-cache-sg") == set()


# --- holds --------------------------------------------------------------------------------


def test_a_hold_denies_the_pair_and_revokes_the_owned_grant_until_released(
    handle: Callable[..., dict[str, Any]], ledger: Ledger, clients: dict[str, Any]
) -> None:
    handle(tag_change(event_id="tag-1"))
    ledger.hold(
        ORDERS_GROUP, "orders", reason="incident 123", by="arn:aws:iam::123456789012:user/oncall"
    )

    held = handle(tag_change(event_id="tag-2"))

    assert outcomes(held) == [("orders", "denied"), ("orders", "revoked")]
    [denied] = [d for d in held["decisions"] if d["outcome"] == "denied"]
    assert denied["rule"] == "hold"
    assert "incident 123" in denied["reason"]
    assert granted(clients, ORDERS) == set()

    ledger.release(ORDERS_GROUP, "orders", by="arn:aws:iam::123456789012:user/oncall", reason=None)
    released = handle(tag_change(event_id="tag-3"))
    assert outcomes(released) == [("orders", "authorized")]


def test_a_hold_denies_even_without_revocation(
    handle: Callable[..., dict[str, Any]], ledger: Ledger, clients: dict[str, Any]
) -> None:
    ledger.hold(INVENTORY_GROUP, "orders", reason="not this one", by="me")
    ledger.hold(ORDERS_GROUP, "orders", reason="incident 9", by="me")

    summary = handle(tag_change(event_id="tag-1"), POLICY.replace("revoke: true", "revoke: false"))

    assert outcomes(summary) == [("orders", "denied")]
    assert granted(clients, ORDERS) == set()


@pytest.mark.parametrize(
    ("code", "transient"),
    [("ProvisionedThroughputExceededException", True), ("AccessDeniedException", False)],
)
def test_a_hold_that_cannot_be_read_stops_the_grant(
    handle: Callable[..., dict[str, Any]],
    clients: dict[str, Any],
    code: str,
    transient: bool,
) -> None:
    # SECURITY.md, "Holds": the read is part of the grant path; its failure is a failed
    # grant (retried, or dead-lettered on access denied), never a grant past an unread hold.
    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": code, "Message": "no"}}, "BatchGetItem")

    clients["dynamodb"].meta.events.register("before-call.dynamodb.BatchGetItem", refuse)
    authorize = calls(clients, "elasticache", "AuthorizeCacheSecurityGroupIngress")

    if transient:
        with pytest.raises(TransientFailureError):
            handle(tag_change(event_id="tag-1"))
    else:
        summary = handle(tag_change(event_id="tag-1"))
        assert summary["status"] == "dead-lettered"
        assert "BatchGetItem" in summary["reason"] and code in summary["reason"]
    assert authorize == []
    assert granted(clients, ORDERS) == set()


# --- revocation off -----------------------------------------------------------------------


def test_with_revocation_off_nothing_is_revoked_and_no_entry_is_read(
    handle: Callable[..., dict[str, Any]], clients: dict[str, Any]
) -> None:
    policy = POLICY.replace("revoke: true", "revoke: false")
    handle(tag_change(event_id="tag-1"), policy)
    untag(clients)
    queries = calls(clients, "dynamodb", "Query")
    batch_reads = calls(clients, "dynamodb", "BatchGetItem")

    summary = handle(tag_change(event_id="untag-1", tags={}), policy)
    deleted = handle(delete_security_group(ORDERS_GROUP, event_id="delete-1"), policy)

    assert outcomes(summary) == [(None, "not-applicable")]
    assert deleted["status"] == "ignored"
    assert granted(clients, ORDERS) == {"orders-app"}
    assert queries == []
    assert batch_reads == []
