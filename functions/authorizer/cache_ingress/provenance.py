"""Is a replayed event's principal real? CloudTrail's own record of the call decides.

An event replayed from the dead-letter queue or an EventBridge archive is a message anyone
able to write there could have written, `userIdentity` included. Its principal counts only
when CloudTrail's event history holds the same call under the same `eventID`: the same
event name and source, the same principal, the same security groups, the same tags, in the
same region and account, and the call succeeded.

The lookup itself is a port (`lookup`), so this module holds only the rules: no AWS here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cache_ingress.errors import AwsCallError, MalformedEventError
from cache_ingress.intake import read_trail_call
from cache_ingress.models import FailureKind, Provenance, ProvenanceStatus, TagRequest, TrailCall

# CloudTrail's event history (LookupEvents) keeps management events for 90 days.
HISTORY = timedelta(days=90)

# The CloudTrail record (its CloudTrailEvent text) of one event id, or None if there is none.
Lookup = Callable[[str], str | None]


def verify(request: TagRequest, lookup: Lookup, *, now: datetime | None = None) -> Provenance:
    """CloudTrail's answer about `request`'s principal. Never raises for an AWS failure:
    a lookup that could not be made is `UNAVAILABLE`, with its error code and failure kind.
    """
    claimed = request.trail
    if claimed is None:
        return _refuted("the event is not a CloudTrail record of a tagging call")
    if claimed.event_id is None:
        return _refuted("the event carries no CloudTrail eventID to look it up by")
    too_old = _beyond_history(claimed, now or datetime.now(UTC))
    if too_old is not None:
        return _refuted(too_old)
    try:
        record = lookup(claimed.event_id)
    except AwsCallError as exc:
        return Provenance(
            ProvenanceStatus.UNAVAILABLE,
            f"{exc}; nothing was granted for it, and the event can be replayed again",
            error_code=exc.code,
            failure=FailureKind.TRANSIENT if exc.transient else FailureKind.PERMANENT,
        )
    return compare(claimed, record)


def compare(claimed: TrailCall, record: str | None) -> Provenance:
    """The event's call against CloudTrail's record of the same event id."""
    event_id = claimed.event_id
    if record is None:
        return _refuted(
            f"CloudTrail has no event {event_id} (never made, made in another account or "
            "region, or older than its 90-day history)"
        )
    recorded = _read(record)
    if isinstance(recorded, str):
        return _refuted(f"CloudTrail's record of event {event_id} could not be read: {recorded}")
    if recorded.error_code is not None:
        return _refuted(
            f"CloudTrail records event {event_id} as a failed call ({recorded.error_code[:100]})"
        )
    differences = [
        name
        for name, ours, theirs in (
            ("event source", claimed.event_source, recorded.event_source),
            ("event name", claimed.event_name, recorded.event_name),
            ("principal", claimed.principal, recorded.principal),
            ("security groups", sorted(claimed.group_ids), sorted(recorded.group_ids)),
            ("tags", sorted(claimed.request_tags), sorted(recorded.request_tags)),
            ("region", claimed.region, recorded.region),
            ("account", claimed.account, recorded.account),
        )
        if ours != theirs
    ]
    if differences:
        return _refuted(
            f"CloudTrail's record of event {event_id} differs from the event in its "
            + ", ".join(differences)
        )
    return Provenance(
        ProvenanceStatus.VERIFIED,
        f"CloudTrail records event {event_id}: {recorded.event_name} by {recorded.principal}",
    )


def _read(record: str) -> TrailCall | str:
    """CloudTrail's record read as the event's detail is, or why it cannot be."""
    try:
        document = json.loads(record)
    except ValueError as exc:
        return str(exc)
    if not isinstance(document, dict):
        return "it is not a JSON object"
    try:
        return read_trail_call(document, "CloudTrail's record")
    except MalformedEventError as exc:
        return str(exc)


def _beyond_history(call: TrailCall, now: datetime) -> str | None:
    """Why the call cannot be in CloudTrail's history any more, or None if it may be."""
    if call.event_time is None:
        return None
    try:
        made = datetime.fromisoformat(call.event_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if made.tzinfo is None:
        made = made.replace(tzinfo=UTC)
    if now - made <= HISTORY:
        return None
    return (
        f"the call was made at {call.event_time}, beyond CloudTrail's 90-day event history, "
        "so it can no longer be verified"
    )


def _refuted(reason: str) -> Provenance:
    return Provenance(ProvenanceStatus.REFUTED, reason)
