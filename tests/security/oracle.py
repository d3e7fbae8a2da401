"""An independent oracle: which (group, target) pairs the documented rules allow.

Written from the README ("Deny rules", "Policy reference", "Replays and the principal"),
docs/vpc-targets.md and the AWS event formats, not from the decision code: it imports
nothing from `cache_ingress`, reads the policy as the plain document a reviewer reads, reads
the event as the raw EventBridge JSON AWS sends, and matches principal patterns with its own
wildcard matcher. Where it and the function disagree, one of them misreads the rules, and
the tests say which pair.

The rules, as read here:

- The function serves one account and one region: an event from elsewhere grants nothing.
- Only groups that exist now count, with the tags, owner and region they have now.
- The group's `tag_key` tag (default `cache-ingress`) holds comma-separated target names;
  ASCII spaces around a name are trimmed and nothing else; empty items and repeats mean
  nothing.
- A target name not in the policy grants nothing.
- A target's cache lives in its `region`, or the function's region when absent; ingress
  never crosses regions.
- The owner must be a 12-digit account id listed in `allow.owner_accounts`, or the
  function's own account when that list is absent.
- Each `allow.required_tags` key must be on the group now with one of the accepted values
  (a single string or a list of strings).
- With `allow.principals`:
  - the event must be a CloudTrail event whose `userIdentity.arn` matches one of the
    patterns, where `*` is any run of characters and `?` exactly one, neither ever matching
    `/` or `:`, and nothing else is special;
  - the call itself must have named the target: a `CreateTags` whose `tagSet`, or a
    `CreateSecurityGroup` whose `security-group` tag specification, sets the tag key exactly
    once to a value naming it (a `DeleteTags` or a Tag Change never does);
  - a replayed event (one carrying `replay-name`, or replayed by the operator from the
    dead-letter queue) counts only when CloudTrail's history holds a record under the
    event's `eventID`, made within the last 90 days, that succeeded and has the same event
    source, event name, principal, security groups, tag set, region and account.
- A hold on a (group, target) pair (README, "Holds") stops the pair: it is not granted while
  the hold stands.
- Revocation (README, "Ownership and revocation"): for a target with `revoke: true`, a grant
  the function made is revoked when its reason is gone now: the group no longer exists, its
  tag no longer names the target, a rule above no longer allows the pair as the principal
  that asked for it asked (nobody, for a Tag Change or the sweep), or a hold stands on it.
  A grant that was there before the function came to it is never revoked.
- A VPC target (`vpc_security_group`, `replication_group`, `cache_cluster`) is granted by a
  rule on the cache's VPC security group, TCP on the cache's port, from the tagged group;
  the tagged group must be in a VPC, the same as the cache's security group's, or, for a
  target with `allow.peered_vpcs: true`, one joined to it by an active peering connection.
  Nothing is granted on a fact that is missing: a cache whose facts are unknown grants
  nothing.

Member accounts (docs/multi-account.md, "How a member's event is decided"; README
`event-account`, `account-agreement`), read by `permitted_in_organization`:

- The stack decides the events of its own account and of its member accounts only.
- Every account the event names must be the event's own `account`: each resource ARN's
  account, and CloudTrail's `recipientAccountId` and `userIdentity.accountId`.
- The group is read in the event's own account: a group id means that account's group,
  and a member's event decides only groups that member owns.
- Then every rule above applies as for any group; `owner_accounts` still decides who is
  admitted (default: the cache account only), and the ingress names the group's owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_TAG_KEY = "cache-ingress"
CLOUDTRAIL = ("aws.ec2", "AWS API Call via CloudTrail")
HISTORY = timedelta(days=90)


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
class Delivery:
    """How the event reached the function, and what CloudTrail's history holds.

    `history` maps an eventID to CloudTrail's record of it (the JSON object LookupEvents
    returns as CloudTrailEvent). `operator_replay`: sent by `cache-ingress replay`.
    """

    operator_replay: bool = False
    history: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    now: datetime | None = None


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
    """Target names in a tag value, in order, each once; only ASCII spaces are trimmed."""
    names: list[str] = []
    for item in tag_value.split(","):
        name = item.strip(" ")
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
    tag_key = str(policy.get("tag_key", DEFAULT_TAG_KEY))
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
    event: Mapping[str, Any],
    policy: Mapping[str, Any],
    scope: Scope,
    caches: Mapping[str, CacheFacts] | None = None,
    delivery: Delivery | None = None,
    peerings: frozenset[frozenset[str]] = frozenset(),
) -> set[Permit]:
    """The pairs the rules allow to be granted for `event` (the raw EventBridge event),
    which names `group_ids`.

    `groups` maps group id to the group as it is now: `name`, `owner_id`, `region`, `tags`,
    and `vpc_id` (None outside a VPC). `caches` maps a VPC target's name to its cache's
    facts; a VPC target missing from it grants nothing.
    """
    if not scope.in_scope:
        return set()
    delivery = delivery or Delivery()
    tag_key = str(policy.get("tag_key", DEFAULT_TAG_KEY))
    targets: Mapping[str, Any] = policy.get("targets") or {}
    permits: set[Permit] = set()
    for group_id in group_ids:
        group = groups.get(group_id)
        if group is None or tag_key not in group["tags"]:
            continue
        for name in named_targets(group["tags"][tag_key]):
            target = targets.get(name)
            if target is None or not _target_allows(target, group, scope):
                continue
            if "principals" in (target.get("allow") or {}) and not _caller_allowed(
                target["allow"]["principals"], name, tag_key, event, delivery
            ):
                continue
            permit = Permit(group_id, name, group["name"], group["owner_id"])
            if "cache_security_group" in target:
                permits.add(replace(permit, cache_security_group=target["cache_security_group"]))
                continue
            cache = (caches or {}).get(name)
            vpc = group.get("vpc_id")
            if cache is None or vpc is None:
                continue
            peered = (target.get("allow") or {}).get("peered_vpcs") is True and (
                frozenset({vpc, cache.vpc_id}) in peerings
            )
            if vpc == cache.vpc_id or peered:
                permits.add(replace(permit, vpc_cache=cache))
    return permits


def reason_remains(
    group: Mapping[str, Any] | None,
    target_name: str,
    policy: Mapping[str, Any],
    scope: Scope,
    *,
    principal: str | None = None,
    held: bool = False,
) -> bool:
    """Whether a grant of (group, target) the function made, asked for by `principal`,
    still has its reason now (classic targets; the README's revocation rules)."""
    if held or group is None:
        return False
    tag_key = str(policy.get("tag_key", DEFAULT_TAG_KEY))
    target = (policy.get("targets") or {}).get(target_name)
    if target is None or tag_key not in group["tags"]:
        return False
    if target_name not in named_targets(group["tags"][tag_key]):
        return False
    if not _target_allows(target, group, scope):
        return False
    patterns = (target.get("allow") or {}).get("principals")
    if patterns is None:
        return True
    return principal is not None and any(wildcard_match(p, principal) for p in patterns)


def _target_allows(target: Mapping[str, Any], group: Mapping[str, Any], scope: Scope) -> bool:
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
    return True


# --- who asked ------------------------------------------------------------------------------


def _caller_allowed(
    patterns: Iterable[str],
    target: str,
    tag_key: str,
    event: Mapping[str, Any],
    delivery: Delivery,
) -> bool:
    if (event.get("source"), event.get("detail-type")) != CLOUDTRAIL:
        return False
    detail = event.get("detail") or {}
    principal = (detail.get("userIdentity") or {}).get("arn")
    if not isinstance(principal, str):
        return False
    if not any(wildcard_match(pattern, principal) for pattern in patterns):
        return False
    values = [value for key, value in request_tags(detail) if key == tag_key]
    if len(values) != 1 or target not in named_targets(values[0]):
        return False
    replayed = delivery.operator_replay or "replay-name" in event
    return not replayed or cloudtrail_confirms(detail, delivery)


def request_tags(detail: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The tags the call itself set: CreateTags' tagSet, or CreateSecurityGroup's tag
    specifications of resource type security-group. Any other call sets none that count.
    """
    parameters = detail.get("requestParameters") or {}
    if detail.get("eventName") == "CreateTags":
        items = (parameters.get("tagSet") or {}).get("items") or []
    elif detail.get("eventName") == "CreateSecurityGroup":
        items = [
            tag
            for specification in (parameters.get("tagSpecificationSet") or {}).get("items") or []
            if specification.get("resourceType") == "security-group"
            for tag in specification.get("tags") or []
        ]
    else:
        return []
    return [(str(item["key"]), str(item.get("value", ""))) for item in items]


def cloudtrail_confirms(detail: Mapping[str, Any], delivery: Delivery) -> bool:
    """CloudTrail holds the same successful call under the event's eventID, within 90 days."""
    record = delivery.history.get(str(detail.get("eventID")))
    if record is None or "errorCode" in record:
        return False
    made = datetime.fromisoformat(str(record["eventTime"]).replace("Z", "+00:00"))
    if (delivery.now or datetime.now(UTC)) - made > HISTORY:
        return False
    return _call_facts(record) == _call_facts(detail)


def _call_facts(call: Mapping[str, Any]) -> tuple[Any, ...]:
    parameters = call.get("requestParameters") or {}
    groups = sorted(
        str(item["resourceId"])
        for item in (parameters.get("resourcesSet") or {}).get("items") or []
        if str(item["resourceId"]).startswith("sg-")
    )
    created = (call.get("responseElements") or {}).get("groupId")
    if call.get("eventName") == "CreateSecurityGroup":
        groups = [str(created)]
    return (
        call.get("eventSource"),
        call.get("eventName"),
        (call.get("userIdentity") or {}).get("arn"),
        groups,
        sorted(request_tags(call)),
        call.get("awsRegion"),
        call.get("recipientAccountId"),
    )


def is_account_id(value: str) -> bool:
    """Twelve ASCII digits: what AWS account ids are."""
    return len(value) == 12 and all("0" <= char <= "9" for char in value)


def wildcard_match(pattern: str, text: str) -> bool:
    """`*` matches any run of characters (also none) and `?` exactly one, neither ever
    matching `/` or `:`; the rest literally.

    A recursive matcher written for reading, not speed (patterns and ARNs are short): no
    regular expressions, so it cannot share a bug with a regex translation.
    """
    if not pattern:
        return not text
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        # Either the star matches nothing more, or it takes one more segment character.
        return wildcard_match(rest, text) or (
            bool(text) and text[0] not in "/:" and wildcard_match(pattern, text[1:])
        )
    if not text:
        return False
    if head == "?":
        return text[0] not in "/:" and wildcard_match(rest, text[1:])
    return head == text[0] and wildcard_match(rest, text[1:])


# --- member accounts --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Organization:
    """The cache account's stack and the member accounts whose events it decides."""

    cache_account: str
    region: str
    members: frozenset[str]


def accounts_named(event: Mapping[str, Any]) -> list[str]:
    """Every account the raw event names besides its `account`: the account field of each
    resource ARN (`arn:aws:ec2:REGION:ACCOUNT:security-group/ID`), and CloudTrail's
    recipient and caller accounts."""
    named = [str(arn).split(":")[4] for arn in event.get("resources") or [] if ":" in str(arn)]
    detail = event.get("detail") or {}
    if (event.get("source"), event.get("detail-type")) == CLOUDTRAIL:
        for value in (
            detail.get("recipientAccountId"),
            (detail.get("userIdentity") or {}).get("accountId"),
        ):
            if value is not None:
                named.append(str(value))
    return named


def permitted_in_organization(
    group_ids: Iterable[str],
    groups_by_account: Mapping[str, Mapping[str, Mapping[str, Any]]],
    event: Mapping[str, Any],
    policy: Mapping[str, Any],
    organization: Organization,
    caches: Mapping[str, CacheFacts] | None = None,
    peerings: frozenset[frozenset[str]] = frozenset(),
) -> set[Permit]:
    """The pairs the rules allow for `event` in a cache account that serves members.

    `groups_by_account` maps each account to its groups as they are now (as `permitted`
    takes them); `peerings` holds the pairs of VPCs an active peering connection joins.
    """
    account = str(event.get("account"))
    if event.get("region") != organization.region:
        return set()
    if account != organization.cache_account and account not in organization.members:
        return set()
    if any(named != account for named in accounts_named(event)):
        return set()
    groups = dict(groups_by_account.get(account) or {})
    if account != organization.cache_account:
        groups = {gid: g for gid, g in groups.items() if g["owner_id"] == account}
    # From here on, the rules of one account, with the cache account as the function's.
    scope = Scope(
        organization.cache_account,
        organization.region,
        organization.cache_account,
        organization.region,
    )
    return permitted(group_ids, groups, event, policy, scope, caches, peerings=peerings)
