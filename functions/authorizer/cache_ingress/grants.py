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

from collections.abc import Callable
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


Authorize = Callable[[Grant], "Outcome | Authorized"]
# The VPC rule a grant would make, as it stands now (None: no such rule); classic grants
# have no such lookup.
FindRule = Callable[[Grant], FoundRule | None]


class Recorder:
    """The ledger's side of a grant: the entry before the call, its resolution after."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        find_rule: FindRule | None = None,
        description: Callable[[Grant], str] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ledger = ledger
        self._find_rule = find_rule
        self._description = description
        self._now = now

    def authorize(self, grant: Grant, origin: GrantOrigin, call: Authorize) -> dict[str, str]:
        previous = self._ledger.begin(grant, origin)
        result = _authorized(call(grant))
        if result.outcome is Outcome.AUTHORIZED:
            self._ledger.commit(
                grant,
                EntryStatus.IN_FORCE,
                ownership=Ownership.MADE,
                rule_id=result.rule_id,
                note="made by this event",
            )
            return {"outcome": str(Outcome.AUTHORIZED), "ownership": str(Ownership.MADE)}
        status, ownership, rule_id, note = self._already_there(grant, previous)
        self._ledger.commit(grant, status, ownership=ownership, rule_id=rule_id, note=note)
        return {
            "outcome": str(Outcome.ALREADY_AUTHORIZED),
            "ownership": str(ownership or status),
        }

    def _already_there(
        self, grant: Grant, previous: Entry | None
    ) -> tuple[EntryStatus, Ownership | None, str | None, str]:
        """Whose is the grant AWS says exists: the function's (for this or another owner),
        not the function's, or not known."""
        present = self._present_rule(grant)
        present_id = present.rule_id if present is not None else None
        if previous is not None and previous.owned and _same_rule(previous, present):
            return (
                EntryStatus.IN_FORCE,
                previous.ownership or Ownership.MADE,
                present_id or previous.rule_id,
                "still owned: this event's grant is in force",
            )
        others = [o for o in self._ledger.owners(rule_key(grant)) if o.key != entry_key(grant)]
        owners = [o for o in others if o.owned and _same_rule(o, present)]
        if owners:
            return (
                EntryStatus.IN_FORCE,
                Ownership.JOINED,
                present_id or owners[0].rule_id,
                f"joined: the function owns the rule already ({owners[0].key})",
            )
        running = [o for o in others if o.running(self._now())]
        if running:
            # Its call may be the one that made the rule: known once it commits.
            raise AwsCallError(
                f"another execution is granting the same rule now ({running[0].key}); "
                "whose the rule is will be known when it finishes",
                code="InProgress",
                transient=True,
            )
        if previous is not None and previous.status in (EntryStatus.PENDING, EntryStatus.UNSURE):
            return self._after_a_crash(grant, present)
        return (
            EntryStatus.NOT_OWNED,
            None,
            present_id,
            "there already when this event came: made by hand or by something else",
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


def _same_rule(entry: Entry, present: FoundRule | None) -> bool:
    """A VPC owner owns the rule present only if it is the rule it recorded (EC2 gives a
    rule made again by someone else a new id); a classic pair has no identity to compare."""
    if present is None or entry.rule_id is None:
        return True
    return entry.rule_id == present.rule_id


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

    def register(self, context: LambdaContext) -> None:
        """Let in-progress records expire with this invocation, so a timeout never blocks."""
        self._config.register_lambda_context(context)

    def grant(
        self, grant: Grant, principal: str | None, origin: GrantOrigin | None = None
    ) -> Decision:
        """Make the grant once per (event, grant); with a ledger, `origin` is what its entry
        records besides the grant (path, policy digest, the target's revoke flag)."""
        if self._recorder is not None and origin is None:
            origin = GrantOrigin(path="event", policy_digest="", revoke=False)
        if origin is not None and origin.principal != principal:
            origin = GrantOrigin(origin.path, origin.policy_digest, origin.revoke, principal)
        try:
            result = self._authorize_once(
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
                error_code="InProgress",
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
