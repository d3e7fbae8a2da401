"""IAM and data-at-rest checks on template.yaml, read as CloudFormation reads it.

The template is loaded with the project's CloudFormation loader (cfn-lint's decoder), and
the intrinsics that build ARNs are evaluated for concrete parameters, so the assertions are
about the ARNs IAM will see, not about the text that produces them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cache_ingress_tools.local_invoke.template import TemplateError, load_template

pytestmark = pytest.mark.template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
# Actions IAM cannot scope to a resource (the service authorization reference lists no
# resource type for them): the only ones that may use Resource "*".
UNSCOPABLE_ACTIONS = frozenset(
    {
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSecurityGroupRules",
        "ec2:DescribeVpcPeeringConnections",
        "cloudtrail:LookupEvents",
    }
)
LOOKUP = "cloudtrail:LookupEvents"
AUTHORIZE = "elasticache:AuthorizeCacheSecurityGroupIngress"
REVOKE = "elasticache:RevokeCacheSecurityGroupIngress"
ADD_RULE = "ec2:AuthorizeSecurityGroupIngress"
REMOVE_RULE = "ec2:RevokeSecurityGroupIngress"
LEDGER = "<GrantLedgerTable.Arn>"
LEDGER_INDEXES = f"{LEDGER}/index/*"
LEDGER_READS = frozenset(
    {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:BatchGetItem"}
)
# Reads of any cache of the stack's own account and region (VPC targets name caches in a
# policy that changes without a deployment; ElastiCache derives member cluster ids).
_CACHES = f"arn:aws:elasticache:{REGION}:{ACCOUNT}"
ACCOUNT_WIDE_CACHE_READS = {
    "elasticache:DescribeReplicationGroups": f"{_CACHES}:replicationgroup:*",
    "elasticache:DescribeCacheClusters": f"{_CACHES}:cluster:*",
}
SECURITY_GROUPS = f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/*"
DLQ_ARN = "<DeadLetterQueue.Arn>"
# The functions that make grants: the event path and the scheduled sweep (docs/reconcile.md).
GRANTING_FUNCTIONS = {"IngressFunction", "ReconcileFunction"}


class _NoValue:
    """AWS::NoValue: the property or list item disappears."""


NO_VALUE = _NoValue()


@cache
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def resources(kind: str | None = None) -> dict[str, dict[str, Any]]:
    return {
        name: body
        for name, body in template()["Resources"].items()
        if kind is None or body["Type"] == kind
    }


class Evaluator:
    """Evaluates the intrinsics an IAM statement uses, for one set of parameter values."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.parameters: dict[str, Any] = {}
        for name, spec in template().get("Parameters", {}).items():
            value = (overrides or {}).get(name, spec.get("Default"))
            if spec["Type"] == "CommaDelimitedList" and isinstance(value, str):
                value = [item.strip() for item in value.split(",")]
            self.parameters[name] = value

    def condition(self, name: str) -> bool:
        return bool(self.value(template()["Conditions"][name]))

    def value(self, node: Any) -> Any:  # noqa: C901, PLR0911, PLR0912 - one branch per intrinsic
        if isinstance(node, list):
            items = [self.value(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) != 1:
            values = {key: self.value(item) for key, item in node.items()}
            return {key: item for key, item in values.items() if item is not NO_VALUE}
        [(key, argument)] = node.items()
        if key == "Ref":
            return self._ref(argument)
        if key == "Condition":
            return self.condition(argument)
        if key == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if key == "Fn::Sub":
            return self._sub(argument)
        if key == "Fn::Join":
            delimiter, items = argument
            return str(self.value(delimiter)).join(self.value(items))
        if key == "Fn::Split":
            delimiter, text = argument
            return str(self.value(text)).split(str(self.value(delimiter)))
        if key == "Fn::If":
            name, when_true, when_false = argument
            return self.value(when_true if self.condition(name) else when_false)
        if key == "Fn::Equals":
            left, right = (self.value(item) for item in argument)
            return left == right
        if key == "Fn::Not":
            return not self.value(argument[0])
        if key == "Fn::Or":
            return any(self.value(item) for item in argument)
        if key == "Fn::And":
            return all(self.value(item) for item in argument)
        if key == "Fn::Select":
            index, items = argument
            return self.value(items)[int(index)]
        return {key: self.value(argument)}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        assert name in template()["Resources"], f"!Ref to an unknown name {name}"
        return f"<{name}>"

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {name: self.value(item) for name, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if "." in name:
                resource, attribute = name.split(".", 1)
                return f"<{resource}.{attribute}>"
            return str(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)


PARAMETER_SETS = {
    "defaults": {},
    "with-policy-parameter": {
        "PolicyParameterName": "/cache-ingress/policy",
        "CacheSecurityGroupArns": (
            f"{_CACHES}:securitygroup:orders-cache-sg,{_CACHES}:securitygroup:payments-cache-sg"
        ),
        "CacheVpcSecurityGroupIds": "sg-0c1a2b3c4d5e6f701",
    },
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def identity_statements(evaluator: Evaluator) -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner, statement) for every identity-policy statement in the template."""
    for name, body in resources("AWS::Serverless::Function").items():
        for entry in _as_list(body["Properties"].get("Policies", [])):
            assert isinstance(entry, dict) and set(entry) == {"Statement"}, (
                f"{name}: only inline statements are reviewed; found {entry!r}"
            )
            for statement in evaluator.value(entry["Statement"]):
                yield name, statement
    for kind in ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for name, body in resources(kind).items():
            properties = body["Properties"]
            documents = [properties.get("PolicyDocument")] + [
                policy["PolicyDocument"] for policy in properties.get("Policies", [])
            ]
            for document in filter(None, documents):
                for statement in _as_list(evaluator.value(document["Statement"])):
                    yield name, statement


def _statements_for(parameters: str) -> list[tuple[str, dict[str, Any]]]:
    return list(identity_statements(Evaluator(PARAMETER_SETS[parameters])))


@pytest.mark.parametrize("parameters", PARAMETER_SETS)
def test_every_statement_allows_named_actions_on_named_resources(parameters: str) -> None:
    statements = _statements_for(parameters)

    assert statements
    for owner, statement in statements:
        where = f"{owner}/{statement.get('Sid')}"
        assert statement["Effect"] == "Allow", where
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), where
        actions = _as_list(statement["Action"])
        for action in actions:
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), f"{where}: {action}"
        resources_ = _as_list(statement["Resource"])
        assert resources_, where
        if "*" in resources_:
            assert resources_ == ["*"], where
            assert set(actions) <= UNSCOPABLE_ACTIONS, f"{where}: {actions} on '*'"
        for resource in resources_:
            if resource == "*" or "*" not in resource:
                continue
            if actions in ([ADD_RULE], [REMOVE_RULE]):
                # Scoped by ec2:SecurityGroupID to named ids; checked in its own test.
                assert resource == SECURITY_GROUPS, where
                assert list(statement["Condition"]) == ["StringEquals"], where
                assert list(statement["Condition"]["StringEquals"]) == ["ec2:SecurityGroupID"]
                continue
            if resource == LEDGER_INDEXES:
                # The ledger's own indexes, read only.
                assert set(actions) <= LEDGER_READS, where
                continue
            assert set(actions) <= set(ACCOUNT_WIDE_CACHE_READS), f"{where}: {resource}"
            assert resource in ACCOUNT_WIDE_CACHE_READS.values(), f"{where}: {resource}"


@pytest.mark.parametrize("parameters", PARAMETER_SETS)
def test_authorize_is_limited_to_the_named_cache_security_groups(parameters: str) -> None:
    evaluator = Evaluator(PARAMETER_SETS[parameters])
    expected = {arn for arn in evaluator.parameters["CacheSecurityGroupArns"] if arn}

    granting = [
        (owner, s)
        for owner, s in identity_statements(evaluator)
        if AUTHORIZE in _as_list(s["Action"])
    ]

    # Each function that grants (the event path, the scheduled sweep) has one statement;
    # with no cache security group named, none has any: the permission is never widened.
    owners = [owner for owner, _ in granting]
    assert len(owners) == len(set(owners))
    assert set(owners) == (GRANTING_FUNCTIONS if expected else set())
    for _, statement in granting:
        assert _as_list(statement["Action"]) == [AUTHORIZE]
        assert set(_as_list(statement["Resource"])) == expected


@pytest.mark.parametrize("enforce", ["false", "true"])
@pytest.mark.parametrize("parameters", PARAMETER_SETS)
def test_revoke_is_scoped_exactly_as_authorize(parameters: str, enforce: str) -> None:
    evaluator = Evaluator({**PARAMETER_SETS[parameters], "ReconcileEnforce": enforce})
    statements = list(identity_statements(evaluator))

    def scopes(action: str) -> dict[str, list[tuple[Any, Any]]]:
        found: dict[str, list[tuple[Any, Any]]] = {}
        for owner, statement in statements:
            if action in _as_list(statement["Action"]):
                assert _as_list(statement["Action"]) == [action], owner
                found.setdefault(owner, []).append(
                    (sorted(_as_list(statement["Resource"])), statement.get("Condition"))
                )
        return found

    # The event path revokes (targets with revoke: true); the sweep only in enforce mode.
    revoking = {"IngressFunction"} | ({"ReconcileFunction"} if enforce == "true" else set())
    authorize, revoke = scopes(AUTHORIZE), scopes(REVOKE)
    add, remove = scopes(ADD_RULE), scopes(REMOVE_RULE)
    assert set(remove) == revoking
    assert set(revoke) == (revoking if authorize else set())
    for owner in revoking:
        assert remove[owner] == add[owner], owner
        if authorize:
            assert revoke[owner] == authorize[owner], owner


@pytest.mark.parametrize(
    "ids", ["", "sg-0c1a2b3c4d5e6f701", "sg-0c1a2b3c4d5e6f701,sg-0c2b3c4d5e6f70812"]
)
def test_rules_can_only_be_added_to_the_named_cache_vpc_security_groups(ids: str) -> None:
    evaluator = Evaluator({"CacheVpcSecurityGroupIds": ids})

    adding = [
        (owner, s)
        for owner, s in identity_statements(evaluator)
        if ADD_RULE in _as_list(s["Action"])
    ]

    # One statement in each function that grants, each limited to the named groups.
    assert sorted(owner for owner, _ in adding) == sorted(GRANTING_FUNCTIONS)
    for _, statement in adding:
        assert _as_list(statement["Action"]) == [ADD_RULE]
        assert _as_list(statement["Resource"]) == [SECURITY_GROUPS]
        assert statement["Condition"] == {
            "StringEquals": {"ec2:SecurityGroupID": [i.strip() for i in ids.split(",")]}
        }


def test_the_function_keeps_its_records_and_dead_letters_in_its_own_resources() -> None:
    by_action: dict[str, set[str]] = {}
    for owner, statement in _statements_for("with-policy-parameter"):
        if owner != "IngressFunction":
            continue
        for action in _as_list(statement["Action"]):
            by_action.setdefault(action, set()).update(_as_list(statement["Resource"]))

    ledger = {LEDGER, LEDGER_INDEXES}
    assert by_action.pop("dynamodb:GetItem") == {"<IdempotencyTable.Arn>"} | ledger
    assert by_action.pop("dynamodb:UpdateItem") == {"<IdempotencyTable.Arn>", LEDGER}
    for action in ("PutItem", "DeleteItem"):
        assert by_action.pop(f"dynamodb:{action}") == {"<IdempotencyTable.Arn>"}
    for action in ("Query", "BatchGetItem"):
        assert by_action.pop(f"dynamodb:{action}") == ledger
    assert by_action.pop("sqs:SendMessage") == {DLQ_ARN}
    assert by_action.pop("ssm:GetParameter") == {
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/cache-ingress/policy"
    }
    assert by_action.pop("ec2:DescribeSecurityGroups") == {"*"}
    assert by_action.pop("ec2:DescribeVpcPeeringConnections") == {"*"}
    assert by_action.pop(LOOKUP) == {"*"}
    assert by_action.pop(ADD_RULE) == {SECURITY_GROUPS}
    assert by_action.pop(REMOVE_RULE) == {SECURITY_GROUPS}
    assert by_action.pop("ec2:DescribeSecurityGroupRules") == {"*"}
    for action in ACCOUNT_WIDE_CACHE_READS:
        assert by_action.pop(action) == set(ACCOUNT_WIDE_CACHE_READS.values())
    assert set(by_action) <= {AUTHORIZE, REVOKE}


def test_without_a_policy_parameter_the_function_cannot_read_ssm() -> None:
    actions = {
        action
        for _, statement in _statements_for("defaults")
        for action in _as_list(statement["Action"])
    }
    assert not any(action.startswith("ssm:") for action in actions)


def test_the_dead_letter_queue_policy_admits_only_eventbridge_for_the_stacks_rules() -> None:
    evaluator = Evaluator()
    rule_arns = {
        f"<{function}{event}.Arn>"
        for function, body in resources("AWS::Serverless::Function").items()
        for event, spec in body["Properties"].get("Events", {}).items()
        if spec["Type"] == "EventBridgeRule"
        and evaluator.value(spec["Properties"].get("DeadLetterConfig", {}).get("Arn")) == DLQ_ARN
    }
    [policy] = resources("AWS::SQS::QueuePolicy").values()
    document = evaluator.value(policy["Properties"]["PolicyDocument"])

    assert evaluator.value(policy["Properties"]["Queues"]) == ["<DeadLetterQueue>"]
    allows = [s for s in document["Statement"] if s["Effect"] == "Allow"]
    [allow] = allows
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert _as_list(allow["Action"]) == ["sqs:SendMessage"]
    assert allow["Resource"] == DLQ_ARN
    assert list(allow["Condition"]) == ["ArnEquals"]
    assert list(allow["Condition"]["ArnEquals"]) == ["aws:SourceArn"]
    assert set(allow["Condition"]["ArnEquals"]["aws:SourceArn"]) == rule_arns
    # Tag Change, CreateTags/DeleteTags, CreateSecurityGroup, DeleteSecurityGroup
    assert len(rule_arns) == 4
    [insecure] = [s for s in document["Statement"] if s.get("Sid") == "DenyInsecureTransport"]
    assert insecure["Effect"] == "Deny"
    assert insecure["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert insecure["Principal"] == "*"


# --- the queue policy, evaluated as IAM evaluates a resource policy ------------------------

EVENTS = "events.amazonaws.com"
OTHER_ROOT = "arn:aws:iam::210987654321:root"
INGRESS_ROLE = "<IngressFunctionRole.Arn>"
SWEEP_ROLE = "<ReconcileFunctionRole.Arn>"
RULES = [
    "<IngressFunctionTagChange.Arn>",
    "<IngressFunctionTaggingCall.Arn>",
    "<IngressFunctionCreateTaggedGroup.Arn>",
    "<IngressFunctionDeleteGroup.Arn>",
]
QUEUE_ACTIONS = ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                 "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]  # fmt: skip


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, str]) -> bool:
    """One condition key, as IAM documents it: a positive operator is false for a key the
    request lacks, a negated one (…Not…) true; a list of values matches any of them."""
    values = [str(v) for v in _as_list(wanted)]
    present = context.get(key)
    if operator in {"ArnEquals", "StringEquals", "Bool"}:
        return present is not None and present in values
    if operator in {"ArnNotEquals", "StringNotEquals"}:
        return present is None or present not in values
    raise AssertionError(f"the test's evaluator does not know {operator}")


def _applies(statement: Mapping[str, Any], action: str, context: Mapping[str, str]) -> bool:
    principal = statement["Principal"]
    if principal != "*":
        services = _as_list(principal.get("Service", []))
        arns = _as_list(principal.get("AWS", []))
        if context.get("service") not in services and context.get("aws:PrincipalArn") not in arns:
            return False
    if action not in _as_list(statement["Action"]) and "sqs:*" not in _as_list(statement["Action"]):
        return False
    return all(
        _condition_holds(operator, key, wanted, context)
        for operator, keys in statement.get("Condition", {}).items()
        for key, wanted in keys.items()
    )


def queue_decision(action: str, **context: str) -> str:
    """ "denied" (an explicit deny), "allowed" (the queue policy allows), or "iam" (left to
    the caller's identity policy, as for any principal of the account)."""
    [policy] = resources("AWS::SQS::QueuePolicy").values()
    document = Evaluator().value(policy["Properties"]["PolicyDocument"])
    context = {"aws:SecureTransport": "true", **context}
    effects = {s["Effect"] for s in document["Statement"] if _applies(s, action, context)}
    if "Deny" in effects:
        return "denied"
    return "allowed" if "Allow" in effects else "iam"


@pytest.mark.parametrize(
    ("sender", "context", "expected"),
    [
        ("the ingress function's role", {"aws:PrincipalArn": INGRESS_ROLE}, "iam"),
        ("the sweep's role (its on-failure destination)", {"aws:PrincipalArn": SWEEP_ROLE}, "iam"),
        *[
            (f"EventBridge for {rule}", {"service": EVENTS, "aws:SourceArn": rule}, "allowed")
            for rule in RULES
        ],
        (
            "EventBridge for another rule",
            {"service": EVENTS, "aws:SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/other"},
            "denied",
        ),
        ("an administrator", {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/Admin"}, "denied"),
        ("a developer", {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/developer"}, "denied"),
        ("another account's root", {"aws:PrincipalArn": OTHER_ROOT}, "denied"),
        ("SNS with no source", {"service": "sns.amazonaws.com"}, "denied"),
        ("the ingress role without TLS",
         {"aws:PrincipalArn": INGRESS_ROLE, "aws:SecureTransport": "false"}, "denied"),
    ],
)  # fmt: skip
def test_only_the_functions_and_the_stacks_rules_may_send_to_the_queue(
    sender: str, context: dict[str, str], expected: str
) -> None:
    assert queue_decision("sqs:SendMessage", **context) == expected, sender


@pytest.mark.parametrize("action", [a for a in QUEUE_ACTIONS if a != "sqs:SendMessage"])
def test_operators_and_administrators_keep_reading_and_deleting(action: str) -> None:
    for principal in (f"arn:aws:iam::{ACCOUNT}:role/Admin", f"arn:aws:iam::{ACCOUNT}:role/oncall"):
        assert queue_decision(action, **{"aws:PrincipalArn": principal}) == "iam"


def test_the_ingress_function_touches_only_grant_records() -> None:
    from cache_ingress.grants import KEY_PREFIX
    from cache_ingress.revocations import KEY_PREFIX as REVOKE_PREFIX

    evaluator = Evaluator(PARAMETER_SETS["with-policy-parameter"])
    [records] = [
        s
        for owner, s in identity_statements(evaluator)
        if owner == "IngressFunction" and "<IdempotencyTable.Arn>" in _as_list(s["Resource"])
    ]
    assert records["Condition"] == {
        "ForAllValues:StringLike": {
            "dynamodb:LeadingKeys": [f"{KEY_PREFIX}#*", f"{REVOKE_PREFIX}#*"]
        }
    }


def test_only_the_ingress_function_may_look_up_cloudtrail() -> None:
    evaluator = Evaluator(PARAMETER_SETS["with-policy-parameter"])
    owners = [
        (owner, s) for owner, s in identity_statements(evaluator) if LOOKUP in _as_list(s["Action"])
    ]
    assert [(owner, _as_list(s["Action"])) for owner, s in owners] == [
        ("IngressFunction", [LOOKUP])
    ]


@pytest.mark.parametrize(
    ("parameters", "deploys", "notified"),
    [
        ({}, False, []),
        ({"AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:oncall"}, True,
         ["arn:aws:sns:us-east-1:123456789012:oncall"]),
        ({"AlarmEmail": "oncall@example.com"}, True, ["<DeadLetterAlarmTopic>"]),
        ({"AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:oncall",
          "AlarmEmail": "oncall@example.com"}, True,
         ["arn:aws:sns:us-east-1:123456789012:oncall", "<DeadLetterAlarmTopic>"]),
    ],
)  # fmt: skip
def test_the_dead_letter_alarm_always_notifies_someone(
    parameters: dict[str, str], deploys: bool, notified: list[str]
) -> None:
    evaluator = Evaluator(parameters)
    [rule] = template()["Rules"].values()
    assert all(bool(evaluator.value(a["Assert"])) is deploys for a in rule["Assertions"])
    alarm = resources("AWS::CloudWatch::Alarm")["DeadLetterAlarm"]["Properties"]
    assert evaluator.value(alarm["AlarmActions"]) == notified
    topic = resources("AWS::SNS::Topic")["DeadLetterAlarmTopic"]
    assert evaluator.condition(topic["Condition"]) is ("AlarmEmail" in parameters)
    assert evaluator.value(topic["Properties"]["Subscription"]) == (
        [{"Protocol": "email", "Endpoint": parameters["AlarmEmail"]}]
        if "AlarmEmail" in parameters
        else [{"Protocol": "email", "Endpoint": ""}]
    )


def test_every_failure_path_ends_in_the_dead_letter_queue() -> None:
    evaluator = Evaluator()
    function = resources("AWS::Serverless::Function")["IngressFunction"]["Properties"]

    on_failure = function["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    assert evaluator.value(on_failure["Destination"]) == DLQ_ARN
    assert 0 <= function["EventInvokeConfig"]["MaximumRetryAttempts"] <= 2
    for name, event in function["Events"].items():
        assert event["Type"] == "EventBridgeRule", name
        assert evaluator.value(event["Properties"]["DeadLetterConfig"]["Arn"]) == DLQ_ARN, name


def test_nothing_but_eventbridge_rules_can_invoke_the_function() -> None:
    function = resources("AWS::Serverless::Function")["IngressFunction"]["Properties"]

    assert "FunctionUrlConfig" not in function
    assert {event["Type"] for event in function["Events"].values()} == {"EventBridgeRule"}
    for name, permission in resources("AWS::Lambda::Permission").items():
        assert permission["Properties"]["Principal"] != "*", name


def test_the_idempotency_table_is_encrypted_recoverable_and_expires_records() -> None:
    properties = resources("AWS::DynamoDB::Table")["IdempotencyTable"]["Properties"]

    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert properties["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]


def test_the_dead_letter_queue_is_encrypted_and_keeps_messages_fourteen_days() -> None:
    queue = resources("AWS::SQS::Queue")["DeadLetterQueue"]["Properties"]

    assert queue.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 60 * 60


def test_the_loader_reads_short_tags_as_intrinsics(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n  R:\n    Properties:\n      a: !Ref X\n      b: !GetAtt T.Arn\n"
        "      c: !Sub 'x-${AWS::Region}'\n      d: !If [C, 1, 2]\n",
        encoding="utf-8",
    )
    assert load_template(path)["Resources"]["R"]["Properties"] == {
        "a": {"Ref": "X"},
        "b": {"Fn::GetAtt": ["T", "Arn"]},
        "c": {"Fn::Sub": "x-${AWS::Region}"},
        "d": {"Fn::If": ["C", 1, 2]},
    }
    path.write_text("Resources:\n  R: !!python/name:os.system\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"python/name:os\.system"):
        load_template(path)


def test_the_sweep_reads_named_cache_groups_and_touches_only_its_records_and_token() -> None:
    from cache_ingress.grants import KEY_PREFIX
    from cache_ingress.reconcile import CURSOR_KEY
    from cache_ingress.revocations import KEY_PREFIX as REVOKE_PREFIX

    evaluator = Evaluator(PARAMETER_SETS["with-policy-parameter"])
    sweep = [s for owner, s in identity_statements(evaluator) if owner == "ReconcileFunction"]

    [read] = [
        s for s in sweep if "elasticache:DescribeCacheSecurityGroups" in _as_list(s["Action"])
    ]
    assert set(_as_list(read["Resource"])) == set(evaluator.parameters["CacheSecurityGroupArns"])
    [records] = [s for s in sweep if "<IdempotencyTable.Arn>" in _as_list(s["Resource"])]
    # The partition keys the code writes: grant and revocation records and the resume
    # token, nothing else.
    assert records["Condition"] == {
        "ForAllValues:StringLike": {
            "dynamodb:LeadingKeys": [
                f"{KEY_PREFIX}#*",
                f"{REVOKE_PREFIX}#*",
                CURSOR_KEY.split("#")[0] + "#*",
            ]
        }
    }
    function = resources("AWS::Serverless::Function")["ReconcileFunction"]["Properties"]
    on_failure = function["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert evaluator.value(on_failure["Destination"]) == DLQ_ARN
    assert {event["Type"] for event in function["Events"].values()} == {"Schedule"}
    assert function["ReservedConcurrentExecutions"] == 1


# --- the grant ledger ----------------------------------------------------------------------


def test_the_ledger_is_the_shape_the_code_reads_encrypted_recoverable_and_kept() -> None:
    from cache_ingress.ledger import TABLE_SHAPE

    ledger = resources("AWS::DynamoDB::Table")["GrantLedgerTable"]
    properties = ledger["Properties"]

    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    # The audit trail: no TTL, and it outlives the stack.
    assert "TimeToLiveSpecification" not in properties
    assert ledger["DeletionPolicy"] == "Retain"
    assert ledger["UpdateReplacePolicy"] == "Retain"
    for part in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode"):
        assert properties[part] == TABLE_SHAPE[part], part


@pytest.mark.parametrize("enforce", ["false", "true"])
def test_no_function_can_delete_from_the_ledger_or_write_anything_but_grant_entries(
    enforce: str,
) -> None:
    from cache_ingress.ledger import RULE_PREFIX

    evaluator = Evaluator({**PARAMETER_SETS["with-policy-parameter"], "ReconcileEnforce": enforce})
    for owner in ("IngressFunction", "ReconcileFunction"):
        on_ledger = [
            s
            for o, s in identity_statements(evaluator)
            if o == owner and {LEDGER, LEDGER_INDEXES} & set(_as_list(s["Resource"]))
        ]
        actions = {a for s in on_ledger for a in _as_list(s["Action"])}
        assert "dynamodb:DeleteItem" not in actions, owner
        assert "dynamodb:PutItem" not in actions, owner
        [write] = [s for s in on_ledger if "dynamodb:UpdateItem" in _as_list(s["Action"])]
        assert _as_list(write["Action"]) == ["dynamodb:UpdateItem"]
        assert _as_list(write["Resource"]) == [LEDGER]
        # Grant entries only: holds are the operators'.
        assert write["Condition"] == {
            "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{RULE_PREFIX}*"]}
        }
        reads = {a for s in on_ledger if s is not write for a in _as_list(s["Action"])}
        assert reads <= LEDGER_READS, owner
    # Only the sweep scans (the open entries, once per run).
    scans = {
        o
        for o, s in identity_statements(evaluator)
        if "dynamodb:Scan" in _as_list(s["Action"]) and o.endswith("Function")
    }
    assert scans == {"ReconcileFunction"}


def test_holds_need_only_the_ledgers_rights() -> None:
    from cache_ingress.ledger import HOLD_PREFIX

    evaluator = Evaluator(PARAMETER_SETS["with-policy-parameter"])
    statements = [s for o, s in identity_statements(evaluator) if o == "LedgerOperatorPolicy"]

    resources_ = {r for s in statements for r in _as_list(s["Resource"])}
    assert resources_ == {LEDGER, LEDGER_INDEXES}
    [write] = [s for s in statements if "dynamodb:UpdateItem" in _as_list(s["Action"])]
    assert _as_list(write["Action"]) == ["dynamodb:UpdateItem"]
    assert write["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{HOLD_PREFIX}*"]}
    }
    reads = {a for s in statements if s is not write for a in _as_list(s["Action"])}
    assert reads == LEDGER_READS
