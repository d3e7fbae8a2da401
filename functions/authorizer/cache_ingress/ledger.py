"""DynamoDB adapter: the grant ledger, the audit trail of every grant and the operators' holds.

One table, written only by `UpdateItem` (the functions have no `DeleteItem` on it: nothing is
ever removed; a revoked grant's entry is marked revoked, with when, why and by which event):

- a grant entry: partition `rule#<rule>` (the ingress as AWS identifies it,
  `ownership.rule_key`), sort key `entry#<event id>#<target>#<group id>`: one per (event,
  grant), so all the owners of a rule are one query and a retry finds its own entry;
- a hold: partition `hold#<group id>`, sort key `target#<target>`.

Two indexes: `live` (key `live_group`, set only while an entry is open: pending, in force,
unsure or not-owned and not yet reported) answers "which open entries does this group have"
and is what the sweep scans; `by-group` (key `group_id`, sorted by `recorded_at`) is every
entry of a group, for `cache-ingress grants --group`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.errors import AwsCallError
from cache_ingress.holds import Hold, HoldKey
from cache_ingress.models import Grant
from cache_ingress.ownership import (
    Entry,
    EntryStatus,
    GrantOrigin,
    Ownership,
    entry_key,
    rule_key,
)

LIVE_INDEX = "live"
GROUP_INDEX = "by-group"
RULE_PREFIX = "rule#"
HOLD_PREFIX = "hold#"
HOLD_SORT_PREFIX = "target#"
# BatchGetItem reads at most 100 keys a call; what it leaves unprocessed is asked again.
BATCH_KEYS_MAX = 100
BATCH_ATTEMPTS = 5
CLOSED = frozenset({EntryStatus.REVOKED, EntryStatus.RETIRED})

Clock = Callable[[], str]
Item = dict[str, Any]

# The table's shape, as CreateTable takes it: template.yaml declares the same (a test
# compares them) and the embedded AWS creates it from here.
TABLE_SHAPE: Item = {
    "AttributeDefinitions": [
        {"AttributeName": name, "AttributeType": "S"}
        for name in ("pk", "sk", "live_group", "group_id", "recorded_at")
    ],
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": LIVE_INDEX,
            "KeySchema": [
                {"AttributeName": "live_group", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
        {
            "IndexName": GROUP_INDEX,
            "KeySchema": [
                {"AttributeName": "group_id", "KeyType": "HASH"},
                {"AttributeName": "recorded_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ledger:
    """The ledger table. Every method raises AwsCallError (transient or permanent)."""

    def __init__(self, dynamodb: Any, table: str, *, clock: Clock = utc_now) -> None:
        self._dynamodb = dynamodb
        self.table = table
        self._clock = clock

    # --- grant entries -----------------------------------------------------------------

    def begin(self, grant: Grant, origin: GrantOrigin) -> Entry | None:
        """Write the entry `pending`, before the AWS call; return what it was before (None:
        this is the first attempt). One write, whether new or a retry of the same step.
        """
        now = self._clock()
        update = _Update(now, grant.event_id)
        update.set("kind", _s("grant"))
        update.set("status", _s(EntryStatus.PENDING))
        update.set("live_group", _s(grant.group_id))
        update.remove("found_there")
        update.set("path", _s(origin.path))
        update.set("policy_digest", _s(origin.policy_digest or "-"))
        update.set("revoke", {"BOOL": origin.revoke})
        update.set("updated_at", _s(now))
        update.set_if_absent("recorded_at", _s(now))
        for name, value in _grant_fields(grant).items():
            update.set(name, value)
        if origin.principal is not None:
            update.set("principal", _s(origin.principal))
        update.note(EntryStatus.PENDING, "attempt begins")
        response = self._call(
            "dynamodb:UpdateItem",
            self._dynamodb.update_item,
            TableName=self.table,
            Key=_entry_item_key(grant),
            ReturnValues="ALL_OLD",
            **update.request(),
        )
        previous = response.get("Attributes")
        return entry_from_item(previous) if previous else None

    def commit(
        self,
        grant: Grant,
        status: EntryStatus,
        *,
        note: str,
        ownership: Ownership | None = None,
        rule_id: str | None = None,
    ) -> None:
        """Resolve the entry after the AWS call: in force (owned), not owned, or unsure."""
        now = self._clock()
        update = _Update(now, grant.event_id)
        update.set("status", _s(status))
        update.set("updated_at", _s(now))
        if ownership is not None:
            update.set("ownership", _s(ownership))
        else:
            update.remove("ownership")
        if rule_id is not None:
            update.set("rule_id", _s(rule_id))
        update.note(status, note)
        self._call(
            "dynamodb:UpdateItem",
            self._dynamodb.update_item,
            TableName=self.table,
            Key=_entry_item_key(grant),
            **update.request(),
        )

    def found_there(self, grant: Grant) -> None:
        """Note on a pending entry that its call found the grant there already."""
        now = self._clock()
        update = _Update(now, grant.event_id)
        update.set("found_there", {"BOOL": True})
        update.set("updated_at", _s(now))
        update.note(EntryStatus.PENDING, "the grant was there already; whose, still to learn")
        self._call(
            "dynamodb:UpdateItem",
            self._dynamodb.update_item,
            TableName=self.table,
            Key=_entry_item_key(grant),
            **update.request(),
        )

    def close(
        self,
        entry: Entry,
        status: EntryStatus,
        *,
        reason: str,
        by: str,
        rule: str | None = None,
        expected: Sequence[EntryStatus] = (EntryStatus.IN_FORCE,),
    ) -> bool:
        """Mark an entry revoked, retired or (for a not-owned one) reported, and take it out
        of the `live` index; False if its status is no longer one of `expected` (another
        execution changed it first)."""
        now = self._clock()
        update = _Update(now, by)
        update.set("status", _s(status))
        update.set("updated_at", _s(now))
        update.set("closed_at", _s(now))
        update.set("closed_by", _s(by))
        update.set("closed_reason", _s(reason[:1000]))
        if rule is not None:
            update.set("close_rule", _s(rule))
        update.remove("live_group")
        update.note(status, reason[:1000])
        update.only_if_in("status", [_s(expected_status) for expected_status in expected])
        return self._conditional(
            TableName=self.table,
            Key={"pk": _s(RULE_PREFIX + entry.rule), "sk": _s(entry.key)},
            **update.request(),
        )

    def owners(self, rule: str) -> list[Entry]:
        """Every entry of one rule (consistent): who asked for it, in what state."""
        return [
            entry_from_item(item)
            for item in self._query(
                KeyConditionExpression="#pk = :pk",
                ExpressionAttributeNames={"#pk": "pk"},
                ExpressionAttributeValues={":pk": _s(RULE_PREFIX + rule)},
                ConsistentRead=True,
            )
        ]

    def live(self, group_id: str) -> list[Entry]:
        """The open entries of one group (the `live` index)."""
        return [
            entry_from_item(item)
            for item in self._query(
                IndexName=LIVE_INDEX,
                KeyConditionExpression="#live = :group",
                ExpressionAttributeNames={"#live": "live_group"},
                ExpressionAttributeValues={":group": _s(group_id)},
            )
        ]

    def scan_live(
        self, start: Mapping[str, Any] | None = None, *, limit: int = 1000
    ) -> tuple[list[Entry], dict[str, Any] | None]:
        """One page of every open entry, for the sweep; and where the next page starts."""
        request: Item = {"TableName": self.table, "IndexName": LIVE_INDEX, "Limit": limit}
        if start:
            request["ExclusiveStartKey"] = dict(start)
        page = self._call("dynamodb:Scan", self._dynamodb.scan, **request)
        entries = [entry_from_item(item) for item in page.get("Items", [])]
        return entries, page.get("LastEvaluatedKey") or None

    def entries(
        self,
        *,
        group_id: str | None = None,
        since: str | None = None,
        on_page: Callable[[int], None] | None = None,
    ) -> Iterator[Entry]:
        """Every entry (of one group, recorded since a time), for the operator's listing."""
        names = {"#recorded": "recorded_at"}
        if group_id is not None:
            names["#group"] = "group_id"
            condition = "#group = :group"
            values: Item = {":group": _s(group_id)}
            if since is not None:
                condition += " AND #recorded >= :since"
                values[":since"] = _s(since)
            else:
                del names["#recorded"]
            items = self._query(
                IndexName=GROUP_INDEX,
                KeyConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                on_page=on_page,
            )
        else:
            names["#kind"] = "kind"
            values = {":grant": _s("grant")}
            condition = "#kind = :grant"
            if since is not None:
                condition += " AND #recorded >= :since"
                values[":since"] = _s(since)
            else:
                del names["#recorded"]
            items = self._scan(
                FilterExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                on_page=on_page,
            )
        for item in items:
            yield entry_from_item(item)

    # --- holds ---------------------------------------------------------------------------

    def holds_for(self, pairs: Sequence[HoldKey]) -> dict[HoldKey, Hold]:
        """The holds standing on these pairs (one consistent BatchGetItem per 100 pairs)."""
        found: dict[HoldKey, Hold] = {}
        unique = list(dict.fromkeys(pairs))
        for start in range(0, len(unique), BATCH_KEYS_MAX):
            keys = [_hold_key(group, target) for group, target in unique[start : start + 100]]
            for item in self._batch_get(keys):
                hold = hold_from_item(item)
                if hold is not None:
                    found[hold.key] = hold
        return found

    def hold(self, group_id: str, target: str, *, reason: str, by: str) -> Hold | None:
        """Place (or renew) a hold; returns the hold that stood before, if one did."""
        now = self._clock()
        update = _Update(now, by)
        update.set("kind", _s("hold"))
        update.set("state", _s("held"))
        update.set("held_group", _s(group_id))
        update.set("held_target", _s(target))
        update.set("reason", _s(reason))
        update.set("held_by", _s(by))
        update.set("held_at", _s(now))
        update.set("updated_at", _s(now))
        for name in ("released_by", "released_at", "release_reason"):
            update.remove(name)
        update.note("held", reason)
        response = self._call(
            "dynamodb:UpdateItem",
            self._dynamodb.update_item,
            TableName=self.table,
            Key=_hold_key(group_id, target),
            ReturnValues="ALL_OLD",
            **update.request(),
        )
        return hold_from_item(response.get("Attributes") or {})

    def release(self, group_id: str, target: str, *, by: str, reason: str | None) -> Hold | None:
        """End a standing hold; returns it, or None if no hold stood on the pair."""
        now = self._clock()
        update = _Update(now, by)
        update.set("state", _s("released"))
        update.set("released_by", _s(by))
        update.set("released_at", _s(now))
        update.set("updated_at", _s(now))
        if reason:
            update.set("release_reason", _s(reason))
        update.note("released", reason or "")
        update.only_if_in("state", [_s("held")])
        previous: list[Item] = []
        released = self._conditional(
            TableName=self.table,
            Key=_hold_key(group_id, target),
            ReturnValues="ALL_OLD",
            on_success=previous.append,
            **update.request(),
        )
        return hold_from_item(previous[0].get("Attributes") or {}) if released else None

    def holds(self, group_id: str | None = None) -> list[Hold]:
        """The standing holds (of one group), for the operator's listing."""
        if group_id is not None:
            items = self._query(
                KeyConditionExpression="#pk = :pk",
                ExpressionAttributeNames={"#pk": "pk"},
                ExpressionAttributeValues={":pk": _s(HOLD_PREFIX + group_id)},
                ConsistentRead=True,
            )
        else:
            items = self._scan(
                FilterExpression="#kind = :hold",
                ExpressionAttributeNames={"#kind": "kind"},
                ExpressionAttributeValues={":hold": _s("hold")},
            )
        return [hold for hold in map(hold_from_item, items) if hold is not None]

    # --- plumbing -----------------------------------------------------------------------

    def _query(self, on_page: Callable[[int], None] | None = None, **request: Any) -> list[Item]:
        return list(self._pages("dynamodb:Query", self._dynamodb.query, request, on_page))

    def _scan(self, on_page: Callable[[int], None] | None = None, **request: Any) -> list[Item]:
        return list(self._pages("dynamodb:Scan", self._dynamodb.scan, request, on_page))

    def _pages(
        self,
        action: str,
        call: Callable[..., Any],
        request: Item,
        on_page: Callable[[int], None] | None,
    ) -> Iterator[Item]:
        request = {"TableName": self.table, **request}
        while True:
            page = self._call(action, call, **request)
            items = page.get("Items", [])
            if on_page is not None:
                on_page(len(items))
            yield from items
            if not page.get("LastEvaluatedKey"):
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _batch_get(self, keys: list[Item]) -> list[Item]:
        items: list[Item] = []
        request = {self.table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(BATCH_ATTEMPTS):
            response = self._call(
                "dynamodb:BatchGetItem", self._dynamodb.batch_get_item, RequestItems=request
            )
            items.extend(response.get("Responses", {}).get(self.table, []))
            unprocessed = response.get("UnprocessedKeys") or {}
            if not unprocessed:
                return items
            request = unprocessed
            time.sleep(0.05 * 2**attempt)
        raise AwsCallError(
            "dynamodb:BatchGetItem left holds unread after "
            f"{BATCH_ATTEMPTS} attempts (throughput exceeded)",
            code="UnprocessedKeys",
            transient=True,
        )

    def _conditional(self, on_success: Callable[[Any], None] | None = None, **request: Any) -> bool:
        """An UpdateItem with a condition: False when the condition does not hold."""
        try:
            response = self._dynamodb.update_item(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise aws_call_error(exc, "dynamodb:UpdateItem") from exc
        except BotoCoreError as exc:
            raise aws_call_error(exc, "dynamodb:UpdateItem") from exc
        if on_success is not None:
            on_success(response)
        return True

    @staticmethod
    def _call(action: str, call: Callable[..., Any], **request: Any) -> Any:
        try:
            return call(**request)
        except (ClientError, BotoCoreError) as exc:
            raise aws_call_error(exc, action) from exc


class _Update:
    """One UpdateItem expression. Every attribute goes through a name placeholder: many of
    the ledger's words (status, path, state, reason, owner, ...) are DynamoDB reserved words.
    Each write also appends a note to the item's `history`, so an item carries its own trail.
    """

    def __init__(self, at: str, by: str) -> None:
        self._at = at
        self._by = by
        self._names: dict[str, str] = {}
        self._values: Item = {}
        self._sets: list[str] = []
        self._removes: list[str] = []
        self._condition: str | None = None

    def _name(self, attribute: str) -> str:
        placeholder = f"#{attribute}"
        self._names[placeholder] = attribute
        return placeholder

    def set(self, attribute: str, value: Any) -> None:
        self._values[f":{attribute}"] = value
        self._sets.append(f"{self._name(attribute)} = :{attribute}")

    def set_if_absent(self, attribute: str, value: Any) -> None:
        name = self._name(attribute)
        self._values[f":{attribute}"] = value
        self._sets.append(f"{name} = if_not_exists({name}, :{attribute})")

    def remove(self, attribute: str) -> None:
        self._removes.append(self._name(attribute))

    def note(self, status: str, note: str) -> None:
        history = self._name("history")
        self._values[":no_history"] = {"L": []}
        self._values[":history_note"] = {"L": [_note(self._at, status, self._by, note)]}
        self._sets.append(
            f"{history} = list_append(if_not_exists({history}, :no_history), :history_note)"
        )

    def only_if_in(self, attribute: str, values: Sequence[Any]) -> None:
        placeholders = []
        for index, value in enumerate(values):
            self._values[f":allowed{index}"] = value
            placeholders.append(f":allowed{index}")
        self._condition = f"{self._name(attribute)} IN ({', '.join(placeholders)})"

    def request(self) -> Item:
        expression = "SET " + ", ".join(self._sets)
        if self._removes:
            expression += " REMOVE " + ", ".join(self._removes)
        request: Item = {
            "UpdateExpression": expression,
            "ExpressionAttributeNames": self._names,
            "ExpressionAttributeValues": self._values,
        }
        if self._condition is not None:
            request["ConditionExpression"] = self._condition
        return request


# --- items --------------------------------------------------------------------------------


def _s(value: object) -> dict[str, str]:
    return {"S": str(value)}


def _note(at: str, status: str, by: str, note: str) -> dict[str, Any]:
    return {"M": {"at": _s(at), "status": _s(status), "by": _s(by), "note": _s(note or "-")}}


def _entry_item_key(grant: Grant) -> Item:
    return {"pk": _s(RULE_PREFIX + rule_key(grant)), "sk": _s(entry_key(grant))}


def _hold_key(group_id: str, target: str) -> Item:
    return {"pk": _s(HOLD_PREFIX + group_id), "sk": _s(HOLD_SORT_PREFIX + target)}


def _grant_fields(grant: Grant) -> Item:
    fields: Item = {
        "rule": _s(rule_key(grant)),
        "event_id": _s(grant.event_id),
        "target": _s(grant.target),
        "group_id": _s(grant.group_id),
        "group_name": _s(grant.group_name),
        "owner_id": _s(grant.owner_id),
        "cross_account": {"BOOL": grant.cross_account},
    }
    if grant.cache_security_group is not None:
        fields["cache_security_group"] = _s(grant.cache_security_group)
    if grant.vpc_security_group is not None:
        fields["vpc_security_group"] = _s(grant.vpc_security_group)
    if grant.port is not None:
        fields["port"] = {"N": str(grant.port)}
    if grant.cache is not None:
        fields["cache"] = _s(grant.cache)
    if grant.account is not None:
        # A member account's grant (docs/multi-account.md): its group is read there.
        fields["account"] = _s(grant.account)
    return fields


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if isinstance(value, Mapping) and "S" in value else None


def entry_from_item(item: Mapping[str, Any]) -> Entry:
    """An entry as the table holds it; raises KeyError/ValueError for a malformed item."""
    port = item.get("port")
    grant = Grant(
        event_id=str(_text(item, "event_id")),
        target=str(_text(item, "target")),
        cache_security_group=_text(item, "cache_security_group"),
        group_id=str(_text(item, "group_id")),
        group_name=str(_text(item, "group_name")),
        owner_id=str(_text(item, "owner_id")),
        vpc_security_group=_text(item, "vpc_security_group"),
        port=int(port["N"]) if isinstance(port, Mapping) else None,
        cache=_text(item, "cache"),
        cross_account=bool(item.get("cross_account", {}).get("BOOL", False)),
        account=_text(item, "account"),
    )
    ownership = _text(item, "ownership")
    return Entry(
        rule=str(_text(item, "rule")),
        grant=grant,
        status=EntryStatus(str(_text(item, "status"))),
        path=_text(item, "path") or "event",
        recorded_at=_text(item, "recorded_at") or "",
        ownership=Ownership(ownership) if ownership else None,
        rule_id=_text(item, "rule_id"),
        principal=_text(item, "principal"),
        policy_digest=_text(item, "policy_digest"),
        revoke=bool(item.get("revoke", {}).get("BOOL", False)),
        updated_at=_text(item, "updated_at"),
        closed_at=_text(item, "closed_at"),
        closed_by=_text(item, "closed_by"),
        closed_reason=_text(item, "closed_reason"),
        found_there=bool(item.get("found_there", {}).get("BOOL", False)),
    )


def hold_from_item(item: Mapping[str, Any]) -> Hold | None:
    """A standing hold, or None (no item, or a released one)."""
    if _text(item, "state") != "held":
        return None
    return Hold(
        group_id=str(_text(item, "held_group")),
        target=str(_text(item, "held_target")),
        reason=_text(item, "reason") or "",
        held_by=_text(item, "held_by"),
        held_at=_text(item, "held_at"),
    )
