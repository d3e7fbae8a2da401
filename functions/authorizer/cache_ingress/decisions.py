"""Where the decision is made: a pure function over the request, the groups as they are
now, and the policy. It never calls AWS, so every rule is tested with plain data.

VPC targets need facts about the cache (its security group's VPC and the port): an adapter
looks them up before the decision (`named_vpc_destinations` says which) and they arrive on
each group's `destinations`. A fact that is missing or could not be read never grants.

A replayed event's principal is only the message's word. When such an event would grant a
target that requires a principal, the decision holds those grants back (`Plan.unverified`);
the caller asks CloudTrail whether the call really happened and decides again with the
answer (`provenance`). Only then, and only if CloudTrail confirms it, is the grant made.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial

from cache_ingress.models import (
    Decision,
    FailureKind,
    Grant,
    Outcome,
    Provenance,
    ProvenanceStatus,
    SecurityGroupFacts,
    TagRequest,
    TargetKind,
    UnresolvedDestination,
    VpcCacheFacts,
    VpcDestination,
)
from cache_ingress.policy import Policy, Target

_ACCOUNT = re.compile(r"[0-9]{12}")
# The calls whose own request can name a target: the tag value they set is theirs.
_BINDING_CALLS = frozenset({"CreateTags", "CreateSecurityGroup"})
# Around the items of a tag value, ASCII spaces are trimmed, nothing else (SECURITY.md).
_TRIMMED = " "


@dataclass(frozen=True, slots=True)
class Plan:
    """Decisions already final (denied, not applicable) and the grants the policy allows.

    `unverified` holds grants of a replayed event that wait for its principal to be verified
    (decided without `provenance`); deciding again with it turns each into a grant, a denial
    or a failure. Nothing in `unverified` may be granted as it is.
    """

    decisions: list[Decision] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    unverified: list[Grant] = field(default_factory=list)


def target_names(tag_value: str) -> tuple[str, ...]:
    """Target names in a tag value: comma-separated; ASCII spaces around a name are trimmed;
    empty items and repeats dropped. Any other character is part of the name.
    """
    names = (name.strip(_TRIMMED) for name in tag_value.split(","))
    return tuple(dict.fromkeys(name for name in names if name))


def named_vpc_destinations(
    group: SecurityGroupFacts, policy: Policy, region: str
) -> tuple[VpcDestination, ...]:
    """The VPC destinations the group's tag names now, in the function's region: what the
    adapter must look up before `decide`. Targets in another region are denied by the
    same-region rule without a lookup.
    """
    tag_value = group.tags.get(policy.tag_key)
    if tag_value is None:
        return ()
    wanted = []
    for name in target_names(tag_value):
        target = policy.targets.get(name)
        if target is not None and target.vpc is not None and target.region in (None, region):
            wanted.append(target.vpc)
    return tuple(dict.fromkeys(wanted))


def decide(
    request: TagRequest,
    groups: Mapping[str, SecurityGroupFacts],
    policy: Policy,
    *,
    account_id: str,
    region: str,
    provenance: Provenance | None = None,
) -> Plan:
    """Decide every (group, target) pair the request names, on the groups' current state.

    `groups` holds the groups that exist now; a named group missing from it no longer exists.
    `provenance` is CloudTrail's answer about a replayed event's principal; without it, a
    replayed event's grants of principal-gated targets wait in `Plan.unverified`.
    """
    plan = Plan()
    for group_id in request.group_ids:
        if request.account != account_id:
            plan.decisions.append(_event_elsewhere(group_id, request, "account", account_id))
        elif request.region != region:
            plan.decisions.append(_event_elsewhere(group_id, request, "region", region))
        elif group_id not in groups:
            plan.decisions.append(
                Decision(group_id, None, Outcome.NOT_APPLICABLE, "the group no longer exists")
            )
        else:
            _decide_group(plan, request, groups[group_id], policy, account_id, region, provenance)
    return plan


def _event_elsewhere(group_id: str, request: TagRequest, scope: str, ours: str) -> Decision:
    theirs = request.account if scope == "account" else request.region
    return Decision(
        group_id,
        None,
        Outcome.DENIED,
        f"event comes from {scope} {theirs}; this function serves {scope} {ours}",
        rule=f"event-{scope}",
        principal=request.principal,
    )


def _decide_group(
    plan: Plan,
    request: TagRequest,
    group: SecurityGroupFacts,
    policy: Policy,
    account_id: str,
    region: str,
    provenance: Provenance | None,
) -> None:
    tag_value = group.tags.get(policy.tag_key)
    names = target_names(tag_value) if tag_value is not None else ()
    if not names:
        reason = (
            f"the group has no {policy.tag_key} tag now"
            if tag_value is None
            else f"the {policy.tag_key} tag names no target"
        )
        plan.decisions.append(_decision(group, request, None, Outcome.NOT_APPLICABLE, reason))
        return
    for name in names:
        target = policy.targets.get(name)
        if target is None:
            plan.decisions.append(
                _decision(
                    group,
                    request,
                    name,
                    Outcome.DENIED,
                    "no such target in the policy",
                    rule="unknown-target",
                )
            )
            continue
        result = _decide_pair(group, request, target, policy.tag_key, account_id, region)
        if isinstance(result, Grant) and request.replayed and target.allow.principals is not None:
            if provenance is None:
                plan.unverified.append(result)
                continue
            if not provenance.verified:
                result = _unproven(result, request, provenance)
        if isinstance(result, Grant):
            plan.grants.append(result)
        else:
            plan.decisions.append(result)


def _unproven(grant: Grant, request: TagRequest, provenance: Provenance) -> Decision:
    """A principal-gated grant of a replayed event whose principal CloudTrail did not confirm:
    denied for good (`principal-provenance`) or, when CloudTrail could not be asked, failed
    like any other check that could not be made.
    """
    if provenance.status is ProvenanceStatus.UNAVAILABLE:
        return grant.decision(
            Outcome.FAILED,
            f"the principal of this replayed event could not be verified now: {provenance.reason}",
            request.principal,
            failure=provenance.failure or FailureKind.TRANSIENT,
            error_code=provenance.error_code or "ProvenanceUnavailable",
        )
    return grant.decision(
        Outcome.DENIED,
        f"a replayed event's principal counts only when CloudTrail holds the same call, and "
        f"{provenance.reason}; to grant {grant.target}, an allowed principal re-tags the group",
        request.principal,
        rule="principal-provenance",
    )


def _decide_pair(
    group: SecurityGroupFacts,
    request: TagRequest,
    target: Target,
    tag_key: str,
    account_id: str,
    region: str,
) -> Decision | Grant:
    denial = next(_denials(group, request, target, tag_key, account_id, region), None)
    if denial is not None:
        rule, reason = denial
        return _decision(
            group,
            request,
            target.name,
            Outcome.DENIED,
            reason,
            rule=rule,
            cache_security_group=target.cache_security_group,
            destination=target.vpc,
        )
    if target.vpc is not None:
        return _decide_vpc(group, request, target, target.vpc)
    return Grant(
        event_id=request.event_id,
        target=target.name,
        cache_security_group=target.cache_security_group,
        group_id=group.group_id,
        group_name=group.group_name,
        owner_id=group.owner_id,
    )


def _decide_vpc(
    group: SecurityGroupFacts, request: TagRequest, target: Target, destination: VpcDestination
) -> Decision | Grant:
    """After the policy's own rules: the cache's facts must be known, and in the group's VPC."""
    outcome = partial(_decision, group, request, target.name, destination=destination)

    if group.vpc_id is None:
        return outcome(
            Outcome.DENIED,
            "the group is not in a VPC; a VPC cache can only admit groups of its own VPC",
            rule="same-vpc",
        )
    facts = group.destinations.get(destination)
    if facts is None:
        # Only when the policy changed between the lookup and the decision: retry both.
        return outcome(
            Outcome.FAILED,
            f"{destination.label} was not looked up before the decision",
            failure=FailureKind.TRANSIENT,
            error_code="DestinationNotLookedUp",
        )
    if isinstance(facts, UnresolvedDestination):
        return outcome(
            Outcome.FAILED, facts.reason, failure=facts.failure, error_code=facts.error_code
        )
    if facts.vpc_id != group.vpc_id:
        return outcome(
            Outcome.DENIED,
            f"the group is in {group.vpc_id} and the cache's security group {facts.group_id} "
            f"in {facts.vpc_id or 'no VPC'}; a group in another VPC can only be referenced "
            "across a peering connection, which this function does not use",
            rule="same-vpc",
            vpc_security_group=facts.group_id,
            port=facts.port,
        )
    return _vpc_grant(group, request, target, destination, facts)


def _vpc_grant(
    group: SecurityGroupFacts,
    request: TagRequest,
    target: Target,
    destination: VpcDestination,
    facts: VpcCacheFacts,
) -> Grant:
    return Grant(
        event_id=request.event_id,
        target=target.name,
        cache_security_group=None,
        group_id=group.group_id,
        group_name=group.group_name,
        owner_id=group.owner_id,
        vpc_security_group=facts.group_id,
        port=facts.port,
        cache=destination.cache,
        cross_account=group.owner_id != facts.owner_id,
    )


def _denials(
    group: SecurityGroupFacts,
    request: TagRequest,
    target: Target,
    tag_key: str,
    account_id: str,
    region: str,
) -> Iterator[tuple[str, str]]:
    """Every rule the pair breaks, in review order; the first one is reported."""
    target_region = target.region or region
    if group.region != target_region:
        yield (
            "same-region",
            f"the group is in {group.region} and the cache in {target_region}; "
            "ingress cannot cross regions",
        )
    if not _ACCOUNT.fullmatch(group.owner_id):
        yield "owner-id", f"owner id {group.owner_id[:32]!r} is not a 12-digit account id"
    owners = target.allow.owner_accounts or (account_id,)
    if group.owner_id not in owners:
        yield "owner-accounts", f"owner {group.owner_id[:32]} is not an allowed owner account"
    for key, accepted in target.allow.required_tags.items():
        if group.tags.get(key) not in accepted:
            state = "is missing" if key not in group.tags else "has a value not accepted"
            yield "required-tags", f"required tag {key!r} {state}"
    if target.allow.principals is not None:
        if request.principal is None:
            yield (
                "principals",
                "the target requires a listed principal and this event names none "
                "(Tag Change events never do)",
            )
        elif not any(
            _glob(pattern).fullmatch(request.principal) for pattern in target.allow.principals
        ):
            yield (
                "principals",
                f"principal {request.principal} is not allowed to tag for this target",
            )
        unbound = _unbound(request, target.name, tag_key)
        if unbound is not None:
            yield "principal-binding", unbound


def _unbound(request: TagRequest, target: str, tag_key: str) -> str | None:
    """Why this event's own call did not ask for `target`, or None if it did.

    The principal vouches only for what its call set: the tag value the function reads now
    may have been written by anyone since (or before), so it never stands in for the call's.
    """
    call = request.trail
    if call is None or call.event_name not in _BINDING_CALLS:
        kind = request.event_name or request.detail_type
        return (
            f"a {kind} event never grants a target that requires a principal: only the "
            f"CreateTags or CreateSecurityGroup call that sets {tag_key} to name it does"
        )
    values = call.requested_values(tag_key)
    if not values:
        return (
            f"this {call.event_name} call did not set the {tag_key} tag; a target that "
            "requires a principal is granted only by the call that names it"
        )
    if len(values) > 1:
        return f"this {call.event_name} call set the {tag_key} tag more than once"
    if target not in target_names(values[0]):
        return (
            f"this {call.event_name} call set {tag_key} to {values[0][:128]!r}, which does not "
            f"name {target}; the tag's value now was set by another call"
        )
    return None


def _decision(
    group: SecurityGroupFacts,
    request: TagRequest,
    target: str | None,
    outcome: Outcome,
    reason: str,
    *,
    rule: str | None = None,
    cache_security_group: str | None = None,
    destination: VpcDestination | None = None,
    failure: FailureKind | None = None,
    error_code: str | None = None,
    vpc_security_group: str | None = None,
    port: int | None = None,
) -> Decision:
    if destination is not None and destination.kind is TargetKind.VPC_SECURITY_GROUP:
        vpc_security_group = vpc_security_group or destination.identifier
        port = port or destination.port
    return Decision(
        group_id=group.group_id,
        target=target,
        outcome=outcome,
        reason=reason,
        rule=rule,
        group_name=group.group_name,
        owner_id=group.owner_id,
        cache_security_group=cache_security_group,
        principal=request.principal,
        failure=failure,
        error_code=error_code,
        vpc_security_group=vpc_security_group,
        port=port,
        cache=destination.cache if destination is not None else None,
    )


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    """Principal patterns: `*` is any run of characters and `?` one character, neither ever
    matching `/` or `:`, so a wildcard stays inside one segment of the ARN; nothing else is
    special.
    """
    parts = (
        "[^/:]*" if char == "*" else "[^/:]" if char == "?" else re.escape(char) for char in pattern
    )
    return re.compile("".join(parts))
