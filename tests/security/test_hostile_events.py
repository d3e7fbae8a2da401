"""Every hostile event in the corpus, through the real Lambda handler, against moto.

Each ends as a logged decision or a dead-lettered event naming what is wrong: never another
exception, never an authorize call the policy does not allow (checked twice: against the
case's expected grants and against the independent oracle), and every log line stays one
JSON object whatever control characters the event or the tags carry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cache_ingress.handler import lambda_handler
from cache_ingress.intake import replay_payload
from cache_ingress.observability import logger
from tests.integration.conftest import dead_letters
from tests.security import oracle
from tests.security.corpus import Case, all_cases
from tests.security.harness import Fresh, SharedWorld
from tests.support.events import ACCOUNT, REGION, tag_change
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

BUNDLED_POLICY = (
    Path(__file__).resolve().parents[2] / "functions/authorizer/cache_ingress/policy.yaml"
)


class JsonLines(logging.Handler):
    """Formats each record with the function's own formatter and keeps the text."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logger.registered_formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def records(self) -> list[dict[str, Any]]:
        parsed = []
        for text in self.lines:
            # One record is one line: a newline in a tag or an id must arrive escaped.
            assert "\n" not in text, text[:200]
            parsed.append(json.loads(text))
        return parsed


@pytest.fixture
def logs() -> Iterator[JsonLines]:
    handler = JsonLines()
    logging.getLogger(logger.name).addHandler(handler)
    yield handler
    logging.getLogger(logger.name).removeHandler(handler)


def _oracle_parameters(case: Case, shared: SharedWorld) -> set[tuple[str, str, str]]:
    assert case.group_ids is not None
    event = case.event
    scope = oracle.Scope(ACCOUNT, REGION, str(event["account"]), str(event["region"]))
    policy = yaml.safe_load(BUNDLED_POLICY.read_text(encoding="utf-8"))
    permits = oracle.permitted(
        case.group_ids, shared.groups_now(case.group_ids), case.event, policy, scope
    )
    return {permit.authorize_parameters for permit in permits}


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@pytest.mark.parametrize("case", all_cases(), ids=lambda case: case.name)
def test_hostile_event_ends_logged_or_dead_lettered_and_grants_only_what_is_allowed(
    case: Case,
    shared: SharedWorld,
    fresh: Fresh,
    handler_authorize_calls: list[dict[str, Any]],
    logs: JsonLines,
) -> None:
    clients = shared.clients
    if case.setup is not None:
        case.setup(clients)
    expected_permits = _oracle_parameters(case, shared) if case.group_ids is not None else set()

    summary = lambda_handler(case.event, FakeLambdaContext())

    assert summary["status"] == case.status, summary.get("reason")
    sent = [
        (c["CacheSecurityGroupName"], c["EC2SecurityGroupName"], c["EC2SecurityGroupOwnerId"])
        for c in handler_authorize_calls
    ]
    assert sorted(sent) == sorted(case.grants)
    assert set(sent) <= expected_permits
    for decision in summary["decisions"]:
        assert decision["reason"].strip()
    if case.outcomes is not None:
        got = [(d["group_id"], d.get("target"), d["outcome"]) for d in summary["decisions"]]
        assert len(got) == len(set(got)), "a pair was decided twice"
        assert set(got) == case.outcomes
    records = logs.records()
    assert not [r for r in records if r["message"] == "unexpected error"]
    messages = dead_letters(clients["sqs"], fresh.queue_url)
    if case.status == "dead-lettered":
        [message] = messages
        payload = message["body"]["responsePayload"]
        assert payload["errorType"] == case.error_type == summary["errorType"]
        assert case.reason is not None
        assert case.reason in payload["errorMessage"]
        assert message["body"]["requestPayload"] == _as_json(case.event)
        [logged] = [r for r in records if r["message"] == "event dead-lettered"]
        assert case.reason in logged["reason"]
    else:
        assert messages == []
    if case.status == "ignored":
        [logged] = [r for r in records if r["message"] == "event ignored"]
        assert case.reason is not None
        assert case.reason in logged["reason"]
    decided = [r for r in records if r["message"].startswith("ingress ")]
    assert len(decided) == len(summary["decisions"])


def test_a_hostile_event_replayed_by_an_operator_is_reported_not_dead_lettered_again(
    shared: SharedWorld, fresh: Fresh
) -> None:
    broken = tag_change()
    del broken["detail"]

    summary = lambda_handler(replay_payload(broken), FakeLambdaContext())

    assert summary["status"] == "failed"
    assert summary["errorType"] == "MalformedEvent"
    assert "event.detail" in summary["reason"]
    assert dead_letters(shared.clients["sqs"], fresh.queue_url) == []


@pytest.mark.parametrize(
    "payload",
    [{"cache-ingress-replay": "not-an-object"}, {"cache-ingress-replay": {"evnt": {}}}],
    ids=["wrapper-not-an-object", "wrapper-without-event"],
)
def test_a_malformed_replay_wrapper_is_an_ordinary_malformed_event(
    payload: dict[str, Any], shared: SharedWorld, fresh: Fresh
) -> None:
    summary = lambda_handler(payload, FakeLambdaContext())

    assert summary["status"] == "dead-lettered"
    assert summary["errorType"] == "MalformedEvent"
    [message] = dead_letters(shared.clients["sqs"], fresh.queue_url)
    assert message["body"]["requestPayload"] == payload
