from __future__ import annotations

import pytest

from cache_ingress.errors import MalformedEventError
from cache_ingress.intake import MAX_GROUPS_PER_EVENT, Ignored, parse_event
from cache_ingress.models import TagRequest
from tests.support.events import (
    ORDERS_GROUP,
    PAYMENTS_GROUP,
    PLATFORM_PRINCIPAL,
    create_tags,
    load_event,
    tag_change,
)

pytestmark = pytest.mark.unit


def test_tag_change_names_the_group_and_no_principal() -> None:
    request = parse_event(load_event("tag-change-authorized.json"))

    assert request == TagRequest(
        event_id="5f1d3c1a-0001-4b6e-9d3e-000000000001",
        source="aws.tag",
        detail_type="Tag Change on Resource",
        account="123456789012",
        region="us-east-1",
        group_ids=(ORDERS_GROUP,),
    )


def test_replayed_event_keeps_its_replay_name_and_is_otherwise_the_same() -> None:
    original = parse_event(load_event("tag-change-authorized.json"))
    replayed = parse_event(load_event("tag-change-replayed.json"))

    assert isinstance(replayed, TagRequest)
    assert replayed.replay_name == "incident-2026-11-20"
    assert replayed.group_ids == original.group_ids  # type: ignore[union-attr]


def test_tag_change_version_may_be_a_float() -> None:
    event = tag_change()
    event["detail"]["version"] = 4.0
    assert isinstance(parse_event(event), TagRequest)


def test_cloudtrail_keeps_only_security_groups_and_the_principal() -> None:
    request = parse_event(load_event("cloudtrail-create-tags.json"))

    assert isinstance(request, TagRequest)
    assert request.group_ids == (PAYMENTS_GROUP,)
    assert request.principal == PLATFORM_PRINCIPAL
    assert request.event_name == "CreateTags"


def test_cloudtrail_create_security_group_reads_the_new_group_id() -> None:
    request = parse_event(load_event("cloudtrail-create-security-group.json"))

    assert isinstance(request, TagRequest)
    assert request.group_ids == (ORDERS_GROUP,)
    assert request.event_name == "CreateSecurityGroup"


def test_delete_tags_items_without_values_are_read() -> None:
    request = parse_event(load_event("cloudtrail-delete-tags.json"))
    assert isinstance(request, TagRequest)
    assert request.event_name == "DeleteTags"


def test_duplicate_group_ids_are_named_once_in_order() -> None:
    request = parse_event(create_tags([PAYMENTS_GROUP, ORDERS_GROUP, PAYMENTS_GROUP]))
    assert isinstance(request, TagRequest)
    assert request.group_ids == (PAYMENTS_GROUP, ORDERS_GROUP)


@pytest.mark.parametrize(
    ("event_name", "reason_part"),
    [
        ("cloudtrail-failed-call.json", "failed with Client.UnauthorizedOperation"),
        ("tag-change-other-resource.json", "ec2/instance"),
    ],
)
def test_events_that_ask_nothing_are_ignored_with_a_reason(
    event_name: str, reason_part: str
) -> None:
    result = parse_event(load_event(event_name))
    assert isinstance(result, Ignored)
    assert reason_part in result.reason


def test_other_sources_are_ignored() -> None:
    event = tag_change(source="custom.app")
    result = parse_event(event)
    assert isinstance(result, Ignored)
    assert "custom.app" in result.reason


def test_other_cloudtrail_calls_are_ignored() -> None:
    result = parse_event(create_tags([ORDERS_GROUP], name="RunInstances"))
    assert isinstance(result, Ignored)
    assert "RunInstances" in result.reason


def test_a_call_naming_no_security_group_is_ignored() -> None:
    result = parse_event(create_tags(["i-0dc224bad2cb08740", "vol-0123456789abcdef0"]))
    assert isinstance(result, Ignored)
    assert "named no security group" in result.reason


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.pop("detail"), "event.detail must be an object"),
        (lambda e: e.update(id=7), "event.id must be a non-empty string"),
        (lambda e: e.update(resources="arn"), "event.resources must be a list"),
        (lambda e: e.update(resources=[]), "names no security group"),
        (lambda e: e.update(resources=["arn:aws:s3:::bucket"]), "not an EC2 security-group ARN"),
        (
            lambda e: e.update(
                resources=["arn:aws:ec2:us-east-1:123456789012:security-group/sg-NOPE"]
            ),
            "not a security group id",
        ),
        (lambda e: e["detail"].update(tags=["a"]), "event.detail.tags must be an object"),
    ],
)
def test_malformed_tag_change_names_the_field(mutate: object, message: str) -> None:
    event = tag_change()
    mutate(event)  # type: ignore[operator]
    with pytest.raises(MalformedEventError, match=message):
        parse_event(event)


@pytest.mark.parametrize("body", [None, [], "text", 42])
def test_non_object_events_are_malformed(body: object) -> None:
    with pytest.raises(MalformedEventError, match="event must be an object"):
        parse_event(body)


def test_malformed_cloudtrail_items_name_the_index() -> None:
    event = create_tags([PAYMENTS_GROUP])
    event["detail"]["requestParameters"]["resourcesSet"]["items"].append({"resourceId": 5})
    with pytest.raises(MalformedEventError, match=r"items\[1\]\.resourceId"):
        parse_event(event)


def test_too_many_groups_in_one_event_is_malformed() -> None:
    ids = [f"sg-{index:017x}" for index in range(MAX_GROUPS_PER_EVENT + 1)]
    with pytest.raises(MalformedEventError, match="at most 1000"):
        parse_event(create_tags(ids))


def test_the_catalogued_malformed_sample_is_malformed() -> None:
    with pytest.raises(MalformedEventError, match=r"event\.detail"):
        parse_event(load_event("malformed-missing-detail.json"))
