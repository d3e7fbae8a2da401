"""Scenario files: the small, readable world the embedded AWS is seeded with.

The same seeding serves the local run, the emulator command and the tests, so the sample
events in `events/` mean the same thing everywhere.

Reference (``default-scenario.yaml`` beside this file is a complete example)::

    account_id: "123456789012"        # required; quoted, 12 digits
    region: us-east-1                 # required
    security_groups:                  # optional; EC2 security groups
      - id: sg-0a1b2c3d4e5f60718      # required; the id events name (sg- and 8-17 hex digits)
        name: orders-app              # required; unique; must not start with "sg-"
        description: orders service   # optional; default: the name
        tags: {cache-ingress: orders, env: prod}   # optional; strings only (quote "yes", 1)
        vpc: elsewhere                # optional; a name from vpcs; default: the default VPC
    vpcs:                             # optional; VPCs besides the default one
      - name: elsewhere               # required; unique; a-z 0-9 -; not "default"
        cidr: 10.20.0.0/16            # required; an IPv4 block from /16 to /28
    cache_security_groups:            # optional; ElastiCache cache security groups
      - name: orders-cache-sg         # required; unique regardless of case; not "default"
    replication_groups:               # optional; Redis/Valkey replication groups (VPC caches)
      - id: sessions-redis            # required; lower-case letters, digits, hyphens; 1-40
        engine: redis                 # required; redis or valkey
        port: 6379                    # optional; default: the engine's (6379)
        num_cache_clusters: 2         # optional; 1-6 (a primary and its replicas); default 1
        security_groups: [sg-0c1a2b3c4d5e6f701]    # required; ids from security_groups
    cache_clusters:                   # optional; cache clusters on their own (VPC caches)
      - id: legacy-memcached          # required; lower-case letters, digits, hyphens; 1-50
        engine: memcached             # required; memcached, redis or valkey
        port: 11211                   # optional; default: the engine's (11211, 6379)
        num_cache_nodes: 2            # optional; 1-40 for memcached, 1 otherwise; default 1
        security_groups: [sg-0c2b3c4d5e6f70812]    # required; ids from security_groups
    idempotency_table: cache-ingress-idempotency   # required; DynamoDB table name
    ledger_table: cache-ingress-ledger             # optional; the grant ledger (none: no ledger)
    dead_letter_queue: cache-ingress-dlq           # required; SQS queue name
    policy: member-policy.yaml        # optional; the function's policy here, relative to this
                                      # file; default: the bundled one
    organization: o-a1b2c3d4e5        # optional; the organization of every account here
    member_accounts:                  # optional; accounts the function reads through their role
      - account_id: "111122223333"    # required; quoted, 12 digits, not account_id
        vpcs: []                      # optional; as above, in this account
        security_groups: []           # optional; as above, in this account (ids unique overall)
        peered_vpcs: [apps]           # optional; its vpcs peered with the cache account's
                                      # default VPC (its own default VPC: `default`)

Caches are created as AWS would hold them in a VPC: node type cache.t4g.micro, in a cache
subnet group named ``caches`` on the default VPC's first subnet, so their security groups
must be in the default VPC. Seeding them needs the VPC-cache emulation (``vpc_caches``),
which the embedded AWS installs.

With ``member_accounts`` (docs/multi-account.md), seeding deploys both stacks as they would
be deployed: in the cache account the function roles, the event bus and the rules of
``template.yaml`` (with ``MemberAccountIds`` and ``MemberOrganizationId`` from this file);
in each member account its VPCs and groups, and the read role and forwarding rules of
``member.yaml``. The cache account must then be the embedded AWS's own account
(123456789012): moto answers as another account only for credentials of that account.

Anything else is an error naming the file and the field, e.g.
``scenario my.yaml: security_groups[2].tags.env: must be a string, got bool (quote it)``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from unittest import mock

import yaml

from cache_ingress.ledger import TABLE_SHAPE as LEDGER_TABLE_SHAPE
from cache_ingress.unique_yaml import UniqueKeyLoader

if TYPE_CHECKING:
    from cache_ingress_tools.emulator.organization import MemberWorld

DEFAULT_SCENARIO = Path(__file__).with_name("default-scenario.yaml")
# A cache account and two member accounts of one organization (docs/multi-account.md).
MEMBER_SCENARIO = Path(__file__).with_name("member-scenario.yaml")
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
_VPC_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_RESERVED_VPC_NAME: Final = "default"
_VPC_PREFIX_MIN: Final = 16
_VPC_PREFIX_MAX: Final = 28
# ElastiCache ids: a letter first, then letters, digits and single hyphens, no hyphen last.
_REPLICATION_GROUP_ID = re.compile(r"[a-z]([a-z0-9]|-(?=[a-z0-9])){0,39}")
_CACHE_CLUSTER_ID = re.compile(r"[a-z]([a-z0-9]|-(?=[a-z0-9])){0,49}")
_ID_RULE: Final = "lower-case letters, digits and single hyphens, starting with a letter"
_DEFAULT_PORTS: Final = {"redis": 6379, "valkey": 6379, "memcached": 11211}
_REPLICATION_GROUP_ENGINES: Final = ("redis", "valkey")
_MAX_CACHE_CLUSTERS: Final = 6  # a primary and up to five replicas
_MAX_MEMCACHED_NODES: Final = 40  # CreateCacheCluster's documented bound
_PORT_MAX: Final = 65535
CACHE_NODE_TYPE: Final = "cache.t4g.micro"
CACHE_SUBNET_GROUP: Final = "caches"

_TOP_LEVEL_REQUIRED = frozenset({"account_id", "region", "idempotency_table", "dead_letter_queue"})
_TOP_LEVEL_OPTIONAL = frozenset(
    {
        "security_groups",
        "vpcs",
        "cache_security_groups",
        "replication_groups",
        "cache_clusters",
        "organization",
        "member_accounts",
        "policy",
        "ledger_table",
    }
)
_MEMBER_REQUIRED = frozenset({"account_id"})
_MEMBER_OPTIONAL = frozenset({"security_groups", "vpcs", "peered_vpcs"})
_ORGANIZATION = re.compile(r"o-[a-z0-9]{10,32}")
# moto's own account: the only one a request without its credentials is answered as.
EMBEDDED_ACCOUNT: Final = "123456789012"
_GROUP_REQUIRED = frozenset({"id", "name"})
_GROUP_OPTIONAL = frozenset({"description", "tags", "vpc"})
_VPC_REQUIRED = frozenset({"name", "cidr"})
_CACHE_GROUP_REQUIRED = frozenset({"name"})
_CACHE_REQUIRED = frozenset({"id", "engine", "security_groups"})
_REPLICATION_GROUP_OPTIONAL = frozenset({"port", "num_cache_clusters"})
_CACHE_CLUSTER_OPTIONAL = frozenset({"port", "num_cache_nodes"})


class ScenarioError(ValueError):
    """The scenario file is not valid; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class SecurityGroupSeed:
    group_id: str
    name: str
    description: str
    tags: Mapping[str, str] = field(default_factory=dict)
    vpc: str | None = None
    """The name of one of the scenario's ``vpcs``; None for the default VPC."""


@dataclass(frozen=True, slots=True)
class VpcSeed:
    name: str
    cidr: str


@dataclass(frozen=True, slots=True)
class ReplicationGroupSeed:
    replication_group_id: str
    engine: str
    port: int
    num_cache_clusters: int
    security_groups: tuple[str, ...]

    @property
    def member_clusters(self) -> tuple[str, ...]:
        """The ids AWS gives the group's cache clusters: the group's id, -001, -002, …"""
        return tuple(
            f"{self.replication_group_id}-{index:03d}"
            for index in range(1, self.num_cache_clusters + 1)
        )


@dataclass(frozen=True, slots=True)
class CacheClusterSeed:
    cache_cluster_id: str
    engine: str
    port: int
    num_cache_nodes: int
    security_groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MemberAccountSeed:
    """A member account: its own VPCs and security groups, and which of its VPCs are
    peered with the cache account's default VPC (``default`` is its own default VPC)."""

    account_id: str
    security_groups: tuple[SecurityGroupSeed, ...] = ()
    vpcs: tuple[VpcSeed, ...] = ()
    peered_vpcs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    account_id: str
    region: str
    security_groups: tuple[SecurityGroupSeed, ...]
    cache_security_groups: tuple[str, ...]
    idempotency_table: str
    dead_letter_queue: str
    vpcs: tuple[VpcSeed, ...] = ()
    replication_groups: tuple[ReplicationGroupSeed, ...] = ()
    cache_clusters: tuple[CacheClusterSeed, ...] = ()
    organization: str | None = None
    member_accounts: tuple[MemberAccountSeed, ...] = ()
    policy: Path | None = None
    """The policy the function is deployed with here, instead of the bundled one."""
    ledger_table: str | None = None

    def security_group(self, group_id: str) -> SecurityGroupSeed | None:
        """The seeded group with this id, if the scenario has one (in any account)."""
        every = [g for m in self.member_accounts for g in m.security_groups]
        return next((g for g in (*self.security_groups, *every) if g.group_id == group_id), None)

    def account_of(self, group_id: str) -> str | None:
        """The account a seeded group belongs to."""
        if any(g.group_id == group_id for g in self.security_groups):
            return self.account_id
        for member in self.member_accounts:
            if any(g.group_id == group_id for g in member.security_groups):
                return member.account_id
        return None

    def stack_parameters(self) -> dict[str, str]:
        """The cache stack's parameters that say which accounts are members (template.yaml),
        as this scenario deploys it; empty for a single-account scenario."""
        if not self.member_accounts:
            return {}
        return {
            "MemberAccountIds": ",".join(m.account_id for m in self.member_accounts),
            "MemberOrganizationId": self.organization or "",
        }


@dataclass(frozen=True, slots=True)
class SeededWorld:
    """What seeding created, for the function's environment."""

    scenario: Scenario
    dead_letter_queue_url: str
    vpc_id: str
    """The default VPC's id: the caches' and that of groups that name no ``vpc``."""
    vpc_ids: Mapping[str, str] = field(default_factory=dict)
    """The id moto drew for each of the scenario's ``vpcs``, by name."""
    members: MemberWorld | None = None
    """What seeding the member accounts made (None for a single-account scenario)."""

    def function_environment(self) -> dict[str, str]:
        environment = {
            "ACCOUNT_ID": self.scenario.account_id,
            "AWS_REGION": self.scenario.region,
            "IDEMPOTENCY_TABLE": self.scenario.idempotency_table,
            "DEAD_LETTER_QUEUE_URL": self.dead_letter_queue_url,
        }
        if self.members is not None:
            environment.update(self.members.function_environment())
        if self.scenario.policy is not None:
            environment["POLICY_FILE"] = str(self.scenario.policy)
        if self.scenario.ledger_table is not None:
            environment["LEDGER_TABLE"] = self.scenario.ledger_table
        return environment


def load_scenario(path: Path = DEFAULT_SCENARIO) -> Scenario:
    """Read and validate a scenario file; raises ScenarioError naming the file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario {path}: cannot be read: {exc}") from None
    try:
        document = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506  # nosec B506 - SafeLoader
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario {path}: not valid YAML: {exc}") from None
    try:
        return _scenario(document, path.parent)
    except ScenarioError as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from None


def _scenario(document: object, folder: Path) -> Scenario:
    if document is None:
        raise ScenarioError("(top level): the file is empty")
    root = _object(document, "(top level)", _TOP_LEVEL_REQUIRED, _TOP_LEVEL_OPTIONAL)
    account = root["account_id"]
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise ScenarioError(
            f"account_id: must be a quoted 12-digit account id, got {_shown(account)}"
        )
    region = _matching(root, "region", _REGION, "an AWS region such as us-east-1", "")
    vpcs = _vpcs(root.get("vpcs", []))
    security_groups = _security_groups(
        root.get("security_groups", []), tuple(vpc.name for vpc in vpcs)
    )
    replication_groups = _replication_groups(root.get("replication_groups", []), security_groups)
    members = _member_accounts(root.get("member_accounts", []), account, security_groups)
    organization = root.get("organization")
    if organization is not None and (
        not isinstance(organization, str) or not _ORGANIZATION.fullmatch(organization)
    ):
        raise ScenarioError(
            f"organization: must be an organization id such as o-a1b2c3d4e5, "
            f"got {_shown(organization)}"
        )
    return Scenario(
        account_id=account,
        region=region,
        security_groups=security_groups,
        cache_security_groups=_cache_security_groups(root.get("cache_security_groups", [])),
        idempotency_table=_matching(root, "idempotency_table", _TABLE_NAME, _TABLE_NAME_RULE, ""),
        ledger_table=(
            _matching(root, "ledger_table", _TABLE_NAME, _TABLE_NAME_RULE, "")
            if "ledger_table" in root
            else None
        ),
        dead_letter_queue=_matching(root, "dead_letter_queue", _QUEUE_NAME, _QUEUE_NAME_RULE, ""),
        vpcs=vpcs,
        replication_groups=replication_groups,
        cache_clusters=_cache_clusters(
            root.get("cache_clusters", []), security_groups, replication_groups
        ),
        organization=organization,
        member_accounts=members,
        policy=_policy(root.get("policy"), folder),
    )


def _policy(raw: object, folder: Path) -> Path | None:
    """`policy`: a policy file, relative to the scenario's folder."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise ScenarioError(f"policy: must be a policy file's path, got {_shown(raw)}")
    path = (folder / raw).resolve()
    if not path.is_file():
        raise ScenarioError(f"policy: no such file {raw!r} (relative to the scenario's folder)")
    return path


def _member_accounts(
    raw: object, cache_account: str, cache_groups: tuple[SecurityGroupSeed, ...]
) -> tuple[MemberAccountSeed, ...]:
    members: list[MemberAccountSeed] = []
    seen: dict[str, str] = {cache_account: "account_id"}
    group_ids = {group.group_id: "security_groups" for group in cache_groups}
    for index, item in enumerate(_list(raw, "member_accounts")):
        where = f"member_accounts[{index}]"
        entry = _object(item, where, _MEMBER_REQUIRED, _MEMBER_OPTIONAL)
        account = entry["account_id"]
        if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
            raise ScenarioError(
                f"{where}.account_id: must be a quoted 12-digit account id, got {_shown(account)}"
            )
        if account in seen:
            raise ScenarioError(f"{where}.account_id: {account} is already {seen[account]}")
        seen[account] = where
        vpcs = _vpcs(entry.get("vpcs", []))
        vpc_names = tuple(vpc.name for vpc in vpcs)
        groups = _security_groups(entry.get("security_groups", []), vpc_names)
        for group in groups:
            # Ids are unique across accounts (EC2 draws them so), and events name groups by id.
            if group.group_id in group_ids:
                raise ScenarioError(
                    f"{where}.security_groups: {group.group_id} is already in "
                    f"{group_ids[group.group_id]}"
                )
            group_ids[group.group_id] = f"{where}.security_groups"
        peered = []
        for peer_index, name in enumerate(
            _list(entry.get("peered_vpcs", []), f"{where}.peered_vpcs")
        ):
            if name != _RESERVED_VPC_NAME and name not in vpc_names:
                raise ScenarioError(
                    f"{where}.peered_vpcs[{peer_index}]: must be 'default' or one of this "
                    f"account's vpcs ({', '.join(vpc_names) or 'none'}), got {_shown(name)}"
                )
            peered.append(name)
        members.append(MemberAccountSeed(account, groups, vpcs, tuple(dict.fromkeys(peered))))
    if members and cache_account != EMBEDDED_ACCOUNT:
        raise ScenarioError(
            f"account_id: a scenario with member_accounts must use account_id "
            f"{EMBEDDED_ACCOUNT!r}, the embedded AWS's own account (it answers as a member "
            "account only for that account's role credentials)"
        )
    return tuple(members)


def _vpcs(raw: object) -> tuple[VpcSeed, ...]:
    vpcs: list[VpcSeed] = []
    names: dict[str, str] = {}
    for index, item in enumerate(_list(raw, "vpcs")):
        where = f"vpcs[{index}]"
        entry = _object(item, where, _VPC_REQUIRED, frozenset())
        name = _matching(
            entry, "name", _VPC_NAME, "a VPC name (1-63 of a-z 0-9 -, not starting with -)", where
        )
        if name == _RESERVED_VPC_NAME:
            raise ScenarioError(
                f"{where}.name: 'default' is the default VPC, which is always there "
                "(a security group without `vpc` is in it)"
            )
        if name in names:
            raise ScenarioError(f"{where}.name: {name!r} is already the name of {names[name]}")
        names[name] = where
        vpcs.append(VpcSeed(name=name, cidr=_cidr(entry.get("cidr"), f"{where}.cidr")))
    return tuple(vpcs)


def _cidr(value: object, where: str) -> str:
    rule = f"an IPv4 CIDR block from /{_VPC_PREFIX_MIN} to /{_VPC_PREFIX_MAX} such as 10.20.0.0/16"
    if not isinstance(value, str) or "/" not in value:
        raise ScenarioError(f"{where}: must be {rule}, got {_shown(value)}")
    try:
        network = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise ScenarioError(f"{where}: must be {rule}, got {_shown(value)}") from None
    if not _VPC_PREFIX_MIN <= network.prefixlen <= _VPC_PREFIX_MAX:
        raise ScenarioError(f"{where}: must be {rule}, got {_shown(value)}")
    if str(network) != value:
        raise ScenarioError(f"{where}: {value!r} has host bits set (did you mean {network}?)")
    return value


def _security_groups(raw: object, vpc_names: tuple[str, ...]) -> tuple[SecurityGroupSeed, ...]:
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
                vpc=_vpc_of(entry, where, vpc_names),
            )
        )
    return tuple(groups)


def _vpc_of(entry: Mapping[str, Any], where: str, vpc_names: tuple[str, ...]) -> str | None:
    if "vpc" not in entry:
        return None
    vpc = entry["vpc"]
    if not isinstance(vpc, str) or vpc not in vpc_names:
        known = ", ".join(vpc_names) or "none"
        raise ScenarioError(
            f"{where}.vpc: must name one of the scenario's vpcs ({known}), got {_shown(vpc)}; "
            "leave it out for the default VPC"
        )
    return vpc


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


def _replication_groups(
    raw: object, security_groups: tuple[SecurityGroupSeed, ...]
) -> tuple[ReplicationGroupSeed, ...]:
    seeds: list[ReplicationGroupSeed] = []
    ids: dict[str, str] = {}
    for index, item in enumerate(_list(raw, "replication_groups")):
        where = f"replication_groups[{index}]"
        entry = _object(item, where, _CACHE_REQUIRED, _REPLICATION_GROUP_OPTIONAL)
        identifier = _matching(
            entry, "id", _REPLICATION_GROUP_ID, f"a replication group id (1-40 {_ID_RULE})", where
        )
        if identifier in ids:
            raise ScenarioError(
                f"{where}.id: {identifier!r} is already the id of {ids[identifier]}"
            )
        ids[identifier] = where
        engine = _engine(entry, where, _REPLICATION_GROUP_ENGINES)
        seeds.append(
            ReplicationGroupSeed(
                replication_group_id=identifier,
                engine=engine,
                port=_port(entry, where, engine),
                num_cache_clusters=_count(entry, "num_cache_clusters", where, _MAX_CACHE_CLUSTERS),
                security_groups=_cache_groups(entry, where, security_groups),
            )
        )
    return tuple(seeds)


def _cache_clusters(
    raw: object,
    security_groups: tuple[SecurityGroupSeed, ...],
    replication_groups: tuple[ReplicationGroupSeed, ...],
) -> tuple[CacheClusterSeed, ...]:
    seeds: list[CacheClusterSeed] = []
    # A replication group's members are cache clusters too, under ids AWS derives.
    ids = {
        member: f"a member of replication_groups[{index}]"
        for index, group in enumerate(replication_groups)
        for member in group.member_clusters
    }
    for index, item in enumerate(_list(raw, "cache_clusters")):
        where = f"cache_clusters[{index}]"
        entry = _object(item, where, _CACHE_REQUIRED, _CACHE_CLUSTER_OPTIONAL)
        identifier = _matching(
            entry, "id", _CACHE_CLUSTER_ID, f"a cache cluster id (1-50 {_ID_RULE})", where
        )
        if identifier in ids:
            raise ScenarioError(f"{where}.id: {identifier!r} is already {ids[identifier]}")
        ids[identifier] = f"the id of {where}"
        engine = _engine(entry, where, tuple(_DEFAULT_PORTS))
        # Outside a replication group only Memcached spreads a cluster over several nodes.
        most_nodes = _MAX_MEMCACHED_NODES if engine == "memcached" else 1
        seeds.append(
            CacheClusterSeed(
                cache_cluster_id=identifier,
                engine=engine,
                port=_port(entry, where, engine),
                num_cache_nodes=_count(entry, "num_cache_nodes", where, most_nodes),
                security_groups=_cache_groups(entry, where, security_groups),
            )
        )
    return tuple(seeds)


def _engine(entry: Mapping[str, Any], where: str, engines: tuple[str, ...]) -> str:
    engine = entry.get("engine")
    if not isinstance(engine, str) or engine not in engines:
        raise ScenarioError(
            f"{_field(where, 'engine')}: must be one of {', '.join(engines)}, got {_shown(engine)}"
        )
    return engine


def _port(entry: Mapping[str, Any], where: str, engine: str) -> int:
    port = entry.get("port", _DEFAULT_PORTS[engine])
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= _PORT_MAX:
        raise ScenarioError(
            f"{_field(where, 'port')}: must be a TCP port (1-{_PORT_MAX}), got {_shown(port)}"
        )
    return port


def _count(entry: Mapping[str, Any], key: str, where: str, most: int) -> int:
    count = entry.get(key, 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= most:
        allowed = "1" if most == 1 else f"from 1 to {most}"
        raise ScenarioError(f"{_field(where, key)}: must be {allowed}, got {_shown(count)}")
    return count


def _cache_groups(
    entry: Mapping[str, Any], where: str, security_groups: tuple[SecurityGroupSeed, ...]
) -> tuple[str, ...]:
    """The cache's VPC security groups: seeded groups of the default VPC, where caches are."""
    listed = _list(entry.get("security_groups"), _field(where, "security_groups"))
    if not listed:
        raise ScenarioError(
            f"{_field(where, 'security_groups')}: must list at least one security group id"
        )
    seeded = {group.group_id: group for group in security_groups}
    ids: list[str] = []
    for index, group_id in enumerate(listed):
        at = f"{_field(where, 'security_groups')}[{index}]"
        group = seeded.get(group_id) if isinstance(group_id, str) else None
        if group is None:
            raise ScenarioError(
                f"{at}: must be the id of one of the scenario's security_groups, "
                f"got {_shown(group_id)}"
            )
        if group.vpc is not None:
            raise ScenarioError(
                f"{at}: {group.group_id} is in VPC {group.vpc!r}; caches are seeded in the "
                "default VPC, so their groups must be too"
            )
        if group.group_id in ids:
            raise ScenarioError(f"{at}: {group.group_id} is listed twice")
        ids.append(group.group_id)
    return tuple(ids)


def seed(
    scenario: Scenario,
    clients: Mapping[str, Any],
    *,
    client_for: Callable[[str], Any] | None = None,
) -> SeededWorld:
    """Create the scenario's resources through ordinary boto3 clients of the embedded AWS.

    VPCs first, then security groups (caches name them), then the caches; then the member
    accounts, which need `client_for(service)` for services beyond `clients` (IAM,
    EventBridge) and the templates of the project (`organization.seed_members`).
    """
    if scenario.member_accounts and client_for is None:
        raise ScenarioError("seeding member_accounts needs a client_for(service) to make clients")
    ec2 = clients["ec2"]
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0][
        "VpcId"
    ]
    vpc_ids = {
        vpc.name: ec2.create_vpc(
            CidrBlock=vpc.cidr,
            TagSpecifications=[
                {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": vpc.name}]}
            ],
        )["Vpc"]["VpcId"]
        for vpc in scenario.vpcs
    }
    for group in scenario.security_groups:
        with _next_group_id(group.group_id):
            ec2.create_security_group(
                GroupName=group.name,
                Description=group.description,
                VpcId=vpc_ids[group.vpc] if group.vpc is not None else vpc_id,
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
    _seed_caches(scenario, clients, vpc_id)
    clients["dynamodb"].create_table(
        TableName=scenario.idempotency_table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    if scenario.ledger_table is not None:
        clients["dynamodb"].create_table(TableName=scenario.ledger_table, **LEDGER_TABLE_SHAPE)
    queue_url = clients["sqs"].create_queue(QueueName=scenario.dead_letter_queue)["QueueUrl"]
    members = None
    if scenario.member_accounts and client_for is not None:
        from cache_ingress_tools.emulator.organization import seed_members  # noqa: PLC0415

        members = seed_members(
            scenario,
            client_for,
            cache_vpc_id=vpc_id,
            function_queue_arn=(
                f"arn:aws:sqs:{scenario.region}:{scenario.account_id}:{scenario.dead_letter_queue}"
            ),
        )
    return SeededWorld(
        scenario=scenario,
        dead_letter_queue_url=queue_url,
        vpc_id=vpc_id,
        vpc_ids=vpc_ids,
        members=members,
    )


def _seed_caches(scenario: Scenario, clients: Mapping[str, Any], vpc_id: str) -> None:
    if not (scenario.replication_groups or scenario.cache_clusters):
        return
    elasticache = clients["elasticache"]
    subnets = clients["ec2"].describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
    # The first by zone, so every run places the caches alike.
    first = min(subnets["Subnets"], key=lambda s: (s["AvailabilityZone"], s["SubnetId"]))
    elasticache.create_cache_subnet_group(
        CacheSubnetGroupName=CACHE_SUBNET_GROUP,
        CacheSubnetGroupDescription="subnets of the seeded caches",
        SubnetIds=[first["SubnetId"]],
    )
    for group in scenario.replication_groups:
        elasticache.create_replication_group(
            ReplicationGroupId=group.replication_group_id,
            ReplicationGroupDescription=f"{group.replication_group_id} (seeded)",
            Engine=group.engine,
            CacheNodeType=CACHE_NODE_TYPE,
            NumCacheClusters=group.num_cache_clusters,
            Port=group.port,
            CacheSubnetGroupName=CACHE_SUBNET_GROUP,
            SecurityGroupIds=list(group.security_groups),
        )
    for cluster in scenario.cache_clusters:
        elasticache.create_cache_cluster(
            CacheClusterId=cluster.cache_cluster_id,
            Engine=cluster.engine,
            CacheNodeType=CACHE_NODE_TYPE,
            NumCacheNodes=cluster.num_cache_nodes,
            Port=cluster.port,
            CacheSubnetGroupName=CACHE_SUBNET_GROUP,
            SecurityGroupIds=list(cluster.security_groups),
        )


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
