"""The replay engine and the `peek` / `replay` commands, against moto and the emulation."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from cache_ingress.aws import Clients
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from cache_ingress_tools import cli
from cache_ingress_tools.commands._dead_letter_queue import Progress
from cache_ingress_tools.dead_letters import DeadLetter, Origin, read_dead_letter
from cache_ingress_tools.emulator.scenario import SeededWorld
from cache_ingress_tools.replay import (
    EXIT_ABORTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STILL_FAILING,
    EXIT_UNRECOGNISED,
    EXIT_USAGE,
    DeadLetterQueue,
    FunctionInvoker,
    LocalReplayer,
    ProcessResult,
    ReplayOptions,
    Result,
    Selection,
    dry_run_processor,
    peek,
    replay,
)
from tests.cli import (
    eventbridge_dlq_attributes,
    lambda_dlq_attributes,
    on_failure_record,
    stub_stack,
)
from tests.support.events import (
    INVENTORY_GROUP,
    ORDERS_GROUP,
    PAYMENTS_GROUP,
    create_tags,
    load_event,
    tag_change,
)
from tests.support.tagging import Tagger

pytestmark = pytest.mark.cli


def fast(**options: Any) -> ReplayOptions:
    """Options for a test run: never long-poll (moto answers an empty queue at once)."""
    return ReplayOptions(wait_seconds=0, **options)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def queue(clients: dict[str, Any], world: SeededWorld) -> DeadLetterQueue:
    return DeadLetterQueue(clients["sqs"], world.dead_letter_queue_url)


@pytest.fixture
def sqs_calls(clients: dict[str, Any]) -> Counter[str]:
    """How many times each SQS operation was called, and with what batch sizes."""
    calls: Counter[str] = Counter()

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls[model.name] += 1
        if "Entries" in params:
            calls[f"{model.name} entries"] += len(params["Entries"])
        if "MaxNumberOfMessages" in params:
            calls[f"{model.name} max={params['MaxNumberOfMessages']}"] += 1

    clients["sqs"].meta.events.register("provide-client-params.sqs.*", record)
    return calls


@pytest.fixture
def authorize_calls(clients: dict[str, Any]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    lock = threading.Lock()

    def record(params: dict[str, Any], **_: Any) -> None:
        with lock:
            calls.append(dict(params))

    clients["elasticache"].meta.events.register(
        "provide-client-params.elasticache.AuthorizeCacheSecurityGroupIngress", record
    )
    return calls


@pytest.fixture
def local(world: SeededWorld, clients: dict[str, Any]) -> Callable[[], LocalReplayer]:
    """A local replayer as `replay --local` builds it, on the test's moto clients."""

    def make() -> LocalReplayer:
        settings = Settings.from_environ(world.function_environment())
        injected = Clients(settings.region)
        for name, client in clients.items():
            injected.inject(name, client)
        return LocalReplayer(build_authorizer(settings, injected))

    return make


@pytest.fixture
def send(clients: dict[str, Any], world: SeededWorld) -> Callable[..., str]:
    def send_message(body: str, attributes: dict[str, Any] | None = None) -> str:
        response = clients["sqs"].send_message(
            QueueUrl=world.dead_letter_queue_url,
            MessageBody=body,
            **({"MessageAttributes": attributes} if attributes else {}),
        )
        return str(response["MessageId"])

    return send_message


def visible(clients: dict[str, Any], world: SeededWorld) -> int:
    attributes = clients["sqs"].get_queue_attributes(
        QueueUrl=world.dead_letter_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    return int(attributes["ApproximateNumberOfMessages"])


def bodies(clients: dict[str, Any], world: SeededWorld) -> list[str]:
    """Every body in the queue (then made visible again)."""
    sqs = clients["sqs"]
    found: list[str] = []
    handles: list[str] = []
    while batch := sqs.receive_message(
        QueueUrl=world.dead_letter_queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60
    ).get("Messages", []):
        found.extend(m["Body"] for m in batch)
        handles.extend(m["ReceiptHandle"] for m in batch)
    for handle in handles:
        sqs.change_message_visibility(
            QueueUrl=world.dead_letter_queue_url, ReceiptHandle=handle, VisibilityTimeout=0
        )
    return sorted(found)


def granted(clients: dict[str, Any], cache_group: str) -> list[str]:
    [group] = clients["elasticache"].describe_cache_security_groups(
        CacheSecurityGroupName=cache_group
    )["CacheSecurityGroups"]
    return sorted(g["EC2SecurityGroupName"] for g in group["EC2SecurityGroups"])


def by_event(report: Any) -> dict[str | None, Result]:
    return {getattr(m.message, "event_id", None): m.result for m in report.messages}


# --- success deletes, failure keeps -------------------------------------------------------


def test_every_format_replays_locally_and_only_successes_are_deleted(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    local: Callable[[], LocalReplayer],
    authorize_calls: list[dict[str, Any]],
) -> None:
    # Given one message in each AWS format, and one that will fail again; the CloudTrail one
    # is a real call by the platform role (payments requires it), which CloudTrail confirms.
    send(on_failure_record(tag_change(ORDERS_GROUP, event_id="e-record")))
    platform_call = Tagger("platform", "alice").tag(PAYMENTS_GROUP, {"cache-ingress": "payments"})
    send(json.dumps({**platform_call, "id": "e-bridge"}), eventbridge_dlq_attributes())
    send(json.dumps(tag_change(ORDERS_GROUP, event_id="e-legacy")), lambda_dlq_attributes())
    failing = load_event("tag-change-cache-group-missing.json")
    send(on_failure_record(failing))

    report = replay(queue, local(), fast())

    assert by_event(report) == {
        "e-record": Result.SUCCEEDED,
        "e-bridge": Result.SUCCEEDED,
        "e-legacy": Result.SUCCEEDED,
        failing["id"]: Result.STILL_FAILING,
    }
    [kept] = [m for m in report.messages if m.result is Result.STILL_FAILING]
    assert kept.status == "failed"
    assert kept.error_type == "GrantFailed"
    assert kept.reason is not None
    assert "CacheSecurityGroupNotFound" in kept.reason
    assert report.counts == {
        "replayed": 4,
        "succeeded": 3,
        "stillFailing": 1,
        "skipped": 0,
        "unrecognised": 0,
        "wouldReplay": 0,
        "discarded": 0,
        "wouldDiscard": 0,
    }
    assert report.exit_status == EXIT_STILL_FAILING
    # Only the failure is left, visible again at once, and was not dead-lettered a second time.
    assert visible(clients, world) == 1
    assert bodies(clients, world) == [on_failure_record(failing)]
    assert sorted(
        (c["CacheSecurityGroupName"], c["EC2SecurityGroupName"]) for c in authorize_calls
    ) == [
        ("inventory-cache-sg", "inventory-app"),
        ("orders-cache-sg", "orders-app"),
        ("orders-cache-sg", "orders-app"),
        ("payments-cache-sg", "payments-app"),
    ]
    assert all(c["EC2SecurityGroupOwnerId"] == "123456789012" for c in authorize_calls)


def test_receives_and_deletes_in_batches_of_ten(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    local: Callable[[], LocalReplayer],
    sqs_calls: Counter[str],
) -> None:
    for index in range(25):
        send(on_failure_record(tag_change(ORDERS_GROUP, event_id=f"e-batch-{index:02d}")))

    report = replay(queue, local(), fast(concurrency=4))

    assert report.counts["succeeded"] == 25
    assert visible(clients, world) == 0
    assert sqs_calls["ReceiveMessage"] == sqs_calls["ReceiveMessage max=10"]
    assert sqs_calls["ReceiveMessage"] <= 25 // 10 + 2
    assert sqs_calls["DeleteMessageBatch entries"] == 25
    assert sqs_calls["DeleteMessageBatch"] == 3
    assert sqs_calls["DeleteMessage"] == 0
    # Nothing was kept, so nothing had to be made visible again.
    assert sqs_calls["ChangeMessageVisibilityBatch"] == 0


def test_a_processor_that_raises_keeps_the_message_with_the_reason(
    clients: dict[str, Any], world: SeededWorld, queue: DeadLetterQueue, send: Callable[..., str]
) -> None:
    send(on_failure_record(tag_change(event_id="e-boom")))

    def broken(letter: DeadLetter) -> ProcessResult:
        raise RuntimeError("disk on fire")

    report = replay(queue, broken, fast())

    [message] = report.messages
    assert message.result is Result.STILL_FAILING
    assert message.reason == "RuntimeError: disk on fire"
    assert visible(clients, world) == 1


def test_an_interrupted_run_deletes_what_succeeded_and_releases_the_rest(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    local: Callable[[], LocalReplayer],
) -> None:
    for index in range(12):
        send(on_failure_record(tag_change(ORDERS_GROUP, event_id=f"e-int-{index:02d}")))
    replayer = local()
    done: list[str] = []

    def operator_presses_ctrl_c_at_the_fifth(letter: DeadLetter) -> ProcessResult:
        if len(done) == 4:
            raise KeyboardInterrupt
        done.append(str(letter.event_id))
        return replayer(letter)

    with pytest.raises(KeyboardInterrupt):
        replay(queue, operator_presses_ctrl_c_at_the_fifth, fast(concurrency=1))

    # The four replayed are deleted; the other eight are all visible again at once.
    assert visible(clients, world) == 8
    left = {json.loads(body)["requestPayload"]["id"] for body in bodies(clients, world)}
    assert left.isdisjoint(done)
    assert len(left) == 8


def test_a_stop_request_makes_what_no_replay_holds_visible_before_the_replays_under_way_end(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    local: Callable[[], LocalReplayer],
) -> None:
    for index in range(25):
        send(on_failure_record(tag_change(ORDERS_GROUP, event_id=f"e-stop-{index:02d}")))
    replayer = local()
    stop = threading.Event()
    hidden_while_replaying: list[int] = []

    def operator_presses_ctrl_c_during_the_third(letter: DeadLetter) -> ProcessResult:
        if len(hidden_while_replaying) == 2:
            stop.set()
            # This replay is still under way: wait until the run has put back the rest.
            deadline = time.monotonic() + 30
            while hidden(clients, world) > 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        hidden_while_replaying.append(hidden(clients, world))
        return replayer(letter)

    report = replay(queue, operator_presses_ctrl_c_during_the_third, fast(concurrency=1), stop=stop)

    # Only the third replay's own message was hidden once the run was asked to stop: the
    # two before it were deleted, the rest made visible
    assert hidden_while_replaying[2] == 1
    assert report.interrupted is True
    assert report.exit_status == EXIT_INTERRUPTED
    assert report.summary()["interrupted"] is True
    assert report.counts["succeeded"] == 3
    assert visible(clients, world) == 22


def hidden(clients: dict[str, Any], world: SeededWorld) -> int:
    attributes = clients["sqs"].get_queue_attributes(
        QueueUrl=world.dead_letter_queue_url,
        AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_peek_stops_when_asked_and_returns_what_it_read(
    clients: dict[str, Any], world: SeededWorld, queue: DeadLetterQueue, send: Callable[..., str]
) -> None:
    for index in range(30):
        send(f"not json {index}")
    stop = threading.Event()
    original = queue.receive

    def receive_then_stop(**options: Any) -> Any:
        batch = original(**options)
        stop.set()  # Ctrl-C while the first batch was being read
        return batch

    queue.receive = receive_then_stop  # type: ignore[method-assign]

    messages = peek(queue, wait_seconds=0, stop=stop)

    assert len(messages) == 10
    assert visible(clients, world) == 30


# --- messages no replay can ever succeed with ---------------------------------------------


@pytest.fixture
def poisoned_queue(send: Callable[..., str]) -> dict[str, str]:
    """An unrecognised message, a malformed event and a good one: their message ids."""
    malformed = load_event("malformed-missing-detail.json")
    return {
        "garbage": send("<html>not json</html>", {"k": {"DataType": "String", "StringValue": "v"}}),
        "malformed": send(on_failure_record(malformed, error_type="MalformedEvent")),
        "fine": send(on_failure_record(tag_change(event_id="e-fine"))),
    }


def test_unreplayable_messages_are_archived_then_deleted_only_when_asked(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    poisoned_queue: dict[str, str],
    local: Callable[[], LocalReplayer],
) -> None:
    archived: list[tuple[str, str | None, str, int]] = []

    def archive(received: Any, message: Any, why: str) -> None:
        # Still in the queue (hidden) when it is written to the archive.
        archived.append(
            (received.message_id, received.raw.get("Body"), why, hidden(clients, world))
        )

    # A dry run lists them and touches nothing
    dry = replay(queue, dry_run_processor, fast(dry_run=True, discard_unreplayable=True))
    assert {m.message.message_id for m in dry.messages if m.result is Result.WOULD_DISCARD} == {
        poisoned_queue["garbage"],
        poisoned_queue["malformed"],
    }
    assert dry.counts["wouldDiscard"] == 2
    assert visible(clients, world) == 3

    # Without the option, they stay (unrecognised, and still failing); the good one is done
    kept = replay(queue, local(), fast())
    assert sorted(m.result for m in kept.messages) == sorted(
        [Result.UNRECOGNISED, Result.STILL_FAILING, Result.SUCCEEDED]
    )
    assert visible(clients, world) == 2

    report = replay(queue, local(), fast(discard_unreplayable=True), archive=archive)

    assert sorted(m[0] for m in archived) == sorted(
        [poisoned_queue["garbage"], poisoned_queue["malformed"]]
    )
    assert all(still_hidden >= 1 for *_, still_hidden in archived)
    assert ("<html>not json</html>") in [body for _, body, _, _ in archived]
    discarded = [m for m in report.messages if m.result is Result.DISCARDED]
    assert len(discarded) == 2
    assert {m.status for m in discarded} == {"unreplayable"}
    assert report.counts["discarded"] == 2
    assert report.exit_status == EXIT_OK
    assert visible(clients, world) == 0


def test_an_archive_that_cannot_be_written_keeps_the_message_and_stops_the_run(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    poisoned_queue: dict[str, str],
) -> None:
    def full_disk(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    report = replay(queue, dry_run_processor, fast(discard_unreplayable=True), archive=full_disk)

    assert report.aborted is not None
    assert "No space left on device" in report.aborted
    assert report.exit_status == EXIT_ABORTED
    assert report.counts["discarded"] == 0
    assert visible(clients, world) == 3


def test_discarding_needs_an_archive() -> None:
    with pytest.raises(ValueError, match="archive"):
        replay(None, None, fast(discard_unreplayable=True))  # type: ignore[arg-type]


# --- selection, --max and dry run ---------------------------------------------------------


@pytest.fixture
def mixed_queue(send: Callable[..., str]) -> None:
    """Five messages: different events, errors, origins and ages."""
    now = datetime.now(UTC)

    def at(age: timedelta) -> str:
        return (now - age).strftime("%Y-%m-%dT%H:%M:%SZ")

    send(
        on_failure_record(
            tag_change(ORDERS_GROUP, event_id="e-old", time=at(timedelta(hours=5))),
            error_type="TransientFailureError",
        )
    )
    send(
        on_failure_record(
            tag_change(ORDERS_GROUP, event_id="e-recent", time=at(timedelta(minutes=10))),
            error_type="GrantFailed",
            error_message="1 grant(s) failed permanently: CacheSecurityGroupNotFound: x",
        )
    )
    bridged = create_tags([PAYMENTS_GROUP], event_id="e-bridge")
    bridged["time"] = at(timedelta(hours=1))
    send(json.dumps(bridged), eventbridge_dlq_attributes("NO_PERMISSIONS"))
    send(
        json.dumps(tag_change(ORDERS_GROUP, event_id="e-legacy-1", time=at(timedelta(hours=2)))),
        lambda_dlq_attributes(),
    )
    send(
        json.dumps(tag_change(ORDERS_GROUP, event_id="e-legacy-2", time=at(timedelta(hours=3)))),
        lambda_dlq_attributes(),
    )


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (Selection(event_ids=frozenset({"e-bridge", "e-old"})), {"e-bridge", "e-old"}),
        (Selection(errors=("GrantFailed",)), {"e-recent"}),
        (Selection(errors=("cachesecuritygroupnotfound",)), {"e-recent"}),
        (Selection(errors=("no_permissions", "TransientFailureError")), {"e-bridge", "e-old"}),
        (Selection(origins=frozenset({Origin.LAMBDA_DLQ})), {"e-legacy-1", "e-legacy-2"}),
        (Selection(older_than=timedelta(hours=2, minutes=30)), {"e-old", "e-legacy-2"}),
        (Selection(newer_than=timedelta(minutes=90)), {"e-recent", "e-bridge"}),
        (
            Selection(older_than=timedelta(minutes=30), newer_than=timedelta(hours=2, minutes=30)),
            {"e-bridge", "e-legacy-1"},
        ),
    ],
)
def test_selection_replays_only_what_matches(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    mixed_queue: None,
    local: Callable[[], LocalReplayer],
    selection: Selection,
    expected: set[str],
) -> None:
    report = replay(queue, local(), fast(selection=selection))

    succeeded = {m.message.event_id for m in report.messages if m.result is Result.SUCCEEDED}  # type: ignore[union-attr]
    assert succeeded == expected
    assert report.counts["skipped"] == 5 - len(expected)
    assert report.exit_status == EXIT_OK
    assert visible(clients, world) == 5 - len(expected)


def test_max_limits_how_many_are_replayed(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    mixed_queue: None,
    local: Callable[[], LocalReplayer],
) -> None:
    report = replay(queue, local(), fast(max_messages=2))

    assert report.counts["succeeded"] == 2
    assert report.counts["replayed"] == 2
    assert visible(clients, world) == 3
    # The rest are untouched and the next run takes them.
    again = replay(queue, local(), fast())
    assert again.counts["succeeded"] == 3
    assert visible(clients, world) == 0


def test_dry_run_changes_nothing(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    mixed_queue: None,
    send: Callable[..., str],
    authorize_calls: list[dict[str, Any]],
) -> None:
    send("not an event")
    before = bodies(clients, world)
    granted_before = {g: granted(clients, g) for g in ("orders-cache-sg", "payments-cache-sg")}

    report = replay(
        queue,
        lambda letter: pytest.fail("a dry run must not process"),
        fast(dry_run=True, selection=Selection(errors=("GrantFailed",))),
    )

    assert report.counts["wouldReplay"] == 1
    assert report.counts["skipped"] == 4
    assert report.counts["unrecognised"] == 1
    assert report.counts["replayed"] == 0
    assert report.exit_status == EXIT_UNRECOGNISED
    assert bodies(clients, world) == before
    assert visible(clients, world) == 6
    assert authorize_calls == []
    assert {g: granted(clients, g) for g in granted_before} == granted_before
    table = clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)
    assert table["Count"] == 0


def test_unrecognisable_bodies_are_reported_and_kept(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    local: Callable[[], LocalReplayer],
) -> None:
    garbage = send("<html>not json</html>")
    send(json.dumps(tag_change(event_id="e-bare")))  # an event, but no DLQ attributes
    send(on_failure_record(tag_change(event_id="e-fine")))

    report = replay(queue, local(), fast())

    unrecognised = [m for m in report.messages if m.result is Result.UNRECOGNISED]
    assert {m.message.message_id for m in unrecognised} >= {garbage}
    assert {m.reason for m in unrecognised} == {
        "the body is not JSON",
        "a JSON object that is neither a Lambda invocation record nor an event with "
        "Lambda or EventBridge dead-letter attributes",
    }
    assert report.counts["succeeded"] == 1
    assert report.exit_status == EXIT_UNRECOGNISED
    assert visible(clients, world) == 2


SCHEDULED_RUN = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-20T10:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/cache-ingress-reconcile"],
    "detail": {},
}


def test_a_failed_scheduled_run_is_kept_with_what_to_do_never_replayed(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    local: Callable[[], LocalReplayer],
) -> None:
    # Given a reconciliation run that failed, and a tag event, in the queue
    sweep = send(on_failure_record(SCHEDULED_RUN, error_type="ReconcileError"))
    send(on_failure_record(tag_change(event_id="e-fine")))

    report = replay(queue, local(), fast())
    # (peek runs after the replay here, so that the queue holds only the sweep's record)

    # Then peek lists it (a replay skips it, peek shows everything there)
    [listed] = peek(queue, wait_seconds=0)
    assert isinstance(listed, DeadLetter)
    assert listed.message_id == sweep
    # And the tag event is replayed and the sweep's record is kept, pointing at reconcile
    [kept] = [m for m in report.messages if m.message.message_id == sweep]
    assert kept.result is Result.SKIPPED
    assert kept.reason is not None and "cache-ingress reconcile" in kept.reason
    assert "--discard-scheduled-runs" in kept.reason
    assert report.counts["succeeded"] == 1
    assert report.exit_status == EXIT_OK
    assert visible(clients, world) == 1
    letter = read_dead_letter(
        clients["sqs"].receive_message(QueueUrl=world.dead_letter_queue_url)["Messages"][0]
    )
    assert isinstance(letter, DeadLetter)
    assert letter.scheduled_run
    assert letter.as_dict(datetime.now(UTC))["scheduledRun"] is True


def test_discarding_scheduled_runs_deletes_them_and_replays_nothing_for_them(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
) -> None:
    sweep = send(on_failure_record(SCHEDULED_RUN, error_type="ReconcileError"))

    dry = replay(
        queue,
        lambda letter: pytest.fail("never replayed"),
        fast(dry_run=True, discard_scheduled_runs=True),
    )
    assert [m.reason for m in dry.messages] == ["would be discarded (--discard-scheduled-runs)"]
    assert visible(clients, world) == 1

    report = replay(
        queue, lambda letter: pytest.fail("never replayed"), fast(discard_scheduled_runs=True)
    )

    [discarded] = report.messages
    assert discarded.message.message_id == sweep
    assert discarded.result is Result.DISCARDED
    assert report.counts["discarded"] == 1
    assert report.counts["replayed"] == 0
    assert report.exit_status == EXIT_OK
    assert visible(clients, world) == 0


# --- safety under repetition and concurrency ----------------------------------------------


def test_two_replays_of_one_queue_at_once_grant_once(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    local: Callable[[], LocalReplayer],
    authorize_calls: list[dict[str, Any]],
) -> None:
    # Given six events, each in the queue three times (two AWS formats and a copy); the
    # payments ones are real calls by the platform role, which CloudTrail confirms
    platform = Tagger("platform", "alice")
    events = [tag_change(ORDERS_GROUP, event_id=f"e-orders-{i}") for i in range(3)] + [
        {**platform.tag(PAYMENTS_GROUP, {"cache-ingress": "payments"}), "id": f"e-payments-{i}"}
        for i in range(3)
    ]
    sent = set()
    for event in events:
        sent.add(send(on_failure_record(event)))
        sent.add(send(json.dumps(event), eventbridge_dlq_attributes()))
        sent.add(send(on_failure_record(event, invoke_count=2)))

    # When two operators replay the same queue at the same moment
    reports: list[Any] = []
    barrier = threading.Barrier(2)

    def operator() -> None:
        replayer = local()
        barrier.wait()
        reports.append(replay(queue, replayer, fast(concurrency=6)))

    threads = [threading.Thread(target=operator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A copy that met its twin mid-grant was kept ("in progress"); a later run finishes it.
    leftovers = replay(queue, local(), fast())

    # Then each (event, grant) was authorized exactly once, and the queue is empty
    per_event = Counter(
        (c["CacheSecurityGroupName"], c["EC2SecurityGroupName"]) for c in authorize_calls
    )
    assert per_event == {
        ("orders-cache-sg", "orders-app"): 3,
        ("payments-cache-sg", "payments-app"): 3,
    }
    assert len(authorize_calls) == len(events)
    total = sum(r.counts["replayed"] for r in [*reports, leftovers])
    assert total >= 18
    # Every message succeeded. A standard queue delivers at least once, so two receives at
    # the same moment can both get one message (moto does this too): its second replay is
    # a duplicate delivery, answered from the record without another authorize call.
    succeeded = [
        m.message.message_id
        for r in [*reports, leftovers]
        for m in r.messages
        if m.result is Result.SUCCEEDED
    ]
    assert set(succeeded) == sent
    for kept in (m for r in reports for m in r.messages if m.result is Result.STILL_FAILING):
        assert kept.status == "retry-later"
        assert kept.reason is not None
        assert "another execution is making this grant now" in kept.reason
    assert leftovers.exit_status == EXIT_OK
    assert visible(clients, world) == 0


def test_replaying_an_event_again_never_authorizes_again(
    queue: DeadLetterQueue,
    send: Callable[..., str],
    local: Callable[[], LocalReplayer],
    authorize_calls: list[dict[str, Any]],
) -> None:
    event = tag_change(ORDERS_GROUP, event_id="e-twice")
    send(on_failure_record(event))
    first = replay(queue, local(), fast())
    send(json.dumps(event), lambda_dlq_attributes())

    second = replay(queue, local(), fast())

    assert first.counts["succeeded"] == second.counts["succeeded"] == 1
    assert len(authorize_calls) == 1


# --- the deployed function, invoked synchronously (botocore Stubber) ----------------------


class JsonEquals:
    """Compares equal to bytes holding this JSON document."""

    def __init__(self, document: Any) -> None:
        self.document = document

    def __eq__(self, other: object) -> bool:
        return isinstance(other, bytes) and json.loads(other) == self.document

    def __hash__(self) -> int:
        return 0


def payload(document: Any) -> StreamingBody:
    raw = json.dumps(document).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


@pytest.fixture
def lambda_client() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("lambda", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def invoke_request(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "FunctionName": "cache-ingress",
        "InvocationType": "RequestResponse",
        "Payload": JsonEquals({"cache-ingress-replay": {"event": event}}),
    }


def test_invoke_sends_the_replay_payload_and_a_completed_summary_deletes(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    lambda_client: tuple[Any, Stubber],
) -> None:
    client, stubber = lambda_client
    event = tag_change(ORDERS_GROUP, event_id="e-invoke")
    send(on_failure_record(event))
    stubber.add_response(
        "invoke",
        {
            "StatusCode": 200,
            "ExecutedVersion": "$LATEST",
            "Payload": payload({"eventId": "e-invoke", "status": "completed", "dryRun": False}),
        },
        invoke_request(event),
    )

    report = replay(queue, FunctionInvoker(client, "cache-ingress"), fast())

    assert by_event(report) == {"e-invoke": Result.SUCCEEDED}
    assert visible(clients, world) == 0


@pytest.mark.parametrize(
    ("response", "status", "error_type", "reason"),
    [
        (
            {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": payload(
                    {
                        "errorType": "TransientFailureError",
                        "errorMessage": "1 grant(s) failed transiently and will be retried",
                        "requestId": "r-1",
                        "stackTrace": [],
                    }
                ),
            },
            "function-error",
            "TransientFailureError",
            "Unhandled: TransientFailureError: 1 grant(s) failed transiently",
        ),
        (
            {
                "StatusCode": 200,
                "Payload": payload(
                    {
                        "eventId": "e-x",
                        "status": "failed",
                        "dryRun": False,
                        "errorType": "GrantFailed",
                        "reason": "1 grant(s) failed permanently: CacheSecurityGroupNotFound",
                    }
                ),
            },
            "failed",
            "GrantFailed",
            "1 grant(s) failed permanently: CacheSecurityGroupNotFound",
        ),
        (
            {
                "StatusCode": 200,
                "Payload": payload(
                    {"status": "dead-lettered", "errorType": "PolicyInvalid", "reason": "bad"}
                ),
            },
            "dead-lettered",
            "PolicyInvalid",
            "bad",
        ),
        (
            {
                "StatusCode": 200,
                "Payload": payload(
                    {"status": "completed", "dryRun": True, "counts": {"dry-run": 1}}
                ),
            },
            "completed",
            "DryRun",
            "the function runs in dry-run mode",
        ),
    ],
)
def test_invoke_failures_keep_the_message_with_the_reason(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    lambda_client: tuple[Any, Stubber],
    response: dict[str, Any],
    status: str,
    error_type: str,
    reason: str,
) -> None:
    client, stubber = lambda_client
    event = tag_change(ORDERS_GROUP, event_id="e-x")
    send(on_failure_record(event))
    stubber.add_response("invoke", response, invoke_request(event))

    report = replay(queue, FunctionInvoker(client, "cache-ingress"), fast())

    [message] = report.messages
    assert message.result is Result.STILL_FAILING
    assert message.status == status
    assert message.error_type == error_type
    assert message.reason is not None
    assert message.reason.startswith(reason)
    assert report.exit_status == EXIT_STILL_FAILING
    assert visible(clients, world) == 1


def test_invoke_throttling_keeps_the_message_and_the_run_goes_on(
    queue: DeadLetterQueue, send: Callable[..., str], lambda_client: tuple[Any, Stubber]
) -> None:
    client, stubber = lambda_client
    event = tag_change(event_id="e-throttled")
    send(on_failure_record(event))
    stubber.add_client_error(
        "invoke",
        "TooManyRequestsException",
        "Rate exceeded",
        429,
        expected_params=invoke_request(event),
    )

    report = replay(queue, FunctionInvoker(client, "cache-ingress"), fast())

    [message] = report.messages
    assert message.result is Result.STILL_FAILING
    assert message.error_type == "TooManyRequestsException"
    assert report.aborted is None


def test_a_missing_function_stops_the_run_and_keeps_everything(
    clients: dict[str, Any],
    world: SeededWorld,
    queue: DeadLetterQueue,
    send: Callable[..., str],
    lambda_client: tuple[Any, Stubber],
) -> None:
    client, stubber = lambda_client
    for index in range(3):
        send(on_failure_record(tag_change(event_id=f"e-nf-{index}")))
    # Whichever message comes first; the run must stop after it.
    stubber.add_client_error("invoke", "ResourceNotFoundException", "Function not found", 404)

    report = replay(queue, FunctionInvoker(client, "no-such-function"), fast(concurrency=1))

    assert report.aborted is not None
    assert "ResourceNotFoundException" in report.aborted
    assert report.exit_status == EXIT_ABORTED
    assert report.counts["succeeded"] == 0
    assert visible(clients, world) == 3


# --- the local path end to end, through the command line ----------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any], str]:
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return status, lines, captured.err


def test_a_missing_cache_group_replayed_locally_after_the_operator_creates_it(
    clients: dict[str, Any],
    world: SeededWorld,
    capsys: pytest.CaptureFixture[str],
    local: Callable[[], LocalReplayer],
) -> None:
    # Given the function dead-lettered an event: the inventory cache group did not exist
    event = load_event("tag-change-cache-group-missing.json")
    summary = local()._authorizer.handle(event)
    assert summary["status"] == "dead-lettered"
    url = world.dead_letter_queue_url
    common = ["--queue-url", url, "--wait-seconds", "0", "--json"]
    replay_local = [
        "replay", "--local", *common,
        "--idempotency-table", world.scenario.idempotency_table,
        "--ledger-table", str(world.scenario.ledger_table),
    ]  # fmt: skip

    # peek shows it, and leaves it in the queue
    status, lines, _ = run_cli(capsys, "peek", *common)
    assert status == EXIT_OK
    [line] = lines
    assert line["origin"] == "dead-lettered-by-function"
    assert line["eventId"] == event["id"]
    assert line["securityGroups"] == [INVENTORY_GROUP]
    assert line["errorType"] == "GrantFailed"
    assert line["attempts"] == 1
    assert visible(clients, world) == 1

    # replay --local still fails: kept, with the reason, and not dead-lettered again
    status, lines, _ = run_cli(capsys, *replay_local)
    assert status == EXIT_STILL_FAILING
    message, summary_line = lines
    assert message["result"] == "still-failing"
    assert "CacheSecurityGroupNotFound" in message["replayReason"]
    assert summary_line["summary"]["stillFailing"] == 1
    assert visible(clients, world) == 1

    # When the operator creates the cache group and replays
    clients["elasticache"].create_cache_security_group(
        CacheSecurityGroupName="inventory-cache-sg", Description="inventory"
    )
    status, lines, _ = run_cli(capsys, *replay_local)

    # Then ingress is granted and the message is gone
    assert status == EXIT_OK
    assert lines[0]["result"] == "succeeded"
    assert lines[0]["replayStatus"] == "completed"
    assert lines[-1]["summary"] == {
        "dryRun": False,
        "replayed": 1,
        "succeeded": 1,
        "stillFailing": 0,
        "skipped": 0,
        "unrecognised": 0,
        "wouldReplay": 0,
        "discarded": 0,
        "wouldDiscard": 0,
        "exitStatus": 0,
    }
    assert granted(clients, "inventory-cache-sg") == ["inventory-app"]
    assert visible(clients, world) == 0

    # And a second replay finds nothing to do
    status, lines, _ = run_cli(capsys, *replay_local)
    assert status == EXIT_OK
    assert lines == [
        {
            "summary": {
                "dryRun": False,
                "replayed": 0,
                "succeeded": 0,
                "stillFailing": 0,
                "skipped": 0,
                "unrecognised": 0,
                "wouldReplay": 0,
                "discarded": 0,
                "wouldDiscard": 0,
                "exitStatus": 0,
            }
        }
    ]


def test_peek_json_lists_every_message_and_consumes_none(
    clients: dict[str, Any],
    world: SeededWorld,
    mixed_queue: None,
    send: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    send("{broken")

    status, lines, _ = run_cli(
        capsys, "peek", "--queue-url", world.dead_letter_queue_url, "--wait-seconds", "0", "--json"
    )

    assert status == EXIT_OK
    assert sorted(str(line.get("eventId")) for line in lines) == [
        "None", "e-bridge", "e-legacy-1", "e-legacy-2", "e-old", "e-recent",
    ]  # fmt: skip
    origins = Counter(line.get("origin", "unrecognised") for line in lines)
    assert origins == {
        "lambda-retries-exhausted": 2,
        "eventbridge-delivery-failure": 1,
        "lambda-dlq": 2,
        "unrecognised": 1,
    }
    [broken] = [line for line in lines if not line["recognised"]]
    assert broken["reason"] == "the body is not JSON"
    assert visible(clients, world) == 6


def test_peek_table_and_selection(
    world: SeededWorld, mixed_queue: None, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        [
            "peek", "--queue-url", world.dead_letter_queue_url, "--wait-seconds", "0",
            "--origin", "eventbridge-delivery-failure",
        ]
    )  # fmt: skip

    out = capsys.readouterr().out
    header, row, total = out.splitlines()
    assert status == EXIT_OK
    assert header.split() == [
        "EVENT",
        "ID",
        "SOURCE",
        "GROUPS",
        "ORIGIN",
        "ATTEMPTS",
        "AGE",
        "ERROR",
    ]
    assert row.split()[:4] == [
        "e-bridge",
        "aws.ec2",
        PAYMENTS_GROUP,
        "eventbridge-delivery-failure",
    ]
    attempts, age, *error = row.split()[4:]
    assert attempts == "185"
    assert age in {"1h00m", "59m59s"}
    assert " ".join(error) == (
        "NO_PERMISSIONS: Lambda returned TooManyRequestsException: Rate exceeded"
    )
    assert total == "1 message(s), 0 unrecognised"


def test_peek_engine_makes_messages_visible_again_at_once(
    clients: dict[str, Any], world: SeededWorld, queue: DeadLetterQueue, send: Callable[..., str]
) -> None:
    for index in range(12):
        send(on_failure_record(tag_change(event_id=f"e-peek-{index}")))

    messages = peek(queue, wait_seconds=0, visibility_timeout=600)

    assert len(messages) == 12
    assert visible(clients, world) == 12


def test_replay_exit_statuses_through_the_cli(
    clients: dict[str, Any],
    world: SeededWorld,
    send: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = world.dead_letter_queue_url
    table = world.scenario.idempotency_table
    base = ["replay", "--queue-url", url, "--wait-seconds", "0"]

    # no mode: usage error
    assert cli.main(base) == EXIT_USAGE
    assert "--function-name NAME or --local" in capsys.readouterr().err

    # dry run on an empty queue: nothing to do
    assert cli.main([*base, "--dry-run"]) == EXIT_OK

    # an unrecognisable body only: 3
    send("garbage")
    local = ["--local", "--idempotency-table", table, "--ledger-table", "t"]
    assert cli.main([*base, *local]) == EXIT_UNRECOGNISED
    out = capsys.readouterr().out
    assert "unrecognised  (message" in out
    assert out.rstrip().endswith(
        "replayed 0: succeeded 0, still failing 0; skipped 0; unrecognised 1 (exit status 3)"
    )

    # a queue that does not exist: the run stops, 4
    missing = url.rsplit("/", 1)[0] + "/no-such-queue"
    assert cli.main([*base[:1], "--queue-url", missing, "--dry-run"]) == EXIT_ABORTED
    assert "stopped early" in capsys.readouterr().out

    # --local without the settings it needs: usage error naming the variable
    assert cli.main([*base, "--local"]) == EXIT_USAGE
    assert "IDEMPOTENCY_TABLE" in capsys.readouterr().err


def test_the_documented_discard_of_unreplayable_messages_through_the_cli(
    clients: dict[str, Any],
    world: SeededWorld,
    poisoned_queue: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # docs/replay.md, "Messages no replay can succeed with"
    archive = tmp_path / "dead-letters.jsonl"
    base = ["replay", "--queue-url", world.dead_letter_queue_url, "--wait-seconds", "0"]

    assert cli.main([*base, "--dry-run", "--discard-unreplayable"]) == EXIT_OK
    assert "would discard 2" in capsys.readouterr().out
    assert cli.main([*base, "--discard-unreplayable"]) == EXIT_USAGE
    assert "pass --archive" in capsys.readouterr().err
    assert not archive.exists()

    status = cli.main([*base, "--discard-unreplayable", "--archive", str(archive)])

    out = capsys.readouterr().out
    assert status == EXIT_OK
    assert "discarded 2 unreplayable (archived)" in out
    lines = [json.loads(line) for line in archive.read_text(encoding="utf-8").splitlines()]
    by_id = {line["messageId"]: line for line in lines}
    assert set(by_id) == {poisoned_queue["garbage"], poisoned_queue["malformed"]}
    garbage = by_id[poisoned_queue["garbage"]]
    assert garbage["body"] == "<html>not json</html>"
    assert garbage["messageAttributes"]["k"]["StringValue"] == "v"
    assert "SentTimestamp" in garbage["attributes"]
    assert by_id[poisoned_queue["malformed"]]["reason"].startswith("malformed event")
    # The good message was not replayed (no --function-name or --local), and is still there
    [left] = bodies(clients, world)
    assert json.loads(left)["requestPayload"]["id"] == "e-fine"


STACK_POLICY = """
version: 1
tag_key: cache-ingress
targets:
  payments:
    cache_security_group: payments-cache-sg
    allow:
      required_tags: {env: prod}
"""


def test_the_stack_gives_the_queue_the_table_and_the_policy_parameter(
    clients: dict[str, Any],
    world: SeededWorld,
    send: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a stack whose policy (in SSM) no longer has the orders target
    clients["ssm"].put_parameter(Name="/cache-ingress/policy", Value=STACK_POLICY, Type="String")
    send(on_failure_record(tag_change(ORDERS_GROUP, event_id="e-stack-orders")))
    send(on_failure_record(create_tags([PAYMENTS_GROUP], event_id="e-stack-payments")))
    stubbers = stub_stack(
        monkeypatch,
        "cache-ingress",
        outputs={
            "DeadLetterQueueUrl": world.dead_letter_queue_url,
            "IdempotencyTableName": world.scenario.idempotency_table,
            "LedgerTableName": str(world.scenario.ledger_table),
        },
        parameters={"PolicyParameterName": "/cache-ingress/policy", "TagKey": "cache-ingress"},
    )

    status = cli.main(
        ["replay", "--local", "--stack-name", "cache-ingress", "--wait-seconds", "0", "--json"]
    )

    # Then the stack's policy decided: orders denied (and done), payments granted
    assert status == EXIT_OK
    [stubber] = stubbers
    stubber.assert_no_pending_responses()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["summary"]["succeeded"] == 2
    assert granted(clients, "orders-cache-sg") == []
    assert granted(clients, "payments-cache-sg") == ["payments-app"]
    assert visible(clients, world) == 0


# --- progress -----------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_only() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress(stream, total=4)
        progress.advance("succeeded")
        progress.advance("still-failing")
        progress.close()

    assert pipe.getvalue() == ""
    drawn = terminal.getvalue()
    assert drawn.startswith("\r")
    assert "1/~4" in drawn
    assert "succeeded 1" in drawn
    assert drawn.endswith("\r\x1b[2K")


def test_read_dead_letter_is_what_the_engine_reports(
    queue: DeadLetterQueue, send: Callable[..., str]
) -> None:
    message_id = send(on_failure_record(tag_change(event_id="e-same")))

    [received] = queue.receive(visibility_timeout=0, wait_seconds=0)

    letter = read_dead_letter(received.raw)
    assert isinstance(letter, DeadLetter)
    assert received.message_id == letter.message_id == message_id
