"""Lambda entry point: wire Powertools, hand the event to the Authorizer, return its summary."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from cache_ingress.intake import unwrap_replay
from cache_ingress.observability import logger, metrics, tracer
from cache_ingress.wiring import current_authorizer


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
# The summary is logged decision by decision already; serializing it into every trace as
# well costs each event CPU time and copies principals into a second store.
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event_or_replay, replayed = unwrap_replay(event)
    return current_authorizer().handle(event_or_replay, context, dead_letter=not replayed)
