"""The dead-letter envelope: what the function writes to the DLQ for a permanent failure.

It has the shape of Lambda's own on-failure destination record (`requestPayload` is the
original event, the error is in `responsePayload`), so the replay tool reads every message
in the queue with one reader. Pure: no AWS here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

ENVELOPE_VERSION = "1.0"
# Lambda's own conditions are RetriesExhausted and EventAgeExceeded; this one is ours.
FUNCTION_CONDITION = "DeadLetteredByFunction"
# SQS accepts larger bodies, but EventBridge events are at most 256 KiB: stay there.
BODY_LIMIT_BYTES = 256 * 1024


def function_envelope(
    event: object,
    *,
    error_type: str,
    error_message: str,
    request_id: str,
    function_arn: str,
    decisions: Sequence[Mapping[str, Any]] = (),
    now: datetime | None = None,
) -> dict[str, Any]:
    """An on-failure-shaped record of an event the function itself gave up on.

    `errorCodes` names the AWS error codes of the failed decisions (once each): they stay
    when the decisions are left out for size, and the replay tool selects by them.
    """
    codes = [d["error_code"] for d in decisions if isinstance(d.get("error_code"), str)]
    return {
        "version": ENVELOPE_VERSION,
        "timestamp": (now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": FUNCTION_CONDITION,
            "approximateInvokeCount": 1,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": {
            "errorType": error_type,
            "errorMessage": error_message,
            "errorCodes": list(dict.fromkeys(codes)),
            "decisions": list(decisions),
        },
    }


def envelope_body(envelope: dict[str, Any]) -> str:
    """Serialize within the size limit; decisions go first, the original event never."""
    body = json.dumps(envelope, separators=(",", ":"), default=str)
    if len(body.encode()) <= BODY_LIMIT_BYTES:
        return body
    response = dict(envelope["responsePayload"])
    omitted = len(response.get("decisions", []))
    response["decisions"] = []
    response["decisionsOmitted"] = omitted
    response["errorMessage"] = str(response.get("errorMessage", ""))[:1024]
    return json.dumps({**envelope, "responsePayload": response}, separators=(",", ":"), default=str)
