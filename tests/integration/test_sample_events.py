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
