"""Grants, made at most once per (event, grant) through a DynamoDB idempotency record, each
written into the grant ledger in the same step.

Only successes are recorded: a failure raises inside the idempotent call, Powertools deletes
the in-progress record, and a retry or a replay of the event runs the grant again. The
record is keyed by `Grant.idempotency_data()`, which names the destination, so grants of
one event to different destinations never share a record.

The ledger entry is written in two steps inside that idempotent call (`Recorder`): `pending`
before the AWS call, resolved after it. There is no transaction across DynamoDB and EC2 or
ElastiCache, so every crash point leaves something the retry can read (SECURITY.md, "Crash
points of a grant"):

- the AWS call made the grant: the entry is `in-force`, owned (`made`);
- the grant was there already: the entry is `not-owned`, unless the ledger already owns the
  rule for another reason (then `joined`), or this very step made it before a crash hid the
  answer. A VPC rule says so itself (its description names this event); a classic grant
  carries no such evidence, so the entry is `unsure` and the function never revokes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)

from cache_ingress.errors import AwsCallError
from cache_ingress.models import Authorized, Decision, FailureKind, FoundRule, Grant, Outcome
from cache_ingress.ownership import (
    Entry,
    EntryStatus,
    GrantOrigin,
    Ownership,
    entry_key,
    rule_key,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from cache_ingress.ledger import Ledger

# Independent of the Lambda function's name, so the operator's local replay and the deployed
# function share one record per grant.
KEY_PREFIX = "cache-ingress.grant"
# Set on a result read back from its record (Powertools calls the response hook only then),
# never stored: a call tells a grant made before from the one it just made.
RECORDED = "recorded"
# Set on a step's result when the AWS call was made but its ledger entry could not be
# resolved: the grant is reported failed (and retried) until the entry is committed.
UNCOMMITTED = "uncommitted"
UNCOMMITTED_TRANSIENT = "uncommitted_transient"
UNCOMMITTED_CODE = "uncommitted_code"
IN_PROGRESS = "InProgress"
# How long a grant that finds its rule there already waits for another execution's grant of
# the same rule to commit (seconds, between reads): 1.55 s in all, well inside the 60 s.
RUNNING_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8)


Authorize = Callable[[Grant], "Outcome | Authorized"]
# The VPC rule a grant would make, as it stands now (None: no such rule); classic grants
# have no such lookup.
FindRule = Callable[[Grant], FoundRule | None]


@dataclass(frozen=True, slots=True)
class Prior:
    """What this step's entry was before this attempt (from the ledger, or its record)."""

    status: EntryStatus
    ownership: Ownership | None = None
    rule_id: str | None = None

    @property
    def owned(self) -> bool:
        return self.status is EntryStatus.IN_FORCE

    @classmethod
    def of(cls, entry: Entry | None) -> Prior | None:
        return None if entry is None else cls(entry.status, entry.ownership, entry.rule_id)


Resolution = tuple[EntryStatus, Ownership | None, str | None, str]


class Recorder:
    """The ledger's side of a grant: the entry before the call, its resolution after."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        find_rule: FindRule | None = None,
        description: Callable[[Grant], str] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        waits: tuple[float, ...] = RUNNING_WAITS,
    ) -> None:
        self._ledger = ledger
        self._find_rule = find_rule
        self._description = description
        self._now = now
        self._sleep = sleep
        self._waits = waits

    def authorize(self, grant: Grant, origin: GrantOrigin, call: Authorize) -> dict[str, str]:
        """Inside the idempotent step: the entry, the call, the entry's resolution.

        The resolution is also the step's result, which Powertools stores in the idempotency
        record. If the entry cannot be resolved now (`uncommitted`: the write failed, or
        another execution's grant of the same rule has not finished), the retry reads the
        step from the record and resolves the entry (`finish`) without asking AWS again,
        which for a classic grant could no longer tell who made it.
        """
        prior = Prior.of(self._ledger.begin(grant, origin))
        result = _authorized(call(grant))
        record = {
            "outcome": str(result.outcome),
            "prior": str(prior.status) if prior is not None else "",
            "prior_ownership": str(prior.ownership or "") if prior is not None else "",
            "prior_rule_id": (prior.rule_id or "") if prior is not None else "",
        }
        if result.outcome is Outcome.AUTHORIZED:
            record.update(_resolved((EntryStatus.IN_FORCE, Ownership.MADE, result.rule_id, "made")))
        try:
            self.finish(grant, record)
        except AwsCallError as exc:
            record[UNCOMMITTED] = str(exc)
            record[UNCOMMITTED_CODE] = exc.code
            record[UNCOMMITTED_TRANSIENT] = "true" if exc.transient else ""
        return record

    def finish(self, grant: Grant, record: dict[str, Any]) -> None:
        """Resolve and commit the entry of a step (now, or from its idempotency record);
        `record` gains the resolution. Raises AwsCallError."""
        if not record.get("status"):
            prior = (
                Prior(
                    EntryStatus(record["prior"]),
                    Ownership(record["prior_ownership"]) if record.get("prior_ownership") else None,
                    record.get("prior_rule_id") or None,
                )
                if record.get("prior")
                else None
            )
            record.update(_resolved(self._already_there(grant, prior)))
        ownership = record.get("ownership")
        self._ledger.commit(
            grant,
            EntryStatus(record["status"]),
            ownership=Ownership(ownership) if ownership else None,
            rule_id=record.get("rule_id") or None,
            note=str(record.get("note") or "-"),
        )

    def _already_there(self, grant: Grant, prior: Prior | None) -> Resolution:
        """Whose is the grant AWS says exists: the function's (for this or another owner),
        not the function's, or not known (yet: raises `InProgress`)."""
        present = self._present_rule(grant)
        present_id = present.rule_id if present is not None else None
        if prior is not None and prior.owned and _same_rule(prior.rule_id, present):
            return (
                EntryStatus.IN_FORCE,
                prior.ownership or Ownership.MADE,
                present_id or prior.rule_id,
                "still owned: this event's grant is in force",
            )
        others = self._others(grant, present)
        owners = [o for o in others if o.owned and _same_rule(o.rule_id, present)]
        if owners:
            return (
                EntryStatus.IN_FORCE,
                Ownership.JOINED,
                present_id or owners[0].rule_id,
                f"joined: the function owns the rule already ({owners[0].key})",
            )
        if prior is not None and prior.status in (EntryStatus.PENDING, EntryStatus.UNSURE):
            return self._after_a_crash(grant, present)
        return (
            EntryStatus.NOT_OWNED,
            None,
            present_id,
            "there already when this event came: made by hand or by something else",
        )

    def _others(self, grant: Grant, present: FoundRule | None) -> list[Entry]:
        """The rule's other entries, once one owns it or none is running. Another execution's
        grant of the same rule (its call may be the one that made it) commits within moments,
        so it is waited for briefly; still running after that, the step is retried
        (`InProgress`)."""
        running: Entry | None = None
        marked = False
        for pause in (*self._waits, None):
            others = [o for o in self._ledger.owners(rule_key(grant)) if o.key != entry_key(grant)]
            if any(o.owned and _same_rule(o.rule_id, present) for o in others):
                return others
            running = next((o for o in others if o.running(self._now())), None)
            if running is None:
                return others
            if not marked:
                # Said before waiting, so two steps that both found the grant there never
                # wait for each other.
                self._ledger.found_there(grant)
                marked = True
            if pause is not None:
                self._sleep(pause)
        key = running.key if running is not None else "another entry"
        raise AwsCallError(
            f"the same rule, for {key}; whose the rule is is known when it ends",
            code=IN_PROGRESS,
            transient=True,
        )

    def _after_a_crash(
        self, grant: Grant, present: FoundRule | None
    ) -> tuple[EntryStatus, Ownership | None, str | None, str]:
        """An earlier attempt of this very step stopped between its call and its commit."""
        if not grant.is_vpc:
            return (
                EntryStatus.UNSURE,
                None,
                None,
                "an earlier attempt stopped between its call and its entry, and a classic grant "
                "carries no evidence of who made it: never revoked by the function",
            )
        expected = self._description(grant) if self._description is not None else None
        if present is not None and expected is not None and present.description == expected:
            return (
                EntryStatus.IN_FORCE,
                Ownership.MADE,
                present.rule_id,
                "made by an earlier attempt of this event (the rule's description names it)",
            )
        return (
            EntryStatus.NOT_OWNED,
            None,
            present.rule_id if present is not None else None,
            "there already, and its description does not name this event",
        )

    def _present_rule(self, grant: Grant) -> FoundRule | None:
        if not grant.is_vpc or self._find_rule is None:
            return None
        return self._find_rule(grant)


def _same_rule(rule_id: str | None, present: FoundRule | None) -> bool:
    """A VPC owner owns the rule present only if it is the rule it recorded (EC2 gives a
    rule made again by someone else a new id); a classic pair has no identity to compare."""
    if present is None or rule_id is None:
        return True
    return rule_id == present.rule_id


def _resolved(resolution: Resolution) -> dict[str, str]:
    status, ownership, rule_id, note = resolution
    return {
        "status": str(status),
        "ownership": str(ownership or ""),
        "rule_id": rule_id or "",
        "note": note,
    }


def _authorized(result: Outcome | Authorized) -> Authorized:
    return result if isinstance(result, Authorized) else Authorized(result)


def _authorize_recorded(
    *,
    key: dict[str, Any],
    grant: Grant,
    authorize: Authorize,
    recorder: Recorder | None = None,
    origin: GrantOrigin | None = None,
) -> dict[str, str]:
    # `key` is only the idempotency key (Powertools hashes it); the grant itself is `grant`.
    del key
    if recorder is None or origin is None:
        return {"outcome": str(_authorized(authorize(grant)).outcome)}
    return recorder.authorize(grant, origin, authorize)


def _mark_recorded(response: Any, idempotent_data: DataRecord) -> dict[str, Any]:
    del idempotent_data  # the record's own fields are not needed; being called is the news
    return {**(response if isinstance(response, dict) else {}), RECORDED: True}


class Granter:
    """Makes grants through one authorize function, each guarded by its idempotency record."""

    def __init__(
        self,
        authorize: Authorize,
        persistence: BasePersistenceLayer,
        *,
        expiry_seconds: int,
        recorder: Recorder | None = None,
    ) -> None:
        self._authorize = authorize
        self._recorder = recorder
        self._config = IdempotencyConfig(
            expires_after_seconds=expiry_seconds,
            raise_on_no_idempotency_key=True,
            response_hook=_mark_recorded,
        )
        self._authorize_once: Callable[..., dict[str, Any]] = idempotent_function(
            _authorize_recorded,
            data_keyword_argument="key",
            persistence_store=persistence,
            config=self._config,
            key_prefix=KEY_PREFIX,
        )

    def _finish(
        self, grant: Grant, principal: str | None, result: dict[str, Any]
    ) -> Decision | None:
        """A step whose AWS call was made but whose entry was not committed: commit it now
        from the record (a retry), or report the grant failed so that the event is retried."""
        error = str(result[UNCOMMITTED])
        code = str(result.get(UNCOMMITTED_CODE) or "")
        transient = bool(result.get(UNCOMMITTED_TRANSIENT))
        if result.get(RECORDED) and self._recorder is not None:
            try:
                self._recorder.finish(grant, result)
            except AwsCallError as exc:
                error, code, transient = str(exc), exc.code, exc.transient
            else:
                return None
        if code == IN_PROGRESS:
            # As when Powertools finds this very step in progress: retried a moment later.
            return grant.decision(
                Outcome.FAILED,
                f"another execution is making this grant now ({error}); retrying later",
                principal,
                failure=FailureKind.TRANSIENT,
                error_code=IN_PROGRESS,
            )
        return grant.decision(
            Outcome.FAILED,
            f"the grant was {result.get('outcome')}, and its ledger entry could not be resolved "
            f"yet ({error}); it is, from this step's record, when the event is retried",
            principal,
            failure=FailureKind.TRANSIENT if transient else FailureKind.PERMANENT,
            error_code="LedgerEntry",
        )

    def register(self, context: LambdaContext) -> None:
        """Let in-progress records expire with this invocation, so a timeout never blocks."""
        self._config.register_lambda_context(context)

    def grant(
        self, grant: Grant, principal: str | None, origin: GrantOrigin | None = None
    ) -> Decision:
        """Make the grant once per (event, grant); with a ledger, `origin` is what its entry
        records besides the grant (path, policy digest, the target's revoke flag)."""
        result = self._attempt(grant, principal, origin)
        if isinstance(result, Decision):
            return result
        if result.get(UNCOMMITTED):
            unresolved = self._finish(grant, principal, result)
            if unresolved is not None:
                return unresolved
        if result.get(RECORDED):
            # A duplicate delivery: this event's grant was made before and recorded.
            reason = f"this event's grant was already made ({result.get('outcome')}, recorded)"
            return grant.decision(Outcome.ALREADY_AUTHORIZED, reason, principal)
        outcome = Outcome(result["outcome"])
        if outcome is Outcome.AUTHORIZED:
            reason = "ingress authorized"
        elif grant.is_vpc:
            reason = f"the cache's security group already allows this group on tcp/{grant.port}"
        else:
            reason = "the cache security group already allows this group"
        return grant.decision(outcome, reason, principal)

    def _attempt(
        self, grant: Grant, principal: str | None, origin: GrantOrigin | None
    ) -> dict[str, Any] | Decision:
        """The idempotent step's result, or the failed decision when it could not run."""
        if self._recorder is not None and origin is None:
            origin = GrantOrigin(path="event", policy_digest="", revoke=False)
        if origin is not None and origin.principal != principal:
            origin = GrantOrigin(origin.path, origin.policy_digest, origin.revoke, principal)
        try:
            return self._authorize_once(
                key=grant.idempotency_data(),
                grant=grant,
                authorize=self._authorize,
                recorder=self._recorder,
                origin=origin,
            )
        except AwsCallError as exc:
            kind = FailureKind.TRANSIENT if exc.transient else FailureKind.PERMANENT
            return grant.decision(
                Outcome.FAILED, str(exc), principal, failure=kind, error_code=exc.code
            )
        except IdempotencyAlreadyInProgressError:
            reason = "another execution is making this grant now; retrying later"
            return grant.decision(
                Outcome.FAILED,
                reason,
                principal,
                failure=FailureKind.TRANSIENT,
                error_code=IN_PROGRESS,
            )
        except IdempotencyPersistenceLayerError as exc:
            reason = f"the idempotency record could not be written or read: {exc}"
            return grant.decision(
                Outcome.FAILED,
                reason,
                principal,
                failure=FailureKind.TRANSIENT,
                error_code="IdempotencyStore",
            )
