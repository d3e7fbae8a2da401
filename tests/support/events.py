"""Sample events: loaded from events/ through one helper, checked against intake first."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cache_ingress.errors import MalformedEventError
from cache_ingress.intake import parse_event

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"
NOT_EVENTS = frozenset({"env.json"})

ACCOUNT = "123456789012"
REGION = "us-east-1"
ORDERS_GROUP = "sg-0a1b2c3d4e5f60718"
STAGING_GROUP = "sg-0b2c3d4e5f6071829"
PAYMENTS_GROUP = "sg-0c3d4e5f607182930"
RETIRED_GROUP = "sg-0e5f6071829304152"
INVENTORY_GROUP = "sg-0f60718293041526a"
PLATFORM_PRINCIPAL = "arn:aws:sts::123456789012:assumed-role/platform/alice"


def event_names() -> list[str]:
    return sorted(p.name for p in EVENTS_DIR.glob("*.json") if p.name not in NOT_EVENTS)


@cache
def catalog() -> dict[str, Any]:
    loaded = yaml.safe_load((EVENTS_DIR / "catalog.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of a sample event, checked against the intake model before use."""
    event = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    expected = catalog()[name]
    if expected.get("error_type") == "MalformedEvent":
        try:
            parse_event(event)
        except MalformedEventError:
            return event
        raise AssertionError(f"{name} is catalogued as malformed but intake accepts it")
    parse_event(event)
    return event


def tag_change(
    group_id: str = ORDERS_GROUP,
    tags: dict[str, str] | None = None,
    *,
    event_id: str = "e-tag-0001",
    **overrides: Any,
) -> dict[str, Any]:
    event = copy.deepcopy(load_event("tag-change-authorized.json"))
    event["id"] = event_id
    event["resources"] = [f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{group_id}"]
    event["detail"]["tags"] = (
        tags if tags is not None else {"cache-ingress": "orders", "env": "prod"}
    )
    event.update(overrides)
    return event


def create_tags(
    resource_ids: list[str],
    *,
    event_id: str = "e-trail-0001",
    principal: str | None = PLATFORM_PRINCIPAL,
    name: str = "CreateTags",
    **detail_overrides: Any,
) -> dict[str, Any]:
    event = copy.deepcopy(load_event("cloudtrail-create-tags.json"))
    event["id"] = event_id
    detail = event["detail"]
    detail["eventName"] = name
    detail["requestParameters"]["resourcesSet"]["items"] = [{"resourceId": r} for r in resource_ids]
    if principal is None:
        del detail["userIdentity"]["arn"]
    else:
        detail["userIdentity"]["arn"] = principal
    detail.update(detail_overrides)
    return event


def delete_security_group(group_id: str, *, event_id: str = "e-delete-0001") -> dict[str, Any]:
    """CloudTrail's DeleteSecurityGroup of one group, as the stack's rule delivers it."""
    event = copy.deepcopy(load_event("cloudtrail-delete-security-group.json"))
    event["id"] = event_id
    event["detail"]["requestParameters"] = {"groupId": group_id}
    event["detail"]["eventID"] = f"{event_id}-trail"
    return event
