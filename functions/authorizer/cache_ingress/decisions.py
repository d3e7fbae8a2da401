"""Where the decision is made: a pure function over the request, the groups as they are
now, and the policy. It never calls AWS, so every rule is tested with plain data.

Each (group, target) pair is judged by its rules in the documented order (README, "Deny
rules"); each rule gives a `Check`: the fact it read and its verdict. The first check that
decides (a denial, nothing to decide, a fact that could not be read, a principal still to be
verified) is the pair's outcome; a pair no check decides is a grant. `decide()` stops at that
first check; `explain()` runs every rule of the same pairs through the same code and returns
the whole trace, whose outcome is by construction the one `decide()` gives.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple

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
_AGREEMENT = "account-agreement"
_PROVENANCE = "principal-provenance"
# Facts quote what AWS or the event holds; long values are cut so a trace stays readable.
_QUOTED = 128


class Verdict(StrEnum):
    """What one rule concluded about one pair."""

    HOLDS = "holds"  # the rule holds
    DENIES = "denies"  # the rule fails: the pair is denied, naming the rule
    NOT_APPLICABLE = "not-applicable"  # nothing to decide: no group, or no target named
    UNKNOWN = "unknown"  # the fact could not be read now: the pair fails, never grants
    PENDING = "pending"  # a replayed principal, not yet checked with CloudTrail
    NOT_SET = "not-set"  # the target does not set this rule
    NOT_ASKED = "not-asked"  # CloudTrail is asked only for a pair every other rule allows

    @property
    def decides(self) -> bool:
        """Whether this verdict, as the first to decide, is the pair's outcome."""
        return self in _DECIDING


_DECIDING = frozenset({Verdict.DENIES, Verdict.NOT_APPLICABLE, Verdict.UNKNOWN, Verdict.PENDING})


# Check, PairTrace and _Context are NamedTuples rather than dataclasses: this module is
# compiled and its classes built on every cold start (the package ships no bytecode), and a
# dataclass takes about 0.6 ms to build, a NamedTuple a seventh of that.


class Check(NamedTuple):
    """One rule applied to one pair: the fact it read, and its verdict.

    `reason` is the decision's reason when this check decides; `failure` and `error_code`
    say how a fact that could not be read fails; `vpc_security_group` and `port` are the
    cache's, when the check read them.
    """

    rule: str
    fact: str
    verdict: Verdict
    reason: str = ""
    failure: FailureKind | None = None
    error_code: str | None = None
    vpc_security_group: str | None = None
    port: int | None = None
    peering: str | None = None

    def as_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "rule": self.rule,
            "fact": self.fact,
            "verdict": str(self.verdict),
        }
        if self.reason:
            fields["reason"] = self.reason
        return fields


class PairTrace(NamedTuple):
    """One pair's checks in order, and its outcome: a Decision, or the Grant the policy
    allows (`unverified`: held back until CloudTrail confirms a replayed principal).
    `target` is None when the group itself decided (event from elsewhere, group gone, no
    target named).
    """

    group_id: str
    target: str | None
    checks: tuple[Check, ...]
    result: Decision | Grant
    unverified: bool = False

    @property
    def deciding(self) -> Check | None:
        """The first check that decides: the outcome's rule (PENDING for a grant waiting for
        CloudTrail); None for a grant."""
        return _first_deciding(self.checks)


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
    members: Callable[[str], bool] | None = None,
) -> Plan:
    """Decide every (group, target) pair the request names, on the groups' current state.

    `groups` holds the groups that exist now; a named group missing from it no longer exists.
    `provenance` is CloudTrail's answer about a replayed event's principal; without it, a
    replayed event's grants of principal-gated targets wait in `Plan.unverified`.
    `members` says whether another account's event is this function's to decide (a member
    account, docs/multi-account.md); without it, only `account_id`'s events are.
    """
    plan = Plan()
    context = _Context(request, policy, account_id, region, provenance, False, members)
    for trace in _traces(context, groups):
        if trace.unverified and isinstance(trace.result, Grant):
            plan.unverified.append(trace.result)
        elif isinstance(trace.result, Grant):
            plan.grants.append(trace.result)
        else:
            plan.decisions.append(trace.result)
    return plan


def explain(
    request: TagRequest,
    groups: Mapping[str, SecurityGroupFacts],
    policy: Policy,
    *,
    account_id: str,
    region: str,
    provenance: Provenance | None = None,
    members: Callable[[str], bool] | None = None,
) -> tuple[PairTrace, ...]:
    """Every pair `decide()` judges, with every rule's check in order (rules after the
    deciding one are evaluated too, for the reader) and the outcome `decide()` gives it.
    """
    context = _Context(request, policy, account_id, region, provenance, True, members)
    return tuple(_traces(context, groups))


class _Context(NamedTuple):
    """One decision's inputs. With `trace`, the rules also record the checks that hold and
    the rules a target does not set, and run on past the deciding one; without (`decide()`,
    on every event), they record only what decides, and the first of those ends the pair.
    """

    request: TagRequest
    policy: Policy
    account_id: str
    region: str
    provenance: Provenance | None
    trace: bool
    members: Callable[[str], bool] | None = None

    @property
    def member_event(self) -> bool:
        """An event of a member account: its groups were read through that account's role."""
        return self.request.account != self.account_id


def _traces(context: _Context, groups: Mapping[str, SecurityGroupFacts]) -> Iterator[PairTrace]:
    """The pairs in the request's order, each with its checks and its outcome, which is
    computed from the checks by the same function whether they were traced or not.
    """
    for group_id in context.request.group_ids:
        group = groups.get(group_id)
        checks = _take(context, _group_checks(context, group_id, group))
        stop = _first_deciding(checks)
        if stop is not None:
            yield PairTrace(group_id, None, checks, _group_decision(context, group_id, group, stop))
            continue
        if group is None:
            raise AssertionError("a group that does not exist always decides")
        for name in target_names(group.tags[context.policy.tag_key]):
            target = context.policy.targets.get(name)
            pair_checks = _take(context, _target_checks(context, group, name, target))
            result, unverified = _outcome(context, group, name, target, pair_checks)
            yield PairTrace(group_id, name, checks + pair_checks, result, unverified)


def _take(context: _Context, checks: Iterator[Check]) -> tuple[Check, ...]:
    """Every check when tracing; else up to the first that decides (the rules after it are
    never evaluated)."""
    if context.trace:
        return tuple(checks)
    for check in checks:
        if check.verdict.decides:
            return (check,)
    return ()


def _first_deciding(checks: tuple[Check, ...]) -> Check | None:
    return next((check for check in checks if check.verdict.decides), None)


# --- the group: where the event comes from, whether the group exists and names targets ----


def _group_checks(
    context: _Context, group_id: str, group: SecurityGroupFacts | None
) -> Iterator[Check]:
    """Checks of the group as a whole; each that decides ends them (nothing after it can be
    read: a group out of scope is never described)."""
    # A deployment that serves no member traces account-agreement only when it denies.
    shown = context.trace and context.members is not None
    request = context.request
    own_event = (
        request.account == context.account_id
        and request.region == context.region
        and not request.other_accounts
    )
    # On every event, the function's own account's: nothing to say, no fact to write.
    if context.trace or not own_event:
        for check in (_event_account(context), _event_region(context), _claimed_accounts(context)):
            if check.verdict.decides or shown or (context.trace and check.rule != _AGREEMENT):
                yield check
            if check.verdict.decides:
                return
    if group is None:
        fact, reason = f"{group_id} does not exist now", "the group no longer exists"
        yield Check("group-exists", fact, Verdict.NOT_APPLICABLE, reason)
        return
    if shown or group.read_account is not None or context.member_event:
        read = _read_accounts(context, group)
        if read.verdict.decides or shown:
            yield read
        if read.verdict.decides:
            return
    if context.trace:
        yield Check("group-exists", _group_fact(group), Verdict.HOLDS)
    yield from _tag_checks(context, group)


def _tag_checks(context: _Context, group: SecurityGroupFacts) -> Iterator[Check]:
    tag_key = context.policy.tag_key
    tag_value = group.tags.get(tag_key)
    if tag_value is None:
        reason = f"the group has no {tag_key} tag now"
        yield Check("tag", f"no {tag_key} tag", Verdict.NOT_APPLICABLE, reason)
        return
    names = target_names(tag_value)
    if not names:
        reason = f"the {tag_key} tag names no target"
        yield Check("tag", f"{tag_key} = {_quote(tag_value)}", Verdict.NOT_APPLICABLE, reason)
    elif context.trace:
        fact = f"{tag_key} = {_quote(tag_value)}: names {', '.join(names)}"
        yield Check("tag", fact, Verdict.HOLDS)


def _event_account(context: _Context) -> Check:
    """The event is this function's own account's, or a member's (`members`)."""
    theirs, ours = context.request.account, context.account_id
    if theirs == ours:
        fact = f"the event comes from account {theirs}; this function serves account {ours}"
        return Check("event-account", fact, Verdict.HOLDS)
    if context.members is not None and context.members(theirs):
        fact = f"the event comes from account {theirs}, a member account of {ours}"
        return Check("event-account", fact, Verdict.HOLDS)
    served = f"account {ours}" + (" and its member accounts" if context.members else "")
    fact = f"the event comes from account {theirs}; this function serves {served}"
    reason = f"event comes from account {theirs}; this function serves {served}"
    return Check("event-account", fact, Verdict.DENIES, reason)


def _event_region(context: _Context) -> Check:
    theirs, ours = context.request.region, context.region
    fact = f"the event comes from region {theirs}; this function serves region {ours}"
    if theirs != ours:
        reason = f"event comes from region {theirs}; this function serves region {ours}"
        return Check("event-region", fact, Verdict.DENIES, reason)
    return Check("event-region", fact, Verdict.HOLDS)


def _claimed_accounts(context: _Context) -> Check:
    """Every account the event names (its resources' ARNs, CloudTrail's recipient and
    caller) is the event's own: no event of one account can name another's group."""
    request = context.request
    for where, account in request.other_accounts:
        fact = f"the event is account {request.account}'s; {where} names {_quote(account)}"
        reason = (
            f"the event comes from account {request.account} but {where} names account "
            f"{account[:32]}; an account's event decides only that account's groups"
        )
        return Check(_AGREEMENT, fact, Verdict.DENIES, reason)
    fact = f"every account the event names is {request.account}"
    return Check(_AGREEMENT, fact, Verdict.HOLDS)


def _read_accounts(context: _Context, group: SecurityGroupFacts) -> Check:
    """The group was read in the event's account: a member's group through that member's
    role (the account STS named) and owned by it; the function's own with its own role."""
    request = context.request
    read = group.read_account or context.account_id
    if not context.member_event:
        agree = read == context.account_id
        owner_rule = True
    else:
        agree = read == request.account
        owner_rule = group.owner_id == request.account
    fact = (
        f"the event is account {request.account}'s; the group was read as account {read}, "
        f"owner {_quote(group.owner_id)}"
    )
    if not agree:
        reason = (
            f"the event comes from account {request.account} but its group was read with "
            f"account {read}'s credentials; a group is decided only on facts read in its own "
            "account"
        )
        return Check(_AGREEMENT, fact, Verdict.DENIES, reason)
    if not owner_rule:
        reason = (
            f"the event comes from account {request.account} but the group's owner is "
            f"{group.owner_id[:32]}; a member's event decides only that member's own groups"
        )
        return Check(_AGREEMENT, fact, Verdict.DENIES, reason)
    return Check(_AGREEMENT, fact, Verdict.HOLDS)


def _group_decision(
    context: _Context, group_id: str, group: SecurityGroupFacts | None, stop: Check
) -> Decision:
    request = context.request
    account = request.account if context.member_event else None
    if stop.verdict is Verdict.DENIES:
        if group is None:
            return Decision(
                group_id,
                None,
                Outcome.DENIED,
                stop.reason,
                rule=stop.rule,
                principal=request.principal,
                account=account,
            )
        return _decision(
            group, request, None, Outcome.DENIED, stop.reason, rule=stop.rule, account=account
        )
    if group is None:
        return Decision(group_id, None, Outcome.NOT_APPLICABLE, stop.reason, account=account)
    return _decision(group, request, None, Outcome.NOT_APPLICABLE, stop.reason, account=account)


def _group_fact(group: SecurityGroupFacts) -> str:
    where = f"in {group.vpc_id}" if group.vpc_id else "in no VPC"
    return (
        f"{group.group_id} ({_quote(group.group_name)}) exists: owner "
        f"{_quote(group.owner_id)}, {group.region}, {where}"
    )


# --- one target: the policy's rules, in review order ---------------------------------------


def _target_checks(
    context: _Context, group: SecurityGroupFacts, name: str, target: Target | None
) -> Iterator[Check]:
    if target is None:
        fact = f"{_quote(name)} is not a target of the policy"
        yield Check("unknown-target", fact, Verdict.DENIES, "no such target in the policy")
        return
    if context.trace:
        fact = f"{name} is a target: {_destination_label(target)}"
        yield Check("unknown-target", fact, Verdict.HOLDS)
    decided = False
    for check in _policy_rules(context, group, target):
        decided = decided or check.verdict.decides
        yield check
    if target.vpc is not None:
        check = _same_vpc(group, target)
        decided = decided or check.verdict.decides
        if check.verdict.decides or context.trace:
            yield check
    check = _provenance_check(context, target, decided=decided)
    if check.verdict.decides or context.trace:
        yield check


def _policy_rules(context: _Context, group: SecurityGroupFacts, target: Target) -> Iterator[Check]:
    """The rules of the policy's `allow` and of where the cache is, in review order."""
    target_region = target.region or context.region
    if group.region != target_region or context.trace:
        fact = f"the group is in {group.region}; the cache in {target_region}"
        if group.region != target_region:
            reason = (
                f"the group is in {group.region} and the cache in {target_region}; "
                "ingress cannot cross regions"
            )
            yield Check("same-region", fact, Verdict.DENIES, reason)
        else:
            yield Check("same-region", fact, Verdict.HOLDS)
    owner = group.owner_id
    if not _ACCOUNT.fullmatch(owner):
        reason = f"owner id {owner[:32]!r} is not a 12-digit account id"
        yield Check("owner-id", f"owner id {_quote(owner)}", Verdict.DENIES, reason)
    elif context.trace:
        yield Check("owner-id", f"owner id {owner}", Verdict.HOLDS)
    owners = target.allow.owner_accounts or (context.account_id,)
    if owner not in owners or context.trace:
        yield _owner_accounts(context, owner, target)
    yield from _required_tags(context, group, target)
    if target.allow.principals is None:
        if context.trace:
            unset = "the target does not require a principal"
            yield Check("principals", unset, Verdict.NOT_SET)
            yield Check("principal-binding", unset, Verdict.NOT_SET)
        return
    yield from _principals(context, target.allow.principals)
    binding = _binding(context.request, target.name, context.policy.tag_key)
    if binding.verdict.decides or context.trace:
        yield binding


def _owner_accounts(context: _Context, owner: str, target: Target) -> Check:
    listed = target.allow.owner_accounts
    allowed = ", ".join(listed) if listed else f"{context.account_id} (the function's own account)"
    fact = f"owner {_quote(owner)}; allowed: {allowed}"
    if owner not in (listed or (context.account_id,)):
        reason = f"owner {owner[:32]} is not an allowed owner account"
        return Check("owner-accounts", fact, Verdict.DENIES, reason)
    return Check("owner-accounts", fact, Verdict.HOLDS)


def _required_tags(context: _Context, group: SecurityGroupFacts, target: Target) -> Iterator[Check]:
    if not target.allow.required_tags and context.trace:
        yield Check("required-tags", "the target requires no tag", Verdict.NOT_SET)
    for key, accepted in target.allow.required_tags.items():
        value = group.tags.get(key)
        if value in accepted and not context.trace:
            continue
        now = f"{key} = {_quote(value)}" if value is not None else f"no {key} tag"
        fact = f"{now}; accepted: {', '.join(accepted)}"
        if value not in accepted:
            state = "is missing" if value is None else "has a value not accepted"
            yield Check("required-tags", fact, Verdict.DENIES, f"required tag {key!r} {state}")
        else:
            yield Check("required-tags", fact, Verdict.HOLDS)


def _principals(context: _Context, patterns: tuple[str, ...]) -> Iterator[Check]:
    principal = context.request.principal
    allowed = f"allowed: {', '.join(patterns)}"
    if principal is None:
        reason = (
            "the target requires a listed principal and this event names none "
            "(Tag Change events never do)"
        )
        fact = f"the event names no principal; {allowed}"
        yield Check("principals", fact, Verdict.DENIES, reason)
        return
    fact = f"principal {_quote(principal)}; {allowed}"
    if not any(_glob(pattern).fullmatch(principal) for pattern in patterns):
        reason = f"principal {principal} is not allowed to tag for this target"
        yield Check("principals", fact, Verdict.DENIES, reason)
    elif context.trace:
        yield Check("principals", fact, Verdict.HOLDS)


def _binding(request: TagRequest, target: str, tag_key: str) -> Check:
    """Whether this event's own call asked for `target`.

    The principal vouches only for what its call set: the tag value the function reads now
    may have been written by anyone since (or before), so it never stands in for the call's.
    """
    call = request.trail
    if call is None or call.event_name not in _BINDING_CALLS:
        kind = request.event_name or request.detail_type
        reason = (
            f"a {kind} event never grants a target that requires a principal: only the "
            f"CreateTags or CreateSecurityGroup call that sets {tag_key} to name it does"
        )
        return Check("principal-binding", f"the event is a {kind}", Verdict.DENIES, reason)
    values = call.requested_values(tag_key)
    if not values:
        reason = (
            f"this {call.event_name} call did not set the {tag_key} tag; a target that "
            "requires a principal is granted only by the call that names it"
        )
        fact = f"this {call.event_name} call did not set {tag_key}"
        return Check("principal-binding", fact, Verdict.DENIES, reason)
    fact = f"this {call.event_name} call set {tag_key} = " + ", ".join(map(_quote, values))
    if len(values) > 1:
        reason = f"this {call.event_name} call set the {tag_key} tag more than once"
        return Check("principal-binding", fact, Verdict.DENIES, reason)
    if target not in target_names(values[0]):
        reason = (
            f"this {call.event_name} call set {tag_key} to {values[0][:128]!r}, which does not "
            f"name {target}; the tag's value now was set by another call"
        )
        return Check("principal-binding", fact, Verdict.DENIES, reason)
    return Check("principal-binding", fact, Verdict.HOLDS)


def _same_vpc(group: SecurityGroupFacts, target: Target) -> Check:
    """After the policy's own rules: the cache's facts must be known, and the group in the
    cache's VPC (shared with a member, or not) or, for a target that allows peered VPCs, in a
    VPC joined to it by an active peering connection (looked up before the decision)."""
    destination = target.vpc
    if destination is None:
        raise AssertionError("same-vpc is a rule of VPC targets")
    if group.vpc_id is None:
        reason = "the group is not in a VPC; a VPC cache can only admit groups of its own VPC"
        return Check("same-vpc", "the group is in no VPC", Verdict.DENIES, reason)
    facts = group.destinations.get(destination)
    if facts is None:
        # Only when the policy changed between the lookup and the decision: retry both.
        reason = f"{destination.label} was not looked up before the decision"
        return Check(
            "same-vpc",
            f"{destination.label}: not looked up",
            Verdict.UNKNOWN,
            reason,
            failure=FailureKind.TRANSIENT,
            error_code="DestinationNotLookedUp",
        )
    if isinstance(facts, UnresolvedDestination):
        return Check(
            "same-vpc",
            f"{destination.label}: {facts.reason}",
            Verdict.UNKNOWN,
            facts.reason,
            failure=facts.failure,
            error_code=facts.error_code,
        )
    fact = (
        f"the group is in {group.vpc_id}; {destination.label} has security group "
        f"{facts.group_id} in {facts.vpc_id or 'no VPC'}, port {facts.port}"
    )
    if facts.vpc_id == group.vpc_id:
        return Check(
            "same-vpc",
            f"{fact}: the same VPC",
            Verdict.HOLDS,
            vpc_security_group=facts.group_id,
            port=facts.port,
        )
    peering = group.peerings.get(facts.vpc_id) if facts.vpc_id else None
    if target.allow.peered_vpcs and peering is not None:
        fact = f"{fact}: peered by {peering}"
        return Check(
            "same-vpc",
            fact,
            Verdict.HOLDS,
            peering=peering,
            vpc_security_group=facts.group_id,
            port=facts.port,
        )
    if target.allow.peered_vpcs:
        fact = f"{fact}: no active peering connection joins them"
        reason = (
            f"the group is in {group.vpc_id} and the cache's security group {facts.group_id} "
            f"in {facts.vpc_id or 'no VPC'}, and no active peering connection in the region "
            "joins the two VPCs"
        )
    else:
        reason = (
            f"the group is in {group.vpc_id} and the cache's security group {facts.group_id} "
            f"in {facts.vpc_id or 'no VPC'}; a group in another VPC can only be referenced "
            "across a peering connection, which this target does not allow (allow.peered_vpcs)"
        )
    return Check(
        "same-vpc", fact, Verdict.DENIES, reason, vpc_security_group=facts.group_id, port=facts.port
    )


def _provenance_check(context: _Context, target: Target, *, decided: bool) -> Check:
    """Checked last, for a pair every other rule allows: a replayed event's principal counts
    only when CloudTrail confirms it.
    """
    if target.allow.principals is None:
        return Check(_PROVENANCE, "the target does not require a principal", Verdict.NOT_SET)
    if not context.request.replayed:
        fact = "a live event from EventBridge's rules, not a replay"
        return Check(_PROVENANCE, fact, Verdict.NOT_SET)
    if decided:
        fact = "a replayed event; CloudTrail is asked only for a pair every other rule allows"
        return Check(_PROVENANCE, fact, Verdict.NOT_ASKED)
    if context.provenance is None:
        fact = "a replayed event: its principal waits for CloudTrail's record of the call"
        return Check(_PROVENANCE, fact, Verdict.PENDING)
    return _provenance_answer(context.provenance, target)


def _provenance_answer(provenance: Provenance, target: Target) -> Check:
    fact = f"a replayed event; CloudTrail: {provenance.status}: {provenance.reason}"
    if provenance.verified:
        return Check(_PROVENANCE, fact, Verdict.HOLDS)
    if provenance.status is ProvenanceStatus.UNAVAILABLE:
        return Check(
            _PROVENANCE,
            fact,
            Verdict.UNKNOWN,
            f"the principal of this replayed event could not be verified now: {provenance.reason}",
            failure=provenance.failure or FailureKind.TRANSIENT,
            error_code=provenance.error_code or "ProvenanceUnavailable",
        )
    reason = (
        f"a replayed event's principal counts only when CloudTrail holds the same call, and "
        f"{provenance.reason}; to grant {target.name}, an allowed principal re-tags the group"
    )
    return Check(_PROVENANCE, fact, Verdict.DENIES, reason)


# --- from the checks to the outcome -------------------------------------------------------


def _outcome(
    context: _Context,
    group: SecurityGroupFacts,
    name: str,
    target: Target | None,
    checks: tuple[Check, ...],
) -> tuple[Decision | Grant, bool]:
    """The pair's outcome from its first deciding check, or its grant; and whether that
    grant waits for CloudTrail (`Plan.unverified`)."""
    request = context.request
    stop = _first_deciding(checks)
    if stop is not None and stop.rule != _PROVENANCE:
        outcome = Outcome.DENIED if stop.verdict is Verdict.DENIES else Outcome.FAILED
        decision = _decision(
            group,
            request,
            name,
            outcome,
            stop.reason,
            rule=stop.rule if outcome is Outcome.DENIED else None,
            cache_security_group=target.cache_security_group if target else None,
            destination=target.vpc if target else None,
            failure=stop.failure,
            error_code=stop.error_code,
            vpc_security_group=stop.vpc_security_group,
            port=stop.port,
            account=request.account if context.member_event else None,
        )
        return decision, False
    if target is None:
        raise AssertionError("a target the policy does not have always decides")
    grant = _grant(context, group, target)
    if stop is None:
        return grant, False
    if stop.verdict is Verdict.PENDING:
        return grant, True
    if stop.verdict is Verdict.UNKNOWN:
        failed = grant.decision(
            Outcome.FAILED,
            stop.reason,
            request.principal,
            failure=stop.failure,
            error_code=stop.error_code,
        )
        return failed, False
    denied = grant.decision(Outcome.DENIED, stop.reason, request.principal, rule=_PROVENANCE)
    return denied, False


def _grant(context: _Context, group: SecurityGroupFacts, target: Target) -> Grant:
    request = context.request
    account = request.account if context.member_event else None
    if target.vpc is None:
        # A member's group: its owner (the member) is the EC2SecurityGroupOwnerId.
        return Grant(
            event_id=request.event_id,
            target=target.name,
            cache_security_group=target.cache_security_group,
            group_id=group.group_id,
            group_name=group.group_name,
            owner_id=group.owner_id,
            account=account,
        )
    # The same-vpc check held, so the cache's facts were read, and are in the group's VPC or
    # one peered with it.
    cache = group.destinations.get(target.vpc)
    if not isinstance(cache, VpcCacheFacts):
        raise TypeError("a VPC grant without the cache's facts")
    return Grant(
        event_id=request.event_id,
        target=target.name,
        cache_security_group=None,
        group_id=group.group_id,
        group_name=group.group_name,
        owner_id=group.owner_id,
        vpc_security_group=cache.group_id,
        port=cache.port,
        cache=target.vpc.cache,
        cross_account=group.owner_id != cache.owner_id,
        account=account,
        peering=_peering(group, cache.vpc_id),
    )


def _peering(group: SecurityGroupFacts, cache_vpc: str | None) -> str | None:
    """The peering connection a grant crosses: None within the cache's own VPC."""
    if cache_vpc is None or cache_vpc == group.vpc_id:
        return None
    return group.peerings.get(cache_vpc)


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
    account: str | None = None,
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
        account=account,
    )


def _destination_label(target: Target) -> str:
    if target.vpc is not None:
        if target.vpc.kind is TargetKind.VPC_SECURITY_GROUP:
            return f"VPC security group {target.vpc.identifier}, port {target.vpc.port}"
        return target.vpc.label
    return f"cache security group {target.cache_security_group}"


def _quote(text: str | None) -> str:
    """A value from AWS or the event, quoted and cut to a readable length."""
    if text is None:
        return "none"
    return repr(text if len(text) <= _QUOTED else text[:_QUOTED] + "...")


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
