"""Tag groups as a given principal on the embedded AWS, and get the event AWS would send.

moto's STS hands out credentials for any role; calls made with them are recorded by the
embedded AWS's CloudTrail history under that role's session ARN. The EventBridge event of
a call is built from that record, exactly as the CloudTrail rule would deliver it.
"""

from __future__ import annotations

import json
from typing import Any

import boto3

from cache_ingress_tools.emulator.cloudtrail_history import eventbridge_event, recorded_calls
from tests.support.events import ACCOUNT, REGION

PLATFORM = ("platform", "alice")  # arn:aws:sts::123456789012:assumed-role/platform/alice
DEVELOPER = ("developer", "alice")  # a session name anyone can choose


class Tagger:
    """EC2 as one principal (an assumed role's session)."""

    def __init__(self, role: str, session: str, *, endpoint_url: str | None = None) -> None:
        sts = boto3.client("sts", region_name=REGION, endpoint_url=endpoint_url)
        credentials = sts.assume_role(
            RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName=session
        )["Credentials"]
        self.arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}"
        self.endpoint_url = endpoint_url
        self.ec2 = boto3.client(
            "ec2",
            region_name=REGION,
            endpoint_url=endpoint_url,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    def tag(self, group_id: str, tags: dict[str, str]) -> dict[str, Any]:
        """CreateTags; returns the EventBridge event of the call."""
        self.ec2.create_tags(
            Resources=[group_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )
        return last_call_event(self.endpoint_url)

    def untag(self, group_id: str, key: str, value: str | None = None) -> dict[str, Any]:
        """DeleteTags of one key (only when it has `value`, if given); returns the event."""
        tag = {"Key": key} if value is None else {"Key": key, "Value": value}
        self.ec2.delete_tags(Resources=[group_id], Tags=[tag])
        return last_call_event(self.endpoint_url)


def last_call_event(endpoint_url: str | None = None) -> dict[str, Any]:
    """The EventBridge event of the newest call the embedded AWS recorded: read in process,
    or, for an embedded AWS at `endpoint_url`, through LookupEvents as any client would."""
    if endpoint_url is None:
        return eventbridge_event(recorded_calls(ACCOUNT, REGION)[-1])
    cloudtrail = boto3.client("cloudtrail", region_name=REGION, endpoint_url=endpoint_url)
    [newest] = cloudtrail.lookup_events(MaxResults=1)["Events"]
    return eventbridge_event(json.loads(newest["CloudTrailEvent"]))
