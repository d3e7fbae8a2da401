"""Lambda entry point of the scheduled sweep: wire Powertools, run one reconciliation."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from cache_ingress.observability import logger, metrics, tracer
from cache_ingress.reconcile import current_reconciler


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
# The summary holds up to 100 findings and is logged already; a trace need not copy it.
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return current_reconciler().handle(event, context)
