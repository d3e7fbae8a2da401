"""The grant ledger's crash points: every place a grant or a revocation can stop between the
AWS call and its ledger entry, and what the retry then finds (SECURITY.md, "Crash points of
a grant and of a revocation").

The event: one security group tagged `orders, sessions-admin`: a classic grant into
orders-cache-sg and a VPC rule on sessions-cache's security group. A grant's calls, in
order: the idempotency record (PutItem), the ledger entry `pending` (UpdateItem), the AWS
call, the entry resolved (UpdateItem), the record completed (UpdateItem). Each cell injects
one fault at one step, or stops the invocation there as a Lambda timeout does, then delivers
the event again (Lambda's retry, or the operator's replay of a dead-lettered event) to a new
execution environment, and checks three things: no grant without its entry, no entry twice,
and an entry that claims a grant as the function's only when the function surely made it.

The first delivery runs with 1 ms left, standing for "Lambda's retry comes after this
invocation's deadline", so an in-progress record it leaves has expired by the retry.

Set LEDGER_FAULTS_REPORT=path to have the table written there as Markdown.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cache_ingress.authorizer import Authorizer
from cache_ingress.errors import TransientFailureError
from cache_ingress.ledger import TABLE_SHAPE, Ledger
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from tests.integration.test_vpc_emulation import CACHE_GROUP, REDIS_PORT
from tests.security.harness import Fresh, SharedWorld
from tests.security.test_fault_matrix import LambdaTimeout, StepFault
from tests.support.events import tag_change
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

GROUP_NAME = "ledger-faults-app"
ORDERS = "orders-cache-sg"
POLICY = f"""
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
    revoke: true
    allow: {{required_tags: {{env: prod}}}}
  sessions-admin:
    vpc_security_group: {{group_id: {CACHE_GROUP}, port: {REDIS_PORT}}}
    revoke: true
    allow: {{required_tags: {{env: prod}}}}
"""
KINDS = ("throttling", "server-error", "timeout", "access-denied")

COMPLETED = "all decisions made"
DEAD_LETTERED = "in the DLQ"
RAISED = "raised for retry"
TIMED_OUT = "timed out (Lambda retries it)"
AUTHORIZE = ("elasticache", "AuthorizeCacheSecurityGroupIngress")
ADD_RULE = ("ec2", "AuthorizeSecurityGroupIngress")
REVOKE = ("elasticache", "RevokeCacheSecurityGroupIngress")
REMOVE_RULE = ("ec2", "RevokeSecurityGroupIngress")


@dataclass
class Row:
    step: str
    fault: str
    first: str
    then: str
    calls: str
    entries: str


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            "| step | fault | first delivery | after it clears | AWS calls | ledger entries |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.step} | {r.fault} | {r.first} | {r.then} | {r.calls} | {r.entries} |"
            for r in self.rows
        ]
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def table() -> Iterator[Table]:
    collected = Table()
    yield collected
    target = os.environ.get("LEDGER_FAULTS_REPORT")
    if target and collected.rows:
        Path(target).write_text(collected.markdown(), encoding="utf-8")


@pytest.fixture(scope="module")
def group(shared: SharedWorld, tmp_path_factory: pytest.TempPathFactory) -> str:
    clients = shared.clients
    group_id = clients["ec2"].create_security_group(
        GroupName=GROUP_NAME,
        Description="a classic grant and a VPC rule",
        VpcId=shared.world.vpc_id,
    )["GroupId"]
    return str(group_id)


@dataclass
class Cell:
    shared: SharedWorld
    fresh: Fresh
    group_id: str
    settings: Settings
    ledger: Ledger
    calls: Counter[tuple[str, str]]

    def authorizer(self) -> Authorizer:
        """A new execution environment: nothing carried over in memory."""
        return build_authorizer(self.settings, self.shared.injected_clients(self.settings))

    def deliver(
        self, event: dict[str, Any], *, remaining_millis: int = 30_000, replay: bool = False
    ) -> tuple[str, dict[str, Any] | None]:
        before = self.shared.dead_letter_count(self.fresh.queue_url)
        try:
            summary = self.authorizer().handle(
                event, FakeLambdaContext(remaining_millis=remaining_millis), replay=replay
            )
        except TransientFailureError:
            assert self.shared.dead_letter_count(self.fresh.queue_url) == before
            return RAISED, None
        added = self.shared.dead_letter_count(self.fresh.queue_url) - before
        if summary["status"] == "completed":
            assert added == 0
            return COMPLETED, summary
        if summary["status"] == "failed":
            assert replay and added == 0
            return "reported to the operator", summary
        assert summary["status"] == "dead-lettered", summary
        assert added == 1
        return DEAD_LETTERED, summary

    def entries(self) -> dict[str, str]:
        """target -> entry status (ownership), for this cell's group."""
        found = {}
        for entry in self.ledger.entries(group_id=self.group_id):
            shown = str(entry.status)
            if entry.ownership:
                shown += f" ({entry.ownership})"
            assert entry.grant.target not in found, "two entries for one (event, grant)"
            found[entry.grant.target] = shown
        return found

    def granted(self) -> dict[str, bool]:
        elasticache, ec2 = self.shared.clients["elasticache"], self.shared.clients["ec2"]
        pairs = elasticache.describe_cache_security_groups(CacheSecurityGroupName=ORDERS)[
            "CacheSecurityGroups"
        ][0]["EC2SecurityGroups"]
        rules = ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [CACHE_GROUP]}]
        )["SecurityGroupRules"]
        return {
            "orders": any(p["EC2SecurityGroupName"] == GROUP_NAME for p in pairs),
            "sessions-admin": any(
                (r.get("ReferencedGroupInfo") or {}).get("GroupId") == self.group_id for r in rules
            ),
        }

    def untag(self) -> None:
        self.shared.clients["ec2"].delete_tags(
            Resources=[self.group_id], Tags=[{"Key": "cache-ingress"}]
        )


def _remove_rules(shared: SharedWorld, group_id: str) -> None:
    ec2 = shared.clients["ec2"]
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [CACHE_GROUP]}]
    )["SecurityGroupRules"]
    ours = [
        r["SecurityGroupRuleId"]
        for r in rules
        if (r.get("ReferencedGroupInfo") or {}).get("GroupId") == group_id
    ]
    if ours:
        ec2.revoke_security_group_ingress(GroupId=CACHE_GROUP, SecurityGroupRuleIds=ours)


@pytest.fixture
def cell(shared: SharedWorld, group: str, tmp_path: Path) -> Iterator[Cell]:
    fresh = shared.fresh()
    clients = shared.clients
    _remove_rules(shared, group)
    clients["ec2"].create_tags(
        Resources=[group],
        Tags=[
            {"Key": "cache-ingress", "Value": "orders, sessions-admin"},
            {"Key": "env", "Value": "prod"},
        ],
    )
    ledger_table = f"{fresh.table}-ledger"
    clients["dynamodb"].create_table(TableName=ledger_table, **TABLE_SHAPE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    settings = Settings.from_environ(
        {**fresh.environment, "LEDGER_TABLE": ledger_table, "POLICY_FILE": str(policy)}
    )
    calls: Counter[tuple[str, str]] = Counter()
    hooks = []
    for service, operation in (AUTHORIZE, ADD_RULE, REVOKE, REMOVE_RULE):
        client = clients[service]
        # Requests that reach AWS: an injected fault answers before sending.
        name = f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}"

        def count(key: tuple[str, str] = (service, operation), **_: Any) -> None:
            calls[key] += 1

        client.meta.events.register(name, count)
        hooks.append((client, name, count))
    yield Cell(shared, fresh, group, settings, Ledger(clients["dynamodb"], ledger_table), calls)
    for client, name, count in hooks:
        client.meta.events.unregister(name, count)


def _time_out_at(client: Any, event_name: str, at: int = 1) -> Callable[[], None]:
    seen = [0]

    def stop(**_: Any) -> None:
        seen[0] += 1
        if seen[0] == at:
            raise LambdaTimeout

    client.meta.events.register(event_name, stop)
    return lambda: client.meta.events.unregister(event_name, stop)


def _first(kind: str, *, ledger: bool = True) -> str:
    # Access denied on the ledger is a permanent failure the function dead-letters (fix the
    # role, replay); anything else is retried.
    return DEAD_LETTERED if kind == "access-denied" and ledger else RAISED


def _calls(cell: Cell) -> str:
    shown = {
        "authorize": cell.calls[AUTHORIZE],
        "add rule": cell.calls[ADD_RULE],
        "revoke": cell.calls[REVOKE],
        "remove rule": cell.calls[REMOVE_RULE],
    }
    return ", ".join(f"{name} {count}" for name, count in shown.items() if count)


def _entries(cell: Cell) -> str:
    return "; ".join(f"{target}: {status}" for target, status in sorted(cell.entries().items()))


# --- grants -------------------------------------------------------------------------------

# Ledger UpdateItem calls of one delivery: orders' entry begins (1) and is resolved (2), then
# sessions-admin's (3, 4).
LEDGER_WRITES = {
    "entry begins, orders": 1,
    "entry resolved, orders": 2,
    "entry begins, sessions-admin": 3,
    "entry resolved, sessions-admin": 4,
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", LEDGER_WRITES)
def test_a_ledger_write_that_fails_leaves_no_grant_without_its_entry(
    step: str, kind: str, cell: Cell, table: Table
) -> None:
    event = tag_change(cell.group_id, event_id=f"ledger-{step}-{kind}", tags={})
    fault = StepFault(
        cell.shared.clients["dynamodb"],
        "UpdateItem",
        kind,
        at=LEDGER_WRITES[step],
        table=cell.ledger.table,
    )
    try:
        first, _ = cell.deliver(event, remaining_millis=1)
    finally:
        fault.clear()
    assert fault.fault.calls == 1, "the fault never fired"
    assert first == _first(kind)
    # No grant without its entry, whatever the first delivery did.
    for target, made in cell.granted().items():
        assert not made or target in cell.entries(), target

    time.sleep(0.01)
    then, summary = cell.deliver(event, replay=first == DEAD_LETTERED)

    assert then == COMPLETED
    assert summary is not None
    assert cell.granted() == {"orders": True, "sessions-admin": True}
    # Every entry in force and made by this event; a resolved-entry fault does not make the
    # retry ask AWS again (the step's record says what the call did); a fault before the call
    # (the entry could not begin) kept it from being made at all.
    assert cell.entries() == {"orders": "in-force (made)", "sessions-admin": "in-force (made)"}
    assert (cell.calls[AUTHORIZE], cell.calls[ADD_RULE]) == (1, 1)
    table.rows.append(Row(f"ledger: {step}", kind, first, then, _calls(cell), _entries(cell)))


@pytest.mark.parametrize(
    ("service", "operation", "target", "expected"),
    [
        ("elasticache", AUTHORIZE[1], "orders", "unsure"),
        ("ec2", ADD_RULE[1], "sessions-admin", "in-force (made)"),
    ],
    ids=["classic", "vpc"],
)
def test_a_timeout_between_the_call_and_its_entry(
    service: str, operation: str, target: str, expected: str, cell: Cell, table: Table
) -> None:
    # The AWS call made the grant; the invocation stopped before the entry was resolved.
    event = tag_change(cell.group_id, event_id=f"timeout-after-{target}", tags={})
    client = cell.shared.clients[service]
    hyphenized = client.meta.service_model.service_id.hyphenize()
    remove = _time_out_at(client, f"after-call.{hyphenized}.{operation}")
    try:
        with pytest.raises(LambdaTimeout):
            cell.deliver(event, remaining_millis=1)
    finally:
        remove()
    assert cell.entries()[target] == "pending"
    time.sleep(0.01)

    then, summary = cell.deliver(event)

    assert then == COMPLETED
    assert summary is not None
    assert cell.granted() == {"orders": True, "sessions-admin": True}
    entries = cell.entries()
    # A VPC rule's description names the event that made it: owned. A classic pair carries
    # no such evidence: unsure, never revoked by the function.
    assert entries[target] == expected
    # The timed-out call and the retry's, which found the grant there.
    assert cell.calls[(service, operation)] == 2
    table.rows.append(
        Row(
            f"Lambda timeout after {operation} made the grant, before its entry resolved",
            "Lambda timeout",
            TIMED_OUT,
            then,
            _calls(cell),
            _entries(cell),
        )
    )


def test_an_idempotency_record_that_cannot_be_completed_keeps_the_entry_owned(
    cell: Cell, table: Table
) -> None:
    # The grant and its entry are done; the record of the step is not.
    event = tag_change(cell.group_id, event_id="record-not-completed", tags={})
    fault = StepFault(
        cell.shared.clients["dynamodb"], "UpdateItem", "throttling", at=1, table=cell.fresh.table
    )
    try:
        first, _ = cell.deliver(event, remaining_millis=1)
    finally:
        fault.clear()
    assert first == RAISED
    time.sleep(0.01)

    then, _ = cell.deliver(event)

    assert then == COMPLETED
    # The step ran again: its call found the grant there, and its own entry still owns it.
    assert cell.entries() == {"orders": "in-force (made)", "sessions-admin": "in-force (made)"}
    assert cell.calls[AUTHORIZE] == 2
    table.rows.append(
        Row(
            "idempotency record: completed, orders",
            "throttling",
            first,
            then,
            _calls(cell),
            _entries(cell),
        )
    )


def test_a_timeout_before_the_call_reaches_aws(cell: Cell, table: Table) -> None:
    event = tag_change(cell.group_id, event_id="timeout-before", tags={})
    client = cell.shared.clients["elasticache"]
    remove = _time_out_at(client, f"before-call.elasticache.{AUTHORIZE[1]}")
    try:
        with pytest.raises(LambdaTimeout):
            cell.deliver(event, remaining_millis=1)
    finally:
        remove()
    assert cell.entries() == {"orders": "pending"}
    time.sleep(0.01)

    then, _ = cell.deliver(event)

    assert then == COMPLETED
    assert cell.entries() == {"orders": "in-force (made)", "sessions-admin": "in-force (made)"}
    assert cell.calls[AUTHORIZE] == 1  # the first never reached AWS
    table.rows.append(
        Row(
            "Lambda timeout after the entry began, before the call reached AWS",
            "Lambda timeout",
            TIMED_OUT,
            then,
            _calls(cell),
            _entries(cell),
        )
    )


def test_the_unsure_classic_grant_is_never_revoked(cell: Cell) -> None:
    event = tag_change(cell.group_id, event_id="unsure-then-untag", tags={})
    remove = _time_out_at(
        cell.shared.clients["elasticache"], f"after-call.elasticache.{AUTHORIZE[1]}"
    )
    try:
        with pytest.raises(LambdaTimeout):
            cell.deliver(event, remaining_millis=1)
    finally:
        remove()
    time.sleep(0.01)
    cell.deliver(event)
    cell.untag()

    then, summary = cell.deliver(tag_change(cell.group_id, event_id="untag", tags={}))

    assert then == COMPLETED
    assert summary is not None
    outcomes = {d.get("target"): d["outcome"] for d in summary["decisions"]}
    assert outcomes == {None: "not-applicable", "orders": "not-owned", "sessions-admin": "revoked"}
    assert cell.granted() == {"orders": True, "sessions-admin": False}


# --- revocations --------------------------------------------------------------------------


def _granted_then_untagged(cell: Cell) -> dict[str, Any]:
    first, _ = cell.deliver(tag_change(cell.group_id, event_id="grant", tags={}))
    assert first == COMPLETED
    cell.untag()
    cell.calls.clear()
    return tag_change(cell.group_id, event_id="untag", tags={})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("service", "operation"), [REVOKE, REMOVE_RULE], ids=["classic", "vpc"])
def test_a_revoke_call_that_fails_is_retried_or_dead_lettered_like_a_grant(
    service: str, operation: str, kind: str, cell: Cell, table: Table
) -> None:
    event = _granted_then_untagged(cell)
    fault = StepFault(cell.shared.clients[service], operation, kind, at=1)
    try:
        first, _ = cell.deliver(event, remaining_millis=1)
    finally:
        fault.clear()
    assert fault.fault.calls == 1
    # ElastiCache's and EC2's access denied are permanent (dead-lettered, then replayed).
    assert first == (DEAD_LETTERED if kind == "access-denied" else RAISED)
    time.sleep(0.01)

    then, _ = cell.deliver(event, replay=first == DEAD_LETTERED)

    assert then == COMPLETED
    assert cell.granted() == {"orders": False, "sessions-admin": False}
    assert cell.entries() == {"orders": "revoked (made)", "sessions-admin": "revoked (made)"}
    table.rows.append(Row(f"revoke: {operation}", kind, first, then, _calls(cell), _entries(cell)))


def test_a_timeout_after_the_revoke_before_its_entry_is_marked(cell: Cell, table: Table) -> None:
    event = _granted_then_untagged(cell)
    remove = _time_out_at(cell.shared.clients["elasticache"], f"after-call.elasticache.{REVOKE[1]}")
    try:
        with pytest.raises(LambdaTimeout):
            cell.deliver(event, remaining_millis=1)
    finally:
        remove()
    assert cell.entries()["orders"] == "in-force (made)"
    time.sleep(0.01)

    then, summary = cell.deliver(event)

    assert then == COMPLETED
    assert summary is not None
    assert cell.entries() == {"orders": "revoked (made)", "sessions-admin": "revoked (made)"}
    [orders] = [d for d in summary["decisions"] if d.get("target") == "orders"]
    assert orders["outcome"] == "revoked"
    assert "gone already" in orders["reason"]
    assert cell.calls[REVOKE] == 2  # the timed-out call, and the retry's (AuthorizationNotFound)
    table.rows.append(
        Row(
            "Lambda timeout after the revoke, before its entry was marked",
            "Lambda timeout",
            TIMED_OUT,
            then,
            _calls(cell),
            _entries(cell),
        )
    )


@pytest.mark.parametrize("kind", ["throttling", "server-error", "timeout"])
def test_a_revoked_rule_whose_entry_could_not_be_marked_is_marked_by_the_retry(
    kind: str, cell: Cell, table: Table
) -> None:
    event = _granted_then_untagged(cell)
    # The ledger writes of the untag: orders' entry closed, then sessions-admin's.
    fault = StepFault(
        cell.shared.clients["dynamodb"], "UpdateItem", kind, at=1, table=cell.ledger.table
    )
    try:
        first, _ = cell.deliver(event, remaining_millis=1)
    finally:
        fault.clear()
    assert first == RAISED
    assert cell.granted()["orders"] is False
    time.sleep(0.01)

    then, _ = cell.deliver(event)

    assert then == COMPLETED
    assert cell.entries() == {"orders": "revoked (made)", "sessions-admin": "revoked (made)"}
    # The retry found the revocation recorded: no second call for the classic pair.
    assert cell.calls[REVOKE] == 1
    table.rows.append(
        Row("revoke: ledger entry marked revoked", kind, first, then, _calls(cell), _entries(cell))
    )


def test_the_table_covers_every_write_of_a_grant() -> None:
    assert len(LEDGER_WRITES) == 4
    assert set(KINDS) == {"throttling", "server-error", "timeout", "access-denied"}
