"""A replayed event's principal against CloudTrail's record of the call: no AWS, the lookup
is a plain function. The rules: README "Replays and the principal" and SECURITY.md.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cache_ingress.errors import AwsCallError
from cache_ingress.intake import parse_event
from cache_ingress.models import FailureKind, ProvenanceStatus, TagRequest
from cache_ingress.provenance import verify
from tests.support.events import load_event

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def replayed() -> tuple[dict[str, Any], TagRequest]:
    event = load_event("cloudtrail-create-tags.json")
    request = parse_event(event)
    assert isinstance(request, TagRequest)
    return event["detail"], request


class Trail:
    """CloudTrail's history: event id -> record; counts the lookups."""

    def __init__(self, *records: dict[str, Any]) -> None:
        self.records = {r["eventID"]: json.dumps(r) for r in records}
        self.lookups: list[str] = []

    def __call__(self, event_id: str) -> str | None:
        self.lookups.append(event_id)
        return self.records.get(event_id)


def test_the_same_call_in_cloudtrail_verifies_the_principal() -> None:
    detail, request = replayed()
    trail = Trail(detail)
    provenance = verify(request, trail, now=NOW)
    assert provenance.status is ProvenanceStatus.VERIFIED
    assert trail.lookups == [detail["eventID"]]


def _another_principal(record: dict[str, Any]) -> None:
    record["userIdentity"]["arn"] = "arn:aws:sts::123456789012:assumed-role/dev/m"


def _other_tags(record: dict[str, Any]) -> None:
    record["requestParameters"]["tagSet"]["items"][0]["value"] = "orders"


def _another_group(record: dict[str, Any]) -> None:
    items = record["requestParameters"]["resourcesSet"]["items"]
    items.append({"resourceId": "sg-00000000000000001"})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_another_principal, "principal"),
        (_other_tags, "tags"),
        (_another_group, "security groups"),
        (lambda d: d.update(eventName="DeleteTags"), "event name"),
        (lambda d: d.update(eventSource="workspaces.amazonaws.com"), "event source"),
        (lambda d: d.update(awsRegion="eu-west-1"), "region"),
        (lambda d: d.update(recipientAccountId="210987654321"), "account"),
    ],
)
def test_a_record_that_differs_refutes_and_names_what_differs(change: Any, named: str) -> None:
    detail, request = replayed()
    recorded = json.loads(json.dumps(detail))
    change(recorded)
    provenance = verify(request, Trail(recorded), now=NOW)
    assert provenance.status is ProvenanceStatus.REFUTED
    assert provenance.reason.endswith(named) or f"{named}," in provenance.reason


def test_no_record_refutes() -> None:
    _, request = replayed()
    provenance = verify(request, Trail(), now=NOW)
    assert provenance.status is ProvenanceStatus.REFUTED
    assert "CloudTrail has no event" in provenance.reason


def test_a_recorded_failed_call_refutes() -> None:
    detail, request = replayed()
    provenance = verify(
        request, Trail({**detail, "errorCode": "Client.UnauthorizedOperation"}), now=NOW
    )
    assert provenance.status is ProvenanceStatus.REFUTED
    assert "failed call" in provenance.reason


def test_an_unreadable_record_refutes() -> None:
    detail, request = replayed()

    def lookup(_: str) -> str:
        return "[not a record"

    assert verify(request, lookup, now=NOW).status is ProvenanceStatus.REFUTED
    assert verify(request, lambda _: json.dumps(["a"]), now=NOW).status is ProvenanceStatus.REFUTED
    broken = json.dumps({**detail, "requestParameters": None})
    assert verify(request, lambda _: broken, now=NOW).status is ProvenanceStatus.REFUTED


def test_a_call_beyond_ninety_days_is_refuted_without_a_lookup() -> None:
    detail, request = replayed()
    trail = Trail(detail)
    provenance = verify(request, trail, now=NOW + timedelta(days=91))
    assert provenance.status is ProvenanceStatus.REFUTED
    assert "90-day" in provenance.reason
    assert trail.lookups == []


def test_an_event_without_an_event_id_is_refuted_without_a_lookup() -> None:
    event = load_event("cloudtrail-create-tags.json")
    del event["detail"]["eventID"]
    request = parse_event(event)
    assert isinstance(request, TagRequest)
    trail = Trail()
    assert verify(request, trail, now=NOW).status is ProvenanceStatus.REFUTED
    assert trail.lookups == []


@pytest.mark.parametrize(
    ("transient", "failure"), [(True, FailureKind.TRANSIENT), (False, FailureKind.PERMANENT)]
)
def test_a_lookup_that_fails_is_unavailable_not_refuted(
    transient: bool, failure: FailureKind
) -> None:
    _, request = replayed()

    def lookup(_: str) -> str:
        raise AwsCallError("cloudtrail:LookupEvents failed: X", code="X", transient=transient)

    provenance = verify(request, lookup, now=NOW)
    assert provenance.status is ProvenanceStatus.UNAVAILABLE
    assert (provenance.failure, provenance.error_code) == (failure, "X")
