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
        allow:
          peered_vpcs: true         # optional, VPC targets; also VPCs peered with the cache's

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from cache_ingress.errors import PolicyError, PolicyProblem
from cache_ingress.models import TargetKind, VpcDestination

__all__ = [
    "Allow",
    "Policy",
    "Target",
    "TargetKind",
    "VpcDestination",
    "parse_policy",
    "policy_as_json",
]

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
    # VPC targets: also groups of a VPC peered with the cache's (an active peering connection
    # in the region); off, only the cache's own VPC (shared with members, or not).
    peered_vpcs: bool = False


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
    """Parse YAML (or JSON) policy text. Raises PolicyError naming the source and every
    problem found (`PolicyError.problems`, each with its field and, in YAML, its line).
    """
    problems = _Problems()
    document = _load(text, problems)
    policy = _policy(document, problems) if document is not _UNREADABLE else None
    if policy is not None and expected_tag_key is not None and policy.tag_key != expected_tag_key:
        problems.add(
            ("tag_key",),
            f"{policy.tag_key!r} differs from the stack's tag key {expected_tag_key!r}; the "
            f"event rules only deliver changes to {expected_tag_key!r}",
        )
    if policy is None or problems.found:
        raise PolicyError.invalid(source, problems.located(text))
    return replace(policy, digest=_digest(document))


def policy_as_json(text: str, *, source: str) -> str:
    """The policy's JSON text, as the function's package holds it (`compile_policy.py`).

    Raises PolicyError when the policy is invalid, has no JSON form, or its JSON form parses
    to another policy than its text does.
    """
    policy = parse_policy(text, source=source)
    if text.lstrip().startswith("{"):
        document: object = json.loads(text)
    else:
        from cache_ingress.unique_yaml import load_yaml  # noqa: PLC0415

        document = load_yaml(text)
    try:
        compiled = json.dumps(document, indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        message = f"has no JSON form: {exc}"
        raise PolicyError.invalid(source, (PolicyProblem((), message),)) from None
    if parse_policy(compiled, source=source) != policy:
        message = "its JSON form parses to a different policy"
        raise PolicyError.invalid(source, (PolicyProblem((), message),))
    return compiled


class _Problems:
    """What is wrong with the document, collected so that all of it is reported at once.

    Each check adds what it finds and carries on with the rest of the document; a part that
    is wrong is left out of the policy being built, and a policy with any problem is never
    returned. `at` is the part of the document the problem is on, when it is not the field
    the message names (an unknown key is on its own line; a missing one, on its mapping's).
    """

    def __init__(self) -> None:
        self.found: list[tuple[PolicyProblem, Path | None]] = []
        self.lines: Callable[[Path], int | None] | None = None

    def add(
        self, path: Path, message: str, *, at: Path | None = None, line: int | None = None
    ) -> None:
        self.found.append((PolicyProblem(path, message, line), at))

    def located(self, text: str) -> tuple[PolicyProblem, ...]:
        """The problems with their lines, in the text's order: lines from the YAML document
        read, or (JSON) by reading the text's structure, only now that there is something
        to report."""
        lines = self.lines
        if lines is None and any(problem.line is None for problem, _ in self.found):
            from cache_ingress.unique_yaml import line_in  # noqa: PLC0415 - only on an error

            lines = partial(line_in, text)
        located = (
            problem._replace(line=lines(problem.path if at is None else at))
            if problem.line is None and lines is not None
            else problem
            for problem, at in self.found
        )
        # In the order of the text, as a reader fixes them.
        return tuple(sorted(located, key=lambda problem: problem.line or 0))


Path = tuple[object, ...]
# What _load returns for a text that is not a document at all: nothing more to check.
_UNREADABLE: Any = object()


def _load(text: str, problems: _Problems) -> object:
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_unique_json_keys)
        except ValueError as exc:
            line = getattr(exc, "lineno", None)
            problems.add((), f"not valid YAML or JSON: {exc}", line=line)
            return _UNREADABLE
    # Imported here: a JSON policy (the bundled one, as built) never pays for PyYAML.
    from cache_ingress.unique_yaml import YamlSyntaxError, read_yaml  # noqa: PLC0415

    try:
        document = read_yaml(text)
    except YamlSyntaxError as exc:
        problems.add((), f"not valid YAML or JSON: {exc}", line=exc.line)
        return _UNREADABLE
    except ValueError as exc:
        problems.add((), f"not valid YAML or JSON: {exc}")
        return _UNREADABLE
    problems.lines = document.line
    for duplicate in document.duplicates:
        problems.add(duplicate.path, f"duplicate key {duplicate.key!r}", line=duplicate.line)
    return document.value


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


def _policy(document: object, problems: _Problems) -> Policy | None:
    root = _object(
        document,
        (),
        problems,
        required=frozenset({"version", "targets"}),
        optional=frozenset({"tag_key"}),
    )
    if root is None:
        return None
    version = root.get("version", POLICY_VERSION)
    if version != POLICY_VERSION or isinstance(version, bool):
        problems.add(("version",), f"must be {POLICY_VERSION}, got {version!r}")
    tag_key = _tag_key(root.get("tag_key", "cache-ingress"), problems)
    if "targets" not in root:
        return None
    raw_targets = root["targets"]
    if not isinstance(raw_targets, Mapping) or not raw_targets:
        problems.add(("targets",), "must be a mapping naming at least one target")
        return None
    targets = {}
    for name, raw in raw_targets.items():
        if not isinstance(name, str) or not TARGET_NAME.fullmatch(name):
            problems.add(
                ("targets", name),
                "a target name is 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
            )
        target = _target(name, raw, problems)
        if target is not None:
            targets[name] = target
    if tag_key is None or len(targets) != len(raw_targets):
        return None
    return Policy(version=POLICY_VERSION, tag_key=tag_key, targets=targets)


def _tag_key(tag_key: object, problems: _Problems) -> str | None:
    where = ("tag_key",)
    if not isinstance(tag_key, str) or not 0 < len(tag_key) <= _TAG_KEY_MAX:
        problems.add(where, "must be a non-empty string of at most 128 characters")
        return None
    if not _printable_ascii(tag_key, where, problems):
        return None
    if tag_key != tag_key.strip(" "):
        problems.add(where, f"{tag_key!r} begins or ends with a space")
        return None
    return tag_key


def _target(name: object, raw: object, problems: _Problems) -> Target | None:
    where = ("targets", name)
    body = _object(
        raw,
        where,
        problems,
        optional=frozenset({*_DESTINATION_FIELDS, "region", "allow", "revoke"}),
    )
    if body is None:
        return None
    named = [key for key in _DESTINATION_FIELDS if key in body]
    if not named:
        problems.add(
            (*where, "cache_security_group"),
            "required field is missing (a target names exactly one destination: "
            "cache_security_group, replication_group, cache_cluster or vpc_security_group)",
            at=where,
        )
    elif len(named) > 1:
        problems.add(
            where,
            f"names both {named[0]} and {named[1]}; a target names exactly one destination",
            at=(*where, named[1]),
        )
    # Destination first, then region, then allow: the order the classic kind always used.
    cache_group: str | None = None
    vpc = None
    if len(named) == 1 and named[0] == "cache_security_group":
        cache_group = _cache_security_group(body["cache_security_group"], where, problems)
    elif len(named) == 1:
        vpc = _vpc_destination(named[0], body[named[0]], (*where, named[0]), problems)
    region = body.get("region")
    if region is not None and (not isinstance(region, str) or not _REGION.fullmatch(region)):
        problems.add((*where, "region"), "must be an AWS region such as us-east-1")
    revoke = _revoke(body.get("revoke", False), (*where, "revoke"), problems)
    allow = _allow(body.get("allow", {}), (*where, "allow"), problems)
    if not _peering_fits(allow, cache_group, where, problems) or revoke is None:
        return None
    if (cache_group is None and vpc is None) or allow is None or not isinstance(name, str):
        return None
    if region is not None and not isinstance(region, str):
        return None
    return Target(
        name=name,
        kind=vpc.kind if vpc is not None else TargetKind.CACHE_SECURITY_GROUP,
        cache_security_group=cache_group,
        region=region,
        allow=allow,
        vpc=vpc,
        revoke=revoke,
    )


def _peering_fits(
    allow: Allow | None, cache_group: str | None, where: Path, problems: _Problems
) -> bool:
    """`allow.peered_vpcs` is for VPC targets: a classic cache security group admits
    groups by owner and name, never through a VPC."""
    if allow is None or not allow.peered_vpcs or cache_group is None:
        return True
    problems.add(
        (*where, "allow", "peered_vpcs"),
        "applies to VPC targets only: a cache security group admits groups by owner and "
        "name, not through a VPC",
    )
    return False


def _revoke(raw: object, where: Path, problems: _Problems) -> bool | None:
    if not isinstance(raw, bool):
        problems.add(where, f"must be true or false, got {raw!r}")
        return None
    return raw


def _cache_security_group(raw: object, where: Path, problems: _Problems) -> str | None:
    if not isinstance(raw, str) or not _CACHE_GROUP_NAME.fullmatch(raw):
        problems.add(
            (*where, "cache_security_group"),
            "must be a cache security group name (letters, digits and hyphens, at most 255)",
        )
        return None
    return raw


def _vpc_destination(
    field_name: str, raw: object, where: Path, problems: _Problems
) -> VpcDestination | None:
    if field_name == "vpc_security_group":
        body = _object(raw, where, problems, required=frozenset({"group_id", "port"}))
        if body is None:
            return None
        group_id, port = body.get("group_id"), body.get("port")
        valid = True
        if "group_id" in body and (
            not isinstance(group_id, str) or not _VPC_GROUP_ID.fullmatch(group_id)
        ):
            problems.add(
                (*where, "group_id"), "must be a security group id such as sg-0123456789abcdef0"
            )
            valid = False
        if "port" in body and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= _PORT_MAX
        ):
            problems.add((*where, "port"), "must be a TCP port number from 1 to 65535")
            valid = False
        if not valid or not isinstance(group_id, str) or not isinstance(port, int):
            return None
        return VpcDestination(TargetKind.VPC_SECURITY_GROUP, group_id, port)
    kind, longest = (
        (TargetKind.REPLICATION_GROUP, _REPLICATION_GROUP_ID_MAX)
        if field_name == "replication_group"
        else (TargetKind.CACHE_CLUSTER, _CACHE_CLUSTER_ID_MAX)
    )
    if not isinstance(raw, str) or len(raw) > longest or not _CACHE_ID.fullmatch(raw):
        problems.add(
            where,
            f"must be an ElastiCache {kind.replace('-', ' ')} id: 1-{longest} lowercase "
            "letters, digits and single hyphens, starting with a letter and not ending with "
            "a hyphen",
        )
        return None
    return VpcDestination(kind, raw)


def _allow(raw: object, where: Path, problems: _Problems) -> Allow | None:
    body = _object(
        raw,
        where,
        problems,
        optional=frozenset({"owner_accounts", "required_tags", "principals", "peered_vpcs"}),
    )
    if body is None:
        return None
    valid = True
    peered_vpcs = body.get("peered_vpcs", False)
    if not isinstance(peered_vpcs, bool):
        problems.add((*where, "peered_vpcs"), "must be true or false")
        valid = False
    owners = None
    if "owner_accounts" in body:
        owners = _strings(body["owner_accounts"], (*where, "owner_accounts"), problems)
        for index, owner in enumerate(owners or ()):
            if not _ACCOUNT.fullmatch(owner):
                problems.add(
                    (*where, "owner_accounts"),
                    f"{owner!r} is not a 12-digit account id (quote account ids in YAML so "
                    "leading zeros survive)",
                    at=(*where, "owner_accounts", index),
                )
                valid = False
        valid = valid and owners is not None
    principals = None
    if "principals" in body:
        principals = _strings(body["principals"], (*where, "principals"), problems)
        for index, pattern in enumerate(principals or ()):
            at = (*where, "principals", index)
            valid = _principal_pattern(pattern, (*where, "principals"), at, problems) and valid
        valid = valid and principals is not None
    required_tags = _required_tags(
        body.get("required_tags", {}), (*where, "required_tags"), problems
    )
    if not valid or required_tags is None:
        return None
    return Allow(
        owner_accounts=owners,
        required_tags=required_tags,
        principals=principals,
        peered_vpcs=bool(peered_vpcs),
    )


def _required_tags(
    raw: object, where: Path, problems: _Problems
) -> dict[str, tuple[str, ...]] | None:
    if not isinstance(raw, Mapping):
        problems.add(where, "must be a mapping of tag key to value or list of values")
        return None
    tags = {}
    valid = True
    for key, value in raw.items():
        if not isinstance(key, str) or not 0 < len(key) <= _TAG_KEY_MAX:
            problems.add(
                where, f"tag key {key!r} must be a string of 1-128 characters", at=(*where, key)
            )
            valid = False
            continue
        if not _printable_ascii(key, where, problems, what="tag key ", at=(*where, key)):
            valid = False
        values = (value,) if isinstance(value, str) else _strings(value, (*where, key), problems)
        if values is None:
            valid = False
            continue
        if any(len(item) > _TAG_VALUE_MAX for item in values):
            problems.add((*where, key), "tag values are at most 256 characters")
            valid = False
        for item in values:
            valid = _printable_ascii(item, (*where, key), problems) and valid
        tags[key] = values
    return tags if valid else None


def _principal_pattern(pattern: str, where: Path, at: Path, problems: _Problems) -> bool:
    """An ARN pattern whose principal type, and for an assumed role the role name, are
    written out: a wildcard in the type (`...:123456789012:*`) would match the root user, and
    in the role name (`assumed-role/*/alice`) it would leave only the session name, which the
    caller chooses.
    """
    if not _printable_ascii(pattern, where, problems, at=at):
        return False
    if " " in pattern:
        problems.add(where, f"{pattern!r} holds a space; an ARN never does", at=at)
        return False
    match = _PRINCIPAL_ARN.fullmatch(pattern)
    if match is None:
        problems.add(
            where,
            f"{pattern!r} must be an ARN pattern (arn:PARTITION:SERVICE::ACCOUNT:TYPE/NAME...)",
            at=at,
        )
        return False
    segments = match["resource"].split("/")
    if _WILDCARDS & set(segments[0]):
        problems.add(
            where,
            f"{pattern!r}: write the principal type out (root, user/..., role/..., "
            "assumed-role/ROLE/SESSION, federated-user/...); a wildcard there matches the "
            "account's root user too",
            at=at,
        )
        return False
    if segments[0] == "assumed-role" and len(segments) > 1 and _WILDCARDS & set(segments[1]):
        problems.add(
            where,
            f"{pattern!r}: write the role name out; the session name after it is chosen by "
            "whoever assumes a role, so a wildcard role would admit anyone able to assume any "
            "matching role",
            at=at,
        )
        return False
    return True


def _printable_ascii(
    text: str, where: Path, problems: _Problems, *, what: str = "", at: Path | None = None
) -> bool:
    """Tag keys, tag values and principal patterns: printable ASCII (space to tilde) only."""
    for char in text:
        if not " " <= char <= "~":
            problems.add(
                where,
                f"{what}{text[:64]!r} holds {char!r} (U+{ord(char):04X}); only printable "
                "ASCII is allowed, so that no look-alike character can pass for another",
                at=at,
            )
            return False
    return True


def _object(
    raw: object,
    where: Path,
    problems: _Problems,
    *,
    required: frozenset[str] = frozenset(),
    optional: frozenset[str] = frozenset(),
) -> Mapping[str, Any] | None:
    """The mapping, its unknown and missing fields reported; None when it is no mapping."""
    if not isinstance(raw, Mapping):
        problems.add(where, f"must be a mapping, got {type(raw).__name__}")
        return None
    allowed = required | optional
    expected = ", ".join(sorted(allowed))
    for key in raw:
        if key not in allowed:
            problems.add(
                where, f"unknown field {str(key)!r} (expected {expected})", at=(*where, key)
            )
    for missing in sorted(required - set(raw)):
        problems.add((*where, missing), "required field is missing", at=where)
    return raw


def _strings(raw: object, where: Path, problems: _Problems) -> tuple[str, ...] | None:
    if not isinstance(raw, list) or not raw:
        problems.add(where, "must be a non-empty list of strings")
        return None
    # The first item that is not a string ends the check: an alias bomb is never walked.
    if not all(isinstance(item, str) and item for item in raw):
        problems.add(where, "every item must be a non-empty string")
        return None
    return tuple(raw)
