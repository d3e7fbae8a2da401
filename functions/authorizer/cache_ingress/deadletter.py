"""SQS adapter: send an envelope to the dead-letter queue."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.envelope import envelope_body

SENDER = "cache-ingress"


class DeadLetterQueue:
    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def send(self, envelope: dict[str, Any], *, error_type: str) -> str:
        """Send and return the message id; raises AwsCallError if SQS did not take it."""
        try:
            response = self._sqs.send_message(
                QueueUrl=self._queue_url,
                MessageBody=envelope_body(envelope),
                MessageAttributes={
                    "Sender": {"DataType": "String", "StringValue": SENDER},
                    "ErrorType": {"DataType": "String", "StringValue": error_type[:256]},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws_call_error(exc, "sqs:SendMessage") from exc
        return str(response["MessageId"])
