"""Event intake: turn an EventBridge event into the security groups to look at, or a reason.

Only the shape of the event is read here. What the groups carry *now* is read from EC2
later, so nothing in the event (tags, values) ever grants by itself. The tags a CloudTrail
call set are read for one purpose: a target that requires a principal is granted only when
this very call, by that principal, named it (the `principal-binding` rule), and the group's
tag still names it now.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cache_ingress.errors import MalformedEventError
from cache_ingress.models import TagRequest, TrailCall

TAG_CHANGE = ("aws.tag", "Tag Change on Resource")
CLOUDTRAIL = ("aws.ec2", "AWS API Call via CloudTrail")
# A deleted group only matters to revocation: the group can grant nothing any more.
DELETE_GROUP = "DeleteSecurityGroup"
CLOUDTRAIL_CALLS = frozenset({"CreateTags", "DeleteTags", "CreateSecurityGroup", DELETE_GROUP})
MAX_GROUPS_PER_EVENT = 1000

_GROUP_ID = re.compile(r"sg-[0-9a-f]{8,17}")
_GROUP_ARN = re.compile(
    r"arn:aws[a-z-]*:ec2:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):security-group/(?P<id>[^/]+)"
)


# A direct invocation by the operator's replay tool: {"cache-ingress-replay": {"event": …}}.
# EventBridge rules never deliver this shape, and only principals allowed to invoke the
# function can send it; it only changes where a permanent failure is reported.
REPLAY_KEY = "cache-ingress-replay"


def unwrap_replay(payload: object) -> tuple[object, bool]:
    """(the event, whether it came wrapped by the replay tool)."""
    if isinstance(payload, Mapping) and set(payload) == {REPLAY_KEY}:
        wrapper = payload[REPLAY_KEY]
        if isinstance(wrapper, Mapping) and "event" in wrapper:
            return wrapper["event"], True
    return payload, False


def replay_payload(event: object) -> dict[str, Any]:
    """The payload the replay tool sends to the deployed function for one event."""
    return {REPLAY_KEY: {"event": event}}


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed event that asks nothing of this function, and why."""

    event_id: str
    reason: str
    source: str | None = None
    detail_type: str | None = None


def parse_event(event: object) -> TagRequest | Ignored:
    """Read an EventBridge event. Raises MalformedEventError naming what is wrong."""
    envelope = _mapping(event, "event")
    event_id = _string(envelope, "id", "event")
    source = _string(envelope, "source", "event")
    detail_type = _string(envelope, "detail-type", "event")
    account = _string(envelope, "account", "event")
    region = _string(envelope, "region", "event")
    detail = _mapping(envelope.get("detail"), "event.detail")
    replay_name = _optional_string(envelope, "replay-name", "event")
    common = {
        "event_id": event_id,
        "source": source,
        "detail_type": detail_type,
        "account": account,
        "region": region,
        "replay_name": replay_name,
        # An archive replay: the principal is only the message's word until verified.
        "replayed": replay_name is not None,
    }
    if (source, detail_type) == TAG_CHANGE:
        return _tag_change(envelope, detail, common)
    if (source, detail_type) == CLOUDTRAIL:
        return _cloudtrail(detail, common)
    return Ignored(
        event_id,
        f"source {source!r} with detail-type {detail_type!r} is not a security-group tag event",
        source,
        detail_type,
    )


def _tag_change(
    envelope: Mapping[str, Any], detail: Mapping[str, Any], common: dict[str, Any]
) -> TagRequest | Ignored:
    service = _optional_string(detail, "service", "event.detail")
    resource_type = _optional_string(detail, "resource-type", "event.detail")
    if (service, resource_type) != ("ec2", "security-group"):
        return _ignored(common, f"tag change on {service}/{resource_type}, not ec2/security-group")
    if "tags" in detail:
        _mapping(detail["tags"], "event.detail.tags")
    resources = _list(envelope.get("resources"), "event.resources")
    group_ids = []
    accounts: list[tuple[str, str | None]] = []
    for index, resource in enumerate(resources):
        where = f"event.resources[{index}]"
        if not isinstance(resource, str):
            raise MalformedEventError(f"{where} must be a string ARN")
        match = _GROUP_ARN.fullmatch(resource)
        if match is None:
            raise MalformedEventError(
                f"{where} is not an EC2 security-group ARN: {resource[:120]!r}"
            )
        group_ids.append(_group_id(match["id"], where))
        accounts.append((f"the ARN of {match['id'][:24]}", match["account"]))
    if not group_ids:
        raise MalformedEventError("event.resources names no security group")
    return TagRequest(
        group_ids=_unique(group_ids), other_accounts=_others(accounts, common), **common
    )


def _cloudtrail(detail: Mapping[str, Any], common: dict[str, Any]) -> TagRequest | Ignored:
    event_source = _optional_string(detail, "eventSource", "event.detail")
    event_name = _string(detail, "eventName", "event.detail")
    if event_source != "ec2.amazonaws.com" or event_name not in CLOUDTRAIL_CALLS:
        return _ignored(common, f"CloudTrail call {event_source}:{event_name} does not tag groups")
    call = read_trail_call(detail, "event.detail")
    if call.error_code is not None:
        return _ignored(
            common, f"{event_name} failed with {call.error_code[:100]}; it changed nothing"
        )
    if not call.group_ids:
        return _ignored(common, f"{event_name} named no security group")
    claimed = (
        ("CloudTrail's recipientAccountId", call.account),
        ("CloudTrail's userIdentity.accountId", call.caller_account),
    )
    return TagRequest(
        group_ids=_unique(list(call.group_ids)),
        principal=call.principal,
        event_name=event_name,
        trail=call,
        other_accounts=_others(claimed, common),
        **common,
    )


def read_trail_call(detail: Mapping[str, Any], where: str) -> TrailCall:
    """Read a CloudTrail record of CreateTags, DeleteTags or CreateSecurityGroup.

    The same reader serves the event's `detail` and CloudTrail's own copy of the record
    (LookupEvents), so a replayed event is compared with what CloudTrail holds field by
    field. A failed call (`errorCode`) changed nothing: only its name and error are read.
    Raises MalformedEventError naming the field.
    """
    event_name = _string(detail, "eventName", where)
    principal = caller_account = None
    if "userIdentity" in detail:
        identity = _mapping(detail["userIdentity"], f"{where}.userIdentity")
        principal = _optional_string(identity, "arn", f"{where}.userIdentity")
        caller_account = _optional_string(identity, "accountId", f"{where}.userIdentity")
    call = TrailCall(
        event_id=_optional_string(detail, "eventID", where),
        event_name=event_name,
        principal=principal,
        group_ids=(),
        event_source=_optional_string(detail, "eventSource", where),
        region=_optional_string(detail, "awsRegion", where),
        account=_optional_string(detail, "recipientAccountId", where),
        event_time=_optional_string(detail, "eventTime", where),
        caller_account=caller_account,
    )
    if detail.get("errorCode") is not None:
        return replace(call, error_code=str(detail["errorCode"]))
    if event_name == DELETE_GROUP:
        return replace(call, group_ids=_deleted_group(detail, where))
    if event_name == "CreateSecurityGroup":
        response = _mapping(detail.get("responseElements"), f"{where}.responseElements")
        group_where = f"{where}.responseElements.groupId"
        group_ids: tuple[str, ...] = (
            _group_id(_string(response, "groupId", f"{where}.responseElements"), group_where),
        )
        tags = _created_group_tags(detail, where)
    else:
        group_ids = tuple(_tagged_group_ids(detail, where))
        tags = _tag_set(detail, where)
    return replace(call, group_ids=group_ids, request_tags=tags)


def _deleted_group(detail: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """DeleteSecurityGroup names its group by id (or, for a default VPC's group, by name
    alone, which names no id: the sweep finds what such a deletion leaves)."""
    where = f"{where}.requestParameters"
    parameters = _mapping(detail.get("requestParameters"), where)
    group_id = _optional_string(parameters, "groupId", where)
    return (_group_id(group_id, f"{where}.groupId"),) if group_id else ()


def _tagged_group_ids(detail: Mapping[str, Any], where: str) -> Iterable[str]:
    where = f"{where}.requestParameters"
    parameters = _mapping(detail.get("requestParameters"), where)
    resources = _mapping(parameters.get("resourcesSet"), f"{where}.resourcesSet")
    items = _list(resources.get("items"), f"{where}.resourcesSet.items")
    for index, item in enumerate(items):
        item_where = f"{where}.resourcesSet.items[{index}]"
        resource_id = _string(_mapping(item, item_where), "resourceId", item_where)
        if resource_id.startswith("sg-"):
            yield _group_id(resource_id, f"{item_where}.resourceId")


def _tag_set(detail: Mapping[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """CreateTags' and DeleteTags' `tagSet`; absent means the call named no tag."""
    where = f"{where}.requestParameters"
    parameters = _mapping(detail.get("requestParameters"), where)
    if parameters.get("tagSet") is None:
        return ()
    tag_set = _mapping(parameters["tagSet"], f"{where}.tagSet")
    return _tags(tag_set.get("items"), f"{where}.tagSet.items")


def _created_group_tags(detail: Mapping[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """The tags CreateSecurityGroup gave the new group (its `security-group` specifications)."""
    where = f"{where}.requestParameters"
    if detail.get("requestParameters") is None:
        return ()
    parameters = _mapping(detail["requestParameters"], where)
    if parameters.get("tagSpecificationSet") is None:
        return ()
    specifications = _mapping(parameters["tagSpecificationSet"], f"{where}.tagSpecificationSet")
    items = _list(specifications.get("items"), f"{where}.tagSpecificationSet.items")
    tags: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        item_where = f"{where}.tagSpecificationSet.items[{index}]"
        specification = _mapping(item, item_where)
        if _optional_string(specification, "resourceType", item_where) == "security-group":
            tags.extend(_tags(specification.get("tags"), f"{item_where}.tags"))
    return tuple(tags)


def _tags(items: object, where: str) -> tuple[tuple[str, str], ...]:
    tags = []
    for index, item in enumerate(_list(items, where)):
        item_where = f"{where}[{index}]"
        tag = _mapping(item, item_where)
        value = _optional_string(tag, "value", item_where)
        tags.append((_string(tag, "key", item_where), value or ""))
    return tuple(tags)


def _others(
    claimed: Iterable[tuple[str, str | None]], common: Mapping[str, Any]
) -> tuple[tuple[str, str], ...]:
    """Where the event names an account other than its own `account` (rule
    account-agreement), in order, once each."""
    own = common["account"]
    return tuple(
        dict.fromkeys((where, account) for where, account in claimed if account and account != own)
    )


def _group_id(value: str, where: str) -> str:
    if not _GROUP_ID.fullmatch(value):
        raise MalformedEventError(f"{where} is not a security group id: {value[:64]!r}")
    return value


def _unique(group_ids: list[str]) -> tuple[str, ...]:
    unique = tuple(dict.fromkeys(group_ids))
    if len(unique) > MAX_GROUPS_PER_EVENT:
        raise MalformedEventError(
            f"event names {len(unique)} security groups; at most {MAX_GROUPS_PER_EVENT} are handled"
        )
    return unique


def _ignored(common: Mapping[str, Any], reason: str) -> Ignored:
    return Ignored(common["event_id"], reason, common["source"], common["detail_type"])


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedEventError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedEventError(f"{where} must be a list, got {type(value).__name__}")
    return value


def _string(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedEventError(f"{where}.{key} must be a non-empty string")
    return value


def _optional_string(mapping: Mapping[str, Any], key: str, where: str) -> str | None:
    value = mapping.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedEventError(f"{where}.{key} must be a string")
    return value
