"""Which grants the function owns, and whether an owner's reason is still there now. Pure.

The ledger (`ledger.py`) holds one entry per (event, grant) the function attempted, kept in
the partition of the rule it is about: the AWS ingress itself, identified as AWS identifies
it (`rule_key`). All the owners of one rule are therefore one query, and "revoke only when no
owner's reason remains" is decided over that query's answer.

An entry's status says what the function knows (README, "Ownership"):

- `pending`: written before the AWS call; the same step resolves it;
- `in-force`: the function made the rule (`made`), or found it made by itself for another
  reason and joined it (`joined`): owned, revocable;
- `not-owned`: the rule was there already (made by hand or by something else): never revoked;
- `unsure`: a crash between the call and the entry's commit hid whether the function made a
  classic grant (which carries no evidence of its maker): never revoked;
- `revoked`: the function revoked it, or found it gone;
- `retired`: its reason went while another owner's remained, so the rule stayed.

Whether a reason remains is decided by `decide()` itself, on the group as it is now, with the
principal the entry recorded (`reason_now`): the same rules that grant, so a revocation can
never be decided by a reading of the policy of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cache_ingress.decisions import decide
from cache_ingress.holds import Hold, HoldsRead
from cache_ingress.models import (
    Decision,
    FailureKind,
    Grant,
    Outcome,
    SecurityGroupFacts,
    TagRequest,
    TrailCall,
)
from cache_ingress.policy import Policy

# Where an entry came from: the event path, an operator's replay, or the sweep.
PATHS = ("event", "replay", "reconcile")
OWNERSHIP_CHECK = ("cache-ingress.ledger", "Ownership check")
# A pending entry older than the longest invocation (the sweep's 15 minutes) belongs to an
# attempt that stopped, not to one still running.
PENDING_STALE_AFTER = timedelta(minutes=15)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class EntryStatus(StrEnum):
    PENDING = "pending"
    IN_FORCE = "in-force"
    NOT_OWNED = "not-owned"
    UNSURE = "unsure"
    REVOKED = "revoked"
    RETIRED = "retired"


class Ownership(StrEnum):
    MADE = "made"
    JOINED = "joined"


@dataclass(frozen=True, slots=True)
class GrantOrigin:
    """What the ledger records with a grant besides the grant itself."""

    path: str
    policy_digest: str
    revoke: bool
    principal: str | None = None


def rule_key(grant: Grant) -> str:
    """The ingress as AWS identifies it: a classic pair is (cache security group, EC2 group
    name, owner), so two groups of one name and owner share it; a VPC rule is (the cache's
    security group, protocol and port, source group). The description is not part of it.
    """
    if grant.vpc_security_group is not None and grant.port is not None:
        return f"vpc:{grant.vpc_security_group}:tcp/{grant.port}:{grant.group_id}"
    if grant.cache_security_group is None:
        raise ValueError(f"a grant without a destination: {grant}")
    # AWS stores cache security group names in lowercase and matches them so.
    return f"classic:{grant.cache_security_group.lower()}:{grant.owner_id}:{grant.group_name}"


def entry_key(grant: Grant) -> str:
    """One entry per (event, grant): a retry of the same step finds it, never makes two."""
    return f"entry#{grant.event_id}#{grant.target}#{grant.group_id}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry: a grant the function attempted, and what became of it."""

    rule: str
    grant: Grant
    status: EntryStatus
    path: str
    recorded_at: str
    ownership: Ownership | None = None
    rule_id: str | None = None
    principal: str | None = None
    policy_digest: str | None = None
    revoke: bool = False
    updated_at: str | None = None
    closed_at: str | None = None
    closed_by: str | None = None
    closed_reason: str | None = None
    # Set on a pending entry whose AWS call found the grant there already: it did not make
    # it, so nobody waits for it to learn who did.
    found_there: bool = False

    @property
    def key(self) -> str:
        return entry_key(self.grant)

    @property
    def owned(self) -> bool:
        return self.status is EntryStatus.IN_FORCE

    @property
    def pair(self) -> tuple[str, str]:
        return (self.grant.group_id, self.grant.target)

    def running(self, now: datetime | None = None) -> bool:
        """Pending and young, its call not known to have found the grant there: another
        execution's grant that may still be making the rule."""
        if self.status is not EntryStatus.PENDING or self.found_there:
            return False
        stamp = self.updated_at or self.recorded_at
        try:
            written = datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return False
        return (now or datetime.now(UTC)) - written < PENDING_STALE_AFTER

    def decision(
        self,
        outcome: Outcome,
        reason: str,
        *,
        rule: str | None = None,
        failure: FailureKind | None = None,
        error_code: str | None = None,
    ) -> Decision:
        return self.grant.decision(
            outcome, reason, self.principal, rule=rule, failure=failure, error_code=error_code
        )


@dataclass(frozen=True, slots=True)
class Reason:
    """Whether an owner's reason for a rule is there now, and in words why (not)."""

    remains: bool
    why: str
    rule: str | None = None
    # Set when it could not be judged now (a VPC cache that could not be looked up).
    failure: FailureKind | None = None
    error_code: str | None = None

    @property
    def known(self) -> bool:
        return self.failure is None


@dataclass
class Judging:
    """What one invocation knows while it judges holds and entries: the groups as they are
    now (a group asked for and absent no longer exists) and the holds it has read."""

    groups: dict[str, SecurityGroupFacts | None] = field(default_factory=dict)
    holds: HoldsRead = field(default_factory=HoldsRead)


def revocable(entry: Entry, policy: Policy) -> bool:
    """The target's `revoke` now; for a target the policy no longer has, the flag it had when
    the entry was written (a target removed from the policy is a reason gone)."""
    target = policy.targets.get(entry.grant.target)
    return target.revoke if target is not None else entry.revoke


def reason_now(
    entry: Entry,
    group: SecurityGroupFacts | None,
    policy: Policy,
    hold: Hold | None,
    *,
    account_id: str,
    region: str,
    members: Callable[[str], bool] | None = None,
) -> Reason:
    """Whether the pair of `entry` is still allowed, and into the same rule, now.

    `group` is the group as it is now (None: it no longer exists), with the VPC caches its
    tag names looked up. A target that requires a principal is judged with the principal the
    entry recorded, asking for that target: a grant asked for by nobody (a Tag Change event,
    the sweep) is gone once the target requires a principal, and so is one whose principal
    the policy no longer lists.
    """
    target = entry.grant.target
    before = _gone_before_deciding(entry, group, policy, hold)
    if before is not None or group is None:
        return before or Reason(False, "the group no longer exists")
    plan = decide(
        _asking_for(entry, policy.tag_key, account_id, region),
        {group.group_id: group},
        policy,
        account_id=account_id,
        region=region,
        members=members,
    )
    for grant in plan.grants:
        if grant.target == target:
            if rule_key(grant) == entry.rule:
                return Reason(True, "the policy allows the pair into the same rule now")
            return Reason(
                False,
                f"the policy now sends {target} to another destination ({rule_key(grant)})",
                "destination",
            )
    decision = next((d for d in plan.decisions if d.target == target), None)
    if decision is None:
        tag_value = group.tags.get(policy.tag_key)
        now = "no tag" if tag_value is None else f"{tag_value[:128]!r}"
        return Reason(
            False, f"the group's {policy.tag_key} tag no longer names {target} (now: {now})"
        )
    return _not_allowed(decision, entry)


def _gone_before_deciding(
    entry: Entry, group: SecurityGroupFacts | None, policy: Policy, hold: Hold | None
) -> Reason | None:
    if hold is not None:
        return Reason(False, f"a hold stands on this pair: {hold.summary}", rule="hold")
    if group is None:
        return Reason(False, "the group no longer exists")
    if entry.grant.target not in policy.targets:
        return Reason(
            False, f"the policy no longer has the target {entry.grant.target}", "unknown-target"
        )
    return None


def _not_allowed(decision: Decision, entry: Entry) -> Reason:
    if decision.rule == "principals" and entry.principal is None:
        return Reason(
            False,
            "the target requires a listed principal, and this grant was asked for by none "
            "(a Tag Change event, or the sweep)",
            decision.rule,
        )
    if decision.outcome is Outcome.FAILED:
        return Reason(
            False,
            f"could not be judged now: {decision.reason}",
            failure=decision.failure or FailureKind.TRANSIENT,
            error_code=decision.error_code,
        )
    return Reason(False, f"the policy no longer allows it: {decision.reason}", decision.rule)


def _asking_for(entry: Entry, tag_key: str, account_id: str, region: str) -> TagRequest:
    """The request the owner made, as a call by its recorded principal that names the target:
    what `decide()` needs to judge a principal-gated target the same way it granted it."""
    group_id = entry.grant.group_id
    principal = entry.principal
    call = TrailCall(
        event_id=None,
        event_name="CreateTags",
        principal=principal,
        group_ids=(group_id,),
        request_tags=((tag_key, entry.grant.target),),
    )
    source, detail_type = OWNERSHIP_CHECK
    return TagRequest(
        event_id=entry.grant.event_id,
        source=source,
        detail_type=detail_type,
        # A member account's grant was asked for in that account (docs/multi-account.md).
        account=entry.grant.account or account_id,
        region=region,
        group_ids=(group_id,),
        principal=principal,
        event_name="CreateTags" if principal is not None else None,
        trail=call if principal is not None else None,
    )
