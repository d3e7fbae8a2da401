"""What one sweep saw and did: a status for each (security group, target) pair, and the
summary the scheduled function returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cache_ingress.models import Decision

FINDINGS_IN_SUMMARY = 100


class PairStatus(StrEnum):
    """Where one (security group, target) pair stands after the sweep looked at it."""

    IN_SYNC = "in-sync"
    REPAIRED = "repaired"
    DRIFT = "drift"  # missing and repairable; a dry run leaves it so
    DENIED = "denied"
    NEEDS_EVENT = "needs-event"
    NOT_APPLICABLE = "not-applicable"
    FAILED = "failed"
    # The revocation phase (targets with `revoke: true`): an owned grant whose reason is gone
    # was revoked (enforce mode) or would be (report-only, dry run); its rule was kept for
    # another owner; or it is not the function's, and is left.
    REVOKED = "revoked"
    WOULD_REVOKE = "would-revoke"
    RETAINED = "retained"
    NOT_OWNED = "not-owned"


# Counted only in a run that judged the ledger (a policy with a revoking target), so a run
# without one reports exactly as before revocation existed.
REVOCATION_STATUSES = frozenset(
    {PairStatus.REVOKED, PairStatus.WOULD_REVOKE, PairStatus.RETAINED, PairStatus.NOT_OWNED}
)


@dataclass(frozen=True, slots=True)
class PairResult:
    """One (group, target) pair: its status, the decision behind it, and whether the pair
    was granted when the run read the cache security groups (None: unknown or moot).
    `drift` marks a grant the policy requires that was missing.
    """

    status: PairStatus
    decision: Decision
    granted: bool | None = None
    drift: bool = False

    def as_fields(self) -> dict[str, Any]:
        fields = {"status": str(self.status), **self.decision.as_log_fields()}
        if self.granted is not None:
            fields["granted"] = self.granted
        return fields


@dataclass
class Report:
    """What one run saw and did; `summary()` is what the function returns."""

    run_id: str
    dry_run: bool
    status: str = "running"
    resumed: bool = False
    resume_token_saved: bool = False
    pages: int = 0
    groups_seen: int = 0
    pairs: list[PairResult] = field(default_factory=list)
    # The member account swept (docs/multi-account.md); None: the function's own.
    account: str | None = None
    # Whether this run judged the ledger's open entries, and with what power.
    revocation_checked: bool = False
    enforce: bool = False
    entries_judged: int = 0
    # The pairs the revocation phase reported on: the listing does not count them again as
    # granted beyond the policy.
    revocation_pairs: set[tuple[str, str | None]] = field(default_factory=set)

    def counts(self) -> dict[str, int]:
        counted = Counter(str(pair.status) for pair in self.pairs)
        return {
            str(status): counted.get(str(status), 0)
            for status in PairStatus
            if self.revocation_checked or status not in REVOCATION_STATUSES
        }

    @property
    def drift_found(self) -> int:
        return sum(1 for pair in self.pairs if pair.drift)

    @property
    def granted_beyond_policy(self) -> int:
        """Denied pairs granted anyway, which the revocation phase did not report on: grants
        the function does not own (or whose target does not revoke), never touched."""
        return sum(
            1
            for p in self.pairs
            if p.status is PairStatus.DENIED
            and p.granted
            and (p.decision.group_id, p.decision.target) not in self.revocation_pairs
        )

    def findings(self) -> list[PairResult]:
        """Every pair that is not simply in sync or without a target."""
        quiet = (PairStatus.IN_SYNC, PairStatus.NOT_APPLICABLE)
        return [pair for pair in self.pairs if pair.status not in quiet]

    def summary(self, findings_limit: int = FINDINGS_IN_SUMMARY) -> dict[str, Any]:
        findings = self.findings()
        return {
            "runId": self.run_id,
            "status": self.status,
            "dryRun": self.dry_run,
            "resumed": self.resumed,
            "resumeTokenSaved": self.resume_token_saved,
            "pages": self.pages,
            "groupsSeen": self.groups_seen,
            "counts": self.counts(),
            "driftFound": self.drift_found,
            "grantedBeyondPolicy": self.granted_beyond_policy,
            "findings": [pair.as_fields() for pair in findings[:findings_limit]],
            "findingsOmitted": max(0, len(findings) - findings_limit),
            **({"account": self.account} if self.account is not None else {}),
            **(
                {
                    "revocation": "enforce" if self.enforce else "report-only",
                    "entriesJudged": self.entries_judged,
                }
                if self.revocation_checked
                else {}
            ),
        }
