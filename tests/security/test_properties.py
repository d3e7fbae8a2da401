"""Property-based: over generated events, group states and policies, the function never
raises anything but TransientFailureError, never calls authorize for a pair the independent
oracle does not allow, and gives every pair exactly one outcome with a reason.

Two properties, two choices of world:

- `test_moto_world_*` runs everything against moto in process: groups are really created
  and tagged in EC2, the policy is read from SSM, grants go through DynamoDB idempotency
  and the emulated ElastiCache call. Nothing is faked, so it also checks that the oracle's
  exact set of permitted pairs is what gets authorized, each exactly once. moto can only
  make groups owned by its own account, in its own region, with names EC2 accepts.
- `test_any_group_state_*` replaces the one port moto cannot drive that far, the EC2
  describe adapter, with a fake returning arbitrary facts (foreign and malformed owner ids,
  other regions, control characters in tags), and keeps every other adapter real against
  moto, while injecting throttling, 5xx, timeouts and access-denied into DynamoDB,
  ElastiCache and SQS, and broken policies.

In both, the authorize calls checked are the requests the real botocore client sent.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from hypothesis import HealthCheck, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st

from cache_ingress.authorizer import Authorizer
from cache_ingress.cache_security_groups import authorize
from cache_ingress.deadletter import DeadLetterQueue
from cache_ingress.errors import AwsCallError, TransientFailureError
from cache_ingress.grants import Granter
from cache_ingress.ledger import Ledger
from cache_ingress.models import SecurityGroupFacts
from cache_ingress.policy_source import PolicySource
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer, build_principal_verifier
from cache_ingress_tools.emulator import cloudtrail_history
from tests.security import oracle
from tests.security.harness import SharedWorld
from tests.support.events import ACCOUNT, REGION, create_tags, tag_change
from tests.support.faults import Fault
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

# Several hundred examples in CI in total; deadline off, because moto's speed on a shared
# machine is not what is being tested.
MOTO_WORLD_EXAMPLES = 300
GATED_EXAMPLES = 300
ANY_STATE_EXAMPLES = 200
settings.register_profile(
    "cache-ingress-security",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("cache-ingress-security")

OTHER_ACCOUNT = "210987654321"
OTHER_REGION = "us-west-2"
TARGET_NAMES = ("orders", "payments", "analytics", "Orders", "a.b_c-1")
CACHE_GROUPS = ("orders-cache-sg", "payments-cache-sg", "absent-cache-sg")
PRINCIPALS = (
    "arn:aws:sts::123456789012:assumed-role/platform/alice",
    "arn:aws:sts::123456789012:assumed-role/platform/bob",
    "arn:aws:sts::123456789012:assumed-role/platform",
    "arn:aws:sts::210987654321:assumed-role/platform/mallory",
    "arn:aws:iam::123456789012:user/ops",
    # An IAM user with a path: `user/*` must not reach it across the `/`.
    "arn:aws:iam::123456789012:user/team/ops",
)
PRINCIPAL_PATTERNS = (
    "arn:aws:sts::123456789012:assumed-role/platform/*",
    "arn:aws:sts::123456789012:assumed-role/platform/?ob",
    "arn:aws:iam::123456789012:user/*",
    "arn:aws:sts::*:assumed-role/platform/*",
    "arn:aws:sts::123456789012:assumed-role/platform/al*",
)
# Mostly the platform's own principal; every principal equally when principals decide.
_PRINCIPAL_CHOICES = {
    False: (None, PRINCIPALS[0], PRINCIPALS[0], *PRINCIPALS),
    True: (None, *PRINCIPALS),
}
ACCEPTED_OUTCOMES = {"authorized", "already-authorized"}
# Stand-ins in generated policies for VPC security groups created for each example.
SAME_VPC_CACHE = "sg-00000000000000aaa"
OTHER_VPC_CACHE = "sg-00000000000000bbb"
FINAL_DENIALS = {"denied", "not-applicable"}


# --- strategies ---------------------------------------------------------------------------

_NOISE_WORDS = ("nope", "", " ", "orders ", "\torders", "ORDERS")


@st.composite
def tag_values(draw: st.DrawFn, policy_names: Sequence[str] = TARGET_NAMES) -> str:
    # Weighted towards names the policy holds, so that most examples ask for a real grant.
    words = st.sampled_from(tuple(policy_names) * 6 + TARGET_NAMES + _NOISE_WORDS)
    return ",".join(draw(st.lists(words, min_size=1, max_size=4)))


@st.composite
def group_tags(
    draw: st.DrawFn, policy_names: Sequence[str] = TARGET_NAMES, *, odd_text: bool = False
) -> dict[str, str]:
    tags: dict[str, str] = {}
    if draw(st.integers(0, 9)) > 0:
        tags["cache-ingress"] = draw(tag_values(policy_names))
    # Hypothesis draws the first choice most often: the permissive value goes first.
    env = draw(st.sampled_from(["prod", "prod", None, "staging", "prod ", "PROD", ""]))
    if env is not None:
        tags["env"] = env
    team = draw(st.sampled_from(["a", None, "b"]))
    if team is not None:
        tags["team"] = team
    if odd_text:
        key = draw(st.text(min_size=1, max_size=8))
        tags.setdefault(key, draw(st.text(max_size=16)))
    return tags


@st.composite
def allow_rules(draw: st.DrawFn) -> dict[str, Any]:
    allow: dict[str, Any] = {}
    owners = draw(
        st.sampled_from([None] * 5 + [[ACCOUNT], [OTHER_ACCOUNT], [OTHER_ACCOUNT, ACCOUNT]])
    )
    if owners is not None:
        allow["owner_accounts"] = owners
    required = draw(
        st.sampled_from(
            [
                *[None] * 5,
                {"env": "prod"},
                {"env": "prod"},
                {"env": ["prod", "staging"]},
                {"team": "a"},
                {"env": "prod", "team": ["a", "b"]},
                {"env": ""},
            ]
        )
    )
    if required is not None:
        allow["required_tags"] = required
    if draw(st.integers(0, 3)) == 0:
        allow["principals"] = draw(
            st.lists(st.sampled_from(PRINCIPAL_PATTERNS), min_size=1, max_size=2, unique=True)
        )
    return allow


@st.composite
def policies(draw: st.DrawFn, *, vpc: bool = False) -> dict[str, Any]:
    """Policies over the classic kind and, with `vpc`, VPC targets whose cache security
    group is a placeholder (SAME_VPC_CACHE or OTHER_VPC_CACHE) the test creates."""
    names = draw(st.lists(st.sampled_from(TARGET_NAMES), min_size=1, max_size=4, unique=True))
    targets: dict[str, Any] = {}
    for name in names:
        target: dict[str, Any]
        if vpc and draw(st.integers(0, 3)) == 0:
            placeholder = draw(st.sampled_from([SAME_VPC_CACHE, SAME_VPC_CACHE, OTHER_VPC_CACHE]))
            target = {"vpc_security_group": {"group_id": placeholder, "port": 6379}}
        else:
            target = {
                "cache_security_group": draw(st.sampled_from(CACHE_GROUPS[:2] * 3 + CACHE_GROUPS))
            }
        region = draw(st.sampled_from([None] * 6 + [REGION, OTHER_REGION]))
        if region is not None:
            target["region"] = region
        allow = draw(allow_rules())
        if allow or draw(st.booleans()):
            target["allow"] = allow
        targets[name] = target
    return {"version": 1, "tag_key": "cache-ingress", "targets": targets}


@dataclass(frozen=True)
class EventShape:
    """What the generated event says, before it names real group ids.

    A CloudTrail call's own tag value (`sets`) is drawn apart from the tags the groups carry
    now: the value the group holds when the function runs may have been set by anyone.
    `replay` says how the event arrives (straight from EventBridge, as an archive replay,
    or replayed by the operator) and `history` what CloudTrail's event history holds for it.
    """

    kind: str
    account: str
    region: str
    principal: str | None
    missing_groups: int
    repeat_first: bool
    sets: str
    other_value: str
    replay: str
    history: str


@st.composite
def event_shapes(draw: st.DrawFn, *, in_scope_calls: bool = False) -> EventShape:
    """Any event; with `in_scope_calls`, only CloudTrail calls from the function's account and
    region, which are the ones a principal-gated target can be granted for."""
    calls = ["CreateTags", "CreateTags", "DeleteTags", "CreateSecurityGroup"]
    kind = draw(st.sampled_from(calls if in_scope_calls else ["tag-change", *calls]))
    elsewhere = 0 if in_scope_calls else 1
    return EventShape(
        kind=kind,
        account=draw(st.sampled_from([ACCOUNT] * 6 + [OTHER_ACCOUNT] * elsewhere)),
        region=draw(st.sampled_from([REGION] * 6 + [OTHER_REGION] * elsewhere)),
        principal=None
        if kind == "tag-change"
        else draw(st.sampled_from(_PRINCIPAL_CHOICES[in_scope_calls])),
        missing_groups=draw(st.integers(0, 1)),
        repeat_first=draw(st.booleans()),
        sets=draw(st.sampled_from(["current", "current", "current", "other", "none", "key"])),
        other_value=draw(tag_values()),
        replay=draw(st.sampled_from(["none", "none", "archive", "operator"])),
        history=draw(
            st.sampled_from(["same", "same", "absent", "principal", "tags", "failed", "old"])
        ),
    )


_event_numbers = itertools.count(1)


@dataclass
class BuiltEvent:
    """The event, the group ids it names in order (as intake will read them), how it is
    delivered, and CloudTrail's record of its call (None: CloudTrail has none)."""

    event: dict[str, Any]
    named: list[str]
    operator_replay: bool
    record: dict[str, Any] | None

    def delivery(self) -> oracle.Delivery:
        history = {} if self.record is None else {self.record["eventID"]: self.record}
        return oracle.Delivery(self.operator_replay, history)


def build_event(
    shape: EventShape, group_ids: Sequence[str], current_value: str | None
) -> BuiltEvent:
    """The event for `shape`; `current_value` is the tag value of the first group now."""
    named = list(group_ids)
    named += [f"sg-{0xDEAD0000 + next(_event_numbers):017x}" for _ in range(shape.missing_groups)]
    if shape.repeat_first and named:
        named.append(named[0])
    event_id = f"prop-{next(_event_numbers)}"
    if shape.kind == "tag-change":
        event = tag_change(
            event_id=event_id,
            resources=[
                f"arn:aws:ec2:{shape.region}:{shape.account}:security-group/{g}" for g in named
            ],
        )
        event["account"] = shape.account
        event["region"] = shape.region
        return BuiltEvent(event, named, shape.replay == "operator", None)
    tags = _call_tags(shape, current_value)
    if shape.kind == "CreateSecurityGroup":
        named = named[:1]
        event = create_tags(
            named,
            event_id=event_id,
            principal=shape.principal,
            name="CreateSecurityGroup",
            responseElements={"groupId": named[0]},
            requestParameters={
                "groupName": "app",
                "tagSpecificationSet": {
                    "items": [{"resourceType": "security-group", "tags": tags}]
                },
            },
        )
    else:
        event = create_tags(named, event_id=event_id, principal=shape.principal, name=shape.kind)
        event["detail"]["requestParameters"]["tagSet"] = {"items": tags}
    event["account"] = shape.account
    event["region"] = shape.region
    detail = event["detail"]
    detail["eventID"] = f"{event_id}-trail"
    detail["eventTime"] = (
        "2026-01-01T00:00:00Z"
        if shape.history == "old"
        else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    if shape.replay == "archive":
        event["replay-name"] = "archive-replay"
    return BuiltEvent(event, named, shape.replay == "operator", _record(shape, detail))


def _call_tags(shape: EventShape, current_value: str | None) -> list[dict[str, str]]:
    if shape.sets == "none":
        return []
    if shape.sets == "key":
        return [{"key": "env", "value": "prod"}]
    value = current_value if shape.sets == "current" and current_value is not None else None
    return [{"key": "cache-ingress", "value": shape.other_value if value is None else value}]


def _record(shape: EventShape, detail: dict[str, Any]) -> dict[str, Any] | None:
    """CloudTrail's record of the call, as `shape.history` says it is."""
    if shape.history == "absent":
        return None
    record: dict[str, Any] = json.loads(json.dumps(detail))
    if shape.history == "principal":
        record["userIdentity"]["arn"] = "arn:aws:sts::123456789012:assumed-role/developer/dev"
    elif shape.history == "tags":
        changed = [{"key": "cache-ingress", "value": "orders,payments"}]
        parameters = record["requestParameters"]
        if shape.kind == "CreateSecurityGroup":
            parameters["tagSpecificationSet"] = {
                "items": [{"resourceType": "security-group", "tags": changed}]
            }
        else:
            parameters["tagSet"] = {"items": changed}
    elif shape.history == "failed":
        record["errorCode"] = "Client.UnauthorizedOperation"
    return record


def record_history(built: BuiltEvent) -> None:
    """Put the call's record into the embedded AWS's CloudTrail history."""
    if built.record is not None:
        cloudtrail_history.record_call(built.record)


# --- checks shared by both properties ------------------------------------------------------


def sent_parameters(calls: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (c["CacheSecurityGroupName"], c["EC2SecurityGroupName"], c["EC2SecurityGroupOwnerId"])
        for c in calls
    ]


def check_every_pair_has_one_outcome(
    summary: dict[str, Any], expected_pairs: set[tuple[str, str | None]]
) -> dict[tuple[str, str | None], dict[str, Any]]:
    decided = [(d["group_id"], d.get("target")) for d in summary["decisions"]]
    assert len(decided) == len(set(decided)), f"a pair was decided twice: {decided}"
    assert set(decided) == expected_pairs
    for decision in summary["decisions"]:
        assert isinstance(decision["reason"], str)
        assert decision["reason"].strip()
    return {(d["group_id"], d.get("target")): d for d in summary["decisions"]}


# --- property 1: everything real, against moto ----------------------------------------------


@dataclass
class MotoCase:
    policy: dict[str, Any]
    groups: list[dict[str, str]]
    shape: EventShape
    # (index of a group, target name): an operator's hold on the pair (README, "Holds").
    holds: list[tuple[int, str]] = field(default_factory=list)


@st.composite
def moto_cases(draw: st.DrawFn) -> MotoCase:
    policy = draw(policies(vpc=True))
    names = list(policy["targets"])
    groups = draw(st.lists(group_tags(names), min_size=1, max_size=3))
    holds = draw(
        st.lists(
            st.tuples(st.integers(0, len(groups) - 1), st.sampled_from([*names, "other"])),
            max_size=2,
            unique=True,
        )
    )
    return MotoCase(policy=policy, groups=groups, shape=draw(event_shapes()), holds=holds)


@st.composite
def gated_moto_cases(draw: st.DrawFn) -> MotoCase:
    """Policies whose targets mostly require a principal, and CloudTrail calls in scope:
    who called, what the call itself set, what the group says now, and whether CloudTrail
    confirms a replayed call all vary, so the principal rules decide most examples."""
    names = draw(st.lists(st.sampled_from(TARGET_NAMES[:3]), min_size=1, max_size=3, unique=True))
    targets: dict[str, Any] = {}
    for name in names:
        target: dict[str, Any] = {"cache_security_group": draw(st.sampled_from(CACHE_GROUPS[:2]))}
        if draw(st.integers(0, 3)) > 0:
            target["allow"] = {
                "principals": draw(
                    st.lists(
                        st.sampled_from(PRINCIPAL_PATTERNS), min_size=1, max_size=2, unique=True
                    )
                )
            }
        targets[name] = target
    return MotoCase(
        policy={"version": 1, "tag_key": "cache-ingress", "targets": targets},
        groups=draw(st.lists(group_tags(names), min_size=1, max_size=2)),
        shape=draw(event_shapes(in_scope_calls=True)),
    )


@pytest.mark.property
@settings(PROFILE, max_examples=MOTO_WORLD_EXAMPLES)
@given(case=moto_cases())
def test_moto_world_grants_exactly_what_the_oracle_allows(
    case: MotoCase, shared: SharedWorld
) -> None:
    check_moto_world(case, shared)


@pytest.mark.property
@settings(PROFILE, max_examples=GATED_EXAMPLES)
@given(case=gated_moto_cases())
def test_principal_gated_grants_need_the_call_the_principal_and_cloudtrail(
    case: MotoCase, shared: SharedWorld
) -> None:
    check_moto_world(case, shared)


def check_moto_world(case: MotoCase, shared: SharedWorld) -> None:
    """Everything real against moto: exactly the oracle's permits are asked of AWS, once."""
    fresh = shared.fresh(reset_world=False)
    policy, caches = _with_vpc_caches(shared, case.policy)
    shared.clients["ssm"].put_parameter(
        Name="/cache-ingress/policy",
        Value=yaml.safe_dump(policy),
        Type="String",
        Overwrite=True,
    )
    settings_ = Settings.from_environ(
        {
            **fresh.environment,
            "POLICY_PARAMETER": "/cache-ingress/policy",
            "POLICY_MAX_AGE_SECONDS": "0",
        }
    )
    group_ids = [_create_group(shared, tags) for tags in case.groups]
    ledger = Ledger(shared.clients["dynamodb"], fresh.environment["LEDGER_TABLE"])
    held = {(group_ids[index], target) for index, target in case.holds}
    for group_id, target in held:
        ledger.hold(group_id, target, reason="a generated hold", by="the property")
    built = build_event(case.shape, group_ids, case.groups[0].get("cache-ingress"))
    record_history(built)
    named = built.named
    scope = oracle.Scope(ACCOUNT, REGION, case.shape.account, case.shape.region)
    groups_now = shared.groups_now(named)
    allowed = oracle.permitted(
        named, groups_now, built.event, policy, scope, caches, built.delivery()
    )
    # A held pair is never granted, whatever the policy allows.
    permits = {p for p in allowed if (p.group_id, p.target) not in held}

    summary = build_authorizer(settings_, shared.injected_clients(settings_)).handle(
        built.event, FakeLambdaContext(), replay=built.operator_replay
    )

    classic = [p for p in permits if p.cache_security_group is not None]
    vpc = [p for p in permits if p.vpc_cache is not None]
    sent = sent_parameters(shared.authorize_calls)
    rules = sent_rules(shared.rule_calls)
    assert set(sent) <= {permit.authorize_parameters for permit in classic}
    assert set(rules) <= {permit.rule_parameters for permit in vpc}
    # A fresh event id: each permitted pair is asked of AWS exactly once.
    assert sorted(sent) == sorted(permit.authorize_parameters for permit in classic)
    assert sorted(rules) == sorted(permit.rule_parameters for permit in vpc)
    by_pair = check_every_pair_has_one_outcome(
        summary, oracle.named_pairs(named, groups_now, policy, scope)
    )
    permitted_pairs = {(p.group_id, p.target): p for p in permits}
    for pair, decision in by_pair.items():
        if pair in held and any((p.group_id, p.target) == pair for p in allowed):
            assert (decision["outcome"], decision.get("rule")) == ("denied", "hold"), decision
        elif pair not in permitted_pairs:
            assert decision["outcome"] in FINAL_DENIALS, decision
        elif permitted_pairs[pair].cache_security_group == "absent-cache-sg":
            assert decision["outcome"] == "failed", decision
        else:
            assert decision["outcome"] in ACCEPTED_OUTCOMES, decision
    failed = any(d["outcome"] == "failed" for d in summary["decisions"])
    on_failure = "failed" if built.operator_replay else "dead-lettered"
    assert summary["status"] == (on_failure if failed else "completed")
    statistic(f"status: {summary['status']}")
    statistic(f"delivery: {case.shape.replay}")
    gated = {
        (p.group_id, p.target)
        for p in permits
        if "principals" in (policy["targets"][p.target].get("allow") or {})
    }
    statistic(f"principal-gated grants: {min(len(gated), 2)}")
    statistic(f"the call set: {case.shape.sets}; CloudTrail: {case.shape.history}")
    statistic(f"authorize calls: {min(len(sent), 3)}{'+' if len(sent) > 3 else ''}")
    statistic(f"ingress rules: {min(len(rules), 2)}{'+' if len(rules) > 2 else ''}")
    statistic(f"held pairs the policy allowed: {min(len(set(allowed) - permits), 1)}")
    assert shared.dead_letter_count(fresh.queue_url) == int(failed and not built.operator_replay)


_group_numbers = itertools.count(1)


def sent_rules(calls: Sequence[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(cache GroupId, port, tagged GroupId) of each ingress rule request, one per pair."""
    rules = []
    for call in calls:
        [permission] = call["IpPermissions"]
        assert permission["IpProtocol"] == "tcp"
        assert permission["FromPort"] == permission["ToPort"]
        assert "IpRanges" not in permission, "a VPC grant never opens a CIDR"
        [pair] = permission["UserIdGroupPairs"]
        rules.append((call["GroupId"], permission["FromPort"], pair["GroupId"]))
    return rules


def _with_vpc_caches(
    shared: SharedWorld, policy: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, oracle.CacheFacts]]:
    """The policy with a new VPC security group for each placeholder, and the oracle's facts
    about those caches. New groups each time: rules do not pile up on one group."""
    vpcs = {SAME_VPC_CACHE: shared.world.vpc_id, OTHER_VPC_CACHE: shared.other_vpc}
    created: dict[str, str] = {}
    caches: dict[str, oracle.CacheFacts] = {}
    targets: dict[str, Any] = {}
    for name, target in policy["targets"].items():
        destination = target.get("vpc_security_group")
        if destination is None:
            targets[name] = target
            continue
        placeholder = destination["group_id"]
        if placeholder not in created:
            created[placeholder] = str(
                shared.clients["ec2"].create_security_group(
                    GroupName=f"prop-cache-{next(_group_numbers)}",
                    Description="a VPC cache",
                    VpcId=vpcs[placeholder],
                )["GroupId"]
            )
        group_id = created[placeholder]
        targets[name] = {**target, "vpc_security_group": {**destination, "group_id": group_id}}
        caches[name] = oracle.CacheFacts(group_id, vpcs[placeholder], destination["port"])
    return {**policy, "targets": targets}, caches


def _create_group(shared: SharedWorld, tags: dict[str, str]) -> str:
    specification = (
        [
            {
                "ResourceType": "security-group",
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            }
        ]
        if tags
        else []
    )
    response = shared.clients["ec2"].create_security_group(
        GroupName=f"prop-app-{next(_group_numbers)}",
        Description="generated",
        VpcId=shared.world.vpc_id,
        TagSpecifications=specification,
    )
    return str(response["GroupId"])


# --- property 2: any group state, faults injected -----------------------------------------

# EC2 group names: letters, digits, spaces and ._-:/()#,@[]+=&;{}!$*
_group_name_characters = st.sampled_from(list("abcXYZ019 ._-:/()#,@[]+=&;{}!$*"))
_owner_ids = st.sampled_from(
    [
        ACCOUNT,
        ACCOUNT,
        OTHER_ACCOUNT,
        "12345678901",
        "1234567890123",
        "AKIAIOSFODNN7EXAMPLE",
        "",
        "12345678901x",
        " 123456789012",
    ]
)


@st.composite
def any_groups(draw: st.DrawFn, policy_names: Sequence[str]) -> dict[str, SecurityGroupFacts]:
    count = draw(st.integers(1, 3))
    groups: dict[str, SecurityGroupFacts] = {}
    for index in range(count):
        group_id = f"sg-{0xFACE0000 + index:017x}"
        groups[group_id] = SecurityGroupFacts(
            group_id=group_id,
            group_name=draw(st.text(_group_name_characters, min_size=1, max_size=24)),
            owner_id=draw(_owner_ids),
            vpc_id=draw(st.sampled_from([None, "vpc-0123456789abcdef0"])),
            region=draw(st.sampled_from([REGION, REGION, REGION, OTHER_REGION])),
            tags=draw(group_tags(policy_names, odd_text=True)),
        )
    return groups


@dataclass(frozen=True)
class InjectedFault:
    service: str
    operation: str
    kind: str
    times: int | None


FAULTS = st.one_of(
    st.none(),
    st.builds(
        InjectedFault,
        service=st.sampled_from(
            ["elasticache", "dynamodb", "dynamodb", "dynamodb", "sqs", "cloudtrail"]
        ),
        operation=st.just(""),
        kind=st.sampled_from(["throttling", "server-error", "timeout", "access-denied"]),
        times=st.sampled_from([1, 2, None]),
    ),
)
_OPERATIONS = {
    "elasticache": ["AuthorizeCacheSecurityGroupIngress"],
    "dynamodb": ["PutItem", "UpdateItem", "DeleteItem", "GetItem"],
    "sqs": ["SendMessage"],
    "cloudtrail": ["LookupEvents"],
}


@dataclass
class AnyStateCase:
    policy: dict[str, Any]
    broken_policy: bool
    groups: dict[str, SecurityGroupFacts]
    shape: EventShape
    fault: InjectedFault | None
    operation_index: int
    describe_fault: str | None


@st.composite
def any_state_cases(draw: st.DrawFn) -> AnyStateCase:
    policy = draw(policies())
    return AnyStateCase(
        policy=policy,
        broken_policy=draw(st.sampled_from([False] * 9 + [True])),
        groups=draw(any_groups(list(policy["targets"]))),
        shape=draw(event_shapes()),
        fault=draw(FAULTS),
        operation_index=draw(st.integers(0, 3)),
        describe_fault=draw(st.sampled_from([None] * 8 + ["transient", "permanent"])),
    )


@pytest.mark.property
@settings(PROFILE, max_examples=ANY_STATE_EXAMPLES)
@given(case=any_state_cases())
def test_any_group_state_and_faults_never_widen_a_grant_or_lose_an_event(
    case: AnyStateCase, shared: SharedWorld, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fresh = shared.fresh(reset_world=False)
    settings_ = Settings.from_environ(fresh.environment)
    first = next(iter(case.groups.values()))
    built = build_event(case.shape, list(case.groups), first.tags.get("cache-ingress"))
    record_history(built)
    named = built.named
    policy_file = _policy_file(tmp_path_factory.getbasetemp(), case.policy, case.broken_policy)
    authorizer = _authorizer_over(shared, settings_, policy_file, case)
    fault = _inject(shared, case)
    plain_groups = {
        gid: {"name": g.group_name, "owner_id": g.owner_id, "region": g.region, "tags": g.tags}
        for gid, g in case.groups.items()
    }
    scope = oracle.Scope(ACCOUNT, REGION, case.shape.account, case.shape.region)
    permits = oracle.permitted(
        named, plain_groups, built.event, case.policy, scope, delivery=built.delivery()
    )
    summary: dict[str, Any] | None = None
    try:
        summary = authorizer.handle(built.event, FakeLambdaContext(), replay=built.operator_replay)
    except TransientFailureError:
        summary = None
    finally:
        if fault is not None:
            fault.clear()

    sent = sent_parameters(shared.authorize_calls)
    if case.broken_policy:
        assert sent == []
    assert set(sent) <= {permit.authorize_parameters for permit in permits}
    statistic(f"ended: {'raised for retry' if summary is None else summary['status']}")
    statistic(f"authorize calls: {min(len(sent), 3)}{'+' if len(sent) > 3 else ''}")
    if summary is None:
        # Raised for retry: nothing may have been dead-lettered for it.
        assert shared.dead_letter_count(fresh.queue_url) == 0
        return
    dead_lettered = summary["status"] == "dead-lettered"
    assert shared.dead_letter_count(fresh.queue_url) == int(dead_lettered)
    if summary["status"] == "completed":
        by_pair = check_every_pair_has_one_outcome(
            summary, oracle.named_pairs(named, plain_groups, case.policy, scope)
        )
        permitted_pairs = {(p.group_id, p.target) for p in permits}
        for pair, decision in by_pair.items():
            expected = ACCEPTED_OUTCOMES if pair in permitted_pairs else FINAL_DENIALS
            assert decision["outcome"] in expected, decision
    else:
        assert summary["status"] == ("failed" if built.operator_replay else "dead-lettered")
        assert summary["errorType"]
        assert summary["reason"].strip()


def _policy_file(base: Path, policy: dict[str, Any], broken: bool) -> Path:
    document = dict(policy)
    if broken:
        # A reviewer's typo: an unknown field must stop every grant.
        first = next(iter(document["targets"]))
        document["targets"] = {
            **document["targets"],
            first: {**document["targets"][first], "regoin": REGION},
        }
    path = base / f"policy-{next(_event_numbers)}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _authorizer_over(
    shared: SharedWorld, settings_: Settings, policy_file: Path, case: AnyStateCase
) -> Authorizer:
    """The function's own adapters on moto, except EC2 describe, which answers `case`."""

    def describe(group_ids: Sequence[str]) -> dict[str, SecurityGroupFacts]:
        if case.describe_fault is not None:
            raise AwsCallError(
                "ec2:DescribeSecurityGroups failed: injected",
                code="Injected",
                transient=case.describe_fault == "transient",
            )
        return {gid: case.groups[gid] for gid in group_ids if gid in case.groups}

    @cache
    def granter() -> Granter:
        persistence = DynamoDBPersistenceLayer(
            table_name=settings_.idempotency_table, boto3_client=shared.clients["dynamodb"]
        )
        return Granter(
            partial(authorize, shared.clients["elasticache"]),
            persistence,
            expiry_seconds=settings_.idempotency_expiry_seconds,
        )

    dead_letters: Callable[[], DeadLetterQueue] = partial(
        DeadLetterQueue, shared.clients["sqs"], settings_.dead_letter_queue_url
    )
    return Authorizer(
        settings_,
        policies=PolicySource(tag_key=settings_.tag_key, policy_file=policy_file),
        describe_groups=describe,
        granter=granter,
        dead_letters=dead_letters,
        verify_principal=build_principal_verifier(shared.injected_clients(settings_)),
    )


def _inject(shared: SharedWorld, case: AnyStateCase) -> Fault | None:
    if case.fault is None:
        return None
    operations = _OPERATIONS[case.fault.service]
    operation = operations[case.operation_index % len(operations)]
    return Fault(
        shared.clients[case.fault.service], operation, case.fault.kind, times=case.fault.times
    )
