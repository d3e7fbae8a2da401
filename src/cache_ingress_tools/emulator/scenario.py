"""Scenario files: the small, readable world the embedded AWS is seeded with.

The same seeding serves the local run, the emulator command and the tests, so the sample
events in `events/` mean the same thing everywhere.

Reference (``default-scenario.yaml`` beside this file is a complete example)::

    account_id: "123456789012"        # required; quoted, 12 digits
    region: us-east-1                 # required
    security_groups:                  # optional; EC2 security groups in the default VPC
      - id: sg-0a1b2c3d4e5f60718      # required; the id events name (sg- and 8-17 hex digits)
        name: orders-app              # required; unique; must not start with "sg-"
        description: orders service   # optional; default: the name
        tags: {cache-ingress: orders, env: prod}   # optional; strings only (quote "yes", 1)
    cache_security_groups:            # optional; ElastiCache cache security groups
      - name: orders-cache-sg         # required; unique regardless of case; not "default"
    idempotency_table: cache-ingress-idempotency   # required; DynamoDB table name
    dead_letter_queue: cache-ingress-dlq           # required; SQS queue name

Anything else is an error naming the file and the field, e.g.
``scenario my.yaml: security_groups[2].tags.env: must be a string, got bool (quote it)``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from unittest import mock

import yaml

DEFAULT_SCENARIO = Path(__file__).with_name("default-scenario.yaml")
_GROUP_ID = re.compile(r"sg-[0-9a-f]{8,17}")
_ACCOUNT = re.compile(r"\d{12}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
_CACHE_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,254}")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_TABLE_NAME_RULE: Final = "a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)"
_QUEUE_NAME_RULE: Final = "an SQS queue name (1-80 of A-Z a-z 0-9 _ -)"
_GROUP_NAME_MAX: Final = 255
_DESCRIPTION_MAX: Final = 255
_TAGS_MAX: Final = 50
_TAG_KEY_MAX: Final = 128
_TAG_VALUE_MAX: Final = 256
_RESERVED_CACHE_GROUP: Final = "default"

_TOP_LEVEL_REQUIRED = frozenset({"account_id", "region", "idempotency_table", "dead_letter_queue"})
_TOP_LEVEL_OPTIONAL = frozenset({"security_groups", "cache_security_groups"})
_GROUP_REQUIRED = frozenset({"id", "name"})
_GROUP_OPTIONAL = frozenset({"description", "tags"})
_CACHE_GROUP_REQUIRED = frozenset({"name"})


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

    def security_group(self, group_id: str) -> SecurityGroupSeed | None:
        """The seeded group with this id, if the scenario has one."""
        return next((g for g in self.security_groups if g.group_id == group_id), None)


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
    """Read and validate a scenario file; raises ScenarioError naming the file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario {path}: cannot be read: {exc}") from None
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario {path}: not valid YAML: {exc}") from None
    try:
        return _scenario(document)
    except ScenarioError as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: a repeated group would silently hide one."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _scenario(document: object) -> Scenario:
    if document is None:
        raise ScenarioError("(top level): the file is empty")
    root = _object(document, "(top level)", _TOP_LEVEL_REQUIRED, _TOP_LEVEL_OPTIONAL)
    account = root["account_id"]
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise ScenarioError(
            f"account_id: must be a quoted 12-digit account id, got {_shown(account)}"
        )
    region = _matching(root, "region", _REGION, "an AWS region such as us-east-1", "")
    return Scenario(
        account_id=account,
        region=region,
        security_groups=_security_groups(root.get("security_groups", [])),
        cache_security_groups=_cache_security_groups(root.get("cache_security_groups", [])),
        idempotency_table=_matching(root, "idempotency_table", _TABLE_NAME, _TABLE_NAME_RULE, ""),
        dead_letter_queue=_matching(root, "dead_letter_queue", _QUEUE_NAME, _QUEUE_NAME_RULE, ""),
    )


def _security_groups(raw: object) -> tuple[SecurityGroupSeed, ...]:
    groups: list[SecurityGroupSeed] = []
    ids: dict[str, str] = {}
    names: dict[str, str] = {}
    for index, item in enumerate(_list(raw, "security_groups")):
        where = f"security_groups[{index}]"
        entry = _object(item, where, _GROUP_REQUIRED, _GROUP_OPTIONAL)
        group_id = entry["id"]
        if not isinstance(group_id, str) or not _GROUP_ID.fullmatch(group_id):
            raise ScenarioError(
                f"{where}.id: must be a security group id like sg-0a1b2c3d (8-17 lower-case "
                f"hex digits), got {_shown(group_id)}"
            )
        if group_id in ids:
            raise ScenarioError(f"{where}.id: {group_id} is already the id of {ids[group_id]}")
        name = _text(entry, "name", where, _GROUP_NAME_MAX)
        if name.lower().startswith("sg-"):
            raise ScenarioError(f"{where}.name: EC2 group names cannot start with 'sg-'")
        if name in names:
            raise ScenarioError(f"{where}.name: {name!r} is already the name of {names[name]}")
        description = (
            _text(entry, "description", where, _DESCRIPTION_MAX) if "description" in entry else name
        )
        ids[group_id] = names[name] = where
        groups.append(
            SecurityGroupSeed(
                group_id=group_id,
                name=name,
                description=description,
                tags=_tags(entry.get("tags", {}), f"{where}.tags"),
            )
        )
    return tuple(groups)


def _tags(raw: object, where: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: must be a mapping of tag key to value")
    if len(raw) > _TAGS_MAX:
        raise ScenarioError(f"{where}: at most {_TAGS_MAX} tags, got {len(raw)}")
    tags: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key or len(key) > _TAG_KEY_MAX:
            raise ScenarioError(
                f"{where}: tag key {key!r} must be a string of 1-{_TAG_KEY_MAX} characters"
            )
        if key.lower().startswith("aws:"):
            raise ScenarioError(f"{where}.{key}: tag keys starting with 'aws:' are reserved")
        if not isinstance(value, str):
            raise ScenarioError(
                f"{where}.{key}: must be a string, got {type(value).__name__} (quote it)"
            )
        if len(value) > _TAG_VALUE_MAX:
            raise ScenarioError(f"{where}.{key}: at most {_TAG_VALUE_MAX} characters")
        tags[key] = value
    return tags


def _cache_security_groups(raw: object) -> tuple[str, ...]:
    names: dict[str, str] = {}
    ordered: list[str] = []
    for index, item in enumerate(_list(raw, "cache_security_groups")):
        where = f"cache_security_groups[{index}]"
        entry = _object(item, where, _CACHE_GROUP_REQUIRED, frozenset())
        name = _matching(
            entry,
            "name",
            _CACHE_GROUP_NAME,
            "a cache security group name (letters, digits, hyphens; up to 255)",
            where,
        )
        # ElastiCache stores the name lower-case, so two spellings are one group.
        if name.lower() == _RESERVED_CACHE_GROUP:
            raise ScenarioError(f"{where}.name: 'default' is reserved by ElastiCache")
        if name.lower() in names:
            raise ScenarioError(
                f"{where}.name: {name!r} is already the name of {names[name.lower()]} "
                "(names ignore case)"
            )
        names[name.lower()] = where
        ordered.append(name)
    return tuple(ordered)


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


# --- validation helpers -----------------------------------------------------------------


def _object(
    raw: object, where: str, required: frozenset[str], optional: frozenset[str]
) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: must be a mapping, got {type(raw).__name__}")
    allowed = required | optional
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ScenarioError(
                f"{_field(where, str(key))}: unknown field "
                f"({hint}expected one of {', '.join(sorted(allowed))})"
            )
    for key in sorted(required):
        if key not in raw:
            raise ScenarioError(f"{_field(where, key)}: required field is missing")
    return raw


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: must be a list, got {type(value).__name__}")
    return value


def _text(mapping: Mapping[str, Any], key: str, where: str, max_length: int) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(
            f"{_field(where, key)}: must be a non-empty string, got {_shown(value)}"
        )
    if len(value) > max_length:
        raise ScenarioError(f"{_field(where, key)}: at most {max_length} characters")
    return value


def _matching(
    mapping: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str, where: str
) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ScenarioError(f"{_field(where, key)}: must be {what}, got {_shown(value)}")
    return value


def _field(where: str, key: str) -> str:
    return key if where in {"", "(top level)"} else f"{where}.{key}"


def _shown(value: object) -> str:
    if isinstance(value, str):
        return repr(value[:80])
    return f"{type(value).__name__} {value!r}"[:100]
