"""One event, end to end: intake → current state → policy → holds → grants → revocations →
one summary.

Every event ends in exactly one of three ways: all decisions made (returned), in the
dead-letter queue (returned, with the message id), or raised for Lambda to retry
(`TransientFailureError`). Nothing is dropped: if the dead-letter send fails, it raises.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from cache_ingress.decisions import decide
from cache_ingress.envelope import function_envelope
from cache_ingress.errors import (
    AwsCallError,
    MalformedEventError,
    PolicyError,
    TransientFailureError,
)
from cache_ingress.holds import RULE as HOLD_RULE
from cache_ingress.holds import apply_holds
from cache_ingress.intake import DELETE_GROUP, Ignored, parse_event
from cache_ingress.models import (
    Decision,
    FailureKind,
    Grant,
    Outcome,
    Provenance,
    SecurityGroupFacts,
    TagRequest,
)
from cache_ingress.observability import logger, metrics
from cache_ingress.ownership import GrantOrigin, Judging

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from cache_ingress.deadletter import DeadLetterQueue
    from cache_ingress.decisions import Plan
    from cache_ingress.grants import Granter
    from cache_ingress.ledger import Ledger
    from cache_ingress.policy import Policy
    from cache_ingress.policy_source import PolicySource
    from cache_ingress.revocations import Revoker
    from cache_ingress.settings import Settings

DescribeGroups = Callable[[Sequence[str]], dict[str, SecurityGroupFacts]]
# A member account's groups, read through that account's read role (docs/multi-account.md).
DescribeMemberGroups = Callable[[str, Sequence[str]], dict[str, SecurityGroupFacts]]
VerifyPrincipal = Callable[[TagRequest], Provenance]

_METRIC_NAMES = {
    Outcome.AUTHORIZED: "Authorized",
    Outcome.ALREADY_AUTHORIZED: "AlreadyAuthorized",
    Outcome.DENIED: "Denied",
    Outcome.NOT_APPLICABLE: "NotApplicable",
    Outcome.DRY_RUN: "DryRun",
    Outcome.FAILED: "Failed",
    Outcome.REVOKED: "Revoked",
    Outcome.NOT_OWNED: "NotOwned",
    Outcome.RETAINED: "Retained",
}


@dataclass(frozen=True, slots=True)
class Invocation:
    """What the dead-letter envelope needs to know about this invocation."""

    request_id: str
    function_arn: str
    dead_letter: bool = True


def _invocation_fields(context: LambdaContext | None) -> tuple[str, str]:
    if context is None:
        return "local", "local"
    return context.aws_request_id, context.invoked_function_arn


class Authorizer:
    def __init__(
        self,
        settings: Settings,
        *,
        policies: PolicySource,
        describe_groups: DescribeGroups,
        granter: Callable[[], Granter],
        dead_letters: Callable[[], DeadLetterQueue],
        verify_principal: VerifyPrincipal,
        describe_member_groups: DescribeMemberGroups | None = None,
        ledger: Callable[[], Ledger] | None = None,
        revoker: Callable[[], Revoker] | None = None,
    ) -> None:
        self._settings = settings
        self._describe_member_groups = describe_member_groups
        self._policies = policies
        self._describe_groups = describe_groups
        self._granter = granter
        self._dead_letters = dead_letters
        self._verify_principal = verify_principal
        # Without a ledger (a stack from before it, a local run without one): grants as
        # before, with no entry, no hold and no revocation.
        self._ledger = ledger
        self._revoker = revoker

    def handle(
        self, event: object, context: LambdaContext | None = None, *, replay: bool = False
    ) -> dict[str, Any]:
        """Process one event; returns its summary or raises TransientFailureError.

        With `replay=True` (an operator's replay of a dead-lettered message, which keeps the
        message until the replay succeeds) a permanent failure is returned as status `failed`
        instead of being sent to the dead-letter queue again, and the event's principal
        counts only once CloudTrail confirms it (`provenance.verify`).
        """
        invocation = Invocation(*_invocation_fields(context), dead_letter=not replay)
        metrics.add_metric(name="Events", unit=MetricUnit.Count, value=1)
        try:
            return self._handle(event, invocation, context, replay=replay)
        except TransientFailureError:
            raise
        except (MalformedEventError, PolicyError) as exc:
            return self._dead_letter(event, invocation, exc.code, str(exc))
        except AwsCallError as exc:
            if exc.transient:
                logger.warning(
                    "transient failure", extra={"error_code": exc.code, "error": str(exc)}
                )
                raise TransientFailureError(str(exc)) from exc
            return self._dead_letter(event, invocation, exc.code, str(exc))
        except Exception as exc:
            logger.exception("unexpected error")
            return self._dead_letter(
                event, invocation, "UnexpectedError", f"{type(exc).__name__}: {exc}"
            )

    def _handle(
        self,
        event: object,
        invocation: Invocation,
        context: LambdaContext | None,
        *,
        replay: bool,
    ) -> dict[str, Any]:
        parsed = parse_event(event)
        if isinstance(parsed, Ignored):
            return self._ignored(parsed.event_id, parsed.reason, parsed.source, parsed.detail_type)
        if replay and not parsed.replayed:
            parsed = replace(parsed, replayed=True)
        policy = self._policies.current()
        if parsed.event_name == DELETE_GROUP and not self._revokes(policy):
            return self._ignored(
                parsed.event_id,
                "a deleted group only matters to revocation, and no target in the policy has "
                "revoke: true" + ("" if self._ledger is not None else " (or there is no ledger)"),
                parsed.source,
                parsed.detail_type,
            )
        groups = self._groups_now(parsed)
        members = self._settings.members
        decide_now = partial(
            decide,
            parsed,
            groups,
            policy,
            account_id=self._settings.account_id,
            region=self._settings.region,
            members=members.admits if members is not None else None,
        )
        plan = decide_now()
        if plan.unverified:
            # Only a replayed event that would grant a principal-gated target gets here:
            # CloudTrail is asked at most once per event (LookupEvents allows 2 a second).
            provenance = self._verify_principal(parsed)
            _log_provenance(parsed, provenance)
            plan = decide_now(provenance=provenance)
        judging = self._judging(parsed, groups)
        plan = self._apply_holds(plan, parsed, judging)
        decisions = plan.decisions + self._grant(plan.grants, parsed, context, policy)
        if judging is not None and self._revokes(policy):
            decisions += self._revoke(parsed, judging, policy, context)
        for decision in decisions:
            _log_decision(parsed, decision)
        transient = [d for d in decisions if d.failure is FailureKind.TRANSIENT]
        if transient:
            raise TransientFailureError(
                f"{len(transient)} grant(s) failed transiently and will be retried: "
                + "; ".join(d.reason for d in transient[:5])
            )
        permanent = [d for d in decisions if d.failure is FailureKind.PERMANENT]
        if permanent:
            message = f"{len(permanent)} grant(s) failed permanently: " + "; ".join(
                d.reason for d in permanent[:5]
            )
            return self._dead_letter(
                event, invocation, "GrantFailed", message, decisions, parsed.event_id
            )
        return _summary(parsed.event_id, "completed", decisions, self._settings.dry_run)

    def _in_scope(self, request: TagRequest) -> bool:
        """Whether the request's groups are read at all (`read_groups_now`): its region, no
        other account named, and the function's own account or a member's."""
        settings = self._settings
        return (
            request.region == settings.region
            and not request.other_accounts
            and settings.serves(request.account)
        )

    def _groups_now(self, request: TagRequest) -> dict[str, SecurityGroupFacts]:
        settings = self._settings
        return read_groups_now(
            request,
            account_id=settings.account_id,
            region=settings.region,
            members=settings.members.admits if settings.members is not None else None,
            describe=self._describe_groups,
            describe_member=self._describe_member_groups,
        )

    def _ignored(
        self, event_id: str, reason: str, source: str | None, detail_type: str | None
    ) -> dict[str, Any]:
        logger.info(
            "event ignored",
            extra={
                "event_id": event_id,
                "reason": reason,
                "source": source,
                "detail_type": detail_type,
            },
        )
        metrics.add_metric(name="Ignored", unit=MetricUnit.Count, value=1)
        return _summary(event_id, "ignored", [], self._settings.dry_run, reason)

    def _revokes(self, policy: Policy) -> bool:
        return self._revoker is not None and policy.revokes

    def _judging(
        self, request: TagRequest, groups: dict[str, SecurityGroupFacts]
    ) -> Judging | None:
        """What holds and revocations read, shared; None without a ledger or out of scope."""
        if self._ledger is None or not self._in_scope(request):
            return None
        return Judging(groups={group_id: groups.get(group_id) for group_id in request.group_ids})

    def _apply_holds(self, plan: Plan, request: TagRequest, judging: Judging | None) -> Plan:
        """Holds are read only for the grants about to be made: one BatchGetItem."""
        if not plan.grants or judging is None or self._ledger is None:
            return plan
        pairs = {(grant.group_id, grant.target) for grant in plan.grants}
        asked = judging.holds.missing(pairs)
        judging.holds.add(asked, self._ledger().holds_for(asked))
        return apply_holds(plan, judging.holds.for_pairs(pairs), request.principal)

    def _revoke(
        self,
        request: TagRequest,
        judging: Judging,
        policy: Policy,
        context: LambdaContext | None,
    ) -> list[Decision]:
        if self._revoker is None:
            return []
        revoker = self._revoker()
        if context is not None:
            revoker.register(context)
        return revoker.for_groups(
            request.event_id,
            request.group_ids,
            judging,
            policy,
            dry_run=self._settings.dry_run,
        )

    def _grant(
        self,
        grants: Sequence[Grant],
        request: TagRequest,
        context: LambdaContext | None,
        policy: Policy,
    ) -> list[Decision]:
        if not grants:
            return []
        if self._settings.dry_run:
            # Grant.decision names the destination of either kind, so a dry run shows where
            # it would grant.
            return [
                g.decision(Outcome.DRY_RUN, "dry run: would authorize", request.principal)
                for g in grants
            ]
        granter = self._granter()
        if context is not None:
            granter.register(context)
        path = "replay" if request.replayed else "event"
        return [
            granter.grant(grant, request.principal, _origin(path, policy, grant, request))
            for grant in grants
        ]

    def _dead_letter(
        self,
        event: object,
        invocation: Invocation,
        error_type: str,
        message: str,
        decisions: Sequence[Decision] = (),
        event_id: str | None = None,
    ) -> dict[str, Any]:
        envelope = function_envelope(
            event,
            error_type=error_type,
            error_message=message,
            request_id=invocation.request_id,
            function_arn=invocation.function_arn,
            decisions=[d.as_log_fields() for d in decisions],
        )
        event_id = event_id or _event_id(event)
        if not invocation.dead_letter:
            logger.error(
                "replay failed",
                extra={"event_id": event_id, "error_type": error_type, "reason": message},
            )
            summary = _summary(event_id, "failed", decisions, self._settings.dry_run, message)
            summary["errorType"] = error_type
            return summary
        try:
            message_id = self._dead_letters().send(envelope, error_type=error_type)
        except Exception as exc:
            logger.error(
                "dead-letter send failed",
                extra={"event_id": event_id, "error_type": error_type, "error": str(exc)},
            )
            raise TransientFailureError(
                f"event could not be dead-lettered ({exc}); raising so Lambda retries it"
            ) from exc
        logger.error(
            "event dead-lettered",
            extra={
                "event_id": event_id,
                "error_type": error_type,
                "reason": message,
                "message_id": message_id,
            },
        )
        metrics.add_metric(name="DeadLettered", unit=MetricUnit.Count, value=1)
        summary = _summary(event_id, "dead-lettered", decisions, self._settings.dry_run, message)
        summary["errorType"] = error_type
        summary["deadLetterMessageId"] = message_id
        return summary


def read_groups_now(
    request: TagRequest,
    *,
    account_id: str,
    region: str,
    members: Callable[[str], bool] | None,
    describe: Callable[[Sequence[str]], Mapping[str, SecurityGroupFacts]],
    describe_member: DescribeMemberGroups | None,
) -> dict[str, SecurityGroupFacts]:
    """The request's groups as they are now, read in the event's own account: the
    function's, or a member's through its read role. An event out of scope (another account
    or region, or naming an account other than its own) reads nothing: its groups are denied
    without being described, and no role is assumed for it. `explain` reads the same way.
    """
    if request.region != region or request.other_accounts:
        return {}
    if request.account == account_id:
        return dict(describe(request.group_ids))
    if describe_member is None or members is None or not members(request.account):
        return {}
    return describe_member(request.account, request.group_ids)


def _origin(path: str, policy: Policy, grant: Grant, request: TagRequest) -> GrantOrigin:
    target = policy.targets.get(grant.target)
    revoke = target.revoke if target is not None else False
    return GrantOrigin(path, policy.digest, revoke, request.principal)


def _event_id(event: object) -> str | None:
    event_id = event.get("id") if isinstance(event, dict) else None
    return event_id[:128] if isinstance(event_id, str) else None


def _log_provenance(request: TagRequest, provenance: Provenance) -> None:
    fields = {
        "event_id": request.event_id,
        "trail_event_id": request.trail.event_id if request.trail else None,
        "principal": request.principal,
        "provenance": str(provenance.status),
        "reason": provenance.reason,
    }
    if provenance.verified:
        logger.info("principal verified", extra=fields)
    else:
        logger.warning("principal not verified", extra=fields)


def _log_decision(request: TagRequest, decision: Decision) -> None:
    fields = {"event_id": request.event_id, **decision.as_log_fields()}
    if request.replay_name:
        fields["replay_name"] = request.replay_name
    if request.replayed:
        fields["replayed"] = True
    message = f"ingress {decision.outcome}"
    if decision.outcome is Outcome.FAILED:
        logger.error(message, extra=fields)
    elif decision.outcome in (Outcome.DENIED, Outcome.NOT_OWNED):
        logger.warning(message, extra=fields)
    else:
        logger.info(message, extra=fields)
    metrics.add_metric(name=_METRIC_NAMES[decision.outcome], unit=MetricUnit.Count, value=1)
    if decision.rule == HOLD_RULE and decision.outcome is Outcome.DENIED:
        metrics.add_metric(name="Held", unit=MetricUnit.Count, value=1)


def _summary(
    event_id: str | None,
    status: str,
    decisions: Sequence[Decision],
    dry_run: bool,
    reason: str | None = None,
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "eventId": event_id,
        "status": status,
        "dryRun": dry_run,
        "counts": dict(Counter(str(d.outcome) for d in decisions)),
        "decisions": [d.as_log_fields() for d in decisions],
    }
    if reason is not None:
        summary["reason"] = reason
    return summary
