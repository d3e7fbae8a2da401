"""`cache-ingress replay --local --endpoint-url`: every AWS call of the function, CloudTrail's
LookupEvents included, goes to the given endpoint, so a replayed principal is verified
against the embedded AWS's history, never against the account of the shell's credentials.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from cache_ingress_tools import cli
from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS, EmbeddedAws
from tests.cli import on_failure_record
from tests.support.events import ORDERS_GROUP, PLATFORM_PRINCIPAL, create_tags
from tests.support.tagging import Tagger

pytestmark = pytest.mark.cli


@pytest.fixture(scope="module")
def running() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(port=0) as aws:
        yield aws


@pytest.fixture
def aws(running: EmbeddedAws, monkeypatch: pytest.MonkeyPatch) -> EmbeddedAws:
    running.reset()
    for name, value in {**DUMMY_CREDENTIALS_ENV, "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    return running


DUMMY_CREDENTIALS_ENV = {
    "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
    "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
}


def client(aws: EmbeddedAws, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=aws.endpoint_url, region_name="us-east-1", **DUMMY_CREDENTIALS
    )


def replay_local(aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = cli.main(
        [
            "replay",
            "--local",
            "--queue-url",
            aws.world.dead_letter_queue_url,
            "--endpoint-url",
            aws.endpoint_url,
            "--wait-seconds",
            "0",
            "--idempotency-table",
            aws.scenario.idempotency_table,
            "--ledger-table",
            str(aws.scenario.ledger_table),
        ]
    )
    return status, capsys.readouterr().out


def admitted(aws: EmbeddedAws) -> list[str]:
    [group] = client(aws, "elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="payments-cache-sg"
    )["CacheSecurityGroups"]
    return [g["EC2SecurityGroupName"] for g in group["EC2SecurityGroups"]]


def test_a_real_platform_call_is_verified_at_the_endpoint_and_granted(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    event = Tagger("platform", "alice", endpoint_url=aws.endpoint_url).tag(
        ORDERS_GROUP, {"cache-ingress": "payments"}
    )
    client(aws, "sqs").send_message(
        QueueUrl=aws.world.dead_letter_queue_url, MessageBody=on_failure_record(event)
    )

    status, out = replay_local(aws, capsys)

    assert status == 0, out
    assert "orders-app" in admitted(aws)


def test_a_forged_message_is_denied_and_the_report_says_so(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    Tagger("developer", "alice", endpoint_url=aws.endpoint_url).tag(
        ORDERS_GROUP, {"cache-ingress": "payments"}
    )
    forged = create_tags([ORDERS_GROUP], event_id="forged-0002", principal=PLATFORM_PRINCIPAL)
    client(aws, "sqs").send_message(
        QueueUrl=aws.world.dead_letter_queue_url, MessageBody=json.dumps(forged)
    )
    client(aws, "sqs").send_message(
        QueueUrl=aws.world.dead_letter_queue_url, MessageBody=on_failure_record(forged)
    )

    status, out = replay_local(aws, capsys)

    assert "orders-app" not in admitted(aws)
    assert "payments denied (principal-provenance)" in out
    # The bare event without dead-letter attributes is unrecognised (kept); the record done.
    assert status == 3, out
