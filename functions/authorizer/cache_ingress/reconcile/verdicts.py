"""How the sweep judges a pair from what the run has read, before any grant is made.

`decide()` gives each pair its decision; these functions add what is granted now: in sync,
denied (and granted beyond the policy or not), needs an event, or missing and repairable.
Each logs its finding; none calls AWS (the reads are the run's `GrantedView`).
"""

from __future__ import annotations

from dataclasses import replace

from cache_ingress.decisions import PairTrace, Verdict
from cache_ingress.errors import AwsCallError
from cache_ingress.granted_state import GrantedView
from cache_ingress.models import Decision, FailureKind, Grant, Outcome
from cache_ingress.observability import logger
from cache_ingress.reconcile.report import PairResult, PairStatus

# The rules only a tagging event's own principal can satisfy: the sweep names none.
PRINCIPAL_RULES = frozenset({"principals", "principal-binding"})


def beyond_principals(decision: Decision, trace: PairTrace | None) -> Decision:
    """A denial by a principal rule, as the sweep must read it.

    The sweep names no principal, so `principals` denies every gated pair first, and
    `decide()` stops there; rules it checks after it (`same-vpc`, and a VPC cache that could
    not be looked up) still stand between the pair and any event. With the pair's trace
    (`explain()`), the first other rule that decides is the pair's decision: denied by that
    rule, or failed when its fact could not be read. A pair only principal rules deny is
    returned as it is: only an event can grant it.
    """
    if decision.rule not in PRINCIPAL_RULES or trace is None:
        return decision
    other = next(
        (
            check
            for check in trace.checks
            if check.verdict in (Verdict.DENIES, Verdict.UNKNOWN)
            and check.rule not in PRINCIPAL_RULES
        ),
        None,
    )
    if other is None:
        return decision
    if other.verdict is Verdict.UNKNOWN:
        return replace(
            decision,
            outcome=Outcome.FAILED,
            rule=None,
            reason=other.reason,
            failure=other.failure or FailureKind.TRANSIENT,
            error_code=other.error_code,
        )
    return replace(decision, rule=other.rule, reason=other.reason)


def judge(run_id: str, decision: Decision, granted: GrantedView) -> PairResult:
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
    if decision.rule not in PRINCIPAL_RULES:
        known = is_granted if isinstance(is_granted, bool) else None
        if known:
            logger.warning("grant beyond policy", extra={**fields, **decision.as_log_fields()})
        return PairResult(PairStatus.DENIED, decision, known)
    return principal_required(run_id, decision, is_granted)


def principal_required(
    run_id: str, decision: Decision, is_granted: bool | AwsCallError | None
) -> PairResult:
    """Every rule but the principal rules holds (`beyond_principals` has read the rest of
    the pair's trace): in sync if granted, else drift only an event can repair.
    """
    if isinstance(is_granted, AwsCallError):
        return unreadable(run_id, decision, is_granted)
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


def settled(run_id: str, grant: Grant, granted: GrantedView) -> PairResult | None:
    """The pair's result if the run's reads settle it; None if it is missing and repairable."""
    is_granted = granted.granted(grant)
    if isinstance(is_granted, AwsCallError):
        return unreadable(run_id, grant.decision(Outcome.FAILED, "", None), is_granted)
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


def unreadable(run_id: str, decision: Decision, error: AwsCallError) -> PairResult:
    failed = replace(
        decision,
        outcome=Outcome.FAILED,
        reason=f"granted ingress could not be read: {error}",
        failure=FailureKind.PERMANENT,
        error_code=error.code,
    )
    logger.error("reconcile failed for pair", extra={"run_id": run_id, **failed.as_log_fields()})
    return PairResult(PairStatus.FAILED, failed)
