"""Recognising every dead-letter format, each carried through SQS (moto) as AWS sends it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cache_ingress.authorizer import Authorizer
from cache_ingress.aws import Clients
from cache_ingress.envelope import FUNCTION_CONDITION
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from cache_ingress_tools.dead_letters import DeadLetter, Origin, Unrecognised, read_dead_letter
from cache_ingress_tools.emulator.scenario import SeededWorld
from cache_ingress_tools.replay import Selection
from tests.cli import (
    eventbridge_dlq_attributes,
    lambda_dlq_attributes,
    on_failure_record,
)
from tests.support.events import (
    INVENTORY_GROUP,
    ORDERS_GROUP,
    PAYMENTS_GROUP,
    create_tags,
    load_event,
    tag_change,
)

pytestmark = pytest.mark.cli


@pytest.fixture
def through_sqs(clients: dict[str, Any], world: SeededWorld) -> Callable[..., dict[str, Any]]:
    """Send a body (and attributes) to the queue and receive it back as the tool will."""

    def send_and_receive(body: str, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        sqs = clients["sqs"]
        sqs.send_message(
            QueueUrl=world.dead_letter_queue_url,
            MessageBody=body,
            **({"MessageAttributes": attributes} if attributes else {}),
        )
        [message] = sqs.receive_message(
            QueueUrl=world.dead_letter_queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )["Messages"]
        return dict(message)

    return send_and_receive


def authorizer(world: SeededWorld, clients: dict[str, Any]) -> Authorizer:
    settings = Settings.from_environ(world.function_environment())
    injected = Clients(settings.region)
    for name, client in clients.items():
        injected.inject(name, client)
    return build_authorizer(settings, injected)


def recognised(message: dict[str, Any]) -> DeadLetter:
    letter = read_dead_letter(message)
    assert isinstance(letter, DeadLetter), letter
    return letter


def test_lambda_on_failure_record_after_retries(through_sqs: Callable[..., Any]) -> None:
    event = tag_change(ORDERS_GROUP, event_id="e-retries-1")
    sent = datetime.now(UTC)

    letter = recognised(through_sqs(on_failure_record(event, invoke_count=3)))

    assert letter.origin is Origin.LAMBDA_RETRIES_EXHAUSTED
    assert letter.event == event
    assert letter.event_id == "e-retries-1"
    assert letter.source == "aws.tag"
    assert letter.security_groups == (ORDERS_GROUP,)
    assert letter.error_type == "TransientFailureError"
    assert letter.error_message is not None
    assert "failed transiently" in letter.error_message
    assert letter.attempts == 3
    assert letter.receive_count == 1
    assert letter.event_time == datetime(2026, 11, 20, 10, 41, 38, tzinfo=UTC)
    assert letter.dead_lettered_at is not None
    assert abs(letter.dead_lettered_at - sent) < timedelta(minutes=1)
    assert letter.intake_note is None


def test_lambda_on_failure_record_for_an_event_too_old(through_sqs: Callable[..., Any]) -> None:
    event = create_tags([PAYMENTS_GROUP, "i-0dc224bad2cb08740"], event_id="e-old-1")

    letter = recognised(through_sqs(on_failure_record(event, condition="EventAgeExceeded")))

    assert letter.origin is Origin.LAMBDA_EVENT_TOO_OLD
    assert letter.error_type == "EventAgeExceeded"
    assert letter.error_message is None
    # The instance id in the same CreateTags call is not a security group.
    assert letter.security_groups == (PAYMENTS_GROUP,)
    assert letter.source == "aws.ec2"


def test_lambda_dead_letter_config_raw_event_with_attributes(
    through_sqs: Callable[..., Any],
) -> None:
    event = tag_change(ORDERS_GROUP, event_id="e-lambda-dlq-1")

    letter = recognised(through_sqs(json.dumps(event), lambda_dlq_attributes()))

    assert letter.origin is Origin.LAMBDA_DLQ
    assert letter.event == event
    assert letter.error_type == "200"
    assert letter.error_message == "Task timed out after 30.03 seconds"
    assert letter.attempts is None
    assert letter.security_groups == (ORDERS_GROUP,)


def test_eventbridge_dead_letter_raw_event_with_attributes(
    through_sqs: Callable[..., Any],
) -> None:
    event = create_tags([PAYMENTS_GROUP], event_id="e-eb-1")

    letter = recognised(
        through_sqs(json.dumps(event), eventbridge_dlq_attributes("NO_PERMISSIONS", 12))
    )

    assert letter.origin is Origin.EVENTBRIDGE_DELIVERY_FAILURE
    assert letter.event == event
    assert letter.error_type == "NO_PERMISSIONS"
    assert letter.error_message == "Lambda returned TooManyRequestsException: Rate exceeded"
    assert letter.attempts == 12
    assert letter.event_id == "e-eb-1"


def test_the_functions_own_envelope_from_a_real_failure(
    world: SeededWorld, clients: dict[str, Any]
) -> None:
    # Given an event whose cache security group does not exist, run through the function
    event = load_event("tag-change-cache-group-missing.json")
    summary = authorizer(world, clients).handle(event)
    assert summary["status"] == "dead-lettered"

    # When the message it dead-lettered is read back
    [message] = clients["sqs"].receive_message(
        QueueUrl=world.dead_letter_queue_url,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )["Messages"]
    letter = recognised(message)

    # Then it is the function's own, with the original event and the reason
    assert json.loads(message["Body"])["requestContext"]["condition"] == FUNCTION_CONDITION
    assert letter.origin is Origin.DEAD_LETTERED_BY_FUNCTION
    assert letter.event == event
    assert letter.event_id == event["id"]
    assert letter.security_groups == (INVENTORY_GROUP,)
    assert letter.error_type == "GrantFailed"
    assert letter.error_message is not None
    assert "CacheSecurityGroupNotFound" in letter.error_message
    assert letter.attempts == 1


def test_a_vpc_failure_is_selectable_by_its_error_code_which_its_message_lacks(
    world: SeededWorld, clients: dict[str, Any]
) -> None:
    # Given an event naming a replication group that does not exist, run through the function
    event = load_event("vpc-tag-change-cache-missing.json")
    summary = authorizer(world, clients).handle(event)
    assert summary["status"] == "dead-lettered"
    [message] = clients["sqs"].receive_message(
        QueueUrl=world.dead_letter_queue_url, MessageSystemAttributeNames=["All"]
    )["Messages"]

    letter = recognised(message)

    # Then the code travels in the envelope, though the message does not say it
    assert letter.error_codes == ("ReplicationGroupNotFoundFault",)
    assert letter.error_message is not None
    assert "ReplicationGroupNotFoundFault" not in letter.error_message
    assert letter.as_dict(datetime.now(UTC))["errorCodes"] == ["ReplicationGroupNotFoundFault"]
    assert Selection(errors=("replicationgroupnotfoundfault",)).matches(letter, datetime.now(UTC))
    assert not Selection(errors=("CacheClusterNotFound",)).matches(letter, datetime.now(UTC))


def test_a_malformed_event_is_recognised_with_the_intake_reason(
    world: SeededWorld, clients: dict[str, Any]
) -> None:
    event = load_event("malformed-missing-detail.json")
    authorizer(world, clients).handle(event)
    [message] = clients["sqs"].receive_message(
        QueueUrl=world.dead_letter_queue_url, MessageSystemAttributeNames=["All"]
    )["Messages"]

    letter = recognised(message)

    assert letter.origin is Origin.DEAD_LETTERED_BY_FUNCTION
    assert letter.error_type == "MalformedEvent"
    assert letter.security_groups == ()
    assert letter.intake_note is not None
    assert letter.intake_note.startswith("malformed event: event.detail")


def test_an_ignored_event_names_no_groups_and_says_why(through_sqs: Callable[..., Any]) -> None:
    event = load_event("tag-change-other-resource.json")

    letter = recognised(through_sqs(json.dumps(event), lambda_dlq_attributes()))

    assert letter.security_groups == ()
    assert letter.intake_note is not None
    assert letter.intake_note.startswith("ignored: tag change on")


@pytest.mark.parametrize(
    ("body", "attributes", "reason"),
    [
        ("not json at all", None, "the body is not JSON"),
        ("[1, 2, 3]", None, "the body is JSON list, not an object"),
        (
            json.dumps(tag_change()),
            None,
            "neither a Lambda invocation record nor an event with Lambda or EventBridge",
        ),
        (
            on_failure_record(tag_change(), condition="SomethingNew"),
            None,
            "invocation record with unknown condition 'SomethingNew'",
        ),
        (
            json.dumps({"requestContext": "x", "requestPayload": {}}),
            None,
            "requestContext of the invocation record is not an object",
        ),
    ],
)
def test_unrecognisable_bodies_say_why(
    through_sqs: Callable[..., Any], body: str, attributes: dict[str, Any] | None, reason: str
) -> None:
    message = through_sqs(body, attributes)

    result = read_dead_letter(message)

    assert isinstance(result, Unrecognised)
    assert reason in result.reason
    assert result.message_id == message["MessageId"]
    assert result.body_preview == body[:200]


def test_a_replay_wrapper_is_unwrapped_to_the_event_inside() -> None:
    event = tag_change(ORDERS_GROUP, event_id="e-wrapped")
    body = on_failure_record({"cache-ingress-replay": {"event": event}})

    letter = recognised({"MessageId": "m-1", "Body": body})

    assert letter.event == event
    assert letter.security_groups == (ORDERS_GROUP,)


def test_age_is_measured_from_the_event_time_and_serialises() -> None:
    event = tag_change(ORDERS_GROUP, time="2026-11-20T10:00:00Z")
    letter = recognised({"MessageId": "m-2", "Body": on_failure_record(event)})
    now = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)

    fields = letter.as_dict(now)

    assert letter.age(now) == timedelta(hours=2, minutes=30)
    assert fields["ageSeconds"] == 9000
    assert fields["origin"] == "lambda-retries-exhausted"
    assert fields["securityGroups"] == [ORDERS_GROUP]
    # Without SentTimestamp, the record's own timestamp says when it was dead-lettered.
    assert fields["deadLetteredAt"] == "2026-11-20T10:47:12+00:00"
    assert json.loads(json.dumps(fields)) == fields
