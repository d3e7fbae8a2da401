"""A burst of more than a thousand deliveries through the handler against the embedded AWS
(moto's threaded server on 127.0.0.1), with duplicates: the same event delivered up to three
times, and different events asking for the same grant.

Accounted, not timed: exactly one authorize call per (event, grant) that needed one, every
event finished (none lost, none given up), and the dead-letter queue empty. The same burst
is a benchmark in benchmarks/load_burst.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.security.burst import (
    Burst,
    BurstWorld,
    CallRecorder,
    Outcome,
    burst_world,
    handler_environment,
    make_burst,
    new_environment,
    run_concurrently,
    run_through_handler,
)

pytestmark = [pytest.mark.integration, pytest.mark.load]

UNIQUE_EVENTS = 600


@pytest.fixture(scope="module")
def world() -> Iterator[BurstWorld]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_CONFIG_FILE", "/dev/null")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        with burst_world() as started:
            yield started


def _check_accounting(burst: Burst, outcome: Outcome, world: BurstWorld) -> None:
    unique_ids = {event["id"] for event in burst.deliveries}
    assert len(unique_ids) == burst.unique_events
    # Zero lost: every delivery finished, none was given up after its retries.
    assert outcome.unfinished == []
    assert set(outcome.final_status) == unique_ids
    assert sum(outcome.statuses.values()) == len(burst.deliveries)
    assert set(outcome.statuses) == {"completed"}
    assert world.dead_letter_count() == 0
    # Exactly one authorize call per (event, grant) that needed one, none for the rest.
    assert outcome.calls == burst.expected_calls
    assert set(outcome.calls.values()) == {1}


def test_a_burst_with_duplicates_through_the_handler_grants_once_per_event_and_grant(
    world: BurstWorld,
) -> None:
    burst = make_burst(world, UNIQUE_EVENTS, seed=6)
    assert len(burst.deliveries) >= 1000
    assert len(burst.deliveries) > burst.unique_events
    repeated = Counter(event["id"] for event in burst.deliveries)
    assert max(repeated.values()) == 3
    same_grant = Counter((group, name) for _, group, name in burst.expected_calls)
    assert max(same_grant.values()) > 1, "different events must ask for the same grant"
    recorder = CallRecorder()

    with handler_environment(world, recorder):
        outcome = run_through_handler(burst.deliveries, recorder)
    outcome.calls = recorder.calls

    _check_accounting(burst, outcome, world)
    assert outcome.attempts == len(burst.deliveries)


def test_a_burst_across_concurrent_execution_environments_grants_once_per_event_and_grant(
    world: BurstWorld,
) -> None:
    burst = make_burst(world, 200, seed=7)
    recorder = CallRecorder()

    with handler_environment(world, recorder):
        outcome = run_concurrently(burst.deliveries, recorder, new_environment, environments=4)
    outcome.calls = recorder.calls

    _check_accounting(burst, outcome, world)
    # Duplicates that met a grant in progress were raised for retry and finished later.
    assert outcome.attempts >= len(burst.deliveries)
