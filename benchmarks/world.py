"""What both handlers run against: the Lambda environment, the events, and AWS answered in
process (benchmarks/answers.py, re-exported here).

Imports only the standard library at module level: the warm probe imports this module
before its clock starts, and must not pre-load boto3 for the handler it measures.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from benchmarks.answers import (
    ACCOUNT,
    DELETED_GROUP,
    FUNCTION_NAME,
    GROUPS,
    ORDERS_GROUP,
    PLATFORM_GROUP,
    REGION,
    STAGING_GROUP,
    BenchContext,
    Responder,
)

__all__ = ["BenchContext", "Responder"]

REPO = Path(__file__).resolve().parents[1]
TASK_ROOT = REPO / "functions" / "authorizer"
EVENTS_DIR = REPO / "events"

PRINCIPAL = f"arn:aws:sts::{ACCOUNT}:assumed-role/platform/alice"
IDEMPOTENCY_TABLE = "cache-ingress-idempotency"
LEDGER_TABLE = "cache-ingress-ledger"
DEAD_LETTER_QUEUE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/cache-ingress-dlq"
# A sampled trace, as the Lambda runtime sets it per invocation when tracing is active.
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


# The four kinds of event measured, with the outcomes both handlers must reach for each.
KINDS: dict[str, list[tuple[str, str | None, str]]] = {
    "one grant": [(ORDERS_GROUP, "orders", "authorized")],
    "three grants": [
        (PLATFORM_GROUP, "orders", "authorized"),
        (PLATFORM_GROUP, "payments", "authorized"),
        (PLATFORM_GROUP, "inventory", "authorized"),
    ],
    "denied tag": [(STAGING_GROUP, "orders", "denied")],
    "not applicable": [(DELETED_GROUP, None, "not-applicable")],
}


def _sample(name: str) -> dict[str, Any]:
    loaded = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise TypeError(f"{name} is not a JSON object")
    return loaded


def _tag_change(group_id: str, tags: dict[str, str]) -> dict[str, Any]:
    event = _sample("tag-change-authorized.json")
    event["resources"] = [f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{group_id}"]
    event["detail"]["tags"] = tags
    return event


def _create_tags(group_id: str) -> dict[str, Any]:
    event = _sample("cloudtrail-create-tags.json")
    detail = event["detail"]
    detail["userIdentity"]["arn"] = PRINCIPAL
    detail["requestParameters"]["resourcesSet"]["items"] = [{"resourceId": group_id}]
    detail["requestParameters"]["tagSet"]["items"] = [
        {"key": "cache-ingress", "value": GROUPS[group_id][1]["cache-ingress"]}
    ]
    return event


def base_event(kind: str) -> dict[str, Any]:
    """One sample event of the kind (from events/, with the benchmark's groups)."""
    if kind == "one grant":
        return _tag_change(ORDERS_GROUP, GROUPS[ORDERS_GROUP][1])
    if kind == "three grants":
        # A CloudTrail event, because the payments target requires a listed principal.
        return _create_tags(PLATFORM_GROUP)
    if kind == "denied tag":
        return _tag_change(STAGING_GROUP, GROUPS[STAGING_GROUP][1])
    if kind == "not applicable":
        return _tag_change(DELETED_GROUP, {"cache-ingress": "orders", "env": "prod"})
    raise ValueError(f"unknown event kind {kind!r}")


def events(kind: str, count: int, prefix: str) -> list[dict[str, Any]]:
    """`count` events of one kind, each with its own id (so each grant is a new record)."""
    base = base_event(kind)
    made = []
    for index in range(count):
        event = copy.deepcopy(base)
        event["id"] = f"{prefix}-{kind.replace(' ', '-')}-{index:06d}"
        made.append(event)
    return made


def outcomes(summary: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """The (group, target, outcome) triples of a handler's summary, in order."""
    return [(str(d["group_id"]), d.get("target"), str(d["outcome"])) for d in summary["decisions"]]


def lambda_environment(*, tracing: bool) -> dict[str, str]:
    """The variables the Lambda runtime and the template give the function (fake credentials)."""
    return {
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "ASIABENCHMARKFAKE000",
        "AWS_SECRET_ACCESS_KEY": "benchmark/fake/secret/key/0000000000000",
        "AWS_SESSION_TOKEN": "benchmark-fake-session-token",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "LAMBDA_TASK_ROOT": str(TASK_ROOT),
        "_X_AMZN_TRACE_ID": TRACE_HEADER,
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_ENDPOINT_URL": "",
        "ACCOUNT_ID": ACCOUNT,
        "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
        "LEDGER_TABLE": LEDGER_TABLE,
        "DEAD_LETTER_QUEUE_URL": DEAD_LETTER_QUEUE_URL,
        "TAG_KEY": "cache-ingress",
        "DRY_RUN": "false",
        "POWERTOOLS_SERVICE_NAME": FUNCTION_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": "CacheIngress",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_TRACE_DISABLED": "false" if tracing else "true",
    }
