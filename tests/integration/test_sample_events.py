"""Every sample event in events/, through the real Lambda handler, against the catalog."""

from __future__ import annotations

from typing import Any

import pytest

from cache_ingress.handler import lambda_handler
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.conftest import dead_letters
from tests.support.events import catalog, event_names, load_event
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration


def test_every_sample_event_is_catalogued() -> None:
    assert set(event_names()) == set(catalog())


@pytest.mark.parametrize("name", event_names())
def test_sample_event_has_its_catalogued_outcome(
    name: str, world: SeededWorld, function_environment: dict[str, str], clients: dict[str, Any]
) -> None:
    expected = catalog()[name]

    summary = lambda_handler(load_event(name), FakeLambdaContext())

    assert summary["status"] == expected["status"]
    outcomes = sorted(
        [d["group_id"], d.get("target"), d["outcome"], *([d["rule"]] if "rule" in d else [])]
        for d in summary["decisions"]
    )
    assert outcomes == sorted(expected["outcomes"], key=lambda o: [str(x) for x in o])
    messages = dead_letters(clients["sqs"], world.dead_letter_queue_url)
    if expected["status"] == "dead-lettered":
        [message] = messages
        assert message["body"]["requestPayload"] == load_event(name)
        assert message["body"]["responsePayload"]["errorType"] == expected["error_type"]
        assert summary["deadLetterMessageId"]
    else:
        assert messages == []


MEMBER_EVENTS = sorted(name for name, entry in catalog().items() if "member_scenario" in entry)


@pytest.mark.parametrize("name", MEMBER_EVENTS)
def test_member_sample_event_has_its_catalogued_outcome_in_the_member_scenario(
    name: str,
    member_world: SeededWorld,
    clients: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cache account's function, as deployed for its members: its execution role's
    # credentials (the only principal the read roles trust) and the scenario's policy.
    expected = catalog()[name]["member_scenario"]
    for variable, value in member_world.function_environment().items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "cache-ingress")

    summary = lambda_handler(load_event(name), FakeLambdaContext())

    assert summary["status"] == expected["status"]
    outcomes = sorted(
        [d["group_id"], d.get("target"), d["outcome"], *([d["rule"]] if "rule" in d else [])]
        for d in summary["decisions"]
    )
    assert outcomes == sorted(expected["outcomes"], key=lambda o: [str(x) for x in o])
    event = load_event(name)
    assert {d.get("account") for d in summary["decisions"]} == {event["account"]}
    assert dead_letters(clients["sqs"], member_world.dead_letter_queue_url) == []


def test_every_member_sample_event_is_decided_in_the_member_scenario() -> None:
    members = {name for name in event_names() if name.startswith("member-")}
    assert members == set(MEMBER_EVENTS)
