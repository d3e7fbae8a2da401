"""CloudTrail adapter: one event's record from the event history (LookupEvents).

LookupEvents allows 2 requests a second per account and region, so it is called only for a
replayed event that would grant a principal-gated target, once per event; its client backs
off adaptively (`aws.CLOUDTRAIL_CONFIG`).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error


def lookup_record(cloudtrail: Any, event_id: str) -> str | None:
    """The CloudTrailEvent text of `event_id` in this region's history, or None if absent.

    Raises AwsCallError (transient for throttling and service faults).
    """
    try:
        response = cloudtrail.lookup_events(
            LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": event_id}],
            MaxResults=1,
        )
    except (ClientError, BotoCoreError) as exc:
        raise aws_call_error(exc, "cloudtrail:LookupEvents") from exc
    for event in response.get("Events") or ():
        if event.get("EventId") == event_id:
            record = event.get("CloudTrailEvent")
            return record if isinstance(record, str) else None
    return None
