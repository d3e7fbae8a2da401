"""Ctrl-C on `peek` and `replay`: a real SIGINT to a real `cache-ingress` process.

docs/replay.md promises that an interrupted run makes the messages it holds visible again at
once (not after --visibility-timeout), prints what it did so far, and exits 130; a replay
lets the replays under way finish and deletes only what succeeded.

The queue lives in an embedded AWS served from this process, whose ReceiveMessage is slowed
a little, so that the child is still reading when the signal arrives. The child is sent the
signal as soon as it holds messages (the queue counts some as not visible).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.sqs.responses import SQSResponse

from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS, EmbeddedAws
from tests.cli import on_failure_record
from tests.support.events import ORDERS_GROUP, tag_change
from tests.support.processes import CHILD_DEADLINE_SECONDS, REPO_ROOT, interruptible_cli_command

pytestmark = pytest.mark.cli

MESSAGES = 300
RECEIVE_DELAY_SECONDS = 0.05
EXIT_INTERRUPTED = 130


@pytest.fixture(scope="module")
def running() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(port=0) as aws:
        yield aws


@pytest.fixture
def aws(running: EmbeddedAws, monkeypatch: pytest.MonkeyPatch) -> EmbeddedAws:
    running.reset()
    original = SQSResponse.receive_message

    def slow_receive(self: SQSResponse) -> Any:
        time.sleep(RECEIVE_DELAY_SECONDS)
        return original(self)

    monkeypatch.setattr(SQSResponse, "receive_message", slow_receive)
    return running


@pytest.fixture
def sqs(aws: EmbeddedAws) -> Any:
    return boto3.client(
        "sqs", endpoint_url=aws.endpoint_url, region_name="us-east-1", **DUMMY_CREDENTIALS
    )


def fill(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(index), "MessageBody": body}
            for index, body in enumerate(bodies[start : start + 10])
        ]
        assert not sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")


def counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, not visible) messages in the queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def interrupted_run(
    sqs: Any, queue_url: str, arguments: list[str], started: Callable[[], bool]
) -> tuple[int, str, str]:
    """Run `cache-ingress ARGS`, send it SIGINT once `started()`, return (status, out, err)."""
    environment = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    child = subprocess.Popen(  # noqa: S603 - our own console script
        interruptible_cli_command(*arguments),
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + CHILD_DEADLINE_SECONDS
        while not started():
            assert child.poll() is None, "the run ended before it held any message"
            assert time.monotonic() < deadline, "the run never started reading"
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=CHILD_DEADLINE_SECONDS)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return child.returncode, out, err


def test_an_interrupted_peek_makes_every_message_visible_at_once_and_lists_what_it_read(
    aws: EmbeddedAws, sqs: Any
) -> None:
    queue_url = aws.world.dead_letter_queue_url
    fill(sqs, queue_url, [f"not json {index}" for index in range(MESSAGES)])

    status, out, err = interrupted_run(
        sqs,
        queue_url,
        [
            "peek",
            "--queue-url",
            queue_url,
            "--endpoint-url",
            aws.endpoint_url,
            "--wait-seconds",
            "0",
        ],
        started=lambda: counts(sqs, queue_url)[1] > 0,
    )

    # Right after the process ended, not after peek's 120-second visibility timeout
    assert counts(sqs, queue_url) == (MESSAGES, 0)
    assert status == EXIT_INTERRUPTED, err
    assert "interrupted" in err
    [summary] = [line for line in out.splitlines() if line.endswith("unrecognised")]
    listed = int(summary.split()[0])
    assert 0 < listed < MESSAGES
    assert summary == f"{listed} message(s), {listed} unrecognised"
    assert len([line for line in out.splitlines() if line.startswith("(message ")]) == listed


def test_an_interrupted_replay_deletes_what_succeeded_and_makes_the_rest_visible_at_once(
    aws: EmbeddedAws, sqs: Any
) -> None:
    queue_url = aws.world.dead_letter_queue_url
    fill(
        sqs,
        queue_url,
        [
            on_failure_record(tag_change(ORDERS_GROUP, event_id=f"e-interrupt-{index}"))
            for index in range(MESSAGES)
        ],
    )

    status, out, err = interrupted_run(
        sqs,
        queue_url,
        [
            "replay",
            "--local",
            "--queue-url",
            queue_url,
            "--endpoint-url",
            aws.endpoint_url,
            "--wait-seconds",
            "0",
            "--idempotency-table",
            aws.scenario.idempotency_table,
            "--ledger-table",
            str(aws.scenario.ledger_table),
            "--concurrency",
            "4",
            "--json",
        ],
        started=lambda: counts(sqs, queue_url)[1] > 0,
    )

    assert status == EXIT_INTERRUPTED, err
    visible, hidden = counts(sqs, queue_url)
    lines = [json.loads(line) for line in out.splitlines()]
    summary = lines[-1]["summary"]
    assert summary["interrupted"] is True
    assert summary["exitStatus"] == EXIT_INTERRUPTED
    # Every replayed message succeeded and is gone; every other one is visible again now.
    assert summary["stillFailing"] == 0
    assert 0 < summary["succeeded"] < MESSAGES
    assert hidden == 0
    assert visible == MESSAGES - summary["succeeded"]
    reported = [line for line in lines[:-1] if line["result"] == "succeeded"]
    assert len(reported) == summary["succeeded"]
    assert "stopping" in err
