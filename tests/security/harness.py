"""One moto world shared by many cases, each case starting from the seeded state.

The security tests run hundreds of events (a corpus, hypothesis examples, a fault matrix).
Starting moto and loading five service models for each would cost most of their time, so a
module starts the world once and every case gets `fresh()`: its own idempotency table and
dead-letter queue, the scenario's tags back on every group, and no ingress left in any cache
security group. What a case can change is exactly what `fresh()` puts back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from moto import mock_aws

from cache_ingress.aws import Clients
from cache_ingress.settings import Settings
from cache_ingress_tools.emulator.cache_security_groups import install, set_classic_enabled
from cache_ingress_tools.emulator.scenario import SeededWorld, load_scenario, seed
from tests.integration.conftest import SERVICES, TEST_CLIENT_CONFIG

AUTHORIZE_EVENT = "provide-client-params.elasticache.AuthorizeCacheSecurityGroupIngress"
RULE_EVENT = "provide-client-params.ec2.AuthorizeSecurityGroupIngress"


@cache
def shared_session() -> boto3.Session:
    """One boto3 session for every client the tests create: its loader keeps the service
    models, which a fresh session would read again for each case."""
    return boto3.Session()


@dataclass
class Fresh:
    """What one case runs against: the function's environment and where it writes."""

    environment: dict[str, str]
    table: str
    queue_url: str


class SharedWorld:
    """The default scenario in moto (in process), seeded once."""

    def __init__(self, clients: dict[str, Any], world: SeededWorld) -> None:
        self.clients = clients
        self.world = world
        self._numbers = itertools.count(1)
        self.authorize_calls: list[dict[str, Any]] = []
        self.rule_calls: list[dict[str, Any]] = []
        clients["elasticache"].meta.events.register(AUTHORIZE_EVENT, self._record)
        clients["ec2"].meta.events.register(RULE_EVENT, self._record_rule)
        self._other_vpc: str | None = None

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.authorize_calls.append(params)

    def _record_rule(self, params: dict[str, Any], **_: Any) -> None:
        self.rule_calls.append(params)

    @property
    def other_vpc(self) -> str:
        """A second VPC, for caches the seeded groups cannot reach."""
        if self._other_vpc is None:
            vpc = self.clients["ec2"].create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]
            self._other_vpc = str(vpc["VpcId"])
        return self._other_vpc

    @property
    def account(self) -> str:
        return self.world.scenario.account_id

    @property
    def region(self) -> str:
        return self.world.scenario.region

    def fresh(self, *, reset_world: bool = True) -> Fresh:
        """A new table and queue; with `reset_world`, the seeded tags and no ingress."""
        number = next(self._numbers)
        table = f"idempotency-{number}"
        self.clients["dynamodb"].create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        queue_url = self.clients["sqs"].create_queue(QueueName=f"dlq-{number}")["QueueUrl"]
        if reset_world:
            self._restore_tags()
            self._revoke_all_ingress()
            set_classic_enabled(self.account, self.region, True)
        self.authorize_calls.clear()
        self.rule_calls.clear()
        environment = {
            **self.world.function_environment(),
            "IDEMPOTENCY_TABLE": table,
            "DEAD_LETTER_QUEUE_URL": queue_url,
        }
        return Fresh(environment=environment, table=table, queue_url=queue_url)

    def groups_now(self, group_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The named groups as EC2 holds them now, as plain data for the oracle."""
        groups: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(group_ids))
        for start in range(0, len(unique), 200):
            found = self.clients["ec2"].describe_security_groups(
                Filters=[{"Name": "group-id", "Values": unique[start : start + 200]}]
            )["SecurityGroups"]
            for group in found:
                groups[group["GroupId"]] = {
                    "name": group["GroupName"],
                    "owner_id": group["OwnerId"],
                    "region": self.region,
                    "vpc_id": group.get("VpcId"),
                    "tags": {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])},
                }
        return groups

    def dead_letter_count(self, queue_url: str) -> int:
        attributes = self.clients["sqs"].get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def injected_clients(self, settings: Settings) -> Clients:
        injected = Clients(settings.region)
        for name, client in self.clients.items():
            injected.inject(name, client)
        return injected

    def _restore_tags(self) -> None:
        ec2 = self.clients["ec2"]
        for group in self.world.scenario.security_groups:
            current = ec2.describe_tags(
                Filters=[{"Name": "resource-id", "Values": [group.group_id]}]
            )["Tags"]
            if {t["Key"]: t["Value"] for t in current} == dict(group.tags):
                continue
            if current:
                ec2.delete_tags(
                    Resources=[group.group_id], Tags=[{"Key": t["Key"]} for t in current]
                )
            if group.tags:
                ec2.create_tags(
                    Resources=[group.group_id],
                    Tags=[{"Key": k, "Value": v} for k, v in group.tags.items()],
                )

    def _revoke_all_ingress(self) -> None:
        elasticache = self.clients["elasticache"]
        for cache_group in elasticache.describe_cache_security_groups()["CacheSecurityGroups"]:
            for pair in cache_group["EC2SecurityGroups"]:
                elasticache.revoke_cache_security_group_ingress(
                    CacheSecurityGroupName=cache_group["CacheSecurityGroupName"],
                    EC2SecurityGroupName=pair["EC2SecurityGroupName"],
                    EC2SecurityGroupOwnerId=pair["EC2SecurityGroupOwnerId"],
                )


@contextmanager
def shared_world() -> Iterator[SharedWorld]:
    install()
    with mock_aws():
        session = shared_session()
        clients = {
            name: session.client(name, region_name="us-east-1", config=TEST_CLIENT_CONFIG)  # type: ignore[call-overload]
            for name in (*SERVICES, "cloudtrail")
        }
        yield SharedWorld(clients, seed(load_scenario(), clients))
