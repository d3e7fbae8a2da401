"""Lambda entry point: wire Powertools, hand the event to the Authorizer, return its summary."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from cache_ingress.intake import unwrap_replay
from cache_ingress.observability import logger, metrics
from cache_ingress.wiring import current_authorizer


# No "## lambda_handler" subsegment, even when AWS calls are traced: it cost about a quarter
# of a one-call event's CPU (docs/benchmarks.md). With TraceAwsCalls on, importing
# `observability` creates the Tracer, which patches botocore, so every AWS call is a
# subsegment of Lambda's own function segment; either way Lambda records the invocation, its
# initialization and a raised error. Cold starts are also counted by the ColdStart metric
# (one extra EMF document, on cold starts only).
@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The event's id as correlation_id, as correlation_id_path=EVENT_BRIDGE ("id") sets it, read
    # directly: Powertools' JMESPath query builds its options and functions on every call
    # (about 13 us, a few percent of a one-call event).
    logger.set_correlation_id(event.get("id") if isinstance(event, dict) else None)
    event_or_replay, replayed = unwrap_replay(event)
    return current_authorizer().handle(event_or_replay, context, replay=replayed)
