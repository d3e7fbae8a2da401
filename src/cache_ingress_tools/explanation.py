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

With the grant ledger (its table known), each pair also shows what the function reads from
it: a `hold` check after the policy's rules (a hold on a pair the policy allows denies it, by
rule `hold`, as the function does), and for a target with `revoke: true`, what revocation
would do with the pair's open ledger entries now (the function's own `Revoker`, judging
them as an event would, in a dry run: nothing is revoked or written).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from cache_ingress.authorizer import read_groups_now
from cache_ingress.decisions import Check, PairTrace, Plan, Verdict, explain
from cache_ingress.granted_state import GrantedView
from cache_ingress.holds import RULE as HOLD_RULE
from cache_ingress.holds import Hold, apply_holds, hold_reason
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
from cache_ingress.vpc_peering import ReadPeerings
from cache_ingress.wiring import ResolveDestinations, with_named_destinations

if TYPE_CHECKING:
    from cache_ingress.ledger import Ledger
    from cache_ingress.revocations import Revoker

DescribeGroups = Callable[[Sequence[str]], Mapping[str, SecurityGroupFacts]]
VerifyPrincipal = Callable[[TagRequest], Provenance]
EXPLAIN_EVENT_ID = "explain"


@dataclass(frozen=True, slots=True)
class Revocation:
    """What revocation would do with one pair now, from its open ledger entries."""

    revoke: bool
    # The pair's open entries (in force, not owned, unsure, pending).
    open_entries: int = 0
    # (outcome, reason) of each entry whose reason is gone, as the function would settle it.
    findings: tuple[tuple[str, str], ...] = ()

    @property
    def summary(self) -> str:
        if not self.revoke:
            return "off (the target has no revoke: true): the function never revokes it"
        if not self.open_entries:
            return "nothing to revoke: the ledger holds no open entry of this pair"
        if not self.findings:
            return f"none: the reason of its {self.open_entries} open entr(y/ies) remains"
        return "; ".join(f"{outcome}: {reason}" for outcome, reason in self.findings)


@dataclass(frozen=True, slots=True)
class PairView:
    """One pair's trace, what it means, and whether the group is granted the target now."""

    trace: PairTrace
    # Set for a target the group's tag does not name: the tag value the trace assumed.
    assumed_tag: str | None = None
    granted_now: bool | None = None
    granted_note: str | None = None
    # From the ledger (None: its table is unknown, or the pair has no target).
    hold: Hold | None = None
    revocation: Revocation | None = None

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
    # Whether the grant ledger was read (holds, revocation).
    ledger_read: bool = False


@dataclass(frozen=True, slots=True)
class Readers:
    """The function's adapters, reading only. Without a ledger, holds and revocation are
    not shown."""

    describe: DescribeGroups
    resolve: ResolveDestinations
    verify_principal: VerifyPrincipal
    granted: GrantedView
    # Member accounts (docs/multi-account.md): which accounts are members, their groups read
    # through their read roles, and the peering connections of the caches' VPCs.
    members: Callable[[str], bool] | None = None
    describe_member: Callable[[str, Sequence[str]], dict[str, SecurityGroupFacts]] | None = None
    peerings: ReadPeerings | None = None
    ledger: Ledger | None = None
    revoker: Revoker | None = None


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
    groups = read_groups_now(
        request,
        account_id=account_id,
        region=region,
        members=readers.members,
        describe=readers.describe,
        describe_member=readers.describe_member,
    )
    groups = with_named_destinations(groups, policy, region, readers.resolve, readers.peerings)
    decide = partial(
        explain, policy=policy, account_id=account_id, region=region, members=readers.members
    )
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
    if readers.ledger is None:
        return Explanation(request, tuple(pairs), groups, provenance)
    pairs = _with_holds(pairs, readers.ledger, request.principal)
    if readers.revoker is not None:
        pairs = _with_revocation(pairs, readers.revoker, policy, groups)
    return Explanation(request, tuple(pairs), groups, provenance, ledger_read=True)


def _with_holds(pairs: list[PairView], ledger: Ledger, principal: str | None) -> list[PairView]:
    """Each pair's trace with the `hold` check after the policy's rules (one read of the
    ledger): a hold on a pair the policy allows denies it, exactly as the function's
    `apply_holds` does; on a pair denied already, it is shown as a later rule is."""
    keys = sorted({(p.trace.group_id, p.trace.target) for p in pairs if p.trace.target})
    holds = ledger.holds_for([(group, str(target)) for group, target in keys]) if keys else {}
    viewed = []
    for pair in pairs:
        trace = pair.trace
        if trace.target is None:
            viewed.append(pair)
            continue
        hold = holds.get((trace.group_id, trace.target))
        if hold is None:
            check = Check(HOLD_RULE, "no hold stands on this pair", Verdict.HOLDS)
            viewed.append(replace(pair, trace=trace._replace(checks=(*trace.checks, check))))
            continue
        reason = hold_reason(hold)
        check = Check(HOLD_RULE, f"held: {hold.summary}", Verdict.DENIES, reason)
        result = trace.result
        if isinstance(result, Grant):
            [result] = apply_holds(Plan(grants=[result]), {hold.key: hold}, principal).decisions
        held = trace._replace(checks=(*trace.checks, check), result=result)
        viewed.append(replace(pair, trace=held, hold=hold))
    return viewed


def _with_revocation(
    pairs: list[PairView],
    revoker: Revoker,
    policy: Policy,
    groups: Mapping[str, SecurityGroupFacts],
) -> list[PairView]:
    """What revocation would do with each pair's open ledger entries now: the function's
    own judgement (`Revoker.settle`, holds and other owners included), as a dry run."""
    from cache_ingress.ownership import Judging, revocable  # noqa: PLC0415

    group_ids = sorted({p.trace.group_id for p in pairs})
    entries = [entry for group_id in group_ids for entry in revoker.ledger.live(group_id)]
    judging = Judging(groups={group_id: groups.get(group_id) for group_id in group_ids})
    findings = revoker.settle(EXPLAIN_EVENT_ID, entries, judging, policy, dry_run=True)
    viewed = []
    for pair in pairs:
        key = (pair.trace.group_id, pair.trace.target)
        target = policy.targets.get(pair.trace.target or "")
        if pair.trace.target is None:
            # The group names no target now: what becomes of its open entries, by target.
            group_id = pair.trace.group_id
            mine = [entry for entry in entries if entry.grant.group_id == group_id]
            found = tuple(
                (f"{outcome} {d.target}", reason)
                for d in findings
                if d.group_id == group_id
                for outcome, reason in (_finding(d),)
            )
            revocation = Revocation(
                revoke=any(revocable(entry, policy) for entry in mine),
                open_entries=len(mine),
                findings=found,
            )
            viewed.append(replace(pair, revocation=revocation))
            continue
        found = tuple(_finding(d) for d in findings if (d.group_id, d.target) == key)
        revocation = Revocation(
            revoke=target.revoke if target is not None else bool(found),
            open_entries=sum(1 for entry in entries if entry.pair == key),
            findings=found,
        )
        viewed.append(replace(pair, revocation=revocation))
    return viewed


def _finding(decision: Decision) -> tuple[str, str]:
    """(outcome, reason) of one entry settled in a dry run."""
    if decision.outcome is Outcome.DRY_RUN:
        # What the next event for the group, or an enforcing sweep, does.
        why = decision.reason.removeprefix("dry run: would revoke (").removesuffix(")")
        return "would revoke", why
    return str(decision.outcome), decision.reason


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
    groups = with_named_destinations(
        {facts.group_id: assumed}, policy, region, readers.resolve, readers.peerings
    )
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
