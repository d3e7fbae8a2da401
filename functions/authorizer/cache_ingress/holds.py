"""Holds: an operator's stop on one (security group, target) pair. Pure.

`cache-ingress hold` writes one into the ledger; while it stands, no event and no sweep
grants the pair (outcome `denied`, rule `hold`), and with `revoke: true` the function's own
grant of the pair is revoked. Holds are applied after `decide()`, as a step of their own: the
decision says what the policy allows, the hold says what an operator stopped. They are read
only for the grants about to be made (and for revocations), so an event that grants nothing
never reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cache_ingress.decisions import Plan
from cache_ingress.models import Outcome

HoldKey = tuple[str, str]  # (security group id, target)
RULE = "hold"


@dataclass(frozen=True, slots=True)
class Hold:
    group_id: str
    target: str
    reason: str
    held_by: str | None = None
    held_at: str | None = None

    @property
    def key(self) -> HoldKey:
        return (self.group_id, self.target)

    @property
    def summary(self) -> str:
        """`"incident 123" (held by arn:… since 2026-…)`."""
        who = f" by {self.held_by}" if self.held_by else ""
        when = f" since {self.held_at}" if self.held_at else ""
        return f"{self.reason!r} (held{who}{when})"


def hold_reason(hold: Hold) -> str:
    """The reason of a denial by rule `hold`, as logs, summaries and `explain` show it."""
    return f"a hold stands on this pair: {hold.summary}; `cache-ingress release` ends it"


def apply_holds(plan: Plan, holds: Mapping[HoldKey, Hold], principal: str | None) -> Plan:
    """The plan with every grant a hold stands on turned into a denial by rule `hold`."""
    if not holds:
        return plan
    kept = []
    denied = list(plan.decisions)
    for grant in plan.grants:
        hold = holds.get((grant.group_id, grant.target))
        if hold is None:
            kept.append(grant)
            continue
        denied.append(grant.decision(Outcome.DENIED, hold_reason(hold), principal, rule=RULE))
    return Plan(decisions=denied, grants=kept, unverified=list(plan.unverified))


@dataclass
class HoldsRead:
    """The holds one invocation has read, by pair, so no pair is read twice."""

    found: dict[HoldKey, Hold] = field(default_factory=dict)
    asked: set[HoldKey] = field(default_factory=set)

    def missing(self, pairs: set[HoldKey]) -> list[HoldKey]:
        return sorted(pairs - self.asked)

    def add(self, asked: list[HoldKey], found: Mapping[HoldKey, Hold]) -> None:
        self.asked.update(asked)
        self.found.update(found)

    def for_pairs(self, pairs: set[HoldKey]) -> dict[HoldKey, Hold]:
        return {pair: self.found[pair] for pair in pairs if pair in self.found}
