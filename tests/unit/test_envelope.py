from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cache_ingress.envelope import (
    BODY_LIMIT_BYTES,
    FUNCTION_CONDITION,
    envelope_body,
    function_envelope,
)

pytestmark = pytest.mark.unit


def test_the_envelope_has_lambdas_on_failure_shape() -> None:
    event = {"id": "e-1", "source": "aws.tag"}
    envelope = function_envelope(
        event,
        error_type="PolicyInvalid",
        error_message="policy x: version: must be 1",
        request_id="req-1",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:f",
        decisions=[{"group_id": "sg-1", "outcome": "failed"}],
        now=datetime(2026, 11, 20, 10, 41, 38, tzinfo=UTC),
    )
    assert envelope == {
        "version": "1.0",
        "timestamp": "2026-11-20T10:41:38.000+00:00",
        "requestContext": {
            "requestId": "req-1",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:f",
            "condition": FUNCTION_CONDITION,
            "approximateInvokeCount": 1,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": {
            "errorType": "PolicyInvalid",
            "errorMessage": "policy x: version: must be 1",
            "errorCodes": [],
            "decisions": [{"group_id": "sg-1", "outcome": "failed"}],
        },
    }


def test_an_oversized_body_drops_decisions_but_keeps_the_event() -> None:
    event = {"id": "e-1", "detail": {"blob": "x" * 1000}}
    decisions = [{"reason": "y" * 1000}] * 400
    body = envelope_body(
        function_envelope(
            event,
            error_type="T",
            error_message="m" * 5000,
            request_id="r",
            function_arn="a",
            decisions=decisions,
        )
    )
    assert len(body.encode()) <= BODY_LIMIT_BYTES
    parsed = json.loads(body)
    assert parsed["requestPayload"] == event
    assert parsed["responsePayload"]["decisionsOmitted"] == 400
    assert len(parsed["responsePayload"]["errorMessage"]) == 1024


def test_the_failed_grants_error_codes_are_named_once_and_survive_dropped_decisions() -> None:
    # A VPC cache that does not exist: its reason has no error code in it, only the decision.
    missing = {
        "outcome": "failed",
        "reason": "replication group search-redis does not exist in us-east-1" + "z" * 2000,
        "error_code": "ReplicationGroupNotFoundFault",
    }
    throttled = {"outcome": "failed", "reason": "slow down", "error_code": "Throttling"}
    denied = {"outcome": "denied", "reason": "required-tags"}
    decisions = [missing, throttled, denied, missing] * 100

    body = envelope_body(
        function_envelope(
            {"id": "e-1"},
            error_type="GrantFailed",
            error_message="grants failed",
            request_id="r",
            function_arn="a",
            decisions=decisions,
        )
    )

    response = json.loads(body)["responsePayload"]
    assert response["decisionsOmitted"] == 400
    assert response["errorCodes"] == ["ReplicationGroupNotFoundFault", "Throttling"]
