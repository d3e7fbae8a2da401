"""What a policy change would do: each (group, target) pair under the current policy and the
new one, and the difference. Pure: the two sides of `Reconciler.preview` in, a plan out.

Under a policy a pair stands in one place, read from its trace (the function's own rules)
and, for what is granted now, from the sweep's read:

- `allowed`: every rule holds; the sweep grants it when it is missing;
- `needs-event`: only `principals` and `principal-binding` deny it (the sweep names no
  principal): an allowed principal's own tagging event would grant it;
- `denied` (the first rule that denies, and any later one that an event could not lift),
  `not-applicable` (the group's tag names no target);
- `failed`: a fact could not be read (a VPC cache that does not exist). Its decision is the
  same under both policies when its target is: only otherwise is the plan unsure of it.

A pair changes when its place changes, or when it stays allowed but its destination moves:

- `grant`: not allowed before, allowed now and not granted: the next sweep grants it;
- `allow`: not allowed before, allowed now and granted already: nothing to do;
- `deny`: allowed (or needs-event) before, denied or not applicable now: it is no longer
  granted, and a grant that exists stays (unless the target revokes, below);
- `needs-event`: between allowed and needs-event, or from not allowed to needs-event: the
  sweep stops (or starts) granting it; an allowed principal's own tagging grants it;
- `moved`: allowed in both, to another destination: the next sweep grants the new one, and
  the old one keeps its grant (unless the target revokes, below);
- `revoked`: the new policy's target has `revoke: true`, and the function's own grant of the
  pair (an entry in force in the grant ledger) would be revoked under it and not under the
  current one: the next event for the group, or an enforcing sweep, revokes it.

Revocation is read from each policy's dry-run revocation phase (`Reconciler.preview`), so it
is the function's own judgement: only owned grants are revoked; a grant the ledger does not
own (made by hand, or there before the function came to it) is left, and the effect says so
(`not-owned`); a rule another owner still needs stays (`retained`).

A denial by another rule, or a pair that both policies allow alike, is not a change. A pair
that could not be read has no change: when its target differs between the policies it is
`unknown` (`PolicyPlan.failed`, and the plan is an error), else decided alike (`unread`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cache_ingress.decisions import PairTrace
from cache_ingress.models import Grant, Outcome
from cache_ingress.policy import Policy
from cache_ingress.reconcile import PairResult, PairStatus, Preview
from cache_ingress.reconcile.report import REVOCATION_STATUSES


class Place(StrEnum):
    ALLOWED = "allowed"
    NEEDS_EVENT = "needs-event"
    DENIED = "denied"
    NOT_APPLICABLE = "not-applicable"
    FAILED = "failed"


class Change(StrEnum):
    GRANT = "grant"
    ALLOW = "allow"
    DENY = "deny"
    NEEDS_EVENT = "needs-event"
    MOVED = "moved"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a pair stands under one policy."""

    place: Place
    rule: str | None = None
    reason: str | None = None
    destination: str | None = None
    granted: bool | None = None
    # Later rules that deny it too (a denial by `principals` that `same-vpc` shares is not
    # one an event could lift).
    also: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        rules = ", ".join(filter(None, (self.rule, *self.also)))
        return f"{self.place} ({rules})" if rules else str(self.place)


@dataclass(frozen=True, slots=True)
class PairPlan:
    group_id: str
    group_name: str | None
    target: str | None
    current: Standing | None
    new: Standing | None
    change: Change | None
    # It could not be read under a policy whose target differs: nothing can be said of it.
    unknown: bool = False
    # What the new policy's revocation would do with the pair's ledger entries (`revoke:
    # true` targets): would-revoke, retained or not-owned, with its reason; None: nothing.
    revocation: PairResult | None = None
    # Whether the new policy's target revokes.
    revokes: bool = False

    @property
    def granted_now(self) -> bool | None:
        for standing in (self.new, self.current):
            if standing is not None and standing.granted is not None:
                return standing.granted
        return None

    @property
    def effect(self) -> str:
        return _EFFECTS[self.change](self) if self.change is not None else "no change"

    def as_dict(self) -> dict[str, Any]:
        return {
            "change": None if self.change is None else str(self.change),
            "groupId": self.group_id,
            "groupName": self.group_name,
            "target": self.target,
            "current": _standing_dict(self.current),
            "new": _standing_dict(self.new),
            "grantedNow": self.granted_now,
            "effect": self.effect,
            "unknown": self.unknown,
            "revocation": None
            if self.revocation is None
            else {
                "status": str(self.revocation.status),
                "reason": self.revocation.decision.reason,
            },
        }


@dataclass(frozen=True, slots=True)
class TargetChanges:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


@dataclass
class PolicyPlan:
    pairs: list[PairPlan] = field(default_factory=list)
    targets: TargetChanges = field(default_factory=TargetChanges)
    complete: bool = True
    pages: int = 0
    groups_seen: int = 0

    @property
    def changes(self) -> list[PairPlan]:
        return [pair for pair in self.pairs if pair.change is not None]

    @property
    def failed(self) -> list[PairPlan]:
        """Pairs that could not be read, where that hides what the change does."""
        return [pair for pair in self.pairs if pair.unknown]

    @property
    def unread(self) -> list[PairPlan]:
        """Pairs that could not be read, decided alike by both policies (same target)."""
        return [pair for pair in self.pairs if _failed(pair.current, pair.new) and not pair.unknown]

    def counts(self) -> dict[str, int]:
        counted = Counter(str(pair.change) for pair in self.changes)
        return {str(change): counted.get(str(change), 0) for change in Change}


def plan(current: Preview, new: Preview, current_policy: Policy, new_policy: Policy) -> PolicyPlan:
    """Every pair either side saw, matched by (group, target), with its change."""
    results = (_by_pair(current.report.pairs), _by_pair(new.report.pairs))
    revoking = (_revocations(current.report.pairs), _revocations(new.report.pairs))
    pairs = []
    for key in dict.fromkeys([*current.traces, *new.traces]):
        old = _standing(current.traces.get(key), results[0].get(key))
        now = _standing(new.traces.get(key), results[1].get(key))
        target = key[1]
        revocation = revoking[1].get(key)
        change = _change(old, now)
        if _revoked(revocation, revoking[0].get(key)) and change is not Change.MOVED:
            change = Change.REVOKED
        new_target = new_policy.targets.get(target) if target is not None else None
        same_target = target is not None and current_policy.targets.get(
            target
        ) == new_policy.targets.get(target)
        pairs.append(
            PairPlan(
                group_id=key[0],
                group_name=_group_name(current.traces.get(key) or new.traces.get(key)),
                target=target,
                current=old,
                new=now,
                change=change,
                # A pair that could not be read is decided alike when its target is alike.
                unknown=_failed(old, now) and not (target is None or same_target),
                revocation=revocation,
                revokes=new_target is not None and new_target.revoke,
            )
        )
    return PolicyPlan(
        pairs=pairs,
        targets=_target_changes(current_policy, new_policy),
        complete=current.report.status == "completed" and new.report.status == "completed",
        pages=new.report.pages,
        groups_seen=new.report.groups_seen,
    )


def _by_pair(results: Iterable[PairResult]) -> dict[tuple[str, str | None], PairResult]:
    """The listing's result of each pair (not the revocation phase's)."""
    return {
        (result.decision.group_id, result.decision.target): result
        for result in results
        if result.status not in REVOCATION_STATUSES
    }


def _revocations(results: Iterable[PairResult]) -> dict[tuple[str, str | None], PairResult]:
    """What the revocation phase found for each pair (the most telling, if several entries:
    would-revoke, then retained, then not-owned)."""
    found: dict[tuple[str, str | None], PairResult] = {}
    for result in results:
        if result.status not in REVOCATION_STATUSES:
            continue
        key = (result.decision.group_id, result.decision.target)
        before = found.get(key)
        if before is None or _RANK[result.status] < _RANK[before.status]:
            found[key] = result
    return found


_RANK = {
    PairStatus.WOULD_REVOKE: 0,
    PairStatus.REVOKED: 0,
    PairStatus.RETAINED: 1,
    PairStatus.NOT_OWNED: 2,
}


def _revoked(new: PairResult | None, current: PairResult | None) -> bool:
    """The new policy would revoke the function's grant of the pair, the current would not."""
    due = (PairStatus.WOULD_REVOKE, PairStatus.REVOKED)
    return new is not None and new.status in due and (current is None or current.status not in due)


def _group_name(trace: PairTrace | None) -> str | None:
    if trace is None:
        return None
    return trace.result.group_name


def _failed(*standings: Standing | None) -> bool:
    return any(s is not None and s.place is Place.FAILED for s in standings)


# A pair only these rules deny is one an allowed principal's own tagging event would grant.
_PRINCIPAL_RULES = frozenset({"principals", "principal-binding"})


def _standing(trace: PairTrace | None, result: PairResult | None) -> Standing | None:
    """Where the pair stands: the policy's verdict from its trace, what is granted from the
    sweep's read (None when unknown)."""
    if trace is None:
        return None
    granted = result.granted if result is not None else None
    outcome = trace.result
    if isinstance(outcome, Grant):
        # The sweep could not grant it (its cache security group is missing): still allowed.
        problem = result.decision.reason if result and result.status is PairStatus.FAILED else None
        return Standing(
            Place.ALLOWED,
            reason=problem,
            destination=_destination(outcome.cache_security_group, outcome),
            granted=granted,
        )
    if outcome.outcome is Outcome.NOT_APPLICABLE:
        return Standing(Place.NOT_APPLICABLE, reason=outcome.reason)
    if outcome.outcome is Outcome.FAILED:
        return Standing(Place.FAILED, reason=outcome.reason)
    denying = [check for check in trace.checks if check.verdict.decides]
    if {check.rule for check in denying} <= _PRINCIPAL_RULES:
        vpc = next((c for c in trace.checks if c.rule == "same-vpc" and c.vpc_security_group), None)
        return Standing(
            Place.NEEDS_EVENT,
            reason=outcome.reason,
            destination=_destination(outcome.cache_security_group, vpc or outcome),
            granted=granted,
        )
    also = tuple(dict.fromkeys(c.rule for c in denying[1:] if c.rule not in _PRINCIPAL_RULES))
    return Standing(
        Place.DENIED,
        outcome.rule,
        outcome.reason,
        granted=granted,
        also=tuple(rule for rule in also if rule != outcome.rule),
    )


def _destination(cache_security_group: str | None, source: Any) -> str | None:
    if cache_security_group:
        return cache_security_group
    if getattr(source, "vpc_security_group", None):
        return f"{source.vpc_security_group} tcp/{source.port}"
    return None


def _change(old: Standing | None, new: Standing | None) -> Change | None:
    before = old.place if old else Place.NOT_APPLICABLE
    after = new.place if new else Place.NOT_APPLICABLE
    if Place.FAILED in (before, after):
        return None
    if before is Place.ALLOWED and after is Place.ALLOWED:
        moved = old is not None and new is not None and old.destination != new.destination
        return Change.MOVED if moved else None
    change = _CHANGES.get((_access(before), _access(after)))
    if change is Change.GRANT and new is not None and new.granted:
        return Change.ALLOW
    return change


def _access(place: Place) -> Place:
    """Allowed, needs-event, or neither (denied and not applicable grant alike: nothing)."""
    return place if place in (Place.ALLOWED, Place.NEEDS_EVENT) else Place.DENIED


_CHANGES = {
    (Place.DENIED, Place.ALLOWED): Change.GRANT,
    (Place.NEEDS_EVENT, Place.ALLOWED): Change.NEEDS_EVENT,
    (Place.ALLOWED, Place.NEEDS_EVENT): Change.NEEDS_EVENT,
    (Place.DENIED, Place.NEEDS_EVENT): Change.NEEDS_EVENT,
    (Place.ALLOWED, Place.DENIED): Change.DENY,
    (Place.NEEDS_EVENT, Place.DENIED): Change.DENY,
}


def _effect_grant(pair: PairPlan) -> str:
    where = pair.new.destination if pair.new else None
    problem = pair.new.reason if pair.new else None
    effect = f"the next sweep authorizes it into {where}"
    return f"{effect}, which fails now: {problem}" if problem else effect


def _effect_deny(pair: PairPlan) -> str:
    kept = _kept(pair)
    if kept is not None:
        return f"no longer allowed; {kept}"
    if pair.granted_now:
        if pair.revokes:
            return (
                "no longer allowed; the grant it has stays: the ledger owns no entry of it "
                "(not the function's)"
            )
        return (
            "no longer allowed; the grant it has stays (the function revokes only its own "
            "grants of a target with revoke: true)"
        )
    return "no longer allowed; not granted now"


def _kept(pair: PairPlan) -> str | None:
    """Why a revoking target's grant stays: not owned, or another owner still needs it."""
    revocation = pair.revocation
    if revocation is None or revocation.status is PairStatus.WOULD_REVOKE:
        return None
    if revocation.status is PairStatus.NOT_OWNED:
        return (
            "the grant stays: the function does not own it (made by hand, or there before "
            "the function came to it)"
        )
    if revocation.status is PairStatus.RETAINED:
        return "the grant stays for another owner: " + revocation.decision.reason
    return None


def _effect_revoked(pair: PairPlan) -> str:
    reason = pair.revocation.decision.reason if pair.revocation is not None else ""
    why = reason.removeprefix("dry run: would revoke (").removesuffix(")")
    return (
        "the function's own grant is revoked (by the next event for the group, or an "
        f"enforcing sweep): {why}"
    )


def _effect_needs_event(pair: PairPlan) -> str:
    if pair.new is not None and pair.new.place is Place.NEEDS_EVENT:
        if pair.current is not None and pair.current.place is Place.ALLOWED:
            return "the sweep no longer grants it; an allowed principal's own tagging does"
        return "an allowed principal's own tagging would grant it"
    return "the sweep grants it now, without a tagging event"


def _effect_moved(pair: PairPlan) -> str:
    old = pair.current.destination if pair.current else None
    new = pair.new.destination if pair.new else None
    revocation = pair.revocation
    if revocation is not None and revocation.status is PairStatus.WOULD_REVOKE:
        return f"the next sweep authorizes it into {new}; the function's grant of {old} is revoked"
    kept = _kept(pair)
    return f"the next sweep authorizes it into {new}; {old} keeps its grant" + (
        f" ({kept})" if kept else ""
    )


_EFFECTS = {
    Change.GRANT: _effect_grant,
    Change.ALLOW: lambda _pair: "nothing to do: it is granted already",
    Change.DENY: _effect_deny,
    Change.NEEDS_EVENT: _effect_needs_event,
    Change.MOVED: _effect_moved,
    Change.REVOKED: _effect_revoked,
}


def _target_changes(current: Policy, new: Policy) -> TargetChanges:
    return TargetChanges(
        added=tuple(name for name in new.targets if name not in current.targets),
        removed=tuple(name for name in current.targets if name not in new.targets),
        changed=tuple(
            name
            for name, target in new.targets.items()
            if name in current.targets and current.targets[name] != target
        ),
    )


def _standing_dict(standing: Standing | None) -> dict[str, Any] | None:
    if standing is None:
        return None
    return {
        "place": str(standing.place),
        "rule": standing.rule,
        "alsoDeniedBy": list(standing.also),
        "reason": standing.reason,
        "destination": standing.destination,
    }
