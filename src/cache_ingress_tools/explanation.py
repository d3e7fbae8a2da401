"""Why a group is (or would be) granted a target: the function's own decision, traced.

`explain_request` does what the function does with one request: it reads the groups as they
are now and the VPC caches their tags name (the function's adapters, through the given
readers), decides with `cache_ingress.decisions.explain` (the rules `decide` runs, each
check recorded), asks CloudTrail about a replayed principal when a pair waits for it, as the
function does, and adds what is granted now. It never grants: the readers it is given only
read.

A request is an event (from a file), or one made up for the question: a Tag Change now
(no principal), or a CreateTags by a principal that set the tag to the value the group
carries now. A target the group's tag does not name is also traced as if the tag named it,
to answer "what if I tag it".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

from cache_ingress.decisions import PairTrace, explain
from cache_ingress.granted_state import GrantedView
from cache_ingress.models import (
    Decision,
    Grant,
    Outcome,
    Provenance,
    SecurityGroupFacts,
    TagRequest,
    TargetKind,
    TrailCall,
    VpcCacheFacts,
)
from cache_ingress.policy import Policy, Target
from cache_ingress.wiring import ResolveDestinations, with_named_destinations

DescribeGroups = Callable[[Sequence[str]], Mapping[str, SecurityGroupFacts]]
VerifyPrincipal = Callable[[TagRequest], Provenance]
EXPLAIN_EVENT_ID = "explain"


@dataclass(frozen=True, slots=True)
class PairView:
    """One pair's trace, what it means, and whether the group is granted the target now."""

    trace: PairTrace
    # Set for a target the group's tag does not name: the tag value the trace assumed.
    assumed_tag: str | None = None
    granted_now: bool | None = None
    granted_note: str | None = None

    @property
    def outcome(self) -> str:
        result = self.trace.result
        return "allowed" if isinstance(result, Grant) else str(result.outcome)


@dataclass(frozen=True, slots=True)
class Explanation:
    request: TagRequest
    pairs: tuple[PairView, ...]
    groups: Mapping[str, SecurityGroupFacts]
    provenance: Provenance | None = None


@dataclass(frozen=True, slots=True)
class Readers:
    """The function's adapters, reading only."""

    describe: DescribeGroups
    resolve: ResolveDestinations
    verify_principal: VerifyPrincipal
    granted: GrantedView


def made_up_request(
    group_id: str,
    *,
    account: str,
    region: str,
    principal: str | None,
    tag_key: str,
    tag_value: str | None,
) -> TagRequest:
    """A Tag Change now (no principal), or CloudTrail's CreateTags by `principal` that set
    `tag_key` to `tag_value` on the group: a live event, never a replay."""
    if principal is None:
        return TagRequest(
            EXPLAIN_EVENT_ID, "aws.tag", "Tag Change on Resource", account, region, (group_id,)
        )
    tags = ((tag_key, tag_value),) if tag_value is not None else ()
    trail = TrailCall(None, "CreateTags", principal, (group_id,), tags, "ec2.amazonaws.com")
    return TagRequest(
        EXPLAIN_EVENT_ID,
        "aws.ec2",
        "AWS API Call via CloudTrail",
        account,
        region,
        (group_id,),
        principal,
        event_name="CreateTags",
        trail=trail,
    )


def explain_request(
    request: TagRequest,
    policy: Policy,
    readers: Readers,
    *,
    account_id: str,
    region: str,
    group_id: str | None = None,
    target: str | None = None,
) -> Explanation:
    """The request decided as the function decides it, every rule traced, the pairs of
    `group_id` and `target` only when given. Raises AwsCallError when a read fails."""
    in_scope = (request.account, request.region) == (account_id, region)
    groups = readers.describe(request.group_ids) if in_scope else {}
    groups = with_named_destinations(groups, policy, region, readers.resolve)
    decide = partial(explain, policy=policy, account_id=account_id, region=region)
    traces = decide(request, groups)
    provenance = None
    if any(trace.unverified for trace in traces):
        # As the function: CloudTrail is asked once, only for a replay that would grant.
        provenance = readers.verify_principal(request)
        traces = decide(request, groups, provenance=provenance)
    chosen = [
        trace
        for trace in traces
        if group_id in (None, trace.group_id) and target in (None, trace.target)
    ]
    pairs = [_view(trace, groups, policy, readers.granted) for trace in chosen]
    if target is not None and not any(trace.target == target for trace in chosen):
        for facts in groups.values():
            if group_id in (None, facts.group_id):
                pairs.extend(_assumed(request, facts, policy, readers, target, region, decide))
    return Explanation(request, tuple(pairs), groups, provenance)


def _assumed(
    request: TagRequest,
    facts: SecurityGroupFacts,
    policy: Policy,
    readers: Readers,
    target: str,
    region: str,
    decide: Callable[..., tuple[PairTrace, ...]],
) -> list[PairView]:
    """The target traced as if the group's tag named it too (its other targets kept)."""
    current = facts.tags.get(policy.tag_key)
    value = f"{current},{target}" if current and current.strip(" ,") else target
    assumed = replace(facts, tags={**facts.tags, policy.tag_key: value})
    groups = with_named_destinations({facts.group_id: assumed}, policy, region, readers.resolve)
    traces = decide(replace(request, group_ids=(facts.group_id,)), groups)
    return [
        replace(_view(trace, groups, policy, readers.granted), assumed_tag=value)
        for trace in traces
        if trace.target == target
    ]


def _view(
    trace: PairTrace,
    groups: Mapping[str, SecurityGroupFacts],
    policy: Policy,
    granted: GrantedView,
) -> PairView:
    group = groups.get(trace.group_id)
    target = policy.targets.get(trace.target) if trace.target is not None else None
    if group is None or target is None:
        return PairView(trace)
    probe = _probe(group, target)
    if probe is None:
        return PairView(trace, granted_note="the cache's security group could not be read")
    answer = granted.granted(probe)
    if isinstance(answer, bool):
        where = probe.cache_security_group or f"{probe.vpc_security_group} on tcp/{probe.port}"
        verb = "admits" if answer else "does not admit"
        return PairView(trace, granted_now=answer, granted_note=f"{where} {verb} this group")
    return PairView(trace, granted_note=None if answer is None else str(answer))


def _probe(group: SecurityGroupFacts, target: Target) -> Decision | None:
    """The pair as GrantedView reads it: the destination the policy names, or for a cache
    the function looks up, what was read of it (a denial's decision does not carry it)."""
    pair = partial(
        Decision,
        group.group_id,
        target.name,
        Outcome.NOT_APPLICABLE,
        "",
        group_name=group.group_name,
        owner_id=group.owner_id,
    )
    if target.cache_security_group is not None:
        return pair(cache_security_group=target.cache_security_group)
    if target.vpc is None:
        return None
    facts = group.destinations.get(target.vpc)
    if isinstance(facts, VpcCacheFacts):
        return pair(vpc_security_group=facts.group_id, port=facts.port)
    if target.vpc.kind is TargetKind.VPC_SECURITY_GROUP and target.vpc.port is not None:
        return pair(vpc_security_group=target.vpc.identifier, port=target.vpc.port)
    return None
