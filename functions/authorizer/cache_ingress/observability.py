"""The one Logger, Tracer and Metrics of the function; no other module creates its own."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "cache-ingress"

logger = Logger(service=SERVICE)
# Only botocore makes calls worth a subsegment here. Patching everything the X-Ray SDK knows
# (its default) imports requests, sqlite3 and more into every cold start: about 25 ms for
# nothing (docs/benchmarks.md).
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))
# The template sets POWERTOOLS_METRICS_NAMESPACE; the default keeps local runs publishable.
metrics = Metrics(
    service=SERVICE, namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE") or "CacheIngress"
)
