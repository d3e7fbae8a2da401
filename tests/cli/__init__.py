"""Operator tooling tests. The factories below build dead-letter messages exactly as AWS
writes them (see shared AWS-FACTS.md, "What lands in the dead-letter queue"); the
function's own envelope is never built here, only produced by running the function.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:cache-ingress"
RULE_ARN = "arn:aws:events:us-east-1:123456789012:rule/cache-ingress-TagChange"


def on_failure_record(
    event: dict[str, Any],
    *,
    condition: str = "RetriesExhausted",
    invoke_count: int = 3,
    error_type: str = "TransientFailureError",
    error_message: str = "1 grant(s) failed transiently and will be retried: Throttling",
) -> str:
    """Lambda's on-failure destination record for an asynchronous invocation."""
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": "2026-11-20T10:47:12.345Z",
        "requestContext": {
            "requestId": "e4b46cbf-b738-4c9e-8f4c-0b1e2fd7a6f4",
            "functionArn": f"{FUNCTION_ARN}:$LATEST",
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": event,
    }
    if condition == "RetriesExhausted":
        record["responseContext"] = {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        record["responsePayload"] = {
            "errorMessage": error_message,
            "errorType": error_type,
            "requestId": "e4b46cbf-b738-4c9e-8f4c-0b1e2fd7a6f4",
            "stackTrace": ['  File "/var/task/cache_ingress/handler.py", line 20'],
        }
    return json.dumps(record)


def lambda_dlq_attributes(
    error_message: str = "Task timed out after 30.03 seconds",
) -> dict[str, Any]:
    """The attributes Lambda's legacy DeadLetterConfig puts on the bare event."""
    return {
        "RequestID": {"DataType": "String", "StringValue": "0b9b7c1e-66b1-4c3a-9d2e-1f0a9e3b7c55"},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String", "StringValue": error_message},
    }


def eventbridge_dlq_attributes(
    error_code: str = "SDK_CLIENT_ERROR", retry_attempts: int = 185
) -> dict[str, Any]:
    """The attributes an EventBridge rule target's DeadLetterConfig puts on the bare event."""

    def text(value: str) -> dict[str, str]:
        return {"DataType": "String", "StringValue": value}

    return {
        "RULE_ARN": text(RULE_ARN),
        "TARGET_ARN": text(FUNCTION_ARN),
        "ERROR_CODE": text(error_code),
        "ERROR_MESSAGE": text("Lambda returned TooManyRequestsException: Rate exceeded"),
        "EXHAUSTED_RETRY_CONDITION": text("MaximumRetryAttempts"),
        "RETRY_ATTEMPTS": text(str(retry_attempts)),
    }


def stub_stack(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    *,
    outputs: dict[str, str],
    parameters: dict[str, str],
) -> list[Stubber]:
    """CloudFormation answered by a stub that describes one stack (moto need not deploy the
    template); the returned list gets the stubber of each client the command makes."""
    original = boto3.Session.client
    stubbers: list[Stubber] = []

    def client(self: boto3.Session, service: str, *args: Any, **kwargs: Any) -> Any:
        made = original(self, service, *args, **kwargs)  # type: ignore[call-overload]
        if service == "cloudformation":
            stubber = Stubber(made)
            stack = {
                "StackName": name,
                "CreationTime": datetime(2026, 11, 1, tzinfo=UTC),
                "StackStatus": "UPDATE_COMPLETE",
                "Parameters": [
                    {"ParameterKey": key, "ParameterValue": value}
                    for key, value in parameters.items()
                ],
                "Outputs": [
                    {"OutputKey": key, "OutputValue": value} for key, value in outputs.items()
                ],
            }
            stubber.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": name})
            stubber.activate()
            stubbers.append(stubber)
        return made

    monkeypatch.setattr(boto3.Session, "client", client)
    return stubbers
