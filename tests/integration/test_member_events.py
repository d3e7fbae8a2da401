"""A member account's events through the Authorizer, against the member scenario: the group
read in its own account through its read role, the grant made in the cache account naming
the member as the group's owner, every other account refused with a named rule, and STS
faults retried or dead-lettered like any other (docs/multi-account.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cache_ingress.authorizer import Authorizer
from cache_ingress.aws import Clients
from cache_ingress.errors import TransientFailureError
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from cache_ingress_tools.emulator import cloudtrail_history
from cache_ingress_tools.emulator.organization import account_client
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.support.events import tag_change
from tests.support.faults import Fault
from tests.support.fixtures import REGION, TEST_CLIENT_CONFIG, function_clients, shared_session
from tests.support.fixtures import dead_letters as queued

pytestmark = pytest.mark.integration

CACHE = "123456789012"
MEMBER = "111122223333"
OTHER_MEMBER = "444455556666"
CHECKOUT_APP = "sg-0d1e2f3a4b5c6d7e8"  # member, default VPC, orders
CHECKOUT_SESSIONS = "sg-0d2e3f4a5b6c7d8e9"  # member, VPC apps (peered), sessions
LEDGER_APP = "sg-0e1f2a3b4c5d6e7f8"  # the other member, orders
SESSIONS_CACHE_GROUP = "sg-0c1a2b3c4d5e6f701"


def _as(account: str, service: str) -> Any:
    """An administrator's client in `account` (seeding and reading only)."""
    return account_client(
        lambda name: shared_session().client(name, region_name=REGION, config=TEST_CLIENT_CONFIG),
        service,
        account,
    )


def _authorizer(
    world: SeededWorld, clients: Clients | None = None, **environment: str
) -> Authorizer:
    settings = Settings.from_environ({**world.function_environment(), **environment})
    return build_authorizer(settings, clients or function_clients(world))


def member_tag_change(group: str, account: str = MEMBER, arn_account: str | None = None) -> Any:
    event = tag_change(group, {"cache-ingress": "orders"}, event_id=f"member-{account}-{group}")
    event["account"] = account
    event["resources"] = [f"arn:aws:ec2:{REGION}:{arn_account or account}:security-group/{group}"]
    return event


def _decisions(summary: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (d["group_id"], d.get("target"), d["outcome"], d.get("rule"), d.get("account"))
        for d in summary["decisions"]
    ]


def test_a_members_group_enters_a_classic_cache_with_the_member_as_its_owner(
    member_world: SeededWorld,
) -> None:
    clients = function_clients(member_world)
    requests: list[dict[str, Any]] = []
    clients.get("elasticache").meta.events.register(
        "provide-client-params.elasticache.AuthorizeCacheSecurityGroupIngress",
        lambda params, **_: requests.append(params),
    )

    summary = _authorizer(member_world, clients).handle(member_tag_change(CHECKOUT_APP))

    assert _decisions(summary) == [(CHECKOUT_APP, "orders", "authorized", None, MEMBER)]
    assert requests == [
        {
            "CacheSecurityGroupName": "orders-cache-sg",
            "EC2SecurityGroupName": "checkout-app",
            "EC2SecurityGroupOwnerId": MEMBER,
        }
    ]
    [cache_group] = _as(CACHE, "elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="orders-cache-sg"
    )["CacheSecurityGroups"]
    assert [
        (g["EC2SecurityGroupName"], g["EC2SecurityGroupOwnerId"])
        for g in cache_group["EC2SecurityGroups"]
    ] == [("checkout-app", MEMBER)]


def test_a_members_group_in_a_peered_vpc_enters_a_vpc_cache_named_with_its_account(
    member_world: SeededWorld,
) -> None:
    assert member_world.members is not None
    [peering] = member_world.members.peerings[MEMBER]
    event = tag_change(CHECKOUT_SESSIONS, {"cache-ingress": "sessions"}, event_id="peered-1")
    event["account"] = MEMBER
    event["resources"] = [f"arn:aws:ec2:{REGION}:{MEMBER}:security-group/{CHECKOUT_SESSIONS}"]

    summary = _authorizer(member_world).handle(event)

    [decision] = summary["decisions"]
    assert (decision["outcome"], decision["account"], decision["peering"]) == (
        "authorized",
        MEMBER,
        peering,
    )
    [cache_group] = _as(CACHE, "ec2").describe_security_groups(GroupIds=[SESSIONS_CACHE_GROUP])[
        "SecurityGroups"
    ]
    pairs = [
        (p["GroupId"], p.get("UserId"), permission["FromPort"])
        for permission in cache_group["IpPermissions"]
        for p in permission["UserIdGroupPairs"]
    ]
    assert pairs == [(CHECKOUT_SESSIONS, MEMBER, 6379)]


def test_a_member_cannot_name_another_members_group(member_world: SeededWorld) -> None:
    # A Tag Change of MEMBER whose ARN names the other member's group: refused unread.
    authorizer = _authorizer(member_world)
    arn_event = member_tag_change(LEDGER_APP, account=MEMBER, arn_account=OTHER_MEMBER)

    summary = authorizer.handle(arn_event)

    assert _decisions(summary) == [(LEDGER_APP, None, "denied", "account-agreement", MEMBER)]
    assert "names account 444455556666" in summary["decisions"][0]["reason"]


def test_a_members_tagging_call_naming_another_members_group_finds_nothing_in_its_own_account(
    member_world: SeededWorld,
) -> None:
    # CloudTrail's record names group ids only: the id is looked up in the caller's account,
    # where the other member's group does not exist.
    ec2 = _as(OTHER_MEMBER, "ec2")
    ec2.create_tags(Resources=[LEDGER_APP], Tags=[{"Key": "cache-ingress", "Value": "orders"}])
    [record] = [
        r
        for r in cloudtrail_history.recorded_calls(OTHER_MEMBER, REGION)
        if r["eventName"] == "CreateTags"
    ]
    forged = {**record, "recipientAccountId": MEMBER}
    forged["userIdentity"] = {**record["userIdentity"], "accountId": MEMBER}
    event = cloudtrail_history.eventbridge_event(forged, event_id="forged-1")

    summary = _authorizer(member_world).handle(event)

    assert _decisions(summary) == [(LEDGER_APP, None, "not-applicable", None, MEMBER)]
    assert queued(_as(CACHE, "sqs"), member_world.dead_letter_queue_url) == []


def test_an_event_whose_cloudtrail_record_names_another_account_is_refused(
    member_world: SeededWorld,
) -> None:
    ec2 = _as(MEMBER, "ec2")
    ec2.create_tags(Resources=[CHECKOUT_APP], Tags=[{"Key": "cache-ingress", "Value": "orders"}])
    [record] = [
        r
        for r in cloudtrail_history.recorded_calls(MEMBER, REGION)
        if r["eventName"] == "CreateTags"
    ]
    event = cloudtrail_history.eventbridge_event(record, event_id="relayed-1")
    event["account"] = OTHER_MEMBER

    summary = _authorizer(member_world).handle(event)

    assert _decisions(summary) == [
        (CHECKOUT_APP, None, "denied", "account-agreement", OTHER_MEMBER)
    ]


def test_an_account_that_is_not_a_member_is_denied_and_logged_with_its_account(
    member_world: SeededWorld, caplog: pytest.LogCaptureFixture
) -> None:
    # Members listed one by one (no organization): 210987654321 is none of them.
    authorizer = _authorizer(member_world, MEMBER_ORGANIZATION="")
    event = member_tag_change("sg-0f0e0d0c0b0a09080", account="210987654321")

    summary = authorizer.handle(event)

    assert _decisions(summary) == [
        ("sg-0f0e0d0c0b0a09080", None, "denied", "event-account", "210987654321")
    ]
    [denied] = [r for r in caplog.records if r.getMessage() == "ingress denied"]
    assert (getattr(denied, "rule", None), getattr(denied, "account", None)) == (
        "event-account",
        "210987654321",
    )


def test_a_throttled_assume_role_is_retried(member_world: SeededWorld) -> None:
    clients = function_clients(member_world)
    Fault(clients.get("sts"), "AssumeRole", "throttling", times=1)

    with pytest.raises(TransientFailureError, match="could not be assumed"):
        _authorizer(member_world, clients).handle(member_tag_change(CHECKOUT_APP))


def test_a_refused_assume_role_is_dead_lettered_with_the_account_and_what_to_check(
    member_world: SeededWorld,
) -> None:
    authorizer = _authorizer(member_world, MEMBER_EXTERNAL_ID="another-stacks-id")

    summary = authorizer.handle(member_tag_change(CHECKOUT_APP))

    assert (summary["status"], summary["errorType"]) == ("dead-lettered", "AccessDenied")
    assert f"member account {MEMBER}" in summary["reason"]
    [message] = queued(_as(CACHE, "sqs"), member_world.dead_letter_queue_url)
    assert message["body"]["requestPayload"]["account"] == MEMBER


def test_a_replayed_members_call_is_verified_in_the_members_own_cloudtrail(
    member_world: SeededWorld, tmp_path: Path
) -> None:
    ec2 = _as(MEMBER, "ec2")
    ec2.create_tags(Resources=[CHECKOUT_APP], Tags=[{"Key": "cache-ingress", "Value": "gated"}])
    [record] = [
        r
        for r in cloudtrail_history.recorded_calls(MEMBER, REGION)
        if r["eventName"] == "CreateTags"
    ]
    principal = record["userIdentity"]["arn"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\ntag_key: cache-ingress\ntargets:\n  gated:\n"
        "    cache_security_group: orders-cache-sg\n    allow:\n"
        f'      owner_accounts: ["{MEMBER}"]\n      principals: ["{principal}"]\n',
        encoding="utf-8",
    )
    event = cloudtrail_history.eventbridge_event(record, event_id="replayed-member-1")
    # The cache account's own history has no such call: only the member's has it.
    cache_history = cloudtrail_history.recorded_calls(CACHE, REGION)
    assert record["eventID"] not in {r["eventID"] for r in cache_history}

    summary = _authorizer(member_world, POLICY_FILE=str(policy)).handle(event, replay=True)

    assert _decisions(summary) == [(CHECKOUT_APP, "gated", "authorized", None, MEMBER)]

    # The same record with a principal the member's CloudTrail does not hold is refused.
    forged = {**record, "userIdentity": {**record["userIdentity"], "arn": principal + "x"}}
    policy.write_text(policy.read_text().replace(principal, principal + "x"), encoding="utf-8")
    replay = cloudtrail_history.eventbridge_event(forged, event_id="replayed-member-2")
    summary = _authorizer(member_world, POLICY_FILE=str(policy)).handle(replay, replay=True)
    assert _decisions(summary) == [
        (CHECKOUT_APP, "gated", "denied", "principal-provenance", MEMBER)
    ]


# --- the grant ledger carries the account ----------------------------------------------------

REVOKING_POLICY = f"""version: 1
tag_key: cache-ingress
targets:
  orders:
    cache_security_group: orders-cache-sg
    revoke: true
    allow:
      owner_accounts: ["{CACHE}", "{MEMBER}"]
      required_tags: {{env: prod}}
"""


def _ledger(world: SeededWorld) -> Any:
    from cache_ingress.ledger import Ledger

    table = world.function_environment()["LEDGER_TABLE"]
    return Ledger(_as(CACHE, "dynamodb"), table)


def test_a_members_grant_is_in_the_ledger_with_its_account_and_is_revoked_in_the_cache_account(
    member_world: SeededWorld, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(REVOKING_POLICY, encoding="utf-8")
    authorizer = _authorizer(member_world, POLICY_FILE=str(policy))

    granted = authorizer.handle(member_tag_change(CHECKOUT_APP))

    assert _decisions(granted) == [(CHECKOUT_APP, "orders", "authorized", None, MEMBER)]
    [entry] = _ledger(member_world).live(CHECKOUT_APP)
    assert (entry.grant.account, entry.grant.owner_id, entry.owned) == (MEMBER, MEMBER, True)

    # The member takes the tag off; its Tag Change says so.
    _as(MEMBER, "ec2").delete_tags(Resources=[CHECKOUT_APP], Tags=[{"Key": "cache-ingress"}])
    untagged = member_tag_change(CHECKOUT_APP)
    untagged["id"] = "member-untag-1"
    untagged["detail"]["tags"] = {"env": "prod"}

    revoked = _authorizer(member_world, POLICY_FILE=str(policy)).handle(untagged)

    assert ("orders", "revoked", MEMBER) in {
        (d.get("target"), d["outcome"], d.get("account")) for d in revoked["decisions"]
    }
    [cache_group] = _as(CACHE, "elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="orders-cache-sg"
    )["CacheSecurityGroups"]
    assert cache_group["EC2SecurityGroups"] == []
    assert _ledger(member_world).live(CHECKOUT_APP) == []


def test_a_members_entry_is_never_judged_gone_where_its_group_cannot_be_read(
    member_world: SeededWorld, tmp_path: Path
) -> None:
    from cache_ingress.ownership import Judging
    from cache_ingress.policy import parse_policy
    from cache_ingress.wiring import build_revoker

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(REVOKING_POLICY, encoding="utf-8")
    _authorizer(member_world, POLICY_FILE=str(policy_file)).handle(member_tag_change(CHECKOUT_APP))
    [entry] = _ledger(member_world).live(CHECKOUT_APP)
    # A reader of the cache account alone (no member settings): the member's group is not
    # found there, and must not count as gone.
    environment = {
        k: v for k, v in member_world.function_environment().items() if not k.startswith("MEMBER_")
    }
    revoker = build_revoker(Settings.from_environ(environment), function_clients(member_world))

    [decision] = revoker.settle(
        "sweep-1", [entry], Judging(), parse_policy(REVOKING_POLICY, source="t"), dry_run=False
    )

    assert decision.outcome != "revoked"
    assert decision.error_code == "MemberNotRead"
    assert _ledger(member_world).live(CHECKOUT_APP) == [entry]


def test_a_members_deleted_group_is_forwarded_and_its_grant_revoked_in_the_cache_account(
    member_world: SeededWorld, tmp_path: Path
) -> None:
    import copy
    import json as json_module

    from cache_ingress_tools.emulator import event_buses

    policy = tmp_path / "policy.yaml"
    policy.write_text(REVOKING_POLICY, encoding="utf-8")
    authorizer = _authorizer(member_world, POLICY_FILE=str(policy))
    assert _decisions(authorizer.handle(member_tag_change(CHECKOUT_APP)))[0][2] == "authorized"
    _as(MEMBER, "ec2").delete_security_group(GroupId=CHECKOUT_APP)
    sample = (
        Path(__file__).resolve().parents[2] / "events" / "cloudtrail-delete-security-group.json"
    )
    deleted = copy.deepcopy(json_module.loads(sample.read_text(encoding="utf-8")))
    deleted["id"], deleted["account"] = "member-delete-1", MEMBER
    deleted["detail"]["recipientAccountId"] = MEMBER
    deleted["detail"]["userIdentity"]["accountId"] = MEMBER
    deleted["detail"]["userIdentity"]["arn"] = f"arn:aws:sts::{MEMBER}:assumed-role/platform/bob"
    deleted["detail"]["requestParameters"]["groupId"] = CHECKOUT_APP

    # member.yaml's rule forwards the deletion; template.yaml's rule on the bus delivers it.
    assert member_world.members is not None
    event_buses.emit(MEMBER, REGION, deleted)
    [delivered] = event_buses.delivered(member_world.members.function_arn)
    summary = _authorizer(member_world, POLICY_FILE=str(policy)).handle(delivered)

    assert ("orders", "revoked", MEMBER) in {
        (d.get("target"), d["outcome"], d.get("account")) for d in summary["decisions"]
    }
    [cache_group] = _as(CACHE, "elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="orders-cache-sg"
    )["CacheSecurityGroups"]
    assert cache_group["EC2SecurityGroups"] == []
