"""The sweep's revocation phase: every open ledger entry of a revoking target, judged now.

A run whose policy has a target with `revoke: true` starts here, before it lists tagged
groups: the `live` index of the ledger holds exactly the open entries, so a group whose tag
was removed, or that was deleted, is found even though the listing no longer returns it.
Each entry is judged as the event path judges it (`Revoker.settle`). In enforce mode
(`RECONCILE_ENFORCE`) an owned grant whose reason is gone is revoked; report-only (the
default) and in a dry run, it is reported `would-revoke` and nothing changes, the ledger
included.

The phase pages through the index (`RECONCILE_PAGE_SIZE` entries a page, as the listing
pages groups) within the run's time; a run about to run out of time
saves where it stopped (its own resume token, beside the listing's) and the next run
resumes the phase there before it lists.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from cache_ingress.errors import AwsCallError, TransientFailureError
from cache_ingress.models import Decision, FailureKind, Outcome
from cache_ingress.observability import logger
from cache_ingress.ownership import Judging
from cache_ingress.reconcile.cursor import Cursor, CursorStore
from cache_ingress.reconcile.report import PairResult, PairStatus, Report

if TYPE_CHECKING:
    from cache_ingress.policy import Policy
    from cache_ingress.reconcile.sweep import Budget
    from cache_ingress.revocations import Revoker

LEDGER_CURSOR_KEY = "cache-ingress.reconcile#ledger"

_STATUSES = {
    Outcome.REVOKED: PairStatus.REVOKED,
    Outcome.DRY_RUN: PairStatus.WOULD_REVOKE,
    Outcome.RETAINED: PairStatus.RETAINED,
    Outcome.NOT_OWNED: PairStatus.NOT_OWNED,
    Outcome.FAILED: PairStatus.FAILED,
}
_MESSAGES = {
    PairStatus.REVOKED: ("grant revoked", "info"),
    PairStatus.WOULD_REVOKE: ("revocation due", "warning"),
    PairStatus.RETAINED: ("grant retained", "info"),
    PairStatus.NOT_OWNED: ("grant beyond its reason, not owned", "warning"),
    PairStatus.FAILED: ("revocation failed", "error"),
}


class RevocationPhase:
    """One run's pass over the open entries."""

    def __init__(
        self,
        revoker: Revoker,
        *,
        enforce: bool,
        cursors: CursorStore | None,
        listing: str,
        resume_max_age_seconds: int,
        page_size: int,
    ) -> None:
        self._revoker = revoker
        self._page_size = page_size
        self._enforce = enforce
        self._cursors = cursors
        self._listing = listing
        self._resume_max_age = resume_max_age_seconds

    def run(self, report: Report, policy: Policy, budget: Budget) -> bool:
        """Judge every open entry; False if the run ran out of time first (resumed next run).

        Raises TransientFailureError (the run is retried from where this page began).
        """
        report.revocation_checked = True
        report.enforce = self._enforce
        dry_run = report.dry_run or not self._enforce
        start, version = self._resume(report)
        judging = Judging()
        while True:
            if budget.exhausted():
                self._save(report, start, version)
                report.status = "stopped"
                return False
            try:
                with budget.step():
                    entries, next_key = self._revoker.ledger.scan_live(start, limit=self._page_size)
            except AwsCallError as exc:
                self._save(report, start, version)
                if exc.transient:
                    raise TransientFailureError(f"reading the ledger failed: {exc}") from exc
                raise
            report.entries_judged += len(entries)
            decisions = self._revoker.settle(
                report.run_id, entries, judging, policy, dry_run=dry_run
            )
            for decision in decisions:
                report.pairs.append(_result(report.run_id, decision, dry_run))
                report.revocation_pairs.add((decision.group_id, decision.target))
            transient = [d for d in decisions if d.failure is FailureKind.TRANSIENT]
            if transient:
                self._save(report, start, version)
                raise TransientFailureError(
                    f"{len(transient)} revocation(s) failed transiently; the run is retried "
                    "from this page of the ledger: " + "; ".join(d.reason for d in transient[:5])
                )
            if next_key is None:
                self._clear(report, version)
                return True
            start = next_key

    # --- its resume token ---------------------------------------------------------------

    def _resume(self, report: Report) -> tuple[dict[str, Any] | None, int | None]:
        if self._cursors is None:
            return None, None
        try:
            stored = self._cursors.load()
        except AwsCallError as exc:
            if exc.transient:
                raise TransientFailureError(f"reading the resume token failed: {exc}") from exc
            return None, None
        cursor = stored.cursor
        if cursor is None or cursor.listing != self._listing:
            return None, stored.version
        if int(time.time()) - cursor.saved_at > self._resume_max_age:
            return None, stored.version
        try:
            start = json.loads(cursor.next_token)
        except ValueError:
            return None, stored.version
        logger.info(
            "resuming revocation phase", extra={"run_id": report.run_id, "saved_by": cursor.run_id}
        )
        return (start if isinstance(start, dict) else None), stored.version

    def _save(self, report: Report, start: dict[str, Any] | None, version: int | None) -> None:
        if self._cursors is None or start is None:
            return
        now = int(time.time())
        cursor = Cursor(json.dumps(start, sort_keys=True), self._listing, now, report.run_id)
        try:
            self._cursors.save(
                cursor, expected_version=version, expires_at=now + self._resume_max_age
            )
        except AwsCallError as exc:
            logger.error(
                "resume token not written",
                extra={"run_id": report.run_id, "error_code": exc.code, "error": str(exc)},
            )

    def _clear(self, report: Report, version: int | None) -> None:
        if self._cursors is None:
            return
        try:
            self._cursors.clear(expected_version=version)
        except AwsCallError as exc:
            logger.error(
                "resume token not written",
                extra={"run_id": report.run_id, "error_code": exc.code, "error": str(exc)},
            )


def _result(run_id: str, decision: Decision, dry_run: bool) -> PairResult:
    status = _STATUSES.get(decision.outcome, PairStatus.FAILED)
    message, level = _MESSAGES[status]
    fields = {"run_id": run_id, **decision.as_log_fields()}
    if dry_run and status is PairStatus.WOULD_REVOKE:
        fields["action"] = "would-revoke"
    getattr(logger, level)(message, extra=fields)
    granted = True if status in (PairStatus.WOULD_REVOKE, PairStatus.NOT_OWNED) else None
    if status is PairStatus.REVOKED:
        granted = False
    return PairResult(status, decision, granted)
