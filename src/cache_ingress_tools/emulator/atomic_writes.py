"""Make moto's conditional writes, rule changes and queue deletes atomic, as AWS makes them.

moto 5.2 checks a write's condition and then applies it as two steps of plain Python, with
no lock. Two threads of one process (two replays at once against ``mock_aws``, or two
requests to the threaded moto server) can therefore both pass ``attribute_not_exists(id)``
on the same idempotency record and both go on to grant. DynamoDB never allows that: a
conditional write is checked and applied as one step. The same holds for EC2's
AuthorizeSecurityGroupIngress, where moto's duplicate-rule check and the insert are two
steps. And SQS: moto deletes a message by rebuilding the queue's list and assigning it, so
two deletes at once (two operators replaying one queue) can each put back the message the
other removed; SQS never loses a delete.

What stays as moto has it, because SQS allows it too: a standard queue delivers at least
once, so two receives at the same moment can both get one message. The replay tool and the
function's idempotency records are built for that.

:func:`install` serialises those operations behind one process-wide lock, for the rest of
the process, so that the embedded AWS keeps the guarantee the function's idempotency and
the tests' "granted once" checks rely on. Reads take the lock too (an item, a query, a
scan; a batch reads item by item), so a reader never sees an update half-applied: moto applies an
update's actions one by one to the stored item, where DynamoDB makes each item's change at
once. Nothing else changes: requests still go through moto's
parsers, its validation and its errors.

This module imports moto: the Lambda's import path must never reach it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Final

from moto.dynamodb.models import DynamoDBBackend
from moto.ec2.models.security_groups import SecurityGroupBackend
from moto.sqs.models import Queue

__all__ = ["ATOMIC_OPERATIONS", "install"]

# (class, method) pairs made atomic. Each checks, then changes, or replaces shared state.
ATOMIC_OPERATIONS: Final[tuple[tuple[type, str], ...]] = (
    (DynamoDBBackend, "put_item"),
    (DynamoDBBackend, "update_item"),
    (DynamoDBBackend, "delete_item"),
    (DynamoDBBackend, "get_item"),
    (DynamoDBBackend, "query"),
    (DynamoDBBackend, "scan"),
    (DynamoDBBackend, "transact_write_items"),
    (SecurityGroupBackend, "authorize_security_group_ingress"),
    (SecurityGroupBackend, "revoke_security_group_ingress"),
    (Queue, "add_message"),
    (Queue, "delete_message"),
)

_INSTALLED_MARK: Final = "_cache_ingress_atomic"
# One lock for all backends: the operations are short, and the embedded AWS serves one
# account's worth of traffic at a time.
_WRITE_LOCK = threading.RLock()
_INSTALL_LOCK = threading.Lock()


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _WRITE_LOCK:
            return method(*args, **kwargs)

    setattr(wrapper, _INSTALLED_MARK, True)
    return wrapper


def install() -> None:
    """Serialise the operations in :data:`ATOMIC_OPERATIONS`; calling it again is harmless.

    Raises ``RuntimeError`` if moto no longer defines one of them, so a renamed method is
    noticed instead of silently left racy.
    """
    with _INSTALL_LOCK:
        for owner, name in ATOMIC_OPERATIONS:
            present = owner.__dict__.get(name)
            if present is None:
                raise RuntimeError(
                    f"moto's {owner.__name__} no longer defines {name}; revisit atomic_writes"
                )
            if getattr(present, _INSTALLED_MARK, False):
                continue
            setattr(owner, name, _atomic(present))
