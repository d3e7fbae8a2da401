"""The sweep's resume token: one item in the idempotency table (DynamoDB adapter).

A run about to run out of time stores the token of the first page it has not finished; the
next run resumes there (see docs/reconcile.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.observability import logger

# Beside Powertools' "cache-ingress.grant#<hash>" records, never equal to one of them.
CURSOR_KEY = "cache-ingress.reconcile#cursor"


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
