"""Fixtures for the handler and adapters against moto (in process) and the emulation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from cache_ingress.authorizer import Authorizer
from cache_ingress.aws import Clients
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from cache_ingress_tools.emulator.cache_security_groups import install
from cache_ingress_tools.emulator.scenario import SeededWorld, load_scenario, seed

SERVICES = ("ec2", "elasticache", "dynamodb", "sqs", "ssm")
# One attempt: retry timing is botocore's business, and injected faults should fail fast.
TEST_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture
def aws() -> Iterator[None]:
    """moto in process, with the embedded AWS's emulation: cache security groups and VPC caches."""
    install()
    with mock_aws():
        yield


@pytest.fixture
def clients(aws: None) -> dict[str, Any]:
    return {
        name: boto3.client(name, region_name="us-east-1", config=TEST_CLIENT_CONFIG)  # type: ignore[call-overload]
        for name in SERVICES
    }


@pytest.fixture
def world(clients: dict[str, Any]) -> SeededWorld:
    return seed(load_scenario(), clients)


@pytest.fixture
def authorize_calls(clients: dict[str, Any]) -> list[dict[str, Any]]:
    """Every AuthorizeCacheSecurityGroupIngress request, as sent."""
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(params)

    clients["elasticache"].meta.events.register(
        "provide-client-params.elasticache.AuthorizeCacheSecurityGroupIngress", record
    )
    return calls


@pytest.fixture
def make_authorizer(world: SeededWorld, clients: dict[str, Any]) -> Callable[..., Authorizer]:
    def make(**environment: str) -> Authorizer:
        settings = Settings.from_environ({**world.function_environment(), **environment})
        injected = Clients(settings.region)
        for name, client in clients.items():
            injected.inject(name, client)
        return build_authorizer(settings, injected)

    return make


@pytest.fixture
def function_environment(world: SeededWorld, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the deployed function gets, for tests through lambda_handler."""
    environment = world.function_environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "cache-ingress")
    return environment


def dead_letters(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message in the queue (bodies parsed), left invisible for the test's duration."""
    messages = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=300,
        )
        received = batch.get("Messages", [])
        if not received:
            return messages
        messages.extend(
            {"body": json.loads(m["Body"]), "attributes": m.get("MessageAttributes", {})}
            for m in received
        )
