"""Recognise a dead-letter message and recover the event it carries.

Four writers put messages in the dead-letter queue, in three body formats (see
AWS-FACTS.md, "What lands in the dead-letter queue"):

- Lambda's on-failure destination: an invocation record whose `requestPayload` is the event
  (`condition` RetriesExhausted or EventAgeExceeded);
- the function itself: the same record shape with condition `DeadLetteredByFunction`
  (`cache_ingress.envelope`);
- Lambda's legacy `DeadLetterConfig`: the bare event, with `RequestID`/`ErrorCode`/
  `ErrorMessage` message attributes;
- an EventBridge rule target's `DeadLetterConfig`: the bare event, with `RULE_ARN`,
  `TARGET_ARN`, `ERROR_CODE`, `ERROR_MESSAGE`, `EXHAUSTED_RETRY_CONDITION` and
  `RETRY_ATTEMPTS` message attributes.

Anything else is `Unrecognised`, with the reason: the replay tool reports it and never
deletes it. The security groups an event names are listed by the function's own intake
(`cache_ingress.intake.parse_event`), so the tool and the function never disagree. Pure: no
AWS here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from cache_ingress.envelope import FUNCTION_CONDITION
from cache_ingress.errors import MalformedEventError
from cache_ingress.intake import Ignored, parse_event, unwrap_replay

PREVIEW_CHARS = 200

LAMBDA_DLQ_ATTRIBUTES = ("RequestID", "ErrorCode", "ErrorMessage")
EVENTBRIDGE_DLQ_ATTRIBUTES = (
    "RULE_ARN",
    "TARGET_ARN",
    "ERROR_CODE",
    "ERROR_MESSAGE",
    "EXHAUSTED_RETRY_CONDITION",
    "RETRY_ATTEMPTS",
)


class Origin(StrEnum):
    """How a message got into the dead-letter queue."""

    LAMBDA_RETRIES_EXHAUSTED = "lambda-retries-exhausted"
    LAMBDA_EVENT_TOO_OLD = "lambda-event-too-old"
    LAMBDA_DLQ = "lambda-dlq"
    EVENTBRIDGE_DELIVERY_FAILURE = "eventbridge-delivery-failure"
    DEAD_LETTERED_BY_FUNCTION = "dead-lettered-by-function"


_RECORD_CONDITIONS = {
    "RetriesExhausted": Origin.LAMBDA_RETRIES_EXHAUSTED,
    "EventAgeExceeded": Origin.LAMBDA_EVENT_TOO_OLD,
    FUNCTION_CONDITION: Origin.DEAD_LETTERED_BY_FUNCTION,
}


# The event a scheduled EventBridge rule (ReconcileSchedule in template.yaml) sends.
SCHEDULE_SOURCE: Final = "aws.events"
SCHEDULE_DETAIL_TYPE: Final = "Scheduled Event"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A recognised dead-letter message: the original event and how it failed."""

    message_id: str
    origin: Origin
    event: Any
    event_id: str | None
    source: str | None
    detail_type: str | None
    security_groups: tuple[str, ...]
    error_type: str | None
    error_message: str | None
    attempts: int | None
    event_time: datetime | None
    dead_lettered_at: datetime | None
    receive_count: int | None
    # Why intake lists no groups: the event is ignored, or malformed (replay will fail again).
    intake_note: str | None = None
    # The function's intake refuses the event: no replay can ever succeed.
    malformed: bool = False
    # The AWS error codes of the grants that failed (the function's own envelope names them),
    # e.g. ReplicationGroupNotFoundFault, for which the error message has no word.
    error_codes: tuple[str, ...] = ()
    # The account the event comes from (a member account's, docs/multi-account.md).
    account: str | None = None

    @property
    def scheduled_run(self) -> bool:
        """A failed run of the scheduled reconciliation (its EventBridge schedule event), not
        a tag event: replaying it through the ingress function would only ignore it."""
        return self.source == SCHEDULE_SOURCE and self.detail_type == SCHEDULE_DETAIL_TYPE

    def age(self, now: datetime) -> timedelta | None:
        """Time since the event happened (since it was dead-lettered if it has no time)."""
        since = self.event_time or self.dead_lettered_at
        return None if since is None else now - since

    def as_dict(self, now: datetime) -> dict[str, Any]:
        age = self.age(now)
        fields: dict[str, Any] = {
            "messageId": self.message_id,
            "recognised": True,
            "origin": str(self.origin),
            "eventId": self.event_id,
            "source": self.source,
            "detailType": self.detail_type,
            "securityGroups": list(self.security_groups),
            "errorType": self.error_type,
            "errorMessage": self.error_message,
            "errorCodes": list(self.error_codes),
            "attempts": self.attempts,
            "eventTime": _iso(self.event_time),
            "deadLetteredAt": _iso(self.dead_lettered_at),
            "ageSeconds": None if age is None else int(age.total_seconds()),
            "receiveCount": self.receive_count,
            "account": self.account,
        }
        if self.intake_note is not None:
            fields["intakeNote"] = self.intake_note
        if self.scheduled_run:
            fields["scheduledRun"] = True
        return fields


@dataclass(frozen=True, slots=True)
class Unrecognised:
    """A message whose body is none of the known formats; it is reported, never deleted."""

    message_id: str
    reason: str
    body_preview: str
    dead_lettered_at: datetime | None
    receive_count: int | None

    def age(self, now: datetime) -> timedelta | None:
        return None if self.dead_lettered_at is None else now - self.dead_lettered_at

    def as_dict(self, now: datetime) -> dict[str, Any]:
        age = self.age(now)
        return {
            "messageId": self.message_id,
            "recognised": False,
            "reason": self.reason,
            "bodyPreview": self.body_preview,
            "deadLetteredAt": _iso(self.dead_lettered_at),
            "ageSeconds": None if age is None else int(age.total_seconds()),
            "receiveCount": self.receive_count,
        }


def read_dead_letter(message: Mapping[str, Any]) -> DeadLetter | Unrecognised:
    """Recognise one SQS message as returned by ReceiveMessage (Body, MessageAttributes,
    Attributes), or say why it cannot be.
    """
    message_id = str(message.get("MessageId", ""))
    body = message.get("Body", "")
    system = message.get("Attributes") or {}
    sent_at = _epoch_millis(system.get("SentTimestamp"))
    receive_count = _integer(system.get("ApproximateReceiveCount"))

    def unrecognised(reason: str) -> Unrecognised:
        return Unrecognised(message_id, reason, str(body)[:PREVIEW_CHARS], sent_at, receive_count)

    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        return unrecognised("the body is not JSON")
    if not isinstance(document, dict):
        return unrecognised(f"the body is JSON {type(document).__name__}, not an object")
    attributes = _string_attributes(message.get("MessageAttributes") or {})
    if "requestContext" in document and "requestPayload" in document:
        return _invocation_record(document, message_id, sent_at, receive_count, unrecognised)
    if "RULE_ARN" in attributes or "ERROR_CODE" in attributes:
        return _letter(
            message_id,
            Origin.EVENTBRIDGE_DELIVERY_FAILURE,
            document,
            error_type=attributes.get("ERROR_CODE"),
            error_message=attributes.get("ERROR_MESSAGE"),
            attempts=_integer(attributes.get("RETRY_ATTEMPTS")),
            dead_lettered_at=sent_at,
            receive_count=receive_count,
        )
    if "RequestID" in attributes or "ErrorCode" in attributes:
        return _letter(
            message_id,
            Origin.LAMBDA_DLQ,
            document,
            error_type=attributes.get("ErrorCode"),
            error_message=attributes.get("ErrorMessage"),
            attempts=None,
            dead_lettered_at=sent_at,
            receive_count=receive_count,
        )
    return unrecognised(
        "a JSON object that is neither a Lambda invocation record nor an event with "
        "Lambda or EventBridge dead-letter attributes"
    )


def _invocation_record(
    record: Mapping[str, Any],
    message_id: str,
    sent_at: datetime | None,
    receive_count: int | None,
    unrecognised: Callable[[str], Unrecognised],
) -> DeadLetter | Unrecognised:
    context = record["requestContext"]
    if not isinstance(context, Mapping):
        return unrecognised("requestContext of the invocation record is not an object")
    condition = context.get("condition")
    origin = _RECORD_CONDITIONS.get(condition) if isinstance(condition, str) else None
    if origin is None:
        return unrecognised(f"invocation record with unknown condition {condition!r}")
    response = record.get("responsePayload")
    response = response if isinstance(response, Mapping) else {}
    error_type = _optional_text(response.get("errorType"))
    if error_type is None and origin is Origin.LAMBDA_EVENT_TOO_OLD:
        error_type = "EventAgeExceeded"
    return _letter(
        message_id,
        origin,
        record["requestPayload"],
        error_type=error_type,
        error_message=_optional_text(response.get("errorMessage")),
        attempts=_integer(context.get("approximateInvokeCount")),
        dead_lettered_at=sent_at or _timestamp(record.get("timestamp")),
        receive_count=receive_count,
        error_codes=_error_codes(response),
    )


def _error_codes(response: Mapping[str, Any]) -> tuple[str, ...]:
    """`errorCodes` of the function's envelope, or (in an envelope written before it had
    them) the `error_code` of each decision it carries."""
    listed = response.get("errorCodes")
    if not isinstance(listed, list):
        decisions = response.get("decisions")
        listed = [
            decision.get("error_code")
            for decision in (decisions if isinstance(decisions, list) else [])
            if isinstance(decision, Mapping)
        ]
    return tuple(dict.fromkeys(code for code in listed if isinstance(code, str) and code))


def _letter(
    message_id: str,
    origin: Origin,
    payload: object,
    *,
    error_type: str | None,
    error_message: str | None,
    attempts: int | None,
    dead_lettered_at: datetime | None,
    receive_count: int | None,
    error_codes: tuple[str, ...] = (),
) -> DeadLetter:
    event, _ = unwrap_replay(payload)
    raw = event if isinstance(event, Mapping) else {}
    event_id = _optional_text(raw.get("id"))
    source = _optional_text(raw.get("source"))
    detail_type = _optional_text(raw.get("detail-type"))
    groups: tuple[str, ...] = ()
    note = None
    malformed = False
    try:
        parsed = parse_event(event)
    except MalformedEventError as exc:
        note = f"malformed event: {exc}"
        malformed = True
    else:
        if isinstance(parsed, Ignored):
            note = f"ignored: {parsed.reason}"
        else:
            groups = parsed.group_ids
        event_id, source, detail_type = parsed.event_id, parsed.source, parsed.detail_type
    return DeadLetter(
        message_id=message_id,
        origin=origin,
        event=event,
        event_id=event_id,
        source=source,
        detail_type=detail_type,
        security_groups=groups,
        error_type=error_type,
        error_message=error_message,
        attempts=attempts,
        event_time=_timestamp(raw.get("time")),
        dead_lettered_at=dead_lettered_at,
        receive_count=receive_count,
        intake_note=note,
        malformed=malformed,
        account=_optional_text(raw.get("account")),
        error_codes=error_codes,
    )


def _string_attributes(attributes: Mapping[str, Any]) -> dict[str, str]:
    values = {}
    for name, attribute in attributes.items():
        if isinstance(attribute, Mapping) and isinstance(attribute.get("StringValue"), str):
            values[str(name)] = attribute["StringValue"]
    return values


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _epoch_millis(value: object) -> datetime | None:
    millis = _integer(value)
    return None if millis is None else datetime.fromtimestamp(millis / 1000, UTC)


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")
