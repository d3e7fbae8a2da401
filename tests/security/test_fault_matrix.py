"""The fault matrix: every dependency, every fault kind, at every step of a three-grant event.

The event: one security group tagged `orders,payments,inventory`, all three allowed by the
policy (read from SSM), so one delivery makes these calls in order:

    ssm:GetParameter, ec2:DescribeSecurityGroups,
    then for each grant k = 1..3: dynamodb:PutItem, elasticache:Authorize…, dynamodb:UpdateItem
    (dynamodb:DeleteItem after a failed authorize; sqs:SendMessage when dead-lettering)

Each cell injects one fault (throttling, a 5xx, a read timeout, access denied) at one step,
delivers the event, and accounts for it: it ends in exactly one of "all decisions made",
"in the DLQ" or "raised for retry", with the dead-letter queue agreeing. Then the fault
clears and the event is delivered again, as Lambda's retry (or the operator's replay of a
dead-lettered event) would, to a new execution environment: it must end with all three
grants made, and the authorize calls per pair show that finished grants were not repeated.

The first delivery runs with 1 ms left, standing for "Lambda's retry comes after this
invocation's deadline" (the first async retry waits about a minute; the template's timeout
is 60 s), so an in-progress record it leaves behind has expired by the retry.

Set FAULT_MATRIX_REPORT=path to have the matrix written there as a Markdown table.
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
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from tests.security.harness import Fresh, SharedWorld
from tests.support.events import tag_change
from tests.support.faults import Fault
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

MULTI_GROUP_NAME = "multi-app"
POLICY_PARAMETER = "/cache-ingress/policy"
POLICY = """\
version: 1
targets:
  orders: {cache_security_group: orders-cache-sg, allow: {required_tags: {env: prod}}}
  payments: {cache_security_group: payments-cache-sg, allow: {required_tags: {env: prod}}}
  inventory: {cache_security_group: inventory-cache-sg, allow: {required_tags: {env: prod}}}
"""
CACHE_GROUPS = ("orders-cache-sg", "payments-cache-sg", "inventory-cache-sg")
KINDS = ("throttling", "server-error", "timeout", "access-denied")

COMPLETED = "all decisions made"
DEAD_LETTERED = "in the DLQ"
RAISED = "raised for retry"
TIMED_OUT = "timed out (Lambda retries it)"


class LambdaTimeout(BaseException):
    """A Lambda timeout seen from inside: the process stops where it is, and no
    `except Exception` (Powertools' record clean-up included) runs."""


@dataclass(frozen=True)
class Step:
    """Where a fault is injected: the `at`-th call of one operation in the delivery."""

    dependency: str
    service: str
    operation: str
    at: int = 1
    # A transient authorize fault at this grant first, so that a DeleteItem happens.
    after_failed_authorize: int | None = None
    # The third grant fails for good (its cache group is missing), so a SendMessage happens.
    third_grant_fails: bool = False

    @property
    def label(self) -> str:
        if self.after_failed_authorize is not None:
            return f"{self.dependency} (clean-up of grant {self.after_failed_authorize})"
        if self.dependency in {"DynamoDB PutItem", "DynamoDB UpdateItem", "ElastiCache authorize"}:
            return f"{self.dependency} (grant {self.at})"
        return self.dependency


STEPS = [
    Step("SSM GetParameter (policy)", "ssm", "GetParameter"),
    Step("EC2 DescribeSecurityGroups", "ec2", "DescribeSecurityGroups"),
    *[Step("DynamoDB PutItem", "dynamodb", "PutItem", at=k) for k in (1, 2, 3)],
    *[
        Step("ElastiCache authorize", "elasticache", "AuthorizeCacheSecurityGroupIngress", at=k)
        for k in (1, 2, 3)
    ],
    *[Step("DynamoDB UpdateItem", "dynamodb", "UpdateItem", at=k) for k in (1, 2, 3)],
    *[
        Step("DynamoDB DeleteItem", "dynamodb", "DeleteItem", after_failed_authorize=k)
        for k in (1, 2, 3)
    ],
    Step("SQS SendMessage (dead letter)", "sqs", "SendMessage", third_grant_fails=True),
]


@dataclass
class Row:
    step: str
    fault: str
    first: str
    then: str
    calls: str


@dataclass
class Matrix:
    rows: list[Row] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            "| step | fault | first delivery | after the fault clears | authorize calls per pair |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {r.step} | {r.fault} | {r.first} | {r.then} | {r.calls} |" for r in self.rows]
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def matrix() -> Iterator[Matrix]:
    collected = Matrix()
    yield collected
    target = os.environ.get("FAULT_MATRIX_REPORT")
    if target and collected.rows:
        Path(target).write_text(collected.markdown(), encoding="utf-8")


@pytest.fixture(scope="module")
def multi_group(shared: SharedWorld) -> str:
    """A group tagged with three targets, and the third target's cache group."""
    clients = shared.clients
    clients["elasticache"].create_cache_security_group(
        CacheSecurityGroupName="inventory-cache-sg", Description="inventory"
    )
    group_id = clients["ec2"].create_security_group(
        GroupName=MULTI_GROUP_NAME,
        Description="three targets",
        VpcId=shared.world.vpc_id,
        TagSpecifications=[
            {
                "ResourceType": "security-group",
                "Tags": [
                    {"Key": "cache-ingress", "Value": "orders, payments, inventory"},
                    {"Key": "env", "Value": "prod"},
                ],
            }
        ],
    )["GroupId"]
    clients["ssm"].put_parameter(Name=POLICY_PARAMETER, Value=POLICY, Type="String")
    return str(group_id)


@dataclass
class Cell:
    shared: SharedWorld
    fresh: Fresh
    group_id: str
    settings: Settings

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
            assert len(summary["decisions"]) == 3
            return COMPLETED, summary
        if summary["status"] == "failed":
            assert replay
            assert added == 0
            return "reported to the operator", summary
        assert summary["status"] == "dead-lettered", summary
        assert added == 1
        return DEAD_LETTERED, summary

    def calls_per_pair(self) -> Counter[str]:
        return Counter(call["CacheSecurityGroupName"] for call in self.shared.authorize_calls)

    def granted(self) -> set[str]:
        granted = set()
        for name in CACHE_GROUPS:
            found = self.shared.clients["elasticache"].describe_cache_security_groups(
                CacheSecurityGroupName=name
            )["CacheSecurityGroups"][0]["EC2SecurityGroups"]
            assert len(found) <= 1
            granted |= {name for pair in found if pair["EC2SecurityGroupName"] == MULTI_GROUP_NAME}
        return granted


@pytest.fixture
def cell(shared: SharedWorld, multi_group: str) -> Cell:
    fresh = shared.fresh()
    settings = Settings.from_environ(
        {
            **fresh.environment,
            "POLICY_PARAMETER": POLICY_PARAMETER,
            "POLICY_MAX_AGE_SECONDS": "0",
        }
    )
    return Cell(shared, fresh, multi_group, settings)


class StepFault:
    """Fails exactly the `at`-th call of one operation, through tests.support.faults.Fault.

    With `table`, only calls to that DynamoDB table count: the idempotency records and the
    grant ledger are written with the same operations, and a step names one of them.
    """

    def __init__(
        self, client: Any, operation: str, kind: str, *, at: int, table: str | None = None
    ) -> None:
        self._client = client
        self._at = at
        self._seen = 0
        self._table = table
        self._next_table: str | None = None
        self.fault = Fault(client, operation, kind, times=0)
        service = client.meta.service_model.service_id.hyphenize()
        self._event = f"before-call.{service}.{operation}"
        self._params_event = f"provide-client-params.{service}.{operation}"
        client.meta.events.register(self._params_event, self._note_table)
        # First in line, so the Fault sees its arming before it decides.
        client.meta.events.register_first(self._event, self._count)

    def _note_table(self, params: dict[str, Any], **_: Any) -> None:
        self._next_table = params.get("TableName")

    def _count(self, **_: Any) -> None:
        if self._table is not None and self._next_table != self._table:
            return
        self._seen += 1
        if self._seen == self._at:
            self.fault.remaining = 1

    def clear(self) -> None:
        self._client.meta.events.unregister(self._event, self._count)
        self._client.meta.events.unregister(self._params_event, self._note_table)
        self.fault.clear()


def _expected_first(step: Step, kind: str) -> str:
    if kind != "access-denied":
        return RAISED
    # Access denied is permanent where the adapter says so (dead-letter, fix, replay), and
    # transient where Powertools hides the cause (idempotency store) or where the function
    # cannot record the failure at all (the DLQ send itself).
    if step.service in {"ssm", "ec2", "elasticache"}:
        return DEAD_LETTERED
    return RAISED


def _expected_calls(step: Step, kind: str) -> dict[str, int]:
    calls = dict.fromkeys(CACHE_GROUPS, 1)
    if step.operation == "AuthorizeCacheSecurityGroupIngress":
        calls[CACHE_GROUPS[step.at - 1]] = 2  # the faulted attempt, and the retry
    if step.operation == "UpdateItem":
        # The grant was made but not recorded: the retry asks again, AWS answers
        # AuthorizationAlreadyExists, and the decision is already-authorized.
        calls[CACHE_GROUPS[step.at - 1]] = 2
    if step.after_failed_authorize is not None:
        calls[CACHE_GROUPS[step.after_failed_authorize - 1]] = 2
    if step.third_grant_fails:
        # Fails on the first delivery and on the retry that dead-letters it; the operator's
        # replay after creating the cache group makes it.
        calls[CACHE_GROUPS[2]] = 3
    return calls


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", STEPS, ids=lambda step: step.label.replace(" ", "-"))
def test_every_event_is_accounted_for_and_a_retry_finishes_only_what_remains(
    step: Step, kind: str, cell: Cell, matrix: Matrix
) -> None:
    clients = cell.shared.clients
    event = tag_change(cell.group_id, event_id=f"fault-{step.label}-{kind}")
    if step.third_grant_fails:
        clients["elasticache"].delete_cache_security_group(CacheSecurityGroupName=CACHE_GROUPS[2])
    table = cell.fresh.table if step.service == "dynamodb" else None
    faults = [StepFault(clients[step.service], step.operation, kind, at=step.at, table=table)]
    if step.after_failed_authorize is not None:
        faults.append(
            StepFault(
                clients["elasticache"],
                "AuthorizeCacheSecurityGroupIngress",
                "throttling",
                at=step.after_failed_authorize,
            )
        )

    # The first delivery, with the fault in place.
    try:
        first, _ = cell.deliver(event, remaining_millis=1)
    finally:
        for fault in faults:
            fault.clear()
    assert [f.fault.calls for f in faults] == [1] * len(faults), "the fault never fired"
    assert first == _expected_first(step, kind)

    # The fault has cleared: Lambda retries a raised event; the operator replays a
    # dead-lettered one once its cause is fixed.
    time.sleep(0.01)
    then, summary = cell.deliver(event, replay=first == DEAD_LETTERED)
    trail = [then]
    if step.third_grant_fails:
        assert then == (DEAD_LETTERED if first == RAISED else "reported to the operator")
        clients["elasticache"].create_cache_security_group(
            CacheSecurityGroupName=CACHE_GROUPS[2], Description="created by the operator"
        )
        then, summary = cell.deliver(event, replay=True)
        trail.append(then)

    assert then == COMPLETED
    assert summary is not None
    outcomes = {d["cache_security_group"]: d["outcome"] for d in summary["decisions"]}
    assert set(outcomes.values()) <= {"authorized", "already-authorized"}
    calls = cell.calls_per_pair()
    assert dict(calls) == _expected_calls(step, kind)
    assert cell.granted() == set(CACHE_GROUPS)
    matrix.rows.append(
        Row(
            step.label,
            kind,
            first,
            " → ".join(trail),
            ", ".join(f"{name.removesuffix('-cache-sg')} {calls[name]}" for name in CACHE_GROUPS),
        )
    )


def _time_out_at(client: Any, event_name: str, at: int) -> Callable[[], None]:
    seen = [0]

    def stop(**_: Any) -> None:
        seen[0] += 1
        if seen[0] == at:
            raise LambdaTimeout

    client.meta.events.register(event_name, stop)
    return lambda: client.meta.events.unregister(event_name, stop)


@pytest.mark.parametrize("at", [1, 2, 3])
@pytest.mark.parametrize(
    "moment",
    ["before-call", "after-call"],
    ids=["before-the-call-reaches-aws", "after-aws-made-the-grant"],
)
def test_a_lambda_timeout_mid_grant_does_not_block_the_retry(
    moment: str, at: int, cell: Cell, matrix: Matrix
) -> None:
    clients = cell.shared.clients
    event = tag_change(cell.group_id, event_id=f"timeout-{moment}-{at}")
    remove = _time_out_at(
        clients["elasticache"], f"{moment}.elasticache.AuthorizeCacheSecurityGroupIngress", at
    )
    try:
        with pytest.raises(LambdaTimeout):
            cell.deliver(event, remaining_millis=1)
    finally:
        remove()
    records = cell.shared.clients["dynamodb"].scan(TableName=cell.fresh.table)["Items"]
    assert sorted(r["status"]["S"] for r in records) == ["COMPLETED"] * (at - 1) + ["INPROGRESS"]
    [stuck] = [r for r in records if r["status"]["S"] == "INPROGRESS"]
    assert int(stuck["in_progress_expiration"]["N"]) <= int(time.time() * 1000) + 1
    time.sleep(0.01)

    then, summary = cell.deliver(event)

    assert then == COMPLETED
    assert summary is not None
    calls = cell.calls_per_pair()
    expected = dict.fromkeys(CACHE_GROUPS, 1)
    expected[CACHE_GROUPS[at - 1]] = 2
    assert dict(calls) == expected
    timed_out = next(
        d for d in summary["decisions"] if d["cache_security_group"] == CACHE_GROUPS[at - 1]
    )
    assert timed_out["outcome"] == (
        "authorized" if moment == "before-call" else "already-authorized"
    )
    assert cell.granted() == set(CACHE_GROUPS)
    matrix.rows.append(
        Row(
            f"Lambda timeout during grant {at} ({moment.replace('-call', ' the call')})",
            "Lambda timeout",
            TIMED_OUT,
            COMPLETED,
            ", ".join(f"{name.removesuffix('-cache-sg')} {calls[name]}" for name in CACHE_GROUPS),
        )
    )


def test_a_grant_still_in_progress_makes_the_event_retry_later(cell: Cell, matrix: Matrix) -> None:
    clients = cell.shared.clients
    event = tag_change(cell.group_id, event_id="still-in-progress")
    remove = _time_out_at(
        clients["elasticache"], "before-call.elasticache.AuthorizeCacheSecurityGroupIngress", 2
    )
    try:
        with pytest.raises(LambdaTimeout):
            # Another execution, which will hold its record for another minute.
            cell.deliver(event, remaining_millis=60_000)
    finally:
        remove()

    early, _ = cell.deliver(event)

    assert early == RAISED
    assert dict(cell.calls_per_pair()) == dict.fromkeys(CACHE_GROUPS, 1)
    # A minute later the record's in-progress expiry has passed.
    table = cell.fresh.table
    [stuck] = [
        r
        for r in clients["dynamodb"].scan(TableName=table)["Items"]
        if r["status"]["S"] == "INPROGRESS"
    ]
    clients["dynamodb"].update_item(
        TableName=table,
        Key={"id": stuck["id"]},
        UpdateExpression="SET in_progress_expiration = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time() * 1000) - 1)}},
    )
    later, summary = cell.deliver(event)

    assert later == COMPLETED
    assert summary is not None
    assert dict(cell.calls_per_pair()) == {
        "orders-cache-sg": 1,
        "payments-cache-sg": 2,
        "inventory-cache-sg": 1,
    }
    assert cell.granted() == set(CACHE_GROUPS)
    matrix.rows.append(
        Row(
            "Lambda timeout during grant 2, retried while its record is live",
            "Lambda timeout",
            TIMED_OUT,
            f"{RAISED} → (record expires) → {COMPLETED}",
            "orders 1, payments 2, inventory 1",
        )
    )


def test_the_matrix_covers_every_dependency_and_fault_kind() -> None:
    services = {step.service for step in STEPS}
    assert services == {"ssm", "ec2", "dynamodb", "elasticache", "sqs"}
    operations = {step.operation for step in STEPS}
    assert {"PutItem", "UpdateItem", "DeleteItem"} <= operations
    assert set(KINDS) == {"throttling", "server-error", "timeout", "access-denied"}
