"""Scheduled reconciliation: repair the grants that events missed.

The event path reacts; this sweep checks. Each run lists every security group carrying the
tag key (`describe_security_groups` with a `tag-key` filter, page by page), decides each
page with the same pure `decide()` as the event path (VPC caches looked up first, as there),
reads what each destination grants now (once per run, see granted_state.py), and authorizes
only what the policy allows and is missing, through the same idempotent `Granter` the
event path uses. It never revokes.

No principal is known here, so a target that requires one is reported as `needs-event`
and never granted by the sweep (the `principals` rule of `decide()` is the last it checks,
so a denial by that rule means every other rule holds).

A run that is about to run out of time stops between two steps and stores where it stopped
(the token of the first page it has not finished) in the idempotency table under its own
key; the next run resumes there. See docs/reconcile.md for the guarantee and the choices.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import Clients, aws_call_error
from cache_ingress.decisions import decide, named_vpc_destinations
from cache_ingress.errors import (
    AwsCallError,
    CacheIngressError,
    SettingsError,
    TransientFailureError,
)
from cache_ingress.granted_state import (
    GrantedView,
    IngressRule,
    Pairs,
    ReadClassic,
    ReadRules,
    read_cache_security_group,
    read_ingress_rules,
)
from cache_ingress.models import (
    Decision,
    DestinationFacts,
    FailureKind,
    Grant,
    Outcome,
    SecurityGroupFacts,
    TagRequest,
    VpcDestination,
)
from cache_ingress.observability import logger, metrics
from cache_ingress.security_groups import _facts as group_facts
from cache_ingress.settings import Settings, current_settings
from cache_ingress.wiring import build_granter, build_policy_source

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from cache_ingress.grants import Granter
    from cache_ingress.policy import Policy
    from cache_ingress.policy_source import PolicySource

SOURCE = "cache-ingress.reconcile"
DETAIL_TYPE = "Scheduled Reconciliation"
# Beside Powertools' "cache-ingress.grant#<hash>" records, never equal to one of them.
CURSOR_KEY = "cache-ingress.reconcile#cursor"
LIST_ACTION = "ec2:DescribeSecurityGroups"
PAGE_SIZE_MIN, PAGE_SIZE_MAX = 5, 1000  # DescribeSecurityGroups MaxResults bounds
FINDINGS_IN_SUMMARY = 100


class ReconcileError(CacheIngressError):
    """The sweep could not run at all (for example EC2 refuses the listing); raised so that
    the invocation fails visibly and ends in the dead-letter queue after its retries.
    """

    code = "ReconcileFailed"


class PairStatus(StrEnum):
    """Where one (security group, target) pair stands after the sweep looked at it."""

    IN_SYNC = "in-sync"
    REPAIRED = "repaired"
    DRIFT = "drift"  # missing and repairable; a dry run leaves it so
    DENIED = "denied"
    NEEDS_EVENT = "needs-event"
    NOT_APPLICABLE = "not-applicable"
    FAILED = "failed"


# --- options ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """The sweep's own settings, beside the function's `Settings`."""

    page_size: int = PAGE_SIZE_MAX
    time_reserve_ms: int = 60_000
    resume_max_age_seconds: int = 21_600

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ReconcileOptions:
        """RECONCILE_PAGE_SIZE, RECONCILE_TIME_RESERVE_SECONDS, RECONCILE_RESUME_MAX_AGE_SECONDS."""
        return cls(
            page_size=_bounded(
                environ, "RECONCILE_PAGE_SIZE", PAGE_SIZE_MAX, PAGE_SIZE_MIN, PAGE_SIZE_MAX
            ),
            time_reserve_ms=1000 * _bounded(environ, "RECONCILE_TIME_RESERVE_SECONDS", 60, 1, 900),
            resume_max_age_seconds=_bounded(
                environ, "RECONCILE_RESUME_MAX_AGE_SECONDS", 21_600, 60, 7 * 86_400
            ),
        )


def _bounded(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(
            f"environment variable {name} must be an integer, got {raw!r}"
        ) from None
    if not low <= value <= high:
        raise SettingsError(
            f"environment variable {name} must be between {low} and {high}, got {value}"
        )
    return value


# --- EC2 listing (adapter) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupPage:
    """One page of tagged groups, with the token that fetched it (None: the first page)."""

    token: str | None
    groups: tuple[SecurityGroupFacts, ...]
    next_token: str | None


def tagged_group_page(
    ec2: Any, tag_key: str, region: str, *, page_size: int, token: str | None
) -> GroupPage:
    """One `describe_security_groups` call filtered on the tag key; raises AwsCallError.

    EC2 may answer a filtered page with fewer groups than asked, even none, and a token.
    """
    request: dict[str, Any] = {
        "Filters": [{"Name": "tag-key", "Values": [tag_key]}],
        "MaxResults": page_size,
    }
    if token:
        request["NextToken"] = token
    try:
        response = ec2.describe_security_groups(**request)
    except (ClientError, BotoCoreError) as exc:
        raise aws_call_error(exc, LIST_ACTION) from exc
    groups = tuple(group_facts(group, region) for group in response.get("SecurityGroups", []))
    return GroupPage(token, groups, response.get("NextToken") or None)


# --- resume token (DynamoDB adapter) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a stopped run left off: the token of the first page it did not finish."""

    next_token: str
    listing: str  # what the token belongs to: account, region, tag key, page size
    saved_at: int  # epoch seconds
    run_id: str


@dataclass(frozen=True, slots=True)
class StoredCursor:
    """What the table holds: a usable cursor or none, and the item's version for the
    conditional write that replaces or removes it.
    """

    cursor: Cursor | None
    version: int | None


class CursorStore:
    """One item in the idempotency table, replaced and removed by conditional writes on its
    version, so two overlapping runs never move it backwards, and a run that finds it
    changed by another leaves it be. The item carries `expiration`, so the table's TTL
    removes a cursor that nobody resumes from.
    """

    def __init__(self, dynamodb: Any, table: str, *, key: str = CURSOR_KEY) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._key = key

    def load(self) -> StoredCursor:
        """The stored cursor; an unreadable item is deleted so it can never block a run."""
        try:
            item = self._dynamodb.get_item(
                TableName=self._table, Key={"id": {"S": self._key}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise aws_call_error(exc, "dynamodb:GetItem") from exc
        if item is None:
            return StoredCursor(None, None)
        try:
            version = int(item["version"]["N"])
            cursor = Cursor(
                next_token=item["next_token"]["S"],
                listing=item["listing"]["S"],
                saved_at=int(item["saved_at"]["N"]),
                run_id=item["run_id"]["S"],
            )
        except (KeyError, TypeError, ValueError):
            logger.warning("resume token unreadable; deleting it", extra={"key": self._key})
            self._delete(None)
            return StoredCursor(None, None)
        return StoredCursor(cursor, version)

    def save(self, cursor: Cursor, *, expected_version: int | None, expires_at: int) -> bool:
        """Store the cursor; False if another run changed the item since it was loaded."""
        item = {
            "id": {"S": self._key},
            "next_token": {"S": cursor.next_token},
            "listing": {"S": cursor.listing},
            "saved_at": {"N": str(cursor.saved_at)},
            "run_id": {"S": cursor.run_id},
            "version": {"N": str((expected_version or 0) + 1)},
            "expiration": {"N": str(expires_at)},
        }
        return self._conditional(
            partial(self._dynamodb.put_item, TableName=self._table, Item=item),
            expected_version,
            "dynamodb:PutItem",
        )

    def clear(self, *, expected_version: int | None) -> bool:
        """Remove the cursor (the sweep reached the end); False if another run moved it."""
        if expected_version is None:
            return True
        return self._delete(expected_version)

    def _delete(self, expected_version: int | None) -> bool:
        delete = partial(
            self._dynamodb.delete_item, TableName=self._table, Key={"id": {"S": self._key}}
        )
        if expected_version is None:
            try:
                delete()
            except (ClientError, BotoCoreError) as exc:
                raise aws_call_error(exc, "dynamodb:DeleteItem") from exc
            return True
        return self._conditional(delete, expected_version, "dynamodb:DeleteItem")

    @staticmethod
    def _conditional(write: Callable[..., Any], expected_version: int | None, action: str) -> bool:
        if expected_version is None:
            condition: dict[str, Any] = {
                "ConditionExpression": "attribute_not_exists(#id)",
                "ExpressionAttributeNames": {"#id": "id"},
            }
        else:
            condition = {
                "ConditionExpression": "#version = :expected",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":expected": {"N": str(expected_version)}},
            }
        try:
            write(**condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise aws_call_error(exc, action) from exc
        except BotoCoreError as exc:
            raise aws_call_error(exc, action) from exc
        return True


# --- results ----------------------------------------------------------------------------


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

    def counts(self) -> dict[str, int]:
        counted = Counter(str(pair.status) for pair in self.pairs)
        return {str(status): counted.get(str(status), 0) for status in PairStatus}

    @property
    def drift_found(self) -> int:
        return sum(1 for pair in self.pairs if pair.drift)

    @property
    def granted_beyond_policy(self) -> int:
        return sum(1 for p in self.pairs if p.status is PairStatus.DENIED and p.granted)

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
        }


# --- the sweep --------------------------------------------------------------------------


class _PageEnd(StrEnum):
    DONE = "done"
    OUT_OF_TIME = "out-of-time"
    TRANSIENT = "transient"


class Budget:
    """Whether there is time for one more step: the reserve plus the slowest listing seen.

    Without a Lambda context (the operator's command) there is no limit.
    """

    def __init__(self, context: LambdaContext | None, reserve_ms: int) -> None:
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
    ) -> None:
        self._settings = settings
        self._options = options
        self._policies = policies
        self._list_groups = list_groups
        self._read_granted = read_granted
        self._read_rules = read_rules
        self._resolve = resolve_destinations
        self._granter = granter
        self._cursors = cursors

    @property
    def listing(self) -> str:
        """What a resume token belongs to; a token saved for another listing is discarded."""
        settings = self._settings
        return (
            f"{settings.account_id}/{settings.region}/tag-key={settings.tag_key}"
            f"/page-size={self._options.page_size}"
        )

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
            _publish_metrics(report)
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

    def new_report(self, dry_run: bool | None = None) -> Report:
        return Report(
            run_id=new_run_id(), dry_run=self._settings.dry_run if dry_run is None else dry_run
        )

    def sweep(
        self, report: Report, context: LambdaContext | None = None, *, resume: bool = True
    ) -> None:
        """Fill `report`; its summary is logged however the sweep ends."""
        try:
            self._sweep(report, context, resume)
        except BaseException as exc:
            report.status = "interrupted"
            _log_summary(report, error=f"{type(exc).__name__}: {exc}")
            raise
        _log_summary(report)

    def _sweep(self, report: Report, context: LambdaContext | None, resume: bool) -> None:
        policy = self._policies.current()
        place = self._start(report, resume)
        run = _Run(
            policy=policy,
            granted=GrantedView(self._read_granted, self._read_rules),
            granter=None if report.dry_run else self._granter(),
            budget=Budget(context, self._options.time_reserve_ms),
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
        request = TagRequest(
            event_id=report.run_id,
            source=SOURCE,
            detail_type=DETAIL_TYPE,
            account=settings.account_id,
            region=settings.region,
            group_ids=tuple(group.group_id for group in groups),
        )
        plan = decide(
            request,
            {group.group_id: group for group in groups},
            run.policy,
            account_id=settings.account_id,
            region=settings.region,
        )
        first = len(report.pairs)
        for decision in plan.decisions:
            report.pairs.append(_judge(report.run_id, decision, run.granted))
        for grant in plan.grants:
            known = _known(report.run_id, grant, run.granted)
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
                report.pairs.append(_repair(report.run_id, grant, run.granter, run.granted))
        page_pairs = report.pairs[first:]
        if any(pair.decision.failure is FailureKind.TRANSIENT for pair in page_pairs):
            return _PageEnd.TRANSIENT
        return _PageEnd.DONE

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
        return [
            replace(group, destinations={d: run.destinations[d] for d in named[group.group_id]})
            if named[group.group_id]
            else group
            for group in groups
        ]


@dataclass
class _Run:
    """What one sweep holds from its first page to its last."""

    policy: Policy
    granted: GrantedView
    granter: Granter | None
    budget: Budget
    destinations: dict[VpcDestination, DestinationFacts] = field(default_factory=dict)


def _judge(run_id: str, decision: Decision, granted: GrantedView) -> PairResult:
    """A pair `decide()` did not allow: denied, needs an event, failed, or has no target."""
    fields = {"run_id": run_id}
    if decision.outcome is Outcome.NOT_APPLICABLE:
        return PairResult(PairStatus.NOT_APPLICABLE, decision)
    if decision.outcome is Outcome.FAILED:
        # A VPC cache that could not be looked up: never granted, retried if transient.
        logger.error("reconcile failed for pair", extra={**fields, **decision.as_log_fields()})
        return PairResult(PairStatus.FAILED, decision)
    if decision.outcome is not Outcome.DENIED:
        failed = replace(
            decision,
            outcome=Outcome.FAILED,
            reason=f"unexpected decision {decision.outcome}: {decision.reason}",
            failure=FailureKind.PERMANENT,
        )
        logger.error("reconcile failed for pair", extra={**fields, **failed.as_log_fields()})
        return PairResult(PairStatus.FAILED, failed)
    is_granted = granted.granted(decision)
    if decision.rule != "principals":
        known = is_granted if isinstance(is_granted, bool) else None
        if known:
            logger.warning("grant beyond policy", extra={**fields, **decision.as_log_fields()})
        return PairResult(PairStatus.DENIED, decision, known)
    return _principal_required(run_id, decision, is_granted)


def _principal_required(
    run_id: str, decision: Decision, is_granted: bool | AwsCallError | None
) -> PairResult:
    """Every rule but `principals` holds (it is the last `decide()` checks): in sync if
    granted, else drift only an event can repair.
    """
    if isinstance(is_granted, AwsCallError):
        return _unreadable(run_id, decision, is_granted)
    if is_granted:
        in_sync = replace(
            decision,
            outcome=Outcome.ALREADY_AUTHORIZED,
            reason="granted; the target requires a principal, which only an event can name",
        )
        return PairResult(PairStatus.IN_SYNC, in_sync, True)
    needs_event = replace(
        decision,
        reason="the target requires a listed principal, which only a tagging event names; "
        "the sweep never grants it",
    )
    logger.warning(
        "drift found",
        extra={"run_id": run_id, "action": "needs-event", **needs_event.as_log_fields()},
    )
    return PairResult(PairStatus.NEEDS_EVENT, needs_event, is_granted)


def _known(run_id: str, grant: Grant, granted: GrantedView) -> PairResult | None:
    """The pair's result if the run's reads settle it; None if it is missing and repairable."""
    is_granted = granted.granted(grant)
    if isinstance(is_granted, AwsCallError):
        return _unreadable(run_id, grant.decision(Outcome.FAILED, "", None), is_granted)
    if is_granted:
        reason = (
            f"the cache's security group already allows this group on tcp/{grant.port}"
            if grant.is_vpc
            else "the cache security group already allows this group"
        )
        decision = grant.decision(Outcome.ALREADY_AUTHORIZED, reason, None)
        return PairResult(PairStatus.IN_SYNC, decision, True)
    cache_group = grant.cache_security_group
    if cache_group is not None and granted.cache_group_exists(cache_group) is False:
        decision = grant.decision(
            Outcome.FAILED,
            f"cache security group {cache_group} does not exist",
            None,
            failure=FailureKind.PERMANENT,
            error_code="CacheSecurityGroupNotFound",
        )
        logger.error(
            "drift found",
            extra={"run_id": run_id, "action": "cannot-repair", **decision.as_log_fields()},
        )
        return PairResult(PairStatus.FAILED, decision, False, drift=True)
    return None


def _unreadable(run_id: str, decision: Decision, error: AwsCallError) -> PairResult:
    failed = replace(
        decision,
        outcome=Outcome.FAILED,
        reason=f"granted ingress could not be read: {error}",
        failure=FailureKind.PERMANENT,
        error_code=error.code,
    )
    logger.error("reconcile failed for pair", extra={"run_id": run_id, **failed.as_log_fields()})
    return PairResult(PairStatus.FAILED, failed)


def _repair(run_id: str, grant: Grant, granter: Granter, granted: GrantedView) -> PairResult:
    decision = granter.grant(grant, None)
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
    if error is not None:
        logger.error("reconcile interrupted", extra={**fields, "error": error})
    elif report.status == "stopped":
        logger.info("reconcile stopped", extra=fields)
    else:
        logger.info("reconcile finished", extra=fields)


def _publish_metrics(report: Report) -> None:
    counts = report.counts()
    for name, value in (
        ("GroupsReconciled", report.groups_seen),
        ("Drift", report.drift_found),
        ("Repaired", counts[PairStatus.REPAIRED]),
        ("NeedsEvent", counts[PairStatus.NEEDS_EVENT]),
        ("ReconcileFailed", counts[PairStatus.FAILED]),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


# --- wiring -----------------------------------------------------------------------------


def build_reconciler(
    settings: Settings, options: ReconcileOptions | None = None, clients: Clients | None = None
) -> Reconciler:
    """Wire the adapters; clients are only created when first used. The policy and the
    grants come from the same builders as the event path's.
    """
    clients = clients or Clients(settings.region)
    options = options or ReconcileOptions()

    def list_groups(token: str | None) -> GroupPage:
        return tagged_group_page(
            clients.get("ec2"),
            settings.tag_key,
            settings.region,
            page_size=options.page_size,
            token=token,
        )

    def read_granted(name: str) -> Pairs | None:
        return read_cache_security_group(clients.get("elasticache"), name)

    def read_rules(group_ids: Sequence[str]) -> dict[str, tuple[IngressRule, ...]]:
        return read_ingress_rules(clients.get("ec2"), group_ids)

    def resolve(
        destinations: Sequence[VpcDestination],
    ) -> dict[VpcDestination, DestinationFacts]:
        from cache_ingress.security_groups import describe_groups  # noqa: PLC0415
        from cache_ingress.vpc_targets import resolve_destinations  # noqa: PLC0415

        def describe(group_ids: Sequence[str]) -> dict[str, SecurityGroupFacts]:
            return describe_groups(clients.get("ec2"), group_ids, settings.region)

        return resolve_destinations(
            clients.get("elasticache"), describe, destinations, settings.region
        )

    def cursors() -> CursorStore:
        return CursorStore(clients.get("dynamodb"), settings.idempotency_table)

    return Reconciler(
        settings,
        options,
        policies=build_policy_source(settings, clients),
        list_groups=list_groups,
        read_granted=read_granted,
        read_rules=read_rules,
        resolve_destinations=resolve,
        granter=cache(partial(build_granter, settings, clients)),
        cursors=cursors,
    )


@cache
def current_reconciler() -> Reconciler:
    """The reconciler of this execution environment, built once from its environment."""
    return build_reconciler(current_settings(), ReconcileOptions.from_environ(os.environ))
