"""The embedded AWS's CloudTrail history: tagging calls are recorded as CloudTrail records
them, and LookupEvents answers through botocore's own serialisation and parsing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import moto
import pytest
from botocore.exceptions import ClientError

from cache_ingress.intake import read_trail_call
from cache_ingress_tools.emulator import cache_security_groups
from cache_ingress_tools.emulator.cloudtrail_history import (
    eventbridge_event,
    record_call,
    recorded_calls,
)

pytestmark = pytest.mark.emulation

REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    cache_security_groups.install()  # the one install every embedded AWS uses
    with moto.mock_aws():
        credentials = boto3.client("sts", region_name=REGION).assume_role(
            RoleArn=f"arn:aws:iam::{ACCOUNT}:role/platform", RoleSessionName="alice"
        )["Credentials"]
        as_platform = boto3.client(
            "ec2",
            region_name=REGION,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
        yield {
            "ec2": boto3.client("ec2", region_name=REGION),
            "platform": as_platform,
            "cloudtrail": boto3.client("cloudtrail", region_name=REGION),
        }


def lookup(cloudtrail: Any, **parameters: Any) -> list[dict[str, Any]]:
    return list(cloudtrail.lookup_events(**parameters)["Events"])


def test_create_tags_is_recorded_with_the_callers_identity(aws: dict[str, Any]) -> None:
    group = aws["ec2"].create_security_group(GroupName="app", Description="app")["GroupId"]
    aws["platform"].create_tags(
        Resources=[group],
        Tags=[{"Key": "cache-ingress", "Value": "orders"}, {"Key": "env", "Value": "prod"}],
    )

    record = recorded_calls(ACCOUNT, REGION)[-1]
    assert record["eventName"] == "CreateTags"
    assert record["eventSource"] == "ec2.amazonaws.com"
    assert record["userIdentity"]["type"] == "AssumedRole"
    assert record["userIdentity"]["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/platform/alice"
    assert record["requestParameters"] == {
        "resourcesSet": {"items": [{"resourceId": group}]},
        "tagSet": {
            "items": [{"key": "cache-ingress", "value": "orders"}, {"key": "env", "value": "prod"}]
        },
    }
    assert "errorCode" not in record
    # The function reads it exactly as it reads an event's detail.
    call = read_trail_call(record, "record")
    assert call.group_ids == (group,)
    assert call.requested_values("cache-ingress") == ("orders",)


def test_create_security_group_and_delete_tags_are_recorded(aws: dict[str, Any]) -> None:
    group = aws["platform"].create_security_group(
        GroupName="app",
        Description="app",
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": "cache-ingress", "Value": "x"}]}
        ],
    )["GroupId"]
    aws["platform"].delete_tags(Resources=[group], Tags=[{"Key": "cache-ingress"}])

    created, deleted = recorded_calls(ACCOUNT, REGION)[-2:]
    assert created["responseElements"]["groupId"] == group
    assert created["requestParameters"]["tagSpecificationSet"] == {
        "items": [
            {"resourceType": "security-group", "tags": [{"key": "cache-ingress", "value": "x"}]}
        ]
    }
    assert deleted["eventName"] == "DeleteTags"
    assert deleted["requestParameters"]["tagSet"] == {"items": [{"key": "cache-ingress"}]}


def test_a_failed_call_is_recorded_with_its_error(aws: dict[str, Any]) -> None:
    with pytest.raises(ClientError):
        aws["platform"].create_tags(
            Resources=["sg-00000000000000001"], Tags=[{"Key": "cache-ingress", "Value": "x"}]
        )

    record = recorded_calls(ACCOUNT, REGION)[-1]
    assert record["errorCode"] == "Client.InvalidGroup.NotFound"
    assert record["responseElements"] is None


def test_lookup_by_event_id_returns_the_record_as_cloudtrail_event_text(
    aws: dict[str, Any],
) -> None:
    group = aws["ec2"].create_security_group(GroupName="app", Description="app")["GroupId"]
    aws["platform"].create_tags(Resources=[group], Tags=[{"Key": "k", "Value": "v"}])
    record = recorded_calls(ACCOUNT, REGION)[-1]

    [event] = lookup(
        aws["cloudtrail"],
        LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": record["eventID"]}],
        MaxResults=1,
    )

    assert json.loads(event["CloudTrailEvent"]) == record
    assert event["EventName"] == "CreateTags"
    assert event["Username"] == "alice"
    assert event["Resources"] == [
        {"ResourceType": "AWS::EC2::SecurityGroup", "ResourceName": group}
    ]
    assert isinstance(event["EventTime"], datetime)
    assert (
        lookup(
            aws["cloudtrail"],
            LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": "no-such-event"}],
        )
        == []
    )


def test_lookup_filters_pages_newest_first_and_keeps_ninety_days(aws: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    for days, name in ((1, "new"), (30, "older"), (91, "gone")):
        record_call(
            {
                "eventID": name,
                "eventName": "CreateTags",
                "eventSource": "ec2.amazonaws.com",
                "eventTime": (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "awsRegion": REGION,
                "recipientAccountId": ACCOUNT,
                "userIdentity": {"arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/platform/bob"},
                "requestParameters": {"resourcesSet": {"items": []}},
            }
        )
    cloudtrail = aws["cloudtrail"]

    first = cloudtrail.lookup_events(MaxResults=1)
    second = cloudtrail.lookup_events(MaxResults=1, NextToken=first["NextToken"])
    assert [e["EventId"] for e in first["Events"] + second["Events"]] == ["new", "older"]
    assert "NextToken" not in second
    named = lookup(
        cloudtrail, LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "bob"}]
    )
    assert [e["EventId"] for e in named] == ["new", "older"]
    recent = lookup(cloudtrail, StartTime=now - timedelta(days=2))
    assert [e["EventId"] for e in recent] == ["new"]


@pytest.mark.parametrize(
    ("parameters", "code"),
    [
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"NextToken": "not-a-token"}, "InvalidNextTokenException"),
        (
            {
                "LookupAttributes": [
                    {"AttributeKey": "EventId", "AttributeValue": "a"},
                    {"AttributeKey": "EventName", "AttributeValue": "b"},
                ]
            },
            "InvalidLookupAttributesException",
        ),
        (
            {
                "StartTime": datetime(2026, 2, 1, tzinfo=UTC),
                "EndTime": datetime(2026, 1, 1, tzinfo=UTC),
            },
            "InvalidTimeRangeException",
        ),
    ],
)
def test_bad_lookups_get_the_modelled_faults(
    aws: dict[str, Any], parameters: dict[str, Any], code: str
) -> None:
    with pytest.raises(ClientError) as raised:
        aws["cloudtrail"].lookup_events(**parameters)
    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a_record_becomes_the_eventbridge_event_aws_sends(aws: dict[str, Any]) -> None:
    group = aws["ec2"].create_security_group(GroupName="app", Description="app")["GroupId"]
    aws["platform"].create_tags(Resources=[group], Tags=[{"Key": "k", "Value": "v"}])
    record = recorded_calls(ACCOUNT, REGION)[-1]

    event = eventbridge_event(record, event_id="e-1")

    assert event["source"] == "aws.ec2"
    assert event["detail-type"] == "AWS API Call via CloudTrail"
    assert (event["id"], event["account"], event["region"]) == ("e-1", ACCOUNT, REGION)
    assert event["detail"] == record
