"""Several accounts in the embedded AWS (emulator/accounts.py, event_buses.py, policies.py,
organization.py): STS decides by the trust policy, EventBridge forwards across accounts as
AWS does, and the member scenario deploys both templates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cache_ingress_tools.emulator import event_buses
from cache_ingress_tools.emulator.organization import account_client
from cache_ingress_tools.emulator.policies import Caller, refusal
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.support.events import create_tags, tag_change
from tests.support.fixtures import REGION, TEST_CLIENT_CONFIG, function_clients, shared_session

pytestmark = pytest.mark.emulation

CACHE = "123456789012"
MEMBER = "111122223333"
UNLISTED_MEMBER = "444455556666"
OUTSIDER = "210987654321"
CHECKOUT_APP = "sg-0d1e2f3a4b5c6d7e8"


def _as(account: str, service: str) -> Any:
    return account_client(
        lambda name: shared_session().client(name, region_name=REGION, config=TEST_CLIENT_CONFIG),
        service,
        account,
    )


def member_tag_change(account: str = MEMBER, group: str = CHECKOUT_APP, **changes: Any) -> Any:
    event = tag_change(group, event_id=f"member-{account}-{group}")
    event["account"] = account
    event["resources"] = [f"arn:aws:ec2:{REGION}:{account}:security-group/{group}"]
    event.update(changes)
    return event


# --- policies, as pure rules -------------------------------------------------------------

TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{CACHE}:root"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"sts:ExternalId": "xid", "aws:PrincipalOrgID": "o-a1b2c3d4e5"},
                "ArnEquals": {"aws:PrincipalArn": [f"arn:aws:iam::{CACHE}:role/fn"]},
            },
        }
    ],
}
FUNCTION = Caller(f"arn:aws:iam::{CACHE}:role/fn", CACHE, "o-a1b2c3d4e5")


@pytest.mark.parametrize(
    ("caller", "external_id", "refused"),
    [
        (FUNCTION, "xid", None),
        (FUNCTION, "other", "no statement of the policy allows it"),
        (FUNCTION, None, "no statement of the policy allows it"),
        (Caller(f"arn:aws:iam::{CACHE}:role/admin", CACHE, "o-a1b2c3d4e5"), "xid", "no statement"),
        (Caller(f"arn:aws:iam::{CACHE}:role/fn", CACHE, None), "xid", "no statement"),
        (
            Caller(f"arn:aws:iam::{OUTSIDER}:role/fn", OUTSIDER, "o-a1b2c3d4e5"),
            "xid",
            "no statement",
        ),
    ],
)
def test_a_trust_policy_admits_only_the_named_role_with_the_external_id_and_organization(
    caller: Caller, external_id: str | None, refused: str | None
) -> None:
    found = refusal(TRUST, "sts:AssumeRole", caller, {"sts:ExternalId": external_id})

    assert found == refused if refused is None else refused in (found or "")


def test_an_unknown_condition_refuses_rather_than_passes() -> None:
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "sts:AssumeRole",
                "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            }
        ]
    }
    assert "IpAddress" in str(refusal(policy, "sts:AssumeRole", FUNCTION, {}))


def test_an_explicit_deny_wins() -> None:
    policy = {
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "events:PutEvents"},
            {"Sid": "NoOutsiders", "Effect": "Deny", "Principal": {"AWS": OUTSIDER}, "Action": "*"},
        ]
    }
    outsider = Caller(f"arn:aws:iam::{OUTSIDER}:root", OUTSIDER)
    assert refusal(policy, "events:PutEvents", outsider, {}) == "statement NoOutsiders denies it"
    assert refusal(policy, "events:PutEvents", FUNCTION, {}) is None


# --- the member scenario, deployed -------------------------------------------------------


def test_a_member_accounts_tag_change_reaches_the_function_unchanged(
    member_world: SeededWorld,
) -> None:
    assert member_world.members is not None
    event = member_tag_change()

    event_buses.emit(MEMBER, REGION, event)

    # member.yaml's rule forwarded it; template.yaml's rule on the bus sent it on: the same
    # event, its id, account and resources kept.
    assert event_buses.delivered(member_world.members.function_arn) == [event]


def test_the_cache_accounts_own_tag_change_reaches_the_function_from_its_default_bus(
    member_world: SeededWorld,
) -> None:
    assert member_world.members is not None
    event = tag_change()

    event_buses.emit(CACHE, REGION, event)

    assert event_buses.delivered(member_world.members.function_arn) == [event]


def test_events_of_no_interest_are_not_forwarded(member_world: SeededWorld) -> None:
    assert member_world.members is not None
    other_key = member_tag_change()
    other_key["detail"]["changed-tag-keys"] = ["env"]
    instance = member_tag_change()
    instance["detail"]["resource-type"] = "instance"

    for event in (other_key, instance):
        event_buses.emit(MEMBER, REGION, event)

    assert event_buses.delivered(member_world.members.function_arn) == []


def test_a_member_cannot_put_aws_events_or_anything_else_on_the_cache_bus(
    member_world: SeededWorld,
) -> None:
    assert member_world.members is not None
    events = _as(MEMBER, "events")
    forged = {
        "Source": "aws.tag",
        "DetailType": "Tag Change on Resource",
        "Detail": json.dumps(member_tag_change()["detail"]),
        "EventBusName": member_world.members.bus_arn,
    }
    custom = {**forged, "Source": "com.example.forged"}

    own_bus = {k: v for k, v in forged.items() if k != "EventBusName"}
    entries = events.put_events(Entries=[forged, custom, own_bus])["Entries"]

    assert [entry.get("ErrorCode") for entry in entries] == [
        "NotAuthorizedForSourceException",
        "AccessDeniedException",
        "NotAuthorizedForSourceException",
    ]
    assert event_buses.delivered(member_world.members.function_arn) == []


def test_an_account_outside_the_organization_is_not_admitted(member_world: SeededWorld) -> None:
    # A stranger deploys member.yaml's forwarding rule pointing at the cache bus.
    assert member_world.members is not None
    events = _as(OUTSIDER, "events")
    sqs = _as(OUTSIDER, "sqs")
    sqs.create_queue(QueueName="dlq")
    events.put_rule(Name="forward", EventPattern=json.dumps({"source": ["aws.tag"]}))
    events.put_targets(
        Rule="forward",
        Targets=[
            {
                "Id": "cache",
                "Arn": member_world.members.bus_arn,
                "DeadLetterConfig": {"Arn": f"arn:aws:sqs:{REGION}:{OUTSIDER}:dlq"},
            }
        ],
    )

    event_buses.emit(OUTSIDER, REGION, member_tag_change(OUTSIDER))

    assert event_buses.delivered(member_world.members.function_arn) == []
    queue = sqs.get_queue_url(QueueName="dlq")["QueueUrl"]
    [message] = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"])["Messages"]
    assert message["MessageAttributes"]["ERROR_CODE"]["StringValue"] == "NO_PERMISSIONS"
    assert json.loads(message["Body"])["account"] == OUTSIDER


def test_what_a_bus_received_from_another_account_is_never_sent_on_to_a_third(
    member_world: SeededWorld,
) -> None:
    # The cache account adds a rule sending everything on to an outsider's bus: one hop only.
    assert member_world.members is not None
    _as(OUTSIDER, "events").put_permission(
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "Anyone",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "events:PutEvents",
                        "Resource": f"arn:aws:events:{REGION}:{OUTSIDER}:event-bus/default",
                    }
                ],
            }
        )
    )
    outsider_sqs = _as(OUTSIDER, "sqs")
    queue = outsider_sqs.create_queue(QueueName="seen")["QueueUrl"]
    outsider_events = _as(OUTSIDER, "events")
    outsider_events.put_rule(Name="all", EventPattern=json.dumps({"source": ["aws.tag"]}))
    outsider_events.put_targets(
        Rule="all", Targets=[{"Id": "q", "Arn": f"arn:aws:sqs:{REGION}:{OUTSIDER}:seen"}]
    )
    cache_events = shared_session().client("events", region_name=REGION)
    cache_events.put_rule(
        Name="onward",
        EventBusName="cache-ingress",
        EventPattern=json.dumps({"source": ["aws.tag"]}),
    )
    cache_events.put_targets(
        Rule="onward",
        EventBusName="cache-ingress",
        Targets=[{"Id": "out", "Arn": f"arn:aws:events:{REGION}:{OUTSIDER}:event-bus/default"}],
    )

    event_buses.emit(MEMBER, REGION, member_tag_change())

    assert len(event_buses.delivered(member_world.members.function_arn)) == 1
    assert outsider_sqs.receive_message(QueueUrl=queue).get("Messages", []) == []


def test_every_account_is_seeded_with_its_own_groups(member_world: SeededWorld) -> None:
    def ids(account: str) -> set[str]:
        groups = _as(account, "ec2").describe_security_groups()["SecurityGroups"]
        return {g["GroupId"] for g in groups if g["GroupName"] != "default"}

    assert CHECKOUT_APP in ids(MEMBER)
    assert CHECKOUT_APP not in ids(CACHE)
    assert ids(UNLISTED_MEMBER) == {"sg-0e1f2a3b4c5d6e7f8"}
    assert member_world.members is not None
    [peering] = member_world.members.peerings[MEMBER]
    [found] = (
        shared_session()
        .client("ec2", region_name=REGION)
        .describe_vpc_peering_connections(VpcPeeringConnectionIds=[peering])[
            "VpcPeeringConnections"
        ]
    )
    assert found["Status"]["Code"] == "active"
    assert found["AccepterVpcInfo"]["OwnerId"] == MEMBER


def test_the_function_acts_as_its_execution_role(member_world: SeededWorld) -> None:
    identity = function_clients(member_world).get("sts").get_caller_identity()
    role = "cache-ingress-IngressFunctionRole-local"
    assert identity["Arn"] == f"arn:aws:sts::{CACHE}:assumed-role/{role}/IngressFunction"


def test_a_cache_rule_may_name_a_member_accounts_group(member_world: SeededWorld) -> None:
    ec2 = shared_session().client("ec2", region_name=REGION)
    ec2.authorize_security_group_ingress(
        GroupId="sg-0c1a2b3c4d5e6f701",
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 6379,
                "ToPort": 6379,
                "UserIdGroupPairs": [{"GroupId": "sg-0d2e3f4a5b6c7d8e9", "UserId": MEMBER}],
            }
        ],
    )
    with pytest.raises(Exception, match=r"InvalidGroup\.NotFound"):
        ec2.authorize_security_group_ingress(
            GroupId="sg-0c1a2b3c4d5e6f701",
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 6379,
                    "ToPort": 6379,
                    # That member's group, but said to be another account's: not found there.
                    "UserIdGroupPairs": [{"GroupId": "sg-0d2e3f4a5b6c7d8e9", "UserId": OUTSIDER}],
                }
            ],
        )


def test_a_member_accounts_tagging_call_reaches_the_function_and_other_calls_do_not(
    member_world: SeededWorld,
) -> None:
    assert member_world.members is not None
    call = create_tags([CHECKOUT_APP], event_id="member-call")
    call["account"] = MEMBER
    call["detail"]["recipientAccountId"] = MEMBER
    instance_only = create_tags(["i-0dc224bad2cb08740"], event_id="member-instance")
    instance_only["account"] = MEMBER
    other_key = create_tags([CHECKOUT_APP], event_id="member-other-key")
    other_key["account"] = MEMBER
    other_key["detail"]["requestParameters"]["tagSet"]["items"] = [{"key": "env", "value": "x"}]

    for event in (call, instance_only, other_key):
        event_buses.emit(MEMBER, REGION, event)

    # Matched inside CloudTrail's arrays (resourcesSet.items[].resourceId, tagSet.items[].key).
    assert event_buses.delivered(member_world.members.function_arn) == [call]
