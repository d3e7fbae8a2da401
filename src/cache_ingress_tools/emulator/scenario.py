"""Scenario files: the small, readable world the embedded AWS is seeded with.

The same seeding serves the local run, the emulator command and the tests, so the sample
events in `events/` mean the same thing everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

DEFAULT_SCENARIO = Path(__file__).with_name("default-scenario.yaml")
_GROUP_ID = re.compile(r"sg-[0-9a-f]{8,17}")
_ACCOUNT = re.compile(r"\d{12}")


class ScenarioError(ValueError):
    """The scenario file is not valid; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class SecurityGroupSeed:
    group_id: str
    name: str
    description: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    account_id: str
    region: str
    security_groups: tuple[SecurityGroupSeed, ...]
    cache_security_groups: tuple[str, ...]
    idempotency_table: str
    dead_letter_queue: str


@dataclass(frozen=True, slots=True)
class SeededWorld:
    """What seeding created, for the function's environment."""

    scenario: Scenario
    dead_letter_queue_url: str
    vpc_id: str

    def function_environment(self) -> dict[str, str]:
        return {
            "ACCOUNT_ID": self.scenario.account_id,
            "AWS_REGION": self.scenario.region,
            "IDEMPOTENCY_TABLE": self.scenario.idempotency_table,
            "DEAD_LETTER_QUEUE_URL": self.dead_letter_queue_url,
        }


def load_scenario(path: Path = DEFAULT_SCENARIO) -> Scenario:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"scenario {path}: cannot be read: {exc}") from exc
    try:
        return _scenario(document)
    except ScenarioError as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from None


def _scenario(document: object) -> Scenario:
    root = _mapping(document, "(top level)")
    account = str(root.get("account_id", ""))
    if not _ACCOUNT.fullmatch(account):
        raise ScenarioError("account_id: must be a quoted 12-digit account id")
    groups = []
    for index, raw in enumerate(_list(root.get("security_groups", []), "security_groups")):
        where = f"security_groups[{index}]"
        item = _mapping(raw, where)
        group_id = str(item.get("id", ""))
        if not _GROUP_ID.fullmatch(group_id):
            raise ScenarioError(f"{where}.id: must be a security group id like sg-0a1b2c3d")
        tags = _mapping(item.get("tags", {}), f"{where}.tags")
        groups.append(
            SecurityGroupSeed(
                group_id=group_id,
                name=_text(item, "name", where),
                description=str(item.get("description") or item["name"]),
                tags={str(key): str(value) for key, value in tags.items()},
            )
        )
    cache_groups = tuple(
        _text(
            _mapping(raw, f"cache_security_groups[{index}]"),
            "name",
            f"cache_security_groups[{index}]",
        )
        for index, raw in enumerate(
            _list(root.get("cache_security_groups", []), "cache_security_groups")
        )
    )
    return Scenario(
        account_id=account,
        region=_text(root, "region", "(top level)"),
        security_groups=tuple(groups),
        cache_security_groups=cache_groups,
        idempotency_table=_text(root, "idempotency_table", "(top level)"),
        dead_letter_queue=_text(root, "dead_letter_queue", "(top level)"),
    )


def seed(scenario: Scenario, clients: Mapping[str, Any]) -> SeededWorld:
    """Create the scenario's resources through ordinary boto3 clients of the embedded AWS."""
    ec2 = clients["ec2"]
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0][
        "VpcId"
    ]
    for group in scenario.security_groups:
        with _next_group_id(group.group_id):
            ec2.create_security_group(
                GroupName=group.name,
                Description=group.description,
                VpcId=vpc_id,
                TagSpecifications=[
                    {
                        "ResourceType": "security-group",
                        "Tags": [{"Key": k, "Value": v} for k, v in group.tags.items()],
                    }
                ]
                if group.tags
                else [],
            )
    for name in scenario.cache_security_groups:
        clients["elasticache"].create_cache_security_group(
            CacheSecurityGroupName=name, Description=f"{name} (seeded)"
        )
    clients["dynamodb"].create_table(
        TableName=scenario.idempotency_table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queue_url = clients["sqs"].create_queue(QueueName=scenario.dead_letter_queue)["QueueUrl"]
    return SeededWorld(scenario=scenario, dead_letter_queue_url=queue_url, vpc_id=vpc_id)


@contextmanager
def _next_group_id(group_id: str) -> Iterator[None]:
    """moto draws security-group ids at random; a scenario fixes them so events can name
    them. Works wherever moto runs in this process (mock_aws or the threaded server).
    """
    with mock.patch(
        "moto.ec2.models.security_groups.random_security_group_id", return_value=group_id
    ):
        yield


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where}: must be a mapping")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: must be a list")
    return value


def _text(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where}.{key}: must be a non-empty string")
    return value
