"""The policy document: its model, and parsing with validation that names the bad field.

Reference (the README repeats it for reviewers)::

    version: 1
    tag_key: cache-ingress          # tag on the EC2 group; value: comma-separated target names
    targets:
      orders:                       # a name used in tag values: letters, digits, . _ -
        cache_security_group: orders-cache-sg
        region: us-east-1           # optional; default: the function's region
        allow:
          owner_accounts: ["111122223333"]   # optional; default: the function's own account
          required_tags: {env: prod}         # optional; value or list of accepted values
          # optional; who may tag: `*` and `?` never match `/` or `:`
          principals: ["arn:aws:sts::111122223333:assumed-role/platform/*"]
        revoke: true                # optional; default false: revoke the function's own grant
                                    # when its reason is gone (README, "Revocation")
      sessions:                     # a VPC cache: one of these three destinations instead
        replication_group: sessions-redis          # its VPC security group and port are
        # cache_cluster: legacy-memcached          # looked up through ElastiCache, or given:
        # vpc_security_group: {group_id: sg-0123456789abcdef0, port: 6379}

A target names exactly one destination: `cache_security_group` is the classic kind (clusters
outside a VPC); `replication_group`, `cache_cluster` and `vpc_security_group` are VPC kinds,
granted by an inbound rule on the cache's VPC security group (see docs/vpc-targets.md).
Anything not in this reference is an error: a typo must never widen or narrow access silently.
Tag keys, tag values and principal patterns are printable ASCII only, so a look-alike
character (a Cyrillic e in a key that reads `env`) can never make a rule that reads like another.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cache_ingress.errors import PolicyError
from cache_ingress.models import TargetKind, VpcDestination

__all__ = ["Allow", "Policy", "Target", "TargetKind", "VpcDestination", "parse_policy"]

POLICY_VERSION = 1
TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CACHE_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,254}")
# ElastiCache identifiers: a letter, then letters, digits and single hyphens, no trailing
# hyphen. ElastiCache stores them in lowercase, so the policy must spell them that way.
_CACHE_ID = re.compile(r"[a-z](?:-?[a-z0-9])*")
_REPLICATION_GROUP_ID_MAX = 40
_CACHE_CLUSTER_ID_MAX = 50
_VPC_GROUP_ID = re.compile(r"sg-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_PORT_MAX = 65535
_ACCOUNT = re.compile(r"[0-9]{12}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
# A principal pattern is an ARN: arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE.
_PRINCIPAL_ARN = re.compile(r"arn:[^:]+:[^:]+:[^:]*:[^:]*:(?P<resource>.+)")
_WILDCARDS = frozenset("*?")
_TAG_KEY_MAX = 128
_TAG_VALUE_MAX = 256
# The fields that name a target's destination, classic first; exactly one per target.
_DESTINATION_FIELDS = (
    "cache_security_group",
    "replication_group",
    "cache_cluster",
    "vpc_security_group",
)


@dataclass(frozen=True, slots=True)
class Allow:
    """Who may be granted: each set rule must hold, now, for the grant to be made."""

    owner_accounts: tuple[str, ...] | None = None
    required_tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    principals: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One policy target. `cache_security_group` is set for the classic kind, `vpc` for the
    VPC kinds; never both.
    """

    name: str
    kind: TargetKind
    cache_security_group: str | None
    region: str | None
    allow: Allow
    vpc: VpcDestination | None = None
    # Revoke the function's own grant of this target when its reason is gone (opt-in).
    revoke: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    version: int
    tag_key: str
    targets: Mapping[str, Target]
    # sha256 of the document as parsed (canonical JSON), so a YAML policy and its JSON build
    # have the same digest; the ledger records it with every grant.
    digest: str = ""

    @property
    def revokes(self) -> bool:
        """Whether any target revokes: without one, nothing revocation needs is ever read."""
        return any(target.revoke for target in self.targets.values())


def parse_policy(text: str, *, source: str, expected_tag_key: str | None = None) -> Policy:
    """Parse YAML (or JSON) policy text. Raises PolicyError naming the source and field."""
    document = _load(text, source)
    try:
        policy = _policy(document, _digest(document))
    except PolicyError as exc:
        raise PolicyError(f"policy {source}: {exc}") from None
    if expected_tag_key is not None and policy.tag_key != expected_tag_key:
        raise PolicyError(
            f"policy {source}: tag_key {policy.tag_key!r} differs from the stack's tag key "
            f"{expected_tag_key!r}; the event rules only deliver changes to {expected_tag_key!r}"
        )
    return policy


def _load(text: str, source: str) -> object:
    stripped = text.lstrip()
    try:
        if stripped.startswith("{"):
            return json.loads(text, object_pairs_hook=_unique_json_keys)
        # Imported here: a JSON policy (the bundled one, as built) never pays for PyYAML.
        from cache_ingress.unique_yaml import load_yaml  # noqa: PLC0415

        return load_yaml(text)
    except ValueError as exc:
        raise PolicyError(f"policy {source}: not valid YAML or JSON: {exc}") from None


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise ValueError(f"duplicate key {key!r}")
        mapping[key] = value
    return mapping


def _digest(document: object) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _policy(document: object, digest: str) -> Policy:
    root = _object(
        document,
        "(top level)",
        required=frozenset({"version", "targets"}),
        optional=frozenset({"tag_key"}),
    )
    if root["version"] != POLICY_VERSION or isinstance(root["version"], bool):
        raise PolicyError(f"version: must be {POLICY_VERSION}, got {root['version']!r}")
    tag_key = root.get("tag_key", "cache-ingress")
    if not isinstance(tag_key, str) or not 0 < len(tag_key) <= _TAG_KEY_MAX:
        raise PolicyError("tag_key: must be a non-empty string of at most 128 characters")
    _printable_ascii(tag_key, "tag_key")
    if tag_key != tag_key.strip(" "):
        raise PolicyError(f"tag_key: {tag_key!r} begins or ends with a space")
    raw_targets = root["targets"]
    if not isinstance(raw_targets, Mapping) or not raw_targets:
        raise PolicyError("targets: must be a mapping naming at least one target")
    targets = {}
    for name, raw in raw_targets.items():
        if not isinstance(name, str) or not TARGET_NAME.fullmatch(name):
            raise PolicyError(
                f"targets.{name}: a target name is 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        targets[name] = _target(name, raw)
    return Policy(version=POLICY_VERSION, tag_key=tag_key, targets=targets, digest=digest)


def _target(name: str, raw: object) -> Target:
    where = f"targets.{name}"
    body = _object(
        raw, where, optional=frozenset({*_DESTINATION_FIELDS, "region", "allow", "revoke"})
    )
    named = [key for key in _DESTINATION_FIELDS if key in body]
    if not named:
        raise PolicyError(
            f"{where}.cache_security_group: required field is missing (a target names exactly "
            "one destination: cache_security_group, replication_group, cache_cluster or "
            "vpc_security_group)"
        )
    if len(named) > 1:
        raise PolicyError(
            f"{where}: names both {named[0]} and {named[1]}; a target names exactly one destination"
        )
    # Destination first, then region, then allow: the order the classic kind always used.
    if named[0] == "cache_security_group":
        kind = TargetKind.CACHE_SECURITY_GROUP
        cache_group: str | None = _cache_security_group(body["cache_security_group"], where)
        vpc = None
    else:
        vpc = _vpc_destination(named[0], body[named[0]], f"{where}.{named[0]}")
        kind, cache_group = vpc.kind, None
    region = body.get("region")
    if region is not None and (not isinstance(region, str) or not _REGION.fullmatch(region)):
        raise PolicyError(f"{where}.region: must be an AWS region such as us-east-1")
    revoke = body.get("revoke", False)
    if not isinstance(revoke, bool):
        raise PolicyError(f"{where}.revoke: must be true or false, got {revoke!r}")
    return Target(
        name=name,
        kind=kind,
        cache_security_group=cache_group,
        region=region,
        allow=_allow(body.get("allow", {}), f"{where}.allow"),
        vpc=vpc,
        revoke=revoke,
    )


def _cache_security_group(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not _CACHE_GROUP_NAME.fullmatch(raw):
        raise PolicyError(
            f"{where}.cache_security_group: must be a cache security group name "
            "(letters, digits and hyphens, at most 255)"
        )
    return raw


def _vpc_destination(field_name: str, raw: object, where: str) -> VpcDestination:
    if field_name == "vpc_security_group":
        body = _object(raw, where, required=frozenset({"group_id", "port"}))
        group_id, port = body["group_id"], body["port"]
        if not isinstance(group_id, str) or not _VPC_GROUP_ID.fullmatch(group_id):
            raise PolicyError(
                f"{where}.group_id: must be a security group id such as sg-0123456789abcdef0"
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= _PORT_MAX:
            raise PolicyError(f"{where}.port: must be a TCP port number from 1 to 65535")
        return VpcDestination(TargetKind.VPC_SECURITY_GROUP, group_id, port)
    kind, longest = (
        (TargetKind.REPLICATION_GROUP, _REPLICATION_GROUP_ID_MAX)
        if field_name == "replication_group"
        else (TargetKind.CACHE_CLUSTER, _CACHE_CLUSTER_ID_MAX)
    )
    if not isinstance(raw, str) or len(raw) > longest or not _CACHE_ID.fullmatch(raw):
        raise PolicyError(
            f"{where}: must be an ElastiCache {kind.replace('-', ' ')} id: 1-{longest} "
            "lowercase letters, digits and single hyphens, starting with a letter and not "
            "ending with a hyphen"
        )
    return VpcDestination(kind, raw)


def _allow(raw: object, where: str) -> Allow:
    body = _object(
        raw, where, optional=frozenset({"owner_accounts", "required_tags", "principals"})
    )
    owners = None
    if "owner_accounts" in body:
        owners = _strings(body["owner_accounts"], f"{where}.owner_accounts")
        for owner in owners:
            if not _ACCOUNT.fullmatch(owner):
                raise PolicyError(
                    f"{where}.owner_accounts: {owner!r} is not a 12-digit account id "
                    "(quote account ids in YAML so leading zeros survive)"
                )
    principals = None
    if "principals" in body:
        principals = _strings(body["principals"], f"{where}.principals")
        for pattern in principals:
            _principal_pattern(pattern, f"{where}.principals")
    return Allow(
        owner_accounts=owners,
        required_tags=_required_tags(body.get("required_tags", {}), f"{where}.required_tags"),
        principals=principals,
    )


def _required_tags(raw: object, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: must be a mapping of tag key to value or list of values")
    tags = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not 0 < len(key) <= _TAG_KEY_MAX:
            raise PolicyError(f"{where}: tag key {key!r} must be a string of 1-128 characters")
        _printable_ascii(key, where, what="tag key ")
        values = (value,) if isinstance(value, str) else _strings(value, f"{where}.{key}")
        if any(len(item) > _TAG_VALUE_MAX for item in values):
            raise PolicyError(f"{where}.{key}: tag values are at most 256 characters")
        for item in values:
            _printable_ascii(item, f"{where}.{key}")
        tags[key] = values
    return tags


def _principal_pattern(pattern: str, where: str) -> None:
    """An ARN pattern whose principal type, and for an assumed role the role name, are
    written out: a wildcard in the type (`...:123456789012:*`) would match the root user, and
    in the role name (`assumed-role/*/alice`) it would leave only the session name, which the
    caller chooses.
    """
    _printable_ascii(pattern, where)
    if " " in pattern:
        raise PolicyError(f"{where}: {pattern!r} holds a space; an ARN never does")
    match = _PRINCIPAL_ARN.fullmatch(pattern)
    if match is None:
        raise PolicyError(
            f"{where}: {pattern!r} must be an ARN pattern "
            "(arn:PARTITION:SERVICE::ACCOUNT:TYPE/NAME...)"
        )
    segments = match["resource"].split("/")
    if _WILDCARDS & set(segments[0]):
        raise PolicyError(
            f"{where}: {pattern!r}: write the principal type out (root, user/..., role/..., "
            "assumed-role/ROLE/SESSION, federated-user/...); a wildcard there matches the "
            "account's root user too"
        )
    if segments[0] == "assumed-role" and len(segments) > 1 and _WILDCARDS & set(segments[1]):
        raise PolicyError(
            f"{where}: {pattern!r}: write the role name out; the session name after it is "
            "chosen by whoever assumes a role, so a wildcard role would admit anyone able to "
            "assume any matching role"
        )


def _printable_ascii(text: str, where: str, *, what: str = "") -> None:
    """Tag keys, tag values and principal patterns: printable ASCII (space to tilde) only."""
    for char in text:
        if not " " <= char <= "~":
            raise PolicyError(
                f"{where}: {what}{text[:64]!r} holds {char!r} (U+{ord(char):04X}); only printable "
                "ASCII is allowed, so that no look-alike character can pass for another"
            )


def _object(
    raw: object,
    where: str,
    *,
    required: frozenset[str] = frozenset(),
    optional: frozenset[str] = frozenset(),
) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: must be a mapping, got {type(raw).__name__}")
    allowed = required | optional
    unknown = sorted(str(key) for key in raw if key not in allowed)
    if unknown:
        raise PolicyError(
            f"{where}: unknown field {unknown[0]!r} (expected {', '.join(sorted(allowed))})"
        )
    missing = sorted(required - set(raw))
    if missing:
        raise PolicyError(f"{where}.{missing[0]}: required field is missing")
    return raw


def _strings(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise PolicyError(f"{where}: must be a non-empty list of strings")
    if not all(isinstance(item, str) and item for item in raw):
        raise PolicyError(f"{where}: every item must be a non-empty string")
    return tuple(raw)
