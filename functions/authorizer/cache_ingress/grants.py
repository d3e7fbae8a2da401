"""Grants, made at most once per (event, grant) through a DynamoDB idempotency record.

Only successes are recorded: a failure raises inside the idempotent call, Powertools deletes
the in-progress record, and a retry or a replay of the event runs the grant again. The
record is keyed by `Grant.idempotency_data()`, which names the destination, so grants of
one event to different destinations never share a record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)

from cache_ingress.errors import AwsCallError
from cache_ingress.models import Decision, FailureKind, Grant, Outcome

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Independent of the Lambda function's name, so the operator's local replay and the deployed
# function share one record per grant.
KEY_PREFIX = "cache-ingress.grant"
# Set on a result read back from its record (Powertools calls the response hook only then),
# never stored: a call tells a grant made before from the one it just made.
RECORDED = "recorded"


def _authorize_recorded(
    *, key: dict[str, Any], grant: Grant, authorize: Callable[[Grant], Outcome]
) -> dict[str, str]:
    # `key` is only the idempotency key (Powertools hashes it); the grant itself is `grant`.
    del key
    return {"outcome": str(authorize(grant))}


def _mark_recorded(response: Any, idempotent_data: DataRecord) -> dict[str, Any]:
    del idempotent_data  # the record's own fields are not needed; being called is the news
    return {**(response if isinstance(response, dict) else {}), RECORDED: True}


class Granter:
    """Makes grants through one authorize function, each guarded by its idempotency record."""

    def __init__(
        self,
        authorize: Callable[[Grant], Outcome],
        persistence: BasePersistenceLayer,
        *,
        expiry_seconds: int,
    ) -> None:
        self._authorize = authorize
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

    def grant(self, grant: Grant, principal: str | None) -> Decision:
        try:
            result = self._authorize_once(
                key=grant.idempotency_data(), grant=grant, authorize=self._authorize
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
