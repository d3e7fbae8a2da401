"""The one Logger, Metrics and Tracer of the function; no other module creates its own.

The Tracer exists only when AWS-call tracing is on (the stack's TraceAwsCalls parameter sets
POWERTOOLS_TRACE_DISABLED). Creating one imports the X-Ray SDK (with wrapt and asyncio),
whose recorder builds botocore clients of its own: with tag events minutes or hours apart
nearly every event is a cold start, and the SDK adds about 7 % to its CPU and 2.7 MiB
(docs/benchmarks.md). Lambda's Active tracing records every invocation and its
initialization without the SDK.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics
from aws_lambda_powertools.shared.functions import strtobool

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

SERVICE = "cache-ingress"

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def traces_aws_calls(environ: Mapping[str, str]) -> bool:
    """Whether this environment records each AWS call as an X-Ray subsegment.

    Powertools' own rule for its Tracer: on unless POWERTOOLS_TRACE_DISABLED is true, and
    only in a Lambda execution environment (LAMBDA_TASK_ROOT) that is not `sam local` or
    chalice's. Where Powertools would disable the Tracer, it is not created at all.
    """
    disabled = strtobool(environ.get("POWERTOOLS_TRACE_DISABLED", "false"))
    in_lambda = bool(environ.get("LAMBDA_TASK_ROOT"))
    emulated = bool(environ.get("AWS_SAM_LOCAL") or environ.get("AWS_CHALICE_CLI_MODE"))
    return not disabled and in_lambda and not emulated


def _tracer(environ: Mapping[str, str]) -> Tracer | None:
    if not traces_aws_calls(environ):
        return None
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - loads the X-Ray SDK

    # Only botocore makes calls worth a subsegment here. Patching everything the X-Ray SDK
    # knows (its default) imports requests, sqlite3 and more: about 25 ms for nothing.
    return Tracer(service=SERVICE, patch_modules=("botocore",))


logger = Logger(service=SERVICE)
# Created with the module: botocore is patched before any client exists.
tracer = _tracer(os.environ)
# The template sets POWERTOOLS_METRICS_NAMESPACE; the default keeps local runs publishable.
metrics = Metrics(
    service=SERVICE, namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE") or "CacheIngress"
)


def trace_handler(handler: _Handler) -> _Handler:
    """The handler inside a `## lambda_handler` subsegment when AWS calls are traced, without
    its response (the summary is logged already); the handler itself when they are not.
    """
    if tracer is None:
        return handler
    return cast(_Handler, tracer.capture_lambda_handler(handler, capture_response=False))
