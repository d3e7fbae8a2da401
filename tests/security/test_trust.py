"""The attacks on principal-gated targets, tried as an attacker would, end to end.

The attacker holds `ec2:CreateTags` (a developer role) or `sqs:SendMessage` on the
dead-letter queue; the platform role (`assumed-role/platform/*`) is the only principal the
bundled policy lets ask for `payments`. Every tagging call below is made on the embedded
AWS by the named principal, and the event the function gets is the one AWS would send for
that call (built from the call's CloudTrail record). Each test failed before the function
bound a grant to the call that asked for it and verified replayed principals with
CloudTrail; each now ends with nothing granted, and a decision that says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest

from cache_ingress.aws import Clients
from cache_ingress.handler import lambda_handler
from cache_ingress.intake import replay_payload
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from cache_ingress_tools.dead_letters import DeadLetter, read_dead_letter
from cache_ingress_tools.emulator.scenario import SeededWorld
from cache_ingress_tools.replay import DeadLetterQueue, LocalReplayer, ReplayOptions, replay
from tests.cli import on_failure_record
from tests.integration.conftest import TEST_CLIENT_CONFIG
from tests.support.events import (
    ORDERS_GROUP,
    PAYMENTS_GROUP,
    PLATFORM_PRINCIPAL,
    create_tags,
)
from tests.support.faults import Fault
from tests.support.lambda_context import FakeLambdaContext
from tests.support.tagging import Tagger

pytestmark = pytest.mark.integration

PAYMENTS_CACHE = "payments-cache-sg"


@pytest.fixture
def platform(world: SeededWorld) -> Tagger:
    return Tagger("platform", "alice")


@pytest.fixture
def developer(world: SeededWorld) -> Tagger:
    # The session name is the caller's choice: the developer calls theirs "alice" too.
    return Tagger("developer", "alice")


def admitted(clients: dict[str, Any], cache_group: str) -> list[str]:
    [group] = clients["elasticache"].describe_cache_security_groups(
        CacheSecurityGroupName=cache_group
    )["CacheSecurityGroups"]
    return sorted(g["EC2SecurityGroupName"] for g in group["EC2SecurityGroups"])


def outcome(summary: dict[str, Any], target: str) -> tuple[str, str | None, str]:
    [decision] = [d for d in summary["decisions"] if d.get("target") == target]
    return decision["outcome"], decision.get("rule"), decision["reason"]


@pytest.fixture
def handle(function_environment: dict[str, str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The deployed function's entry point, with the embedded AWS behind it."""

    def deliver(event: dict[str, Any]) -> dict[str, Any]:
        return lambda_handler(event, FakeLambdaContext())

    return deliver


# --- 1. the principal is bound to the value its call set ------------------------------------


def test_an_allowed_call_that_deletes_nothing_grants_no_target_someone_else_named(
    clients: dict[str, Any],
    platform: Tagger,
    developer: Tagger,
    handle: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    # The developer tags their own env=prod group; later the platform role deletes a value
    # the group does not carry (nothing is deleted, and the call does not fail).
    developer.tag(ORDERS_GROUP, {"cache-ingress": "orders,payments"})
    event = platform.untag(ORDERS_GROUP, "cache-ingress", "legacy")

    tags = clients["ec2"].describe_tags(Filters=[{"Name": "resource-id", "Values": [ORDERS_GROUP]}])
    assert {"Key": "cache-ingress", "Value": "orders,payments"} in [
        {"Key": t["Key"], "Value": t["Value"]} for t in tags["Tags"]
    ]

    summary = handle(event)

    assert "orders-app" not in admitted(clients, PAYMENTS_CACHE)
    result, rule, reason = outcome(summary, "payments")
    assert (result, rule) == ("denied", "principal-binding")
    assert "DeleteTags event never grants" in reason
    assert outcome(summary, "orders")[0] == "authorized"


def test_the_platforms_late_event_grants_only_what_the_platform_named(
    clients: dict[str, Any],
    platform: Tagger,
    developer: Tagger,
    handle: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    # The platform tags "orders"; before its event is processed, the developer re-tags.
    event = platform.tag(ORDERS_GROUP, {"cache-ingress": "orders"})
    developer.tag(ORDERS_GROUP, {"cache-ingress": "orders,payments"})

    summary = handle(event)

    assert "orders-app" not in admitted(clients, PAYMENTS_CACHE)
    result, rule, reason = outcome(summary, "payments")
    assert (result, rule) == ("denied", "principal-binding")
    assert "set cache-ingress to 'orders', which does not name payments" in reason
    assert outcome(summary, "orders")[0] == "authorized"


def test_the_developers_own_call_is_denied_for_its_principal(
    clients: dict[str, Any], developer: Tagger, handle: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    summary = handle(developer.tag(ORDERS_GROUP, {"cache-ingress": "payments"}))

    assert "orders-app" not in admitted(clients, PAYMENTS_CACHE)
    assert outcome(summary, "payments")[:2] == ("denied", "principals")


def test_the_platforms_own_call_still_grants(
    clients: dict[str, Any], platform: Tagger, handle: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    summary = handle(platform.tag(ORDERS_GROUP, {"cache-ingress": "orders, payments"}))

    assert "orders-app" in admitted(clients, PAYMENTS_CACHE)
    assert outcome(summary, "payments")[0] == "authorized"


# --- 2. a dead-letter message is not trusted on its word ------------------------------------


@pytest.fixture
def queue(clients: dict[str, Any], world: SeededWorld) -> DeadLetterQueue:
    return DeadLetterQueue(clients["sqs"], world.dead_letter_queue_url)


@pytest.fixture
def local_replayer(world: SeededWorld, clients: dict[str, Any]) -> Callable[..., LocalReplayer]:
    """`replay --local` as the operator runs it, on the embedded AWS."""

    def make(**inject: Any) -> LocalReplayer:
        settings = Settings.from_environ(world.function_environment())
        injected = Clients(settings.region)
        for name, client in {**clients, **inject}.items():
            injected.inject(name, client)
        return LocalReplayer(build_authorizer(settings, injected))

    return make


def forged_event() -> dict[str, Any]:
    """A CloudTrail-shaped event claiming the platform role tagged the group `payments`:
    written by hand, never a call CloudTrail saw."""
    return create_tags([ORDERS_GROUP], event_id="forged-0001", principal=PLATFORM_PRINCIPAL)


def test_a_forged_on_failure_record_replayed_locally_grants_nothing(
    clients: dict[str, Any],
    world: SeededWorld,
    developer: Tagger,
    queue: DeadLetterQueue,
    local_replayer: Callable[..., LocalReplayer],
) -> None:
    developer.tag(ORDERS_GROUP, {"cache-ingress": "payments"})
    clients["sqs"].send_message(
        QueueUrl=world.dead_letter_queue_url, MessageBody=on_failure_record(forged_event())
    )

    report = replay(queue, local_replayer(), ReplayOptions(wait_seconds=0))

    assert "orders-app" not in admitted(clients, PAYMENTS_CACHE)
    [message] = report.messages
    assert message.reason is not None
    assert "payments denied (principal-provenance)" in message.reason
    assert "CloudTrail has no event" in message.reason


def test_a_forged_bare_event_sent_through_the_function_grants_nothing(
    clients: dict[str, Any], developer: Tagger, handle: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    # `replay --function-name` sends this payload; the function verifies the principal.
    developer.tag(ORDERS_GROUP, {"cache-ingress": "payments"})

    summary = handle(replay_payload(forged_event()))

    assert "orders-app" not in admitted(clients, PAYMENTS_CACHE)
    result, rule, reason = outcome(summary, "payments")
    assert (result, rule) == ("denied", "principal-provenance")
    assert "re-tags the group" in reason


def test_a_real_call_edited_in_the_queue_is_refuted(
    clients: dict[str, Any],
    platform: Tagger,
    developer: Tagger,
    handle: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    # The platform's real call named "orders"; the message is edited to name "payments".
    edited = platform.tag(ORDERS_GROUP, {"cache-ingress": "orders"})
    edited["detail"]["requestParameters"]["tagSet"]["items"][0]["value"] = "orders,payments"
    developer.tag(ORDERS_GROUP, {"cache-ingress": "orders,payments"})

    summary = handle(replay_payload(edited))

    assert "orders-app" not in admitted(clients, PAYMENTS_CACHE)
    result, rule, reason = outcome(summary, "payments")
    assert (result, rule) == ("denied", "principal-provenance")
    assert reason.count("differs from the event in its tags") == 1


def test_an_archive_replay_of_a_forged_event_grants_nothing(
    clients: dict[str, Any], developer: Tagger, handle: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    developer.tag(ORDERS_GROUP, {"cache-ingress": "payments"})
    event = {**forged_event(), "replay-name": "archive-replay-1"}

    summary = handle(event)

    assert "orders-app" not in admitted(clients, PAYMENTS_CACHE)
    assert outcome(summary, "payments")[:2] == ("denied", "principal-provenance")


def test_a_real_call_replayed_from_the_queue_is_verified_and_granted(
    clients: dict[str, Any],
    world: SeededWorld,
    platform: Tagger,
    queue: DeadLetterQueue,
    local_replayer: Callable[..., LocalReplayer],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    event = platform.tag(ORDERS_GROUP, {"cache-ingress": "payments"})
    clients["sqs"].send_message(
        QueueUrl=world.dead_letter_queue_url, MessageBody=on_failure_record(event)
    )

    report = replay(queue, local_replayer(), ReplayOptions(wait_seconds=0))

    assert report.counts["succeeded"] == 1
    assert "orders-app" in admitted(clients, PAYMENTS_CACHE)
    # The same event replayed through the function, and as an archive replay, verifies too.
    assert outcome(handle(replay_payload(event)), "payments")[0] == "already-authorized"
    archived = {**event, "id": "archived-copy", "replay-name": "archive-replay-2"}
    assert outcome(handle(archived), "payments")[0] == "already-authorized"


def test_a_lookup_throttled_keeps_the_message_and_grants_nothing_until_it_answers(
    clients: dict[str, Any],
    world: SeededWorld,
    platform: Tagger,
    queue: DeadLetterQueue,
    local_replayer: Callable[..., LocalReplayer],
) -> None:
    event = platform.tag(ORDERS_GROUP, {"cache-ingress": "payments"})
    clients["sqs"].send_message(
        QueueUrl=world.dead_letter_queue_url, MessageBody=on_failure_record(event)
    )
    cloudtrail = boto3.client("cloudtrail", region_name="us-east-1", config=TEST_CLIENT_CONFIG)
    fault = Fault(cloudtrail, "LookupEvents", "throttling")

    first = replay(queue, local_replayer(cloudtrail=cloudtrail), ReplayOptions(wait_seconds=0))

    assert "orders-app" not in admitted(clients, PAYMENTS_CACHE)
    [kept] = first.messages
    assert (kept.result, kept.status) == ("still-failing", "retry-later")
    assert kept.reason is not None
    assert "could not be verified now" in kept.reason
    fault.clear()

    second = replay(queue, local_replayer(cloudtrail=cloudtrail), ReplayOptions(wait_seconds=0))

    assert second.counts["succeeded"] == 1
    assert "orders-app" in admitted(clients, PAYMENTS_CACHE)


def test_a_replayed_event_without_a_gated_grant_asks_cloudtrail_nothing(
    world: SeededWorld, local_replayer: Callable[..., LocalReplayer]
) -> None:
    # The principal is not allowed anyway, and orders needs none: no lookup is spent.
    cloudtrail = boto3.client("cloudtrail", region_name="us-east-1", config=TEST_CLIENT_CONFIG)
    lookups: list[dict[str, Any]] = []
    cloudtrail.meta.events.register(
        "provide-client-params.cloudtrail.LookupEvents", lambda params, **_: lookups.append(params)
    )
    event = create_tags(
        [ORDERS_GROUP, PAYMENTS_GROUP],
        event_id="replayed-0002",
        principal="arn:aws:sts::123456789012:assumed-role/developer/dev",
    )
    letter = read_dead_letter({"MessageId": "m-1", "Body": on_failure_record(event)})
    assert isinstance(letter, DeadLetter)

    result = local_replayer(cloudtrail=cloudtrail)(letter)

    assert result.succeeded
    assert lookups == []
