"""The sweep: every tagged group, page by page, decided and repaired within the run's time.

See the package docstring for what a run does and `docs/reconcile.md` for the guarantee.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from cache_ingress.decisions import PairTrace, Plan, decide, explain, named_vpc_destinations
from cache_ingress.errors import AwsCallError, CacheIngressError, TransientFailureError
from cache_ingress.granted_state import GrantedView, ReadClassic, ReadRules
from cache_ingress.holds import apply_holds
from cache_ingress.models import (
    Decision,
    DestinationFacts,
    FailureKind,
    Grant,
    Outcome,
    SecurityGroupFacts,
    TagRequest,
    VpcCacheFacts,
    VpcDestination,
)
from cache_ingress.observability import logger, metrics
from cache_ingress.ownership import GrantOrigin
from cache_ingress.reconcile.cursor import Cursor, CursorStore
from cache_ingress.reconcile.listing import GroupPage
from cache_ingress.reconcile.report import PairResult, PairStatus, Report
from cache_ingress.reconcile.verdicts import PRINCIPAL_RULES, beyond_principals, judge, settled
from cache_ingress.vpc_peering import ReadPeerings, with_peerings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from cache_ingress.grants import Granter
    from cache_ingress.ledger import Ledger
    from cache_ingress.policy import Policy
    from cache_ingress.policy_source import PolicySource
    from cache_ingress.revocations import Revoker
    from cache_ingress.settings import ReconcileOptions, Settings

SOURCE = "cache-ingress.reconcile"
DETAIL_TYPE = "Scheduled Reconciliation"


class ReconcileError(CacheIngressError):
    """The sweep could not run at all (for example EC2 refuses the listing); raised so that
    the invocation fails visibly and ends in the dead-letter queue after its retries.
    """

    code = "ReconcileFailed"


class _PageEnd(StrEnum):
    DONE = "done"
    OUT_OF_TIME = "out-of-time"
    TRANSIENT = "transient"


class RemainingTime(Protocol):
    """What the budget reads of a Lambda context (or of a deadline that acts like one)."""

    def get_remaining_time_in_millis(self) -> int: ...


class Budget:
    """Whether there is time for one more step: the reserve plus the slowest listing seen.

    Without a Lambda context (the operator's command) there is no limit.
    """

    def __init__(self, context: RemainingTime | None, reserve_ms: int) -> None:
        self._context = context
        self._reserve_ms = reserve_ms
        self._slowest_ms = 0

    def exhausted(self) -> bool:
        if self._context is None:
            return False
        remaining: int = self._context.get_remaining_time_in_millis()
        return remaining < self._reserve_ms + self._slowest_ms

    @contextmanager
    def step(self) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            elapsed_ms = int((time.monotonic() - started) * 1000)
            self._slowest_ms = max(self._slowest_ms, elapsed_ms)


@dataclass
class _Place:
    """Where this run started and what it knows of the stored cursor."""

    token: str | None
    version: int | None
    from_cursor: bool
    store: CursorStore | None


def new_run_id() -> str:
    """Unique per run and per retry: it is the `event_id` of the run's grants, so a record
    left by an earlier run (an hour ago, or a retry a minute ago) never matches a key of
    this one and can never stand in for a repair this run decided on its own read.
    """
    return f"reconcile-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:12]}"


ListGroups = Callable[[str | None], GroupPage]
Resolve = Callable[[Sequence[VpcDestination]], Mapping[VpcDestination, DestinationFacts]]


class Reconciler:
    """One sweep over every tagged group; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        options: ReconcileOptions,
        *,
        policies: PolicySource,
        list_groups: ListGroups,
        read_granted: ReadClassic,
        read_rules: ReadRules,
        resolve_destinations: Resolve,
        granter: Callable[[], Granter],
        cursors: Callable[[], CursorStore] | None = None,
        account: str | None = None,
        members: Callable[[str], bool] | None = None,
        peerings: ReadPeerings | None = None,
        ledger: Callable[[], Ledger] | None = None,
        revoker: Callable[[], Revoker] | None = None,
        ledger_cursors: Callable[[], CursorStore] | None = None,
    ) -> None:
        """`account`: the member account this sweep covers, its groups listed through its
        read role (docs/multi-account.md); None, the function's own. `members` says which
        accounts are members (the decision's `event-account`); `peerings` reads the
        peering connections of the caches' VPCs, for targets that admit peered VPCs."""
        self._account = account
        self._members = members
        self._peerings = peerings
        self._settings = settings
        self._options = options
        self._policies = policies
        self._list_groups = list_groups
        self._read_granted = read_granted
        self._read_rules = read_rules
        self._resolve = resolve_destinations
        self._granter = granter
        self._cursors = cursors
        # With a ledger: holds are read before repairs, repairs are written as entries, and
        # a policy with a revoking target starts each run with the revocation phase.
        self._ledger = ledger
        self._revoker = revoker
        self._ledger_cursors = ledger_cursors

    @property
    def listing(self) -> str:
        """What a resume token belongs to; a token saved for another listing is discarded."""
        settings = self._settings
        return (
            f"{self.account}/{settings.region}/tag-key={settings.tag_key}"
            f"/page-size={self._options.page_size}"
        )

    @property
    def account(self) -> str:
        """The account whose groups this sweep lists."""
        return self._account or self._settings.account_id

    def policy(self) -> Policy:
        """The policy a run would use now; raises PolicyError if it cannot be read or is
        invalid (the operator's command asks before it sweeps, so a bad policy is a usage
        error, not a failed run)."""
        return self._policies.current()

    def handle(self, event: object, context: LambdaContext | None = None) -> dict[str, Any]:
        """The scheduled entry point: sweep, publish the run's metrics, return the summary.

        Raises TransientFailureError (Lambda retries the run) or ReconcileError / PolicyError
        (the run could not look at anything).
        """
        trigger = event.get("id") if isinstance(event, Mapping) else None
        report = self.new_report()
        logger.info(
            "reconcile started",
            extra={"run_id": report.run_id, "trigger": trigger, "dry_run": report.dry_run},
        )
        try:
            self.sweep(report, context)
        finally:
            publish_metrics(report)
        return report.summary()

    def run(
        self,
        context: LambdaContext | None = None,
        *,
        dry_run: bool | None = None,
        resume: bool = True,
    ) -> Report:
        """One sweep; the operator's command runs it without a context and without resuming."""
        report = self.new_report(dry_run)
        self.sweep(report, context, resume=resume)
        return report

    def preview(
        self,
        policies: Mapping[str, Policy],
        context: RemainingTime | None = None,
        *,
        reserve_ms: int | None = None,
        on_page: Callable[[GroupPage], None] | None = None,
    ) -> dict[str, Preview]:
        """A dry run of the sweep under each of `policies` at once (`cache-ingress plan`):
        for a policy with a revoking target, its revocation phase as a dry run (the ledger's
        open entries judged: would-revoke, retained, not-owned); then one listing of the
        tagged groups, page by page, each page decided under every policy, with one read of
        what is granted and of each VPC cache, and every pair's trace. Nothing is granted or
        revoked and no resume token is read or written; with `context`, it stops as a run
        does when its time runs out (the reports say `stopped`). Raises as `sweep` does when
        the listing fails.
        """
        previews = {name: Preview(self.new_report(dry_run=True)) for name in policies}
        budget = Budget(
            context, self._options.time_reserve_ms if reserve_ms is None else reserve_ms
        )
        granted = GrantedView(self._read_granted, self._read_rules)
        destinations: dict[VpcDestination, DestinationFacts] = {}
        runs = {
            name: _Run(policy, granted, None, budget, destinations=destinations)
            for name, policy in policies.items()
        }
        for name, policy in policies.items():
            # What revocation would do under each policy: its open ledger entries, judged as
            # a dry run (no resume token; nothing is revoked or written).
            if not self._revocation_phase(previews[name].report, policy, budget, None, False):
                _set_status(previews, "stopped")
                return previews
        place = _Place(None, None, from_cursor=False, store=None)
        token: str | None = None
        while True:
            if budget.exhausted():
                _set_status(previews, "stopped")
                return previews
            page = self._next_page(next(iter(previews.values())).report, place, token, budget)
            if page is None:  # only a resumed token is ever refused; this run has none
                raise ReconcileError("the listing refused the first page")
            for name, run in runs.items():
                report = previews[name].report
                report.pages += 1
                report.groups_seen += len(page.groups)
                self._reconcile_page(report, page, run)
                for trace in self._trace_page(report.run_id, page, run):
                    previews[name].traces[(trace.group_id, trace.target)] = trace
            if on_page is not None:
                on_page(page)
            token = page.next_token
            if token is None:
                _set_status(previews, "completed")
                return previews

    def granted_view(self) -> GrantedView:
        """What is granted, read when first needed (once per run)."""
        return GrantedView(self._read_granted, self._read_rules)

    def new_report(self, dry_run: bool | None = None) -> Report:
        return Report(
            run_id=new_run_id(),
            dry_run=self._settings.dry_run if dry_run is None else dry_run,
            account=self._account,
        )

    def sweep(
        self,
        report: Report,
        context: LambdaContext | None = None,
        *,
        resume: bool = True,
        granted: GrantedView | None = None,
    ) -> None:
        """Fill `report`; its summary is logged however the sweep ends. `granted`: what is
        granted, as read by this run already (the sweep across accounts reads it once for
        all of them); by default read anew."""
        try:
            self._sweep(report, context, resume, granted)
        except BaseException as exc:
            report.status = "interrupted"
            _log_summary(report, error=f"{type(exc).__name__}: {exc}")
            raise
        _log_summary(report)

    def _sweep(
        self,
        report: Report,
        context: LambdaContext | None,
        resume: bool,
        granted: GrantedView | None,
    ) -> None:
        policy = self._policies.current()
        budget = Budget(context, self._options.time_reserve_ms)
        if not self._revocation_phase(report, policy, budget, context, resume):
            return
        place = self._start(report, resume)
        run = _Run(
            policy=policy,
            granted=granted or self.granted_view(),
            granter=None if report.dry_run else self._granter(),
            budget=budget,
            ledger=self._ledger() if self._ledger is not None else None,
        )
        if run.granter is not None and context is not None:
            run.granter.register(context)
        token = place.token
        while True:
            if run.budget.exhausted():
                self._stop(report, place, token)
                return
            page = self._next_page(report, place, token, run.budget)
            if page is None:
                token = None
                continue
            report.pages += 1
            report.groups_seen += len(page.groups)
            try:
                end = self._reconcile_page(report, page, run)
            except AwsCallError as exc:
                # Only transient read failures get here; permanent ones fail their pairs.
                self._keep_place(report, place, page.token)
                raise TransientFailureError(f"reading granted ingress failed: {exc}") from exc
            if end is _PageEnd.OUT_OF_TIME:
                self._stop(report, place, page.token)
                return
            if end is _PageEnd.TRANSIENT:
                self._keep_place(report, place, page.token)
                failed = [p for p in report.pairs if p.decision.failure is FailureKind.TRANSIENT]
                raise TransientFailureError(
                    f"{len(failed)} pair(s) failed transiently; the run is retried from this "
                    "page: " + "; ".join(p.decision.reason for p in failed[:5])
                )
            token = page.next_token
            if token is None:
                report.status = "completed"
                self._keep_place(report, place, None)
                return

    def _revocation_phase(
        self,
        report: Report,
        policy: Policy,
        budget: Budget,
        context: LambdaContext | None,
        resume: bool,
    ) -> bool:
        """The open ledger entries first (a policy with a revoking target only); False if
        the run ran out of time in them."""
        if self._revoker is None or not policy.revokes:
            return True
        from cache_ingress.reconcile.revoking import RevocationPhase  # noqa: PLC0415

        revoker = self._revoker()
        if context is not None:
            revoker.register(context)
        phase = RevocationPhase(
            revoker,
            enforce=self._options.enforce,
            cursors=self._ledger_cursors() if resume and self._ledger_cursors else None,
            listing=f"ledger/{revoker.ledger.table}",
            resume_max_age_seconds=self._options.resume_max_age_seconds,
            page_size=self._options.page_size,
        )
        try:
            return phase.run(report, policy, budget)
        except AwsCallError as exc:
            raise ReconcileError(f"reading the ledger failed: {exc}") from exc

    def _next_page(
        self, report: Report, place: _Place, token: str | None, budget: Budget
    ) -> GroupPage | None:
        """The page `token` names; None when a resumed token was refused (start over)."""
        try:
            with budget.step():
                return self._list_groups(token)
        except AwsCallError as exc:
            if place.from_cursor and report.pages == 0 and not exc.transient:
                # A stale token must not wedge the sweep: begin again from the start.
                logger.warning(
                    "resume token rejected",
                    extra={"run_id": report.run_id, "error_code": exc.code, "error": str(exc)},
                )
                place.from_cursor, report.resumed = False, False
                return None
            if exc.transient:
                self._keep_place(report, place, token)
                raise TransientFailureError(f"listing tagged groups failed: {exc}") from exc
            raise ReconcileError(f"listing tagged groups failed: {exc}") from exc

    # -- resume token --

    def _start(self, report: Report, resume: bool) -> _Place:
        if not resume or self._cursors is None:
            return _Place(None, None, from_cursor=False, store=None)
        store = self._cursors()
        try:
            stored = store.load()
        except AwsCallError as exc:
            if exc.transient:
                raise TransientFailureError(f"reading the resume token failed: {exc}") from exc
            # The cursor only saves work; without it the run starts from the beginning.
            logger.error(
                "resume token unavailable",
                extra={"run_id": report.run_id, "error_code": exc.code, "error": str(exc)},
            )
            return _Place(None, None, from_cursor=False, store=None)
        cursor = stored.cursor
        if cursor is None:
            return _Place(None, stored.version, from_cursor=False, store=store)
        age = int(time.time()) - cursor.saved_at
        reason = None
        if cursor.listing != self.listing:
            reason = "saved for another listing (tag key, page size, account or region changed)"
        elif age > self._options.resume_max_age_seconds:
            reason = f"older than {self._options.resume_max_age_seconds} seconds"
        if reason is not None:
            logger.info(
                "resume token discarded",
                extra={"run_id": report.run_id, "reason": reason, "saved_by": cursor.run_id},
            )
            return _Place(None, stored.version, from_cursor=False, store=store)
        logger.info(
            "resuming sweep",
            extra={"run_id": report.run_id, "saved_by": cursor.run_id, "age_seconds": age},
        )
        report.resumed = True
        return _Place(cursor.next_token, stored.version, from_cursor=True, store=store)

    def _stop(self, report: Report, place: _Place, token: str | None) -> None:
        report.status = "stopped"
        self._keep_place(report, place, token)

    def _keep_place(self, report: Report, place: _Place, token: str | None) -> None:
        """Store the token to resume from (None: the start, so no cursor). Never raises: a
        cursor that cannot be written costs the next run some repeated work, nothing more.
        """
        if place.store is None:
            return
        now = int(time.time())
        try:
            if token is None:
                written = place.store.clear(expected_version=place.version)
            else:
                cursor = Cursor(token, self.listing, now, report.run_id)
                expires_at = now + self._options.resume_max_age_seconds
                written = place.store.save(
                    cursor, expected_version=place.version, expires_at=expires_at
                )
        except AwsCallError as exc:
            logger.error(
                "resume token not written",
                extra={"run_id": report.run_id, "error_code": exc.code, "error": str(exc)},
            )
            return
        if not written:
            logger.warning("resume token moved by another run", extra={"run_id": report.run_id})
            return
        report.resume_token_saved = token is not None

    # -- one page --

    def _reconcile_page(self, report: Report, page: GroupPage, run: _Run) -> _PageEnd:
        settings = self._settings
        groups = self._with_destinations(page.groups, run)
        request = self._page_request(report.run_id, groups)
        plan = decide(
            request,
            {group.group_id: group for group in groups},
            run.policy,
            account_id=settings.account_id,
            region=settings.region,
            members=self._members,
        )
        first = len(report.pairs)
        plan = self._held(plan, run)
        by_id = {group.group_id: group for group in groups}
        traces: dict[tuple[str, str | None], PairTrace] | None = None
        for denial in plan.decisions:
            read = denial
            if denial.rule in PRINCIPAL_RULES:
                # The rules after `principals`, which decide() did not read (pure, per page).
                if traces is None:
                    traces = self._traces(request, by_id, run.policy)
                read = beyond_principals(denial, traces.get((denial.group_id, denial.target)))
            with_facts = _with_cache_facts(read, by_id, run.policy)
            report.pairs.append(judge(report.run_id, with_facts, run.granted))
        for grant in plan.grants:
            known = settled(report.run_id, grant, run.granted)
            if known is not None:
                report.pairs.append(known)
            elif run.granter is None:
                _log_drift(report.run_id, grant, "would-repair")
                decision = grant.decision(Outcome.DRY_RUN, "dry run: would authorize", None)
                report.pairs.append(PairResult(PairStatus.DRIFT, decision, False, drift=True))
            elif run.budget.exhausted():
                return _PageEnd.OUT_OF_TIME
            else:
                _log_drift(report.run_id, grant, "repair")
                origin = _origin(run.policy, grant)
                report.pairs.append(_repair(report.run_id, grant, run.granter, run.granted, origin))
        page_pairs = report.pairs[first:]
        if any(pair.decision.failure is FailureKind.TRANSIENT for pair in page_pairs):
            return _PageEnd.TRANSIENT
        return _PageEnd.DONE

    def _held(self, plan: Plan, run: _Run) -> Plan:
        """The plan with the pairs an operator holds denied (rule `hold`): read for every
        pair the policy allows on the page, granted or not, in one BatchGetItem a hundred."""
        if run.ledger is None or not plan.grants:
            return plan
        pairs = sorted({(grant.group_id, grant.target) for grant in plan.grants})
        return apply_holds(plan, run.ledger.holds_for(pairs), None)

    def _traces(
        self, request: TagRequest, groups: Mapping[str, SecurityGroupFacts], policy: Policy
    ) -> dict[tuple[str, str | None], PairTrace]:
        traces = explain(
            request,
            groups,
            policy,
            account_id=self._settings.account_id,
            region=self._settings.region,
            members=self._members,
        )
        return {(trace.group_id, trace.target): trace for trace in traces}

    def _page_request(self, run_id: str, groups: Sequence[SecurityGroupFacts]) -> TagRequest:
        """A page as the decision sees it: a request naming its groups, from no principal."""
        return TagRequest(
            event_id=run_id,
            source=SOURCE,
            detail_type=DETAIL_TYPE,
            account=self.account,
            region=self._settings.region,
            group_ids=tuple(group.group_id for group in groups),
        )

    def _trace_page(self, run_id: str, page: GroupPage, run: _Run) -> tuple[PairTrace, ...]:
        """The page's pairs with every rule's check: what `_reconcile_page` decided, traced
        (its lookups are the run's, made already)."""
        groups = self._with_destinations(page.groups, run)
        return explain(
            self._page_request(run_id, groups),
            {group.group_id: group for group in groups},
            run.policy,
            account_id=self._settings.account_id,
            region=self._settings.region,
            members=self._members,
        )

    def _with_destinations(
        self, groups: Sequence[SecurityGroupFacts], run: _Run
    ) -> list[SecurityGroupFacts]:
        """The groups with the VPC caches their tags name, as the event path gives them to
        `decide`; each cache is looked up once per run, when a group first names it.
        """
        region = self._settings.region
        named = {g.group_id: named_vpc_destinations(g, run.policy, region) for g in groups}
        missing = [d for ds in named.values() for d in ds if d not in run.destinations]
        if missing:
            run.destinations.update(self._resolve(list(dict.fromkeys(missing))))
        looked_up = [
            replace(group, destinations={d: run.destinations[d] for d in named[group.group_id]})
            if named[group.group_id]
            else group
            for group in groups
        ]
        if self._peerings is None:
            return looked_up
        by_id = {group.group_id: group for group in looked_up}
        return list(with_peerings(by_id, run.policy, self._peerings).values())


@dataclass
class _Run:
    """What one sweep holds from its first page to its last."""

    policy: Policy
    granted: GrantedView
    granter: Granter | None
    budget: Budget
    ledger: Ledger | None = None
    destinations: dict[VpcDestination, DestinationFacts] = field(default_factory=dict)


def _origin(policy: Policy, grant: Grant) -> GrantOrigin:
    target = policy.targets.get(grant.target)
    return GrantOrigin("reconcile", policy.digest, target.revoke if target else False)


def _with_cache_facts(
    decision: Decision, groups: Mapping[str, SecurityGroupFacts], policy: Policy
) -> Decision:
    """A denial of a VPC cache target, with the cache's security group and port the run
    looked up (the decision of a denial names only what the policy says), so that whether
    the pair is granted anyway can be read.
    """
    target = policy.targets.get(decision.target or "")
    group = groups.get(decision.group_id)
    if decision.outcome is not Outcome.DENIED or target is None or target.vpc is None:
        return decision
    facts = group.destinations.get(target.vpc) if group is not None else None
    if not isinstance(facts, VpcCacheFacts):
        return decision
    return replace(decision, vpc_security_group=facts.group_id, port=facts.port)


@dataclass
class Preview:
    """One policy's side of `Reconciler.preview`: the sweep's report (what is granted, what
    it would repair) and each pair's trace, by (group id, target)."""

    report: Report
    traces: dict[tuple[str, str | None], PairTrace] = field(default_factory=dict)


def _set_status(previews: Mapping[str, Preview], status: str) -> None:
    for preview in previews.values():
        preview.report.status = status


def _repair(
    run_id: str, grant: Grant, granter: Granter, granted: GrantedView, origin: GrantOrigin
) -> PairResult:
    decision = granter.grant(grant, None, origin)
    fields = {"run_id": run_id, **decision.as_log_fields()}
    if decision.outcome is Outcome.AUTHORIZED:
        granted.record(grant)
        logger.info("drift repaired", extra=fields)
        return PairResult(PairStatus.REPAIRED, decision, False, drift=True)
    if decision.outcome is Outcome.ALREADY_AUTHORIZED:
        # Granted by someone else between this run's read and its authorize call.
        logger.info("drift already closed", extra=fields)
        return PairResult(PairStatus.IN_SYNC, decision, False, drift=True)
    logger.error("repair failed", extra=fields)
    return PairResult(PairStatus.FAILED, decision, False, drift=True)


def _log_drift(run_id: str, grant: Grant, action: str) -> None:
    decision = grant.decision(Outcome.FAILED, "", None)
    fields = decision.as_log_fields()
    for verdict in ("outcome", "reason"):
        fields.pop(verdict, None)
    logger.warning("drift found", extra={"run_id": run_id, "action": action, **fields})


def _log_summary(report: Report, error: str | None = None) -> None:
    fields: dict[str, Any] = {
        "run_id": report.run_id,
        "status": report.status,
        "dry_run": report.dry_run,
        "resumed": report.resumed,
        "resume_token_saved": report.resume_token_saved,
        "pages": report.pages,
        "groups_seen": report.groups_seen,
        "drift_found": report.drift_found,
        "granted_beyond_policy": report.granted_beyond_policy,
        **{status.replace("-", "_"): count for status, count in report.counts().items()},
    }
    if report.account is not None:
        fields["account"] = report.account
    if error is not None:
        logger.error("reconcile interrupted", extra={**fields, "error": error})
    elif report.status == "stopped":
        logger.info("reconcile stopped", extra=fields)
    else:
        logger.info("reconcile finished", extra=fields)


def publish_metrics(report: Report) -> None:
    counts = report.counts()
    figures = [
        ("GroupsReconciled", report.groups_seen),
        ("Drift", report.drift_found),
        ("Repaired", counts[PairStatus.REPAIRED]),
        ("NeedsEvent", counts[PairStatus.NEEDS_EVENT]),
        ("ReconcileFailed", counts[PairStatus.FAILED]),
    ]
    if report.revocation_checked:
        figures += [
            ("Revoked", counts[PairStatus.REVOKED]),
            ("WouldRevoke", counts[PairStatus.WOULD_REVOKE]),
            ("NotOwned", counts[PairStatus.NOT_OWNED]),
        ]
    for name, value in figures:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
