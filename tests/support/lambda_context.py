"""A Lambda context as the runtime passes it, with a clock the test controls."""

from __future__ import annotations

from dataclasses import dataclass

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:cache-ingress"


@dataclass
class FakeLambdaContext:
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    function_name: str = "cache-ingress"
    function_version: str = "$LATEST"
    invoked_function_arn: str = FUNCTION_ARN
    memory_limit_in_mb: int = 128
    log_group_name: str = "/aws/lambda/cache-ingress"
    log_stream_name: str = "2026/11/20/[$LATEST]abc"
    remaining_millis: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis
