"""A burst of tag events with duplicates, run through the real handler against the embedded
AWS (moto's threaded server on 127.0.0.1). Shared by tests/security/test_load.py (which
asserts the accounting) and benchmarks/load_burst.py (which prints events per second).

The burst: many groups, each tagged for one or two targets, most allowed and some denied;
each unique event (a Tag Change or a CreateTags call by a platform principal) names one
group and is delivered one to three times, duplicates spread through the burst, and many
different events ask for the same grant. What must happen is computed with the independent
oracle: one authorize call per (event, permitted grant), whatever the duplicates.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml

from cache_ingress.authorizer import Authorizer
from cache_ingress.aws import Clients
from cache_ingress.errors import TransientFailureError
from cache_ingress.handler import lambda_handler
from cache_ingress.settings import Settings, current_settings
from cache_ingress.wiring import build_authorizer, current_authorizer
from cache_ingress_tools.emulator.server import EmbeddedAws
from tests.security import oracle
from tests.support.events import PLATFORM_PRINCIPAL, create_tags, tag_change
from tests.support.lambda_context import FakeLambdaContext

BUNDLED_POLICY = (
    Path(__file__).resolve().parents[2] / "functions/authorizer/cache_ingress/policy.yaml"
)
AUTHORIZE_EVENT = "provide-client-params.elasticache.AuthorizeCacheSecurityGroupIngress"
# (cache-ingress tag, env tag) of the burst's groups: allowed, partly allowed, denied.
GROUP_KINDS = (
    ("orders", "prod"),
    ("orders,payments", "prod"),
    ("payments", "prod"),
    ("inventory", "prod"),
    ("orders", "staging"),
    ("orders, inventory", "prod"),
)
# How often Lambda would retry an event raised for retry before the burst gives up on it.
MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class Burst:
    deliveries: list[dict[str, Any]]
    unique_events: int
    # (event id, cache security group, EC2 group name) -> 1 for every grant that needs a call.
    expected_calls: Counter[tuple[str, str, str]]


@dataclass
class Outcome:
    """What became of the burst."""

    seconds: float
    deliveries: int
    attempts: int
    final_status: dict[str, str] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    unfinished: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds else float("inf")


class BurstWorld:
    """The embedded AWS, seeded with the default scenario plus the burst's groups."""

    def __init__(self, aws: EmbeddedAws, group_count: int) -> None:
        self.aws = aws
        self.clients = aws.clients()
        self.clients["elasticache"].create_cache_security_group(
            CacheSecurityGroupName="inventory-cache-sg", Description="inventory"
        )
        self.groups: dict[str, dict[str, Any]] = {}
        for index in range(group_count):
            value, env = GROUP_KINDS[index % len(GROUP_KINDS)]
            name = f"burst-app-{index}"
            tags = {"cache-ingress": value, "env": env}
            group_id = self.clients["ec2"].create_security_group(
                GroupName=name,
                Description="burst",
                VpcId=aws.world.vpc_id,
                TagSpecifications=[
                    {
                        "ResourceType": "security-group",
                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                    }
                ],
            )["GroupId"]
            self.groups[group_id] = {
                "name": name,
                "owner_id": aws.scenario.account_id,
                "region": aws.scenario.region,
                "tags": tags,
            }

    def environment(self) -> dict[str, str]:
        return {
            **self.aws.world.function_environment(),
            "AWS_ENDPOINT_URL": self.aws.endpoint_url,
            "AWS_LAMBDA_FUNCTION_NAME": "cache-ingress",
        }

    def dead_letter_count(self) -> int:
        attributes = self.clients["sqs"].get_queue_attributes(
            QueueUrl=self.aws.world.dead_letter_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


@contextmanager
def burst_world(group_count: int = 60) -> Iterator[BurstWorld]:
    with EmbeddedAws(port=0) as aws:
        yield BurstWorld(aws, group_count)


def make_burst(world: BurstWorld, unique_events: int, *, seed: int = 6) -> Burst:
    """Unique events, each delivered 1-3 times, in a shuffled order (fixed by `seed`)."""
    chooser = random.Random(seed)  # noqa: S311 - a reproducible shuffle, not a secret
    policy = yaml.safe_load(BUNDLED_POLICY.read_text(encoding="utf-8"))
    scenario = world.aws.scenario
    scope = oracle.Scope(scenario.account_id, scenario.region, scenario.account_id, scenario.region)
    group_ids = sorted(world.groups)
    deliveries: list[dict[str, Any]] = []
    expected: Counter[tuple[str, str, str]] = Counter()
    for number in range(unique_events):
        group_id = chooser.choice(group_ids)
        event_id = f"burst-{seed}-{number:05d}"
        if chooser.random() < 0.5:
            event = tag_change(group_id, event_id=event_id)
        else:
            event = create_tags([group_id], event_id=event_id, principal=PLATFORM_PRINCIPAL)
        for permit in oracle.permitted([group_id], world.groups, event, policy, scope):
            cache_group, group_name, _ = permit.authorize_parameters
            expected[(event_id, cache_group, group_name)] += 1
        deliveries += [event] * chooser.choice((1, 1, 2, 3))
    chooser.shuffle(deliveries)
    return Burst(deliveries=deliveries, unique_events=unique_events, expected_calls=expected)


class CallRecorder:
    """Authorize requests, attributed to the event the calling thread is handling."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self._current = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def handling(self, event_id: str) -> Iterator[None]:
        self._current.event_id = event_id
        try:
            yield
        finally:
            self._current.event_id = None

    def record(self, params: dict[str, Any], **_: Any) -> None:
        key = (
            str(getattr(self._current, "event_id", None)),
            params["CacheSecurityGroupName"],
            params["EC2SecurityGroupName"],
        )
        with self._lock:
            self.calls[key] += 1


@contextmanager
def handler_environment(world: BurstWorld, recorder: CallRecorder) -> Iterator[None]:
    """os.environ and boto3's default session as the deployed handler would see them."""
    saved = dict(os.environ)
    os.environ.update(world.environment())
    for name in ("POLICY_FILE", "POLICY_PARAMETER", "DRY_RUN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    session = boto3.Session()
    session.events.register(AUTHORIZE_EVENT, recorder.record)
    saved_session = boto3.DEFAULT_SESSION
    boto3.DEFAULT_SESSION = session
    current_settings.cache_clear()
    current_authorizer.cache_clear()
    try:
        yield
    finally:
        current_settings.cache_clear()
        current_authorizer.cache_clear()
        boto3.DEFAULT_SESSION = saved_session
        os.environ.clear()
        os.environ.update(saved)


def run_through_handler(deliveries: Sequence[dict[str, Any]], recorder: CallRecorder) -> Outcome:
    """One execution environment, one invocation at a time, as Lambda runs them; an event
    raised for retry goes back to the end of the line, as Lambda's async retry would."""
    line: queue.SimpleQueue[tuple[dict[str, Any], int]] = queue.SimpleQueue()
    for event in deliveries:
        line.put((event, 1))
    outcome = Outcome(seconds=0.0, deliveries=len(deliveries), attempts=0)
    started = time.perf_counter()
    while not line.empty():
        event, attempt = line.get()
        outcome.attempts += 1
        with recorder.handling(event["id"]):
            try:
                summary = lambda_handler(event, FakeLambdaContext())
            except TransientFailureError:
                _retry_or_give_up(line, event, attempt, outcome)
                continue
        _finish(outcome, event["id"], summary["status"])
    outcome.seconds = time.perf_counter() - started
    return outcome


def run_concurrently(
    deliveries: Sequence[dict[str, Any]],
    recorder: CallRecorder,
    make_authorizer: Callable[[], Authorizer],
    environments: int = 4,
) -> Outcome:
    """Several execution environments at once, each with its own clients, so that duplicate
    deliveries of one event can meet while its grant is in progress."""
    line: queue.SimpleQueue[tuple[dict[str, Any], int] | None] = queue.SimpleQueue()
    for event in deliveries:
        line.put((event, 1))
    outcome = Outcome(seconds=0.0, deliveries=len(deliveries), attempts=0)
    lock = threading.Lock()
    pending = [len(deliveries)]
    authorizers = [make_authorizer() for _ in range(environments)]

    def work(authorizer: Authorizer) -> None:
        while True:
            item = line.get()
            if item is None:
                return
            event, attempt = item
            with recorder.handling(event["id"]):
                try:
                    summary = authorizer.handle(event, FakeLambdaContext())
                except TransientFailureError:
                    with lock:
                        outcome.attempts += 1
                        _retry_or_give_up(line, event, attempt, outcome)
                        if attempt >= MAX_ATTEMPTS:
                            _one_done(pending, line, environments)
                    continue
            with lock:
                outcome.attempts += 1
                _finish(outcome, event["id"], summary["status"])
                _one_done(pending, line, environments)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(a,)) for a in authorizers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcome.seconds = time.perf_counter() - started
    return outcome


def new_environment() -> Authorizer:
    """A new execution environment: its own settings and clients. The clients are created
    here, on the calling thread, because a boto3 session is not safe to create clients
    from on several threads at once."""
    settings = Settings.from_environ(dict(os.environ))
    clients = Clients(settings.region)
    for service in ("ec2", "elasticache", "dynamodb", "sqs"):
        clients.get(service)
    return build_authorizer(settings, clients)


def _retry_or_give_up(
    line: queue.SimpleQueue[Any], event: dict[str, Any], attempt: int, outcome: Outcome
) -> None:
    if attempt < MAX_ATTEMPTS:
        line.put((event, attempt + 1))
    else:
        outcome.unfinished.append(event["id"])


def _finish(outcome: Outcome, event_id: str, status: str) -> None:
    outcome.statuses[status] += 1
    outcome.final_status[event_id] = status


def _one_done(pending: list[int], line: queue.SimpleQueue[Any], environments: int) -> None:
    pending[0] -= 1
    if pending[0] == 0:
        for _ in range(environments):
            line.put(None)
