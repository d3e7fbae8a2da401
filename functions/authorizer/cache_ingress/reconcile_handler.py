"""Lambda entry point of the scheduled sweep: wire Powertools, run one reconciliation."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from cache_ingress.observability import logger, metrics, trace_handler
from cache_ingress.reconcile import current_reconciler


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
# A "## lambda_handler" subsegment when AWS calls are traced; the summary (up to 100
# findings) is logged already, so the trace does not copy it.
@trace_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return current_reconciler().handle(event, context)
