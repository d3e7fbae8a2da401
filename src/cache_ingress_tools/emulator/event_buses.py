"""EventBridge across accounts, as AWS routes it, for the embedded AWS.

moto matches rules and sends to targets, but three things it does would make the member
accounts' path (docs/multi-account.md) look unlike AWS, and :func:`install` changes them:

1. ``PutEvents`` accepts any ``Source``. AWS refuses entries whose source starts with
   ``aws.`` (``NotAuthorizedForSourceException``): only AWS itself emits those, which is
   why the rules that match ``aws.tag`` and ``aws.ec2`` see only events AWS emitted. A
   ``PutEvents`` naming another account's bus by ARN is allowed only if that bus's policy
   admits the caller (else ``AccessDeniedException`` for the entry).
2. A rule whose target is another account's event bus re-sends the event as a new one of
   the receiving account (new id, the receiver's ``account``, no ``resources``), ignoring
   the receiving bus's policy. AWS delivers the same event (id, source, account, time,
   region, resources, detail) if the receiving bus's policy admits the sending account
   (``aws:PrincipalOrgID`` of its organization, ``events:source``, ``events:detail-type``);
   if not, or if the bus does not exist, the event goes to the target's dead-letter queue
   (``DeadLetterConfig``) with EventBridge's message attributes, or is dropped. An event a
   bus received from another account is never sent on to a third ("one hop").
3. A rule whose target is a Lambda function raises ``NotImplementedError``. The embedded AWS
   runs no function: deliveries are kept per function (:func:`delivered`), and whoever
   plays Lambda (a test, the demo) invokes the handler with them.
4. moto's matcher does not look inside arrays of objects, so no CloudTrail tagging call
   (``requestParameters.resourcesSet.items[].resourceId``, ``tagSet.items[].key``) matches
   the rules. AWS matches a field inside an array against the field of every element, as
   one array of values: so does this.

:func:`emit` is AWS putting an event on an account's default bus (the service events a
tagging call causes), which only AWS can do.

State (the deliveries) lives on moto's EventBridge backend of each (account, region), so a
reset clears it. This module imports moto: the Lambda's import path must never reach it.
"""

from __future__ import annotations

import contextvars
import copy
import json
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from moto.events.models import EventPattern, EventsBackend, Rule, events_backends
from moto.sqs.models import sqs_backends

from cache_ingress_tools.emulator.accounts import organization_of
from cache_ingress_tools.emulator.policies import Caller, refusal

__all__ = ["delivered", "emit", "install", "receives_from_another_account"]

_DELIVERIES: Final = "_cache_ingress_deliveries"
_INSTALLED_MARK: Final = "_cache_ingress_event_buses"
_LOCK = threading.RLock()
# Set while a bus delivers an event it received from another account (the one-hop rule).
_FORWARDED: contextvars.ContextVar[bool] = contextvars.ContextVar("forwarded", default=False)


def _arn_parts(arn: str) -> tuple[str, str, str, str] | None:
    """(service, region, account, resource) of an ARN; None if it is not one."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    return parts[2], parts[3], parts[4], parts[5]


# --- what a function was sent -----------------------------------------------------------


def _deliveries(account: str, region: str) -> dict[str, list[dict[str, Any]]]:
    backend = events_backends[account][region]
    with _LOCK:
        found = getattr(backend, _DELIVERIES, None)
        if found is None:
            found = {}
            setattr(backend, _DELIVERIES, found)
        return found


def delivered(function_arn: str, *, take: bool = True) -> list[dict[str, Any]]:
    """The events rules sent to the function, oldest first (taken out unless `take` is
    False): what Lambda would have invoked it with, one invocation each."""
    parts = _arn_parts(function_arn)
    if parts is None:
        raise ValueError(f"not an ARN: {function_arn!r}")
    _, region, account, _ = parts
    with _LOCK:
        inbox = _deliveries(account, region).setdefault(function_arn, [])
        events = list(inbox)
        if take:
            inbox.clear()
    return events


# --- AWS emitting an event, and rules sending it on --------------------------------------


def emit(account: str, region: str, event: Mapping[str, Any]) -> None:
    """AWS puts `event` on the default bus of `account` in `region` (it must carry that
    account and region, as AWS's own events do)."""
    if (event.get("account"), event.get("region")) != (account, region):
        raise ValueError("an event AWS emits carries its own account and region")
    _deliver_on(events_backends[account][region], "default", dict(event))


def _deliver_on(backend: EventsBackend, bus_name: str, event: Any) -> None:
    bus = backend.event_buses.get(bus_name)
    if bus is None:
        return
    for rule in list(bus.rules.values()):
        if rule.state == "ENABLED" and rule.event_pattern.matches_event(event):
            rule.send_to_targets(copy.deepcopy(event))


def receives_from_another_account(
    bus_arn: str, sender: str, event: Mapping[str, Any]
) -> str | None:
    """Why the bus refuses an event from account `sender` (None: it admits it)."""
    parts = _arn_parts(bus_arn)
    if parts is None:
        return "not an event bus ARN"
    _, region, account, resource = parts
    bus = events_backends[account][region].event_buses.get(resource.removeprefix("event-bus/"))
    if bus is None:
        return "the event bus does not exist"
    if sender == account:
        return None
    caller = Caller(f"arn:aws:iam::{sender}:root", sender, organization_of(sender))
    context = {"events:source": event.get("source"), "events:detail-type": event.get("detail-type")}
    return refusal(bus.policy, "events:PutEvents", caller, context)


def _send_to_targets(original: Any) -> Any:
    def send_to_targets(self: Rule, original_event: Any, transform_input: bool = True) -> None:
        if not self.event_pattern.matches_event(original_event):
            return
        others = []
        for target in self.targets:
            arn = str(target.get("Arn", ""))
            parts = _arn_parts(arn)
            if parts is not None and parts[0] == "lambda":
                with _LOCK:
                    inbox = _deliveries(self.account_id, self.region_name)
                    inbox.setdefault(arn, []).append(copy.deepcopy(original_event))
            elif parts is not None and parts[0] == "events" and parts[3].startswith("event-bus/"):
                _forward(self, target, original_event)
            elif parts is not None and parts[0] == "sqs" and not target.get("InputTransformer"):
                _to_queue(parts[2], parts[1], parts[3], original_event)
            else:
                others.append(target)
        if others:
            narrowed = copy.copy(self)
            narrowed.targets = others
            original(narrowed, original_event, transform_input)

    setattr(send_to_targets, _INSTALLED_MARK, True)
    return send_to_targets


def _forward(rule: Rule, target: Mapping[str, Any], event: dict[str, Any]) -> None:
    _, region, account, resource = _arn_parts(str(target["Arn"])) or ("", "", "", "")
    if account != rule.account_id and _FORWARDED.get():
        return  # a bus never sends on to a third account what another account sent it
    why = receives_from_another_account(str(target["Arn"]), rule.account_id, event)
    if why is not None:
        _dead_letter(rule, target, event, why)
        return
    token = _FORWARDED.set(_FORWARDED.get() or account != rule.account_id)
    try:
        _deliver_on(events_backends[account][region], resource.removeprefix("event-bus/"), event)
    finally:
        _FORWARDED.reset(token)


def _dead_letter(rule: Rule, target: Mapping[str, Any], event: Mapping[str, Any], why: str) -> None:
    """EventBridge's dead-letter message for an event it could not deliver to `target`."""
    queue_arn = (target.get("DeadLetterConfig") or {}).get("Arn")
    parts = _arn_parts(str(queue_arn or ""))
    if parts is None:
        return  # no dead-letter queue: EventBridge drops it
    code = "RESOURCE_NOT_FOUND" if "does not exist" in why else "NO_PERMISSIONS"
    attributes = {
        "RULE_ARN": rule.arn,
        "TARGET_ARN": str(target["Arn"]),
        "ERROR_CODE": code,
        "ERROR_MESSAGE": why[:1024],
        "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttempts",
        "RETRY_ATTEMPTS": "0",
    }
    _to_queue(
        parts[2],
        parts[1],
        parts[3],
        event,
        {name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()},
    )


def _to_queue(
    account: str,
    region: str,
    queue_name: str,
    event: Mapping[str, Any],
    attributes: Mapping[str, Any] | None = None,
) -> None:
    sqs_backends[account][region].send_message(
        queue_name=queue_name,
        message_body=json.dumps(event),
        message_attributes=dict(attributes or {}),
    )


# --- PutEvents ---------------------------------------------------------------------------


def _put_events(original: Any) -> Any:
    def put_events(self: EventsBackend, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = []
        local: list[dict[str, Any]] = []
        for entry in events:
            result = _refused_or_sent_elsewhere(self, entry)
            results.append(result)
            if result is None:
                local.append(entry)
        answered = iter(original(self, local) if local else [])
        return [result if result is not None else next(answered) for result in results]

    setattr(put_events, _INSTALLED_MARK, True)
    return put_events


def _refused_or_sent_elsewhere(
    backend: EventsBackend, entry: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The result of an entry that is refused or goes to another account's bus; None for
    an entry moto puts on a bus of the caller's own account."""
    source = str(entry.get("Source") or "")
    if source.startswith("aws."):
        return {
            "ErrorCode": "NotAuthorizedForSourceException",
            "ErrorMessage": f"Not authorized for the source {source}: only AWS emits aws. events",
        }
    bus = str(entry.get("EventBusName") or "")
    parts = _arn_parts(bus)
    if parts is None or parts[2] == backend.account_id:
        return None
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": entry.get("DetailType"),
        "source": source,
        "account": backend.account_id,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": backend.region_name,
        "resources": list(entry.get("Resources") or []),
        "detail": json.loads(str(entry.get("Detail") or "{}")),
    }
    why = receives_from_another_account(bus, backend.account_id, event)
    if why is not None:
        return {
            "ErrorCode": "AccessDeniedException",
            "ErrorMessage": f"{bus} does not admit account {backend.account_id}: {why}",
        }
    _, region, account, resource = parts
    _deliver_on(events_backends[account][region], resource.removeprefix("event-bus/"), event)
    return {"EventId": event["id"]}


# --- matching inside arrays of objects -----------------------------------------------------


def _flatten(node: Any, prefix: str = "", result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dotted paths to values, as moto's, but through arrays of objects too: the values a
    path reaches in several elements form one array, as EventBridge matches them."""
    if result is None:
        result = {}
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict) and value:
                _flatten(value, path, result)
            elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
                for item in value:
                    if isinstance(item, dict):
                        _flatten(item, path, result)
                    else:
                        _add(result, path, item)
            elif path in result:
                _add(result, path, value)
            else:
                result[path] = value
    return result


def _add(result: dict[str, Any], path: str, value: Any) -> None:
    present = result.get(path, [])
    values = present if isinstance(present, list) else [present]
    result[path] = values + (value if isinstance(value, list) else [value])


def _flatten_through_arrays(original: Any) -> Any:
    del original
    flatten = staticmethod(_flatten)
    setattr(flatten, _INSTALLED_MARK, True)
    return flatten


# --- installing ----------------------------------------------------------------------------


def _wrap(owner: type, name: str, wrapper_of: Any) -> None:
    present = owner.__dict__.get(name)
    if present is None:
        raise RuntimeError(f"moto's {owner.__name__} no longer defines {name}; revisit this")
    if getattr(present, _INSTALLED_MARK, False):
        return
    setattr(owner, name, wrapper_of(present))


def install() -> None:
    """Change the four behaviours above in moto's classes, for the rest of the process;
    calling it again is harmless. Call it before ``mock_aws()`` starts or a server serves."""
    with _LOCK:
        _wrap(Rule, "send_to_targets", _send_to_targets)
        _wrap(EventsBackend, "put_events", _put_events)
        _wrap(EventPattern, "_flatten_dict", _flatten_through_arrays)
