"""Resource policies evaluated as AWS documents it, for the parts the embedded AWS enforces:
a role's trust policy (STS) and an event bus's policy (EventBridge).

A statement applies when its action names the request's, its principal names the caller
(``*``, the caller's account, its root ARN or its exact principal ARN; a ``Service`` or
``Federated`` principal is never an API caller) and every condition holds. An explicit
``Deny`` that applies refuses; otherwise an ``Allow`` that applies allows. The condition
operators known are ``StringEquals``, ``StringLike``, ``ArnEquals``, ``ArnLike`` and
their ``ForAllValues:`` forms; a key the request lacks fails a positive operator. Anything
else (an operator or key this module does not know) refuses, so an unknown condition never
passes by accident.

No moto here: pure rules over plain data.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

PARTITION: Final = "aws"
_OPERATORS: Final = frozenset({"StringEquals", "StringLike", "ArnEquals", "ArnLike"})
_LIKE: Final = frozenset({"StringLike", "ArnLike"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: its principal's ARN as IAM conditions see it (a role session's is the
    role's), its account and the organization that account belongs to."""

    principal_arn: str
    account: str
    organization: str | None = None


def refusal(
    document: str | Mapping[str, Any] | None,
    action: str,
    caller: Caller,
    context: Mapping[str, str | list[str] | None],
) -> str | None:
    """Why the policy refuses `action` to `caller` (None: it allows). `context` holds the
    request's condition keys (lower-case names); the caller's own keys are added here."""
    if document is None:
        return "the resource has no policy"
    try:
        policy = json.loads(document) if isinstance(document, str) else document
        statements = policy["Statement"]
    except (ValueError, TypeError, KeyError):
        return "the policy cannot be read"
    keys: dict[str, str | list[str] | None] = {
        "aws:principalarn": caller.principal_arn,
        "aws:principalaccount": caller.account,
        "aws:principalorgid": caller.organization,
        **{key.lower(): value for key, value in context.items()},
    }
    allowed = False
    for statement in statements if isinstance(statements, list) else [statements]:
        if not _names(statement.get("Action"), action):
            continue
        if not _principal_matches(statement.get("Principal"), caller):
            continue
        condition = statement.get("Condition") or {}
        unknown = _unknown_condition(condition, keys)
        if unknown is not None:
            return f"the emulator does not evaluate the policy's condition {unknown}"
        if not _conditions_hold(condition, keys):
            continue
        if statement.get("Effect") == "Deny":
            return f"statement {statement.get('Sid') or '(no Sid)'} denies it"
        allowed = allowed or statement.get("Effect") == "Allow"
    return None if allowed else "no statement of the policy allows it"


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _names(actions: Any, action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), str(a).lower()) for a in _listed(actions))


def _principal_matches(principal: Any, caller: Caller) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    for named in _listed(principal.get("AWS", [])):
        if str(named) in (
            "*",
            caller.account,
            caller.principal_arn,
            f"arn:{PARTITION}:iam::{caller.account}:root",
        ):
            return True
    return False


def _unknown_condition(
    condition: Mapping[str, Any], keys: Mapping[str, str | list[str] | None]
) -> str | None:
    for operator, entries in condition.items():
        if operator.removeprefix("ForAllValues:") not in _OPERATORS:
            return operator
        for key in entries:
            if str(key).lower() not in keys:
                return f"{operator} {key}"
    return None


def _conditions_hold(
    condition: Mapping[str, Any], keys: Mapping[str, str | list[str] | None]
) -> bool:
    for operator, entries in condition.items():
        every = operator.startswith("ForAllValues:")
        base = operator.removeprefix("ForAllValues:")
        for key, wanted in entries.items():
            present = keys[str(key).lower()]
            values = [str(v) for v in _listed(wanted)]
            if present is None:
                if every:
                    continue  # ForAllValues over no values holds, as IAM documents
                return False
            if not all(_matches(base, str(p), values) for p in _listed(present)):
                return False
    return True


def _matches(operator: str, present: str, values: list[str]) -> bool:
    if operator in _LIKE:
        return any(fnmatch.fnmatchcase(present, value) for value in values)
    return present in values
