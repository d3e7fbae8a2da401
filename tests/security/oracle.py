"""An independent oracle: which (group, target) pairs the policy reference allows.

Written from the policy reference (the docstring of `cache_ingress/policy.py`, repeated in
the README, and docs/vpc-targets.md) and the AWS facts, not from the decision code: it
imports nothing from `cache_ingress`, reads the policy as the plain document a reviewer
reads, and matches principal patterns with its own wildcard matcher. Where it and the
function disagree, one of them misreads the reference, and the tests say which pair.

The reference, as read here:

- The function serves one account and one region: an event from elsewhere grants nothing.
- Only groups that exist now count, with the tags, owner and region they have now.
- The group's `tag_key` tag (default `cache-ingress`) holds comma-separated target names;
  items are trimmed, empty items and repeats mean nothing.
- A target name not in the policy grants nothing.
- A target's cache lives in its `region`, or the function's region when absent; ingress
  never crosses regions.
- The owner must be a 12-digit account id listed in `allow.owner_accounts`, or the
  function's own account when that list is absent.
- Each `allow.required_tags` key must be on the group now with one of the accepted values
  (a single string or a list of strings).
- With `allow.principals`, the event must name a principal matching one of the patterns,
  where `*` is any run of characters and `?` exactly one, and nothing else is special.
- A VPC target (`vpc_security_group`, `replication_group`, `cache_cluster`) is granted by a
  rule on the cache's VPC security group, TCP on the cache's port, from the tagged group;
  the tagged group must be in a VPC, the same as the cache's security group's. Nothing is
  granted on a fact that is missing: a cache whose facts are unknown grants nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

DEFAULT_TAG_KEY = "cache-ingress"


@dataclass(frozen=True, slots=True)
class Scope:
    """Where the function runs and where the event says it comes from."""

    function_account: str
    function_region: str
    event_account: str
    event_region: str

    @property
    def in_scope(self) -> bool:
        return (self.event_account, self.event_region) == (
            self.function_account,
            self.function_region,
        )


@dataclass(frozen=True, slots=True)
class CacheFacts:
    """A VPC cache as it is now: its security group, that group's VPC, and its port."""

    security_group: str
    vpc_id: str
    port: int


@dataclass(frozen=True, slots=True)
class Permit:
    """One ingress the policy allows, with the exact request it implies."""

    group_id: str
    target: str
    group_name: str
    owner_id: str
    cache_security_group: str | None = None
    vpc_cache: CacheFacts | None = None

    @property
    def authorize_parameters(self) -> tuple[str, str, str]:
        """(CacheSecurityGroupName, EC2SecurityGroupName, EC2SecurityGroupOwnerId)."""
        assert self.cache_security_group is not None, "a VPC permit has no classic call"
        return (self.cache_security_group, self.group_name, self.owner_id)

    @property
    def rule_parameters(self) -> tuple[str, int, str]:
        """(the cache's GroupId, the TCP port, the tagged GroupId) of the ingress rule."""
        assert self.vpc_cache is not None, "a classic permit has no ingress rule"
        return (self.vpc_cache.security_group, self.vpc_cache.port, self.group_id)


def named_targets(tag_value: str) -> list[str]:
    """Target names in a tag value, in order, each once."""
    names: list[str] = []
    for item in tag_value.split(","):
        name = item.strip()
        if name and name not in names:
            names.append(name)
    return names


def named_pairs(
    group_ids: Iterable[str],
    groups: Mapping[str, Mapping[str, Any]],
    policy: Mapping[str, Any],
    scope: Scope,
) -> set[tuple[str, str | None]]:
    """Every pair the function must give exactly one outcome: (group, target) for each
    target the group's tag names now, or (group, None) when it names none, the group is
    gone, or the event is out of scope.
    """
    tag_key = str(policy.get("tag_key", DEFAULT_TAG_KEY)).strip()
    pairs: set[tuple[str, str | None]] = set()
    for group_id in group_ids:
        group = groups.get(group_id)
        names = (
            named_targets(group["tags"][tag_key])
            if scope.in_scope and group is not None and tag_key in group["tags"]
            else []
        )
        pairs.update((group_id, name) for name in names)
        if not names:
            pairs.add((group_id, None))
    return pairs


def permitted(
    group_ids: Iterable[str],
    groups: Mapping[str, Mapping[str, Any]],
    principal: str | None,
    policy: Mapping[str, Any],
    scope: Scope,
    caches: Mapping[str, CacheFacts] | None = None,
) -> set[Permit]:
    """The pairs the policy allows to be granted for an event naming `group_ids`.

    `groups` maps group id to the group as it is now: `name`, `owner_id`, `region`, `tags`,
    and `vpc_id` (None outside a VPC). `caches` maps a VPC target's name to its cache's
    facts; a VPC target missing from it grants nothing.
    """
    if not scope.in_scope:
        return set()
    tag_key = str(policy.get("tag_key", DEFAULT_TAG_KEY)).strip()
    targets: Mapping[str, Any] = policy.get("targets") or {}
    permits: set[Permit] = set()
    for group_id in group_ids:
        group = groups.get(group_id)
        if group is None or tag_key not in group["tags"]:
            continue
        for name in named_targets(group["tags"][tag_key]):
            target = targets.get(name)
            if target is None or not _target_allows(target, group, principal, scope):
                continue
            permit = Permit(group_id, name, group["name"], group["owner_id"])
            if "cache_security_group" in target:
                permits.add(replace(permit, cache_security_group=target["cache_security_group"]))
                continue
            cache = (caches or {}).get(name)
            in_the_cache_vpc = cache is not None and group.get("vpc_id") == cache.vpc_id
            if in_the_cache_vpc and group.get("vpc_id") is not None:
                permits.add(replace(permit, vpc_cache=cache))
    return permits


def _target_allows(
    target: Mapping[str, Any], group: Mapping[str, Any], principal: str | None, scope: Scope
) -> bool:
    allow: Mapping[str, Any] = target.get("allow") or {}
    cache_region = target.get("region") or scope.function_region
    if group["region"] != cache_region:
        return False
    owner = group["owner_id"]
    owners = allow.get("owner_accounts") or [scope.function_account]
    if not is_account_id(owner) or owner not in owners:
        return False
    for key, accepted in (allow.get("required_tags") or {}).items():
        values = [accepted] if isinstance(accepted, str) else list(accepted)
        if key not in group["tags"] or group["tags"][key] not in values:
            return False
    patterns = allow.get("principals")
    if patterns is not None:
        if principal is None:
            return False
        if not any(wildcard_match(pattern, principal) for pattern in patterns):
            return False
    return True


def is_account_id(value: str) -> bool:
    """Twelve ASCII digits: what AWS account ids are."""
    return len(value) == 12 and all("0" <= char <= "9" for char in value)


def wildcard_match(pattern: str, text: str) -> bool:
    """`*` matches any run of characters (also none), `?` exactly one; the rest literally.

    The classic two-pointer matcher with backtracking to the last star: no regular
    expressions, so it cannot share a bug with a regex translation.
    """
    p = t = 0
    star = -1
    resume = 0
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, resume = p, t
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            p += 1
            t += 1
        elif star >= 0:
            p = star + 1
            resume += 1
            t = resume
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)
