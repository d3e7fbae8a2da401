"""The suite's shared fixtures, one pytest plugin (registered by tests/conftest.py).

- `offline_aws_environment` (every test): an AWS environment that can only ever reach moto.
- The moto world: moto in process with the embedded AWS's emulation (cache security groups,
  VPC caches, atomic writes, security-group paging) is started once per test module
  (`moto_world`) and emptied before each test that asks for it (`aws`): every moto backend
  is reset, and with them the emulation's state, which lives on those backends (cache
  security groups and their ingress, the EC2-Classic switch, VPC caches). `clients` are new
  for each test, from one boto3 session that keeps the service models (so a test's event
  hooks and stubs never outlive it); `world` seeds the default scenario.
- `authorize_calls`, `make_authorizer`, `function_environment`: the function wired to the
  test's world.

Starting moto, loading five service models and seeding cost most of a test's time when
each test did them all; now a test pays for the reset and the seeding it uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from moto.core.models import MockAWS

from cache_ingress.authorizer import Authorizer
from cache_ingress.aws import Clients
from cache_ingress.settings import Settings, current_settings
from cache_ingress.wiring import build_authorizer, current_authorizer
from cache_ingress_tools.emulator.cache_security_groups import install
from cache_ingress_tools.emulator.scenario import (
    MEMBER_SCENARIO,
    Scenario,
    SeededWorld,
    load_scenario,
    seed,
)

SERVICES = ("ec2", "elasticache", "dynamodb", "sqs", "ssm")
REGION = "us-east-1"
# One attempt: retry timing is botocore's business, and injected faults should fail fast.
TEST_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1})
OFFLINE_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    # moto loads some 2,600 sample AMIs into each new EC2 backend, that is at every reset;
    # no test uses one, and without them a reset and seeding cost a third as much.
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
}
UNSET = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_SESSION_TOKEN",
    "POLICY_PARAMETER",
    "POLICY_FILE",
    "DRY_RUN",
    "POWERTOOLS_IDEMPOTENCY_DISABLED",
)


@pytest.fixture(autouse=True)
def offline_aws_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in OFFLINE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "cache-ingress")
    current_settings.cache_clear()
    current_authorizer.cache_clear()
    yield
    current_settings.cache_clear()
    current_authorizer.cache_clear()


# --- the moto world -----------------------------------------------------------------------


@cache
def shared_session() -> boto3.Session:
    """One boto3 session for every client the tests create in this process: its loader keeps
    the service models, which a new session would read again (a quarter of a second for
    five clients)."""
    return boto3.Session(region_name=REGION)


@cache
def default_scenario() -> Scenario:
    return load_scenario()


@cache
def member_scenario() -> Scenario:
    return load_scenario(MEMBER_SCENARIO)


class MotoWorld:
    """moto in process for one test module, emptied on demand."""

    def __init__(self) -> None:
        install()
        self._mock = mock_aws()

    def __enter__(self) -> MotoWorld:
        # Another moto already running here (a module's own shared world, as in
        # tests/security) would be emptied by every reset of this one: refuse instead.
        if MockAWS._nested_count:  # moto keeps the count of running mocks on the class
            raise RuntimeError(
                "moto already runs in this module (a shared world of its own?): its tests "
                "cannot also ask for the per-test world (aws, clients, world)"
            )
        self._mock.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._mock.stop()

    def reset(self) -> None:
        """Every moto backend back to empty (the emulation's state lives on them), and the
        default session the function's own clients come from set to the shared one."""
        self._mock.reset()
        boto3.DEFAULT_SESSION = shared_session()

    @staticmethod
    def clients() -> dict[str, Any]:
        session = shared_session()
        return {
            name: session.client(name, region_name=REGION, config=TEST_CLIENT_CONFIG)  # type: ignore[call-overload]
            for name in SERVICES
        }


@pytest.fixture(scope="module")
def moto_world() -> Iterator[MotoWorld]:
    """Started once for the module (the per-test environment is not set yet: set it here)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in UNSET:
            patch.delenv(name, raising=False)
        for name, value in OFFLINE_ENVIRONMENT.items():
            patch.setenv(name, value)
        with MotoWorld() as world_:
            yield world_


@pytest.fixture
def aws(moto_world: MotoWorld) -> None:
    """moto in process, with the embedded AWS's emulation, empty for this test."""
    moto_world.reset()


@pytest.fixture
def clients(aws: None, moto_world: MotoWorld) -> dict[str, Any]:
    return moto_world.clients()


@pytest.fixture
def world(clients: dict[str, Any]) -> SeededWorld:
    return seed(default_scenario(), clients)


@pytest.fixture
def member_world(clients: dict[str, Any]) -> SeededWorld:
    """The member scenario: a cache account and two member accounts of one organization,
    with both templates' roles, bus and rules deployed (emulator/organization.py)."""
    session = shared_session()
    return seed(
        member_scenario(),
        clients,
        client_for=lambda service: session.client(  # type: ignore[call-overload]
            service, region_name=REGION, config=TEST_CLIENT_CONFIG
        ),
    )


def function_clients(world: SeededWorld, services: tuple[str, ...] = SERVICES) -> Clients:
    """The function's clients as Lambda gives them: acting with its execution role's
    credentials in a member scenario (the member read roles trust that role only)."""
    members = world.members
    injected = Clients(world.scenario.region)
    if members is None:
        return injected
    credentials = members.function_credentials
    for name in (*services, "sts", "cloudtrail"):
        injected.inject(
            name,
            shared_session().client(  # type: ignore[call-overload]
                name,
                region_name=world.scenario.region,
                config=TEST_CLIENT_CONFIG,
                aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=credentials["AWS_SESSION_TOKEN"],
            ),
        )
    return injected


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
