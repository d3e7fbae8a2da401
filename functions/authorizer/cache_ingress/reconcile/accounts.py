"""The sweep across member accounts (docs/multi-account.md, "Reconciliation across accounts").

A stack that serves member accounts sweeps its own account as before, then each member
account through its read role, each with its own resume token, in a rotating order: a run
sweeps at most `accounts_per_run` members (each costs at most one AssumeRole) and stops
starting new ones when its time runs short; the next run begins with the first member this
one did not reach (`#accounts`, a rotation item beside the resume tokens), so every member
is swept within as many periods as the organization needs runs. A member that cannot be
swept (its role refused, its listing failed) is reported with the reason and the others go
on; its resume token is kept for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cache_ingress.errors import AwsCallError, TransientFailureError
from cache_ingress.observability import logger
from cache_ingress.reconcile.cursor import CURSOR_KEY, Cursor, CursorStore
from cache_ingress.reconcile.report import Report
from cache_ingress.reconcile.sweep import (
    Budget,
    Preview,
    ReconcileError,
    Reconciler,
    RemainingTime,
    publish_metrics,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from cache_ingress.granted_state import GrantedView
    from cache_ingress.policy import Policy
    from cache_ingress.reconcile.listing import GroupPage
    from cache_ingress.settings import ReconcileOptions, Settings

ROTATION_KEY = f"{CURSOR_KEY}#accounts"
_ROTATION_LISTING = "member-accounts"


def member_cursor_key(account: str) -> str:
    """Each member account's own resume token."""
    return f"{CURSOR_KEY}#{account}"


@dataclass
class AccountSweep:
    """One account's part of a run: `completed`, `stopped` (out of time, resumes next run),
    `not-reached` (this run's time or AssumeRole budget ran out first) or `failed`."""

    account: str
    status: str
    report: Report | None = None
    reason: str | None = None
    assume_role_calls: int = 0
    seconds: float = 0.0

    def as_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"account": self.account, "status": self.status}
        if self.report is not None:
            fields.update(
                pages=self.report.pages,
                groupsSeen=self.report.groups_seen,
                counts=self.report.counts(),
                driftFound=self.report.drift_found,
                resumed=self.report.resumed,
            )
        fields["assumeRoleCalls"] = self.assume_role_calls
        if self.reason is not None:
            fields["reason"] = self.reason
        return fields


@dataclass
class OrganizationReport(Report):
    """A run over the cache account and its members: the pairs, pages and groups of every
    account together (so it reads as one sweep's report), and each account's part."""

    accounts: list[AccountSweep] = field(default_factory=list)
    accounts_problem: str | None = None

    def add(self, sweep: AccountSweep) -> None:
        self.accounts.append(sweep)
        if sweep.report is not None:
            self.pairs.extend(sweep.report.pairs)
            self.pages += sweep.report.pages
            self.groups_seen += sweep.report.groups_seen
            self.resume_token_saved |= sweep.report.resume_token_saved

    def summary(self, findings_limit: int = 100) -> dict[str, Any]:
        summary = super().summary(findings_limit)
        summary["accounts"] = [sweep.as_fields() for sweep in self.accounts]
        if self.accounts_problem is not None:
            summary["accountsProblem"] = self.accounts_problem
        return summary


class AccountsSweep:
    """The cache account's sweep, then its members'; the same interface as `Reconciler`
    for the scheduled handler and the operator's command."""

    def __init__(
        self,
        settings: Settings,
        options: ReconcileOptions,
        *,
        own: Reconciler,
        member: Callable[[str], Reconciler],
        accounts: Callable[[], tuple[Sequence[str], str | None]],
        assume_role_calls: Callable[[], int],
        rotation: Callable[[], CursorStore] | None = None,
    ) -> None:
        self._settings = settings
        self._options = options
        self._own = own
        self._member = member
        self._accounts = accounts
        self._assume_role_calls = assume_role_calls
        self._rotation = rotation

    def policy(self) -> Policy:
        return self._own.policy()

    def handle(self, event: object, context: LambdaContext | None = None) -> dict[str, Any]:
        trigger = event.get("id") if isinstance(event, Mapping) else None
        report: OrganizationReport | None = None
        try:
            report = self.run(context, on_start=lambda run_id: _log_start(run_id, trigger))
        finally:
            if report is not None:
                publish_metrics(report)
        return report.summary()

    def run(
        self,
        context: LambdaContext | None = None,
        *,
        dry_run: bool | None = None,
        resume: bool = True,
        on_start: Callable[[str], None] | None = None,
    ) -> OrganizationReport:
        """One run over every account; `resume=False` (the operator's command) reads and
        writes no resume token and no rotation, and begins with the first member."""
        own = self._own.new_report(dry_run)
        report = OrganizationReport(run_id=own.run_id, dry_run=own.dry_run)
        if on_start is not None:
            on_start(report.run_id)
        # What is granted is the cache account's, read once for every account of the run.
        granted = self._own.granted_view()
        report.add(self._sweep_one(self._own, own, context, resume, granted))
        report.resumed = own.resumed
        members, report.accounts_problem = self._accounts()
        members = [a for a in dict.fromkeys(members) if a != self._settings.account_id]
        rotation = self._rotation() if resume and self._rotation is not None else None
        order, version = _rotated(members, rotation, report.run_id)
        budget = Budget(context, self._options.time_reserve_ms)
        started = 0
        for account in order:
            if started >= self._options.accounts_per_run:
                report.add(AccountSweep(account, "not-reached", reason="assume-role budget"))
                continue
            if budget.exhausted():
                report.add(AccountSweep(account, "not-reached", reason="out of time"))
                continue
            started += 1
            with budget.step():
                reconciler = self._member(account)
                member_report = reconciler.new_report(dry_run)
                report.add(self._sweep_one(reconciler, member_report, context, resume, granted))
        statuses = {sweep.status for sweep in report.accounts}
        report.status = "completed" if statuses == {"completed"} else _worst(statuses)
        if rotation is not None:
            _save_rotation(rotation, version, report)
        return report

    def preview(
        self,
        policies: Mapping[str, Policy],
        context: RemainingTime | None = None,
        *,
        reserve_ms: int | None = None,
        on_page: Callable[[GroupPage], None] | None = None,
    ) -> dict[str, Preview]:
        """`Reconciler.preview` over the cache account and then every member (at most
        `accounts_per_run`), each read through its role: one preview per policy, its pairs
        and traces those of every account. A member that cannot be read stops the preview
        (raises as `sweep` does): a plan never claims to have seen what it did not."""
        previews = self._own.preview(policies, context, reserve_ms=reserve_ms, on_page=on_page)
        members, _ = self._accounts()
        members = sorted(a for a in dict.fromkeys(members) if a != self._settings.account_id)
        for account in members[: self._options.accounts_per_run]:
            if any(p.report.status != "completed" for p in previews.values()):
                break
            theirs = self._member(account).preview(
                policies, context, reserve_ms=reserve_ms, on_page=on_page
            )
            for name, preview in theirs.items():
                into = previews[name]
                into.report.pairs.extend(preview.report.pairs)
                into.report.pages += preview.report.pages
                into.report.groups_seen += preview.report.groups_seen
                into.traces.update(preview.traces)
                if preview.report.status != "completed":
                    into.report.status = preview.report.status
        if len(members) > self._options.accounts_per_run:
            for preview in previews.values():
                preview.report.status = "stopped"
        return previews

    def _sweep_one(
        self,
        reconciler: Reconciler,
        report: Report,
        context: LambdaContext | None,
        resume: bool,
        granted: GrantedView,
    ) -> AccountSweep:
        account = reconciler.account
        before = self._assume_role_calls()
        began = time.monotonic()
        try:
            reconciler.sweep(report, context, resume=resume, granted=granted)
        except (TransientFailureError, ReconcileError, AwsCallError) as exc:
            logger.error(
                "account not reconciled",
                extra={"run_id": report.run_id, "account": account, "error": str(exc)},
            )
            sweep = AccountSweep(account, "failed", report, str(exc))
        else:
            sweep = AccountSweep(account, report.status, report)
        sweep.assume_role_calls = self._assume_role_calls() - before
        sweep.seconds = time.monotonic() - began
        return sweep


def _log_start(run_id: str, trigger: object) -> None:
    logger.info("reconcile started", extra={"run_id": run_id, "trigger": trigger})


def _worst(statuses: set[str]) -> str:
    for status in ("failed", "stopped", "not-reached"):
        if status in statuses:
            return "partial" if status != "failed" else "failed"
    return "completed"


def _rotated(
    members: list[str], rotation: CursorStore | None, run_id: str
) -> tuple[list[str], int | None]:
    """The members in this run's order: from the one the last run did not reach."""
    ordered = sorted(members)
    if rotation is None:
        return ordered, None
    try:
        stored = rotation.load()
    except AwsCallError as exc:
        logger.warning(
            "account rotation unavailable",
            extra={"run_id": run_id, "error_code": exc.code, "error": str(exc)},
        )
        return ordered, None
    start = stored.cursor.next_token if stored.cursor is not None else None
    if start is None or stored.cursor is None or stored.cursor.listing != _ROTATION_LISTING:
        return ordered, stored.version
    later = [a for a in ordered if a >= start]
    return later + [a for a in ordered if a < start], stored.version


def _save_rotation(rotation: CursorStore, version: int | None, report: OrganizationReport) -> None:
    """The next run starts with the first member this one did not reach; then with the
    first that did not complete; else from the beginning. Never raises."""
    members = report.accounts[1:]
    first = next((s.account for s in members if s.status == "not-reached"), None)
    first = first or next((s.account for s in members if s.status != "completed"), None)
    now = int(time.time())
    try:
        if first is None:
            rotation.clear(expected_version=version)
        else:
            cursor = Cursor(first, _ROTATION_LISTING, now, report.run_id)
            rotation.save(cursor, expected_version=version, expires_at=now + 7 * 86_400)
    except AwsCallError as exc:
        logger.error(
            "account rotation not written",
            extra={"run_id": report.run_id, "error_code": exc.code, "error": str(exc)},
        )
