"""Lambda entry point: wire Powertools, hand the event to the Authorizer, return its summary."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from cache_ingress.intake import unwrap_replay
from cache_ingress.observability import logger, metrics
from cache_ingress.wiring import current_authorizer


# No @tracer.capture_lambda_handler: its "## lambda_handler" subsegment cost about a quarter
# of a one-call event's CPU (docs/benchmarks.md). Importing `observability` creates the
# Tracer, which patches botocore, so every AWS call is still a subsegment of Lambda's own
# function segment, and Lambda records a raised error there. Cold starts are counted by
# the ColdStart metric (one extra EMF document, on cold starts only) and shown by Lambda's
# Initialization subsegment.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event_or_replay, replayed = unwrap_replay(event)
    return current_authorizer().handle(event_or_replay, context, replay=replayed)
