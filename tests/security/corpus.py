"""A corpus of hostile and malformed events, built by small factories over the samples.

Each case says what the function must do with it against the default scenario and the
bundled policy: its status, the error type and a fragment of the reason that names what is
wrong, and the exact grants (usually none). A case may first change the world (retag a
group), so that the tags EC2 holds *now* are the hostile part.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.events import (
    ACCOUNT,
    INVENTORY_GROUP,
    ORDERS_GROUP,
    PAYMENTS_GROUP,
    REGION,
    RETIRED_GROUP,
    STAGING_GROUP,
    create_tags,
    load_event,
    tag_change,
)

OTHER_ACCOUNT = "210987654321"
REPORTING_GROUP = "sg-01a2b3c4d5e6f7081"
ORDERS_GRANT = ("orders-cache-sg", "orders-app", ACCOUNT)
PAYMENTS_GRANT = ("payments-cache-sg", "payments-app", ACCOUNT)

Setup = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Case:
    """One hostile event and what must become of it."""

    name: str
    event: Any
    status: str
    error_type: str | None = None
    reason: str | None = None
    grants: frozenset[tuple[str, str, str]] = frozenset()
    # Decisions the summary must hold, as (group id, target, outcome).
    outcomes: frozenset[tuple[str, str | None, str]] | None = None
    setup: Setup | None = None
    # What the event names, for the oracle (None: the event names nothing it can read).
    group_ids: tuple[str, ...] | None = None
    tags: dict[str, str] = field(default_factory=dict)


def _malformed(name: str, event: Any, reason: str) -> Case:
    return Case(name, event, "dead-lettered", "MalformedEvent", reason)


def _ignored(name: str, event: Any, reason: str) -> Case:
    return Case(name, event, "ignored", reason=reason)


def _arn(group_id: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:aws:ec2:{region}:{account}:security-group/{group_id}"


def _without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    holder = changed
    for key in path[:-1]:
        holder = holder[key]
    del holder[path[-1]]
    return changed


def _with(event: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    holder = changed
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return changed


def retag(group_id: str, tags: dict[str, str], remove: tuple[str, ...] = ()) -> Setup:
    """Give a group these tags now (and drop `remove`), as someone with ec2:CreateTags could."""

    def apply(clients: dict[str, Any]) -> None:
        if remove:
            clients["ec2"].delete_tags(Resources=[group_id], Tags=[{"Key": k} for k in remove])
        if tags:
            clients["ec2"].create_tags(
                Resources=[group_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )

    return apply


def shape_cases() -> list[Case]:
    """Events whose shape is wrong: each is dead-lettered with the field it lacks."""
    good = tag_change()
    trail = create_tags([ORDERS_GROUP])
    return [
        _malformed("not-an-object-null", None, "event must be an object"),
        _malformed("not-an-object-list", [good], "event must be an object"),
        _malformed("not-an-object-string", "sg-0a1b2c3d4e5f60718", "event must be an object"),
        _malformed("empty-object", {}, "event.id"),
        _malformed("missing-id", _without(good, "id"), "event.id"),
        _malformed("id-not-a-string", _with(good, 12345, "id"), "event.id"),
        _malformed("id-empty", _with(good, "", "id"), "event.id"),
        _malformed("missing-source", _without(good, "source"), "event.source"),
        _malformed("source-not-a-string", _with(good, ["aws.tag"], "source"), "event.source"),
        _malformed("missing-detail-type", _without(good, "detail-type"), "event.detail-type"),
        _malformed("missing-account", _without(good, "account"), "event.account"),
        _malformed("account-a-number", _with(good, 123456789012, "account"), "event.account"),
        _malformed("missing-region", _without(good, "region"), "event.region"),
        _malformed("missing-detail", _without(good, "detail"), "event.detail"),
        _malformed("detail-a-list", _with(good, [1, 2], "detail"), "event.detail"),
        _malformed("detail-a-string", _with(good, "{}", "detail"), "event.detail"),
        _malformed("replay-name-not-a-string", _with(good, 7, "replay-name"), "replay-name"),
        _malformed("resources-missing", _without(good, "resources"), "event.resources"),
        _malformed(
            "resources-a-string", _with(good, _arn(ORDERS_GROUP), "resources"), "event.resources"
        ),
        _malformed("resources-empty", _with(good, [], "resources"), "names no security group"),
        _malformed(
            "resource-an-object",
            _with(good, [{"arn": _arn(ORDERS_GROUP)}], "resources"),
            "event.resources[0]",
        ),
        _malformed(
            "resource-an-instance",
            _with(
                good, [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0dc224bad2cb08740"], "resources"
            ),
            "not an EC2 security-group ARN",
        ),
        _malformed(
            "resource-path-traversal",
            _with(good, [_arn(ORDERS_GROUP) + "/../sg-0b2c3d4e5f6071829"], "resources"),
            "not an EC2 security-group ARN",
        ),
        _malformed(
            "resource-owner-not-12-digits",
            _with(good, [_arn(ORDERS_GROUP, account="12345678901")], "resources"),
            "not an EC2 security-group ARN",
        ),
        _malformed(
            "group-id-upper-case",
            _with(good, [_arn("sg-0A1B2C3D4E5F60718")], "resources"),
            "security group id",
        ),
        _malformed(
            "group-id-fullwidth-digit",
            _with(good, [_arn("sg-0a1b2c3d4e5f6071\uff18")], "resources"),
            "security group id",
        ),
        _malformed(
            "group-id-trailing-newline",
            _with(good, [_arn(ORDERS_GROUP + "\n")], "resources"),
            "not a security group id",
        ),
        _malformed(
            "tags-a-list",
            _with(good, ["cache-ingress", "orders"], "detail", "tags"),
            "event.detail.tags",
        ),
        _malformed("trail-event-name-missing", _without(trail, "detail", "eventName"), "eventName"),
        _malformed(
            "trail-user-identity-a-string",
            _with(trail, "alice", "detail", "userIdentity"),
            "userIdentity",
        ),
        _malformed(
            "trail-principal-not-a-string",
            _with(trail, ["arn:aws:iam::123456789012:root"], "detail", "userIdentity", "arn"),
            "userIdentity.arn",
        ),
        _malformed(
            "trail-items-not-a-list",
            _with(
                trail,
                {"resourceId": ORDERS_GROUP},
                "detail",
                "requestParameters",
                "resourcesSet",
                "items",
            ),
            "resourcesSet.items",
        ),
        _malformed(
            "trail-item-without-resource-id",
            _with(
                trail,
                [{"id": ORDERS_GROUP}],
                "detail",
                "requestParameters",
                "resourcesSet",
                "items",
            ),
            "resourceId",
        ),
        _malformed(
            "trail-resource-id-not-a-group-id",
            _with(
                trail,
                [{"resourceId": "sg-<script>"}],
                "detail",
                "requestParameters",
                "resourcesSet",
                "items",
            ),
            "not a security group id",
        ),
        _malformed(
            "trail-request-parameters-null",
            _with(trail, None, "detail", "requestParameters"),
            "requestParameters",
        ),
        _malformed(
            "create-group-response-null",
            _with(
                load_event("cloudtrail-create-security-group.json"),
                None,
                "detail",
                "responseElements",
            ),
            "responseElements",
        ),
        _malformed(
            "create-group-id-malformed",
            _with(
                load_event("cloudtrail-create-security-group.json"),
                "sg-zz",
                "detail",
                "responseElements",
                "groupId",
            ),
            "groupId",
        ),
        _malformed(
            "too-many-groups",
            _with(good, [_arn(f"sg-{index:017x}") for index in range(1001)], "resources"),
            "at most 1000",
        ),
    ]


def source_cases() -> list[Case]:
    """Sources, detail types and resources this function does not serve: ignored, logged."""
    good = tag_change()
    trail = create_tags([ORDERS_GROUP])
    return [
        _ignored(
            "custom-source-posing-as-tag-change",
            _with(good, "com.example.tag", "source"),
            "is not a security-group tag event",
        ),
        _ignored(
            "source-upper-case",
            _with(good, "AWS.TAG", "source"),
            "is not a security-group tag event",
        ),
        _ignored(
            "tag-source-with-trail-detail-type",
            _with(good, "AWS API Call via CloudTrail", "detail-type"),
            "is not a security-group tag event",
        ),
        _ignored(
            "detail-type-trailing-space",
            _with(good, "Tag Change on Resource ", "detail-type"),
            "is not a security-group tag event",
        ),
        _ignored(
            "instance-state-change",
            _with(good, "EC2 Instance State-change Notification", "detail-type"),
            "is not a security-group tag event",
        ),
        _ignored(
            "tag-change-on-an-instance",
            _with(good, "instance", "detail", "resource-type"),
            "not ec2/security-group",
        ),
        _ignored(
            "tag-change-on-rds", _with(good, "rds", "detail", "service"), "not ec2/security-group"
        ),
        _ignored(
            "trail-from-another-service",
            _with(trail, "ec2.amazonaws.com.example.org", "detail", "eventSource"),
            "does not tag groups",
        ),
        _ignored(
            "trail-other-call",
            _with(trail, "RunInstances", "detail", "eventName"),
            "does not tag groups",
        ),
        _ignored(
            "trail-failed-call",
            _with(trail, "Client.UnauthorizedOperation", "detail", "errorCode"),
            "changed nothing",
        ),
        _ignored(
            "trail-failed-call-huge-error-code",
            _with(trail, "E" * 100_000, "detail", "errorCode"),
            "changed nothing",
        ),
        _ignored(
            "trail-only-instances",
            create_tags([f"i-{index:017x}" for index in range(3000)]),
            "named no security group",
        ),
    ]


def scope_cases() -> list[Case]:
    """Events from elsewhere, and owners that are not account ids: nothing is granted."""
    return [
        Case(
            "cross-region-event",
            tag_change(region="us-west-2"),
            "completed",
            outcomes=frozenset({(ORDERS_GROUP, None, "denied")}),
            group_ids=(ORDERS_GROUP,),
        ),
        Case(
            "cross-account-event",
            tag_change(account=OTHER_ACCOUNT),
            "completed",
            outcomes=frozenset({(ORDERS_GROUP, None, "denied")}),
            group_ids=(ORDERS_GROUP,),
        ),
        Case(
            "account-not-12-digits",
            tag_change(account="12345678901"),
            "completed",
            outcomes=frozenset({(ORDERS_GROUP, None, "denied")}),
            group_ids=(ORDERS_GROUP,),
        ),
        Case(
            "account-access-key-id",
            tag_change(account="AKIAIOSFODNN7EXAMPLE"),
            "completed",
            outcomes=frozenset({(ORDERS_GROUP, None, "denied")}),
            group_ids=(ORDERS_GROUP,),
        ),
        Case(
            "cross-account-trail-principal",
            create_tags(
                [PAYMENTS_GROUP],
                principal="arn:aws:sts::210987654321:assumed-role/platform/mallory",
            ),
            "completed",
            outcomes=frozenset({(PAYMENTS_GROUP, "payments", "denied")}),
            group_ids=(PAYMENTS_GROUP,),
        ),
        Case(
            "principal-role-without-session",
            create_tags(
                [PAYMENTS_GROUP], principal="arn:aws:sts::123456789012:assumed-role/platform"
            ),
            "completed",
            outcomes=frozenset({(PAYMENTS_GROUP, "payments", "denied")}),
            group_ids=(PAYMENTS_GROUP,),
        ),
        Case(
            "principal-absent-on-trail",
            create_tags([PAYMENTS_GROUP], principal=None),
            "completed",
            outcomes=frozenset({(PAYMENTS_GROUP, "payments", "denied")}),
            group_ids=(PAYMENTS_GROUP,),
        ),
        # The ARN's region is not the event's: the group is read in this region, now, and
        # decided on what it is here.
        Case(
            "arn-region-differs-from-event",
            tag_change(resources=[_arn(ORDERS_GROUP, region="eu-west-1")]),
            "completed",
            grants=frozenset({ORDERS_GRANT}),
            outcomes=frozenset({(ORDERS_GROUP, "orders", "authorized")}),
            group_ids=(ORDERS_GROUP,),
        ),
    ]


def stale_and_forged_tag_cases() -> list[Case]:
    """What the event says about tags never decides; the group's tags now do."""
    return [
        Case(
            "event-claims-a-tag-the-group-lacks",
            tag_change(RETIRED_GROUP, {"cache-ingress": "orders", "env": "prod"}),
            "completed",
            outcomes=frozenset({(RETIRED_GROUP, None, "not-applicable")}),
            group_ids=(RETIRED_GROUP,),
        ),
        Case(
            "event-claims-env-prod-for-staging",
            tag_change(STAGING_GROUP, {"cache-ingress": "orders", "env": "prod"}),
            "completed",
            outcomes=frozenset({(STAGING_GROUP, "orders", "denied")}),
            group_ids=(STAGING_GROUP,),
        ),
        Case(
            "delete-tags-without-values-on-a-group-still-tagged",
            create_tags([ORDERS_GROUP], name="DeleteTags"),
            "completed",
            grants=frozenset({ORDERS_GRANT}),
            outcomes=frozenset({(ORDERS_GROUP, "orders", "authorized")}),
            group_ids=(ORDERS_GROUP,),
        ),
        Case(
            "delete-tags-without-values",
            load_event("cloudtrail-delete-tags.json"),
            "completed",
            outcomes=frozenset({(RETIRED_GROUP, None, "not-applicable")}),
            group_ids=(RETIRED_GROUP,),
        ),
        # A principal vouches only for what its own call set (README, `principal-binding`).
        Case(
            "delete-tags-by-an-allowed-principal-on-a-gated-group",
            create_tags(
                [PAYMENTS_GROUP],
                name="DeleteTags",
                requestParameters={
                    "resourcesSet": {"items": [{"resourceId": PAYMENTS_GROUP}]},
                    "tagSet": {"items": [{"key": "cache-ingress", "value": "legacy"}]},
                },
            ),
            "completed",
            outcomes=frozenset({(PAYMENTS_GROUP, "payments", "denied")}),
            group_ids=(PAYMENTS_GROUP,),
        ),
        Case(
            "create-tags-of-another-key-by-an-allowed-principal",
            create_tags(
                [PAYMENTS_GROUP],
                requestParameters={
                    "resourcesSet": {"items": [{"resourceId": PAYMENTS_GROUP}]},
                    "tagSet": {"items": [{"key": "owner", "value": "platform"}]},
                },
            ),
            "completed",
            outcomes=frozenset({(PAYMENTS_GROUP, "payments", "denied")}),
            group_ids=(PAYMENTS_GROUP,),
        ),
        Case(
            "tag-set-item-value-not-a-string",
            create_tags(
                [PAYMENTS_GROUP],
                requestParameters={
                    "resourcesSet": {"items": [{"resourceId": PAYMENTS_GROUP}]},
                    "tagSet": {"items": [{"key": "cache-ingress", "value": ["payments"]}]},
                },
            ),
            "dead-lettered",
            "MalformedEvent",
            "tagSet.items[0].value",
        ),
        Case(
            "tag-change-without-principal-for-a-principal-target",
            tag_change(PAYMENTS_GROUP, {"cache-ingress": "payments", "env": "prod"}),
            "completed",
            outcomes=frozenset({(PAYMENTS_GROUP, "payments", "denied")}),
            group_ids=(PAYMENTS_GROUP,),
        ),
    ]


def _tagged(
    name: str,
    tags: dict[str, str],
    outcomes: set[tuple[str | None, str]],
    *,
    remove: tuple[str, ...] = (),
    grants: frozenset[tuple[str, str, str]] = frozenset(),
) -> Case:
    return Case(
        name,
        tag_change(ORDERS_GROUP, event_id=f"e-{name}"),
        "completed",
        grants=grants,
        outcomes=frozenset((ORDERS_GROUP, target, outcome) for target, outcome in outcomes),
        setup=retag(ORDERS_GROUP, tags, remove),
        group_ids=(ORDERS_GROUP,),
        tags=tags,
    )


def tag_value_cases() -> list[Case]:
    """Odd characters, whitespace and empty items in the tags the group carries now."""
    orders = frozenset({ORDERS_GRANT})
    return [
        _tagged(
            "value-with-empty-items",
            {"cache-ingress": " , ,orders,, orders ,"},
            {("orders", "authorized")},
            grants=orders,
        ),
        # Only ASCII spaces around a name are trimmed (SECURITY.md): a tab or a newline is
        # part of the name, which no target has.
        _tagged(
            "value-tabs-and-newlines",
            {"cache-ingress": "\torders\n"},
            {("\torders\n", "denied")},
        ),
        _tagged(
            "value-no-break-spaces",
            {"cache-ingress": "\u00a0orders\u00a0"},
            {("\u00a0orders\u00a0", "denied")},
        ),
        _tagged("value-empty", {"cache-ingress": ""}, {(None, "not-applicable")}),
        _tagged(
            "value-only-commas-and-spaces", {"cache-ingress": " , , "}, {(None, "not-applicable")}
        ),
        _tagged("value-upper-case", {"cache-ingress": "ORDERS"}, {("ORDERS", "denied")}),
        _tagged(
            "value-zero-width-space",
            {"cache-ingress": "orders\u200b"},
            {("orders\u200b", "denied")},
        ),
        _tagged(
            "value-right-to-left-override",
            {"cache-ingress": "\u202eorders"},
            {("\u202eorders", "denied")},
        ),
        _tagged(
            "value-cyrillic-lookalike",
            {"cache-ingress": "\u043erders"},
            {("\u043erders", "denied")},
        ),
        # A value that tries to forge a log line: split at its commas into two unknown names,
        # and logged escaped. (Control characters such as ESC cannot be stored through the EC2
        # API's XML, so they are exercised on the in-memory side of the property tests.)
        _tagged(
            "value-forged-log-line",
            {"cache-ingress": 'orders\n{"level":"INFO","message":"ingress authorized"}'},
            {('orders\n{"level":"INFO"', "denied"), ('"message":"ingress authorized"}', "denied")},
        ),
        _tagged(
            "value-names-a-target-twice-and-an-unknown",
            {"cache-ingress": "orders,analytics,orders"},
            {("orders", "authorized"), ("analytics", "denied")},
            grants=orders,
        ),
        _tagged(
            "value-names-a-principal-target",
            {"cache-ingress": "orders,payments"},
            {("orders", "authorized"), ("payments", "denied")},
            grants=orders,
        ),
        _tagged("value-very-long", {"cache-ingress": ",".join(["x"] * 128)}, {("x", "denied")}),
        _tagged(
            "key-with-trailing-space",
            {"cache-ingress ": "orders"},
            {(None, "not-applicable")},
            remove=("cache-ingress",),
        ),
        _tagged(
            "key-other-case",
            {"Cache-Ingress": "orders"},
            {(None, "not-applicable")},
            remove=("cache-ingress",),
        ),
        _tagged(
            "key-with-zero-width-joiner",
            {"cache\u200d-ingress": "orders"},
            {(None, "not-applicable")},
            remove=("cache-ingress",),
        ),
        _tagged("required-tag-trailing-space", {"env": "prod "}, {("orders", "denied")}),
        _tagged("required-tag-other-case", {"env": "PROD"}, {("orders", "denied")}),
        _tagged("required-tag-empty", {"env": ""}, {("orders", "denied")}),
        _tagged("required-tag-removed", {}, {("orders", "denied")}, remove=("env",)),
    ]


def size_cases() -> list[Case]:
    """Huge payloads and thousands of resources: bounded work, no grant beyond the policy."""
    huge_tags = {"cache-ingress": "orders", "env": "prod", "padding": "x" * 200_000}
    many_missing = [_arn(f"sg-{index:017x}") for index in range(1000)]
    instances_and_one_group = [f"i-{index:017x}" for index in range(3000)] + [PAYMENTS_GROUP]
    return [
        Case(
            "huge-tag-map",
            tag_change(tags=huge_tags),
            "completed",
            grants=frozenset({ORDERS_GRANT}),
            outcomes=frozenset({(ORDERS_GROUP, "orders", "authorized")}),
            group_ids=(ORDERS_GROUP,),
        ),
        _malformed(
            "huge-malformed-event",
            _without(tag_change(tags={"padding": "y" * 240_000}), "resources"),
            "event.resources",
        ),
        Case(
            "thousand-missing-groups",
            tag_change(resources=many_missing),
            "completed",
            outcomes=frozenset(
                (f"sg-{index:017x}", None, "not-applicable") for index in range(1000)
            ),
            group_ids=tuple(f"sg-{index:017x}" for index in range(1000)),
        ),
        Case(
            "same-group-five-thousand-times",
            tag_change(resources=[_arn(ORDERS_GROUP)] * 5000),
            "completed",
            grants=frozenset({ORDERS_GRANT}),
            outcomes=frozenset({(ORDERS_GROUP, "orders", "authorized")}),
            group_ids=(ORDERS_GROUP,),
        ),
        Case(
            "three-thousand-instances-and-one-group",
            create_tags(instances_and_one_group),
            "completed",
            grants=frozenset({PAYMENTS_GRANT}),
            outcomes=frozenset({(PAYMENTS_GROUP, "payments", "authorized")}),
            group_ids=(PAYMENTS_GROUP,),
        ),
        Case(
            "every-seeded-group-at-once",
            tag_change(
                resources=[
                    _arn(g)
                    for g in (
                        ORDERS_GROUP,
                        STAGING_GROUP,
                        PAYMENTS_GROUP,
                        RETIRED_GROUP,
                        REPORTING_GROUP,
                    )
                ]
            ),
            "completed",
            grants=frozenset({ORDERS_GRANT, ("orders-cache-sg", "reporting-app", ACCOUNT)}),
            outcomes=frozenset(
                {
                    (ORDERS_GROUP, "orders", "authorized"),
                    (STAGING_GROUP, "orders", "denied"),
                    (PAYMENTS_GROUP, "payments", "denied"),
                    (RETIRED_GROUP, None, "not-applicable"),
                    (REPORTING_GROUP, "orders", "authorized"),
                    (REPORTING_GROUP, "analytics", "denied"),
                }
            ),
            group_ids=(ORDERS_GROUP, STAGING_GROUP, PAYMENTS_GROUP, RETIRED_GROUP, REPORTING_GROUP),
        ),
        Case(
            "deeply-nested-detail",
            _with(tag_change(), _nested(400), "detail", "tags", "nested"),
            "completed",
            grants=frozenset({ORDERS_GRANT}),
            outcomes=frozenset({(ORDERS_GROUP, "orders", "authorized")}),
            group_ids=(ORDERS_GROUP,),
        ),
        Case(
            "event-id-with-control-characters",
            tag_change(event_id='e-1\n{"message":"ingress authorized"}\x00'),
            "completed",
            grants=frozenset({ORDERS_GRANT}),
            outcomes=frozenset({(ORDERS_GROUP, "orders", "authorized")}),
            group_ids=(ORDERS_GROUP,),
        ),
        Case(
            "inventory-cache-group-missing",
            tag_change(INVENTORY_GROUP),
            "dead-lettered",
            error_type="GrantFailed",
            reason="inventory-cache-sg not found",
            grants=frozenset({("inventory-cache-sg", "inventory-app", ACCOUNT)}),
            outcomes=frozenset({(INVENTORY_GROUP, "inventory", "failed")}),
            group_ids=(INVENTORY_GROUP,),
        ),
    ]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return value


def all_cases() -> list[Case]:
    cases = [
        *shape_cases(),
        *source_cases(),
        *scope_cases(),
        *stale_and_forged_tag_cases(),
        *tag_value_cases(),
        *size_cases(),
    ]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "corpus case names must be unique"
    return cases
