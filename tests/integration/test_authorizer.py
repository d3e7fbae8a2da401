"""The Authorizer end to end against moto and the cache-security-group emulation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools.metrics.provider import cold_start

from cache_ingress.authorizer import Authorizer
from cache_ingress.errors import TransientFailureError
from cache_ingress.handler import lambda_handler
from cache_ingress_tools.emulator.cache_security_groups import set_classic_enabled
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.integration.conftest import dead_letters
from tests.support.events import (
    ACCOUNT,
    INVENTORY_GROUP,
    ORDERS_GROUP,
    PAYMENTS_GROUP,
    REGION,
    create_tags,
    load_event,
    tag_change,
)
from tests.support.faults import Fault
from tests.support.lambda_context import FakeLambdaContext
from tests.support.output import capture_function_output

pytestmark = pytest.mark.integration

MakeAuthorizer = Callable[..., Authorizer]


def ec2_groups_in(clients: dict[str, Any], cache_group: str) -> list[dict[str, str]]:
    response = clients["elasticache"].describe_cache_security_groups(
        CacheSecurityGroupName=cache_group
    )
    return response["CacheSecurityGroups"][0]["EC2SecurityGroups"]


def test_an_allowed_tag_sends_exactly_the_documented_authorize_request(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    summary = make_authorizer().handle(
        load_event("tag-change-authorized.json"), FakeLambdaContext()
    )

    assert summary["status"] == "completed"
    assert authorize_calls == [
        {
            "CacheSecurityGroupName": "orders-cache-sg",
            "EC2SecurityGroupName": "orders-app",
            "EC2SecurityGroupOwnerId": ACCOUNT,
        }
    ]
    assert ec2_groups_in(clients, "orders-cache-sg") == [
        {
            "Status": "authorized",
            "EC2SecurityGroupName": "orders-app",
            "EC2SecurityGroupOwnerId": ACCOUNT,
        }
    ]
    [decision] = summary["decisions"]
    assert decision == {
        "group_id": ORDERS_GROUP,
        "target": "orders",
        "outcome": "authorized",
        "reason": "ingress authorized",
        "group_name": "orders-app",
        "owner_id": ACCOUNT,
        "cache_security_group": "orders-cache-sg",
    }


def test_duplicate_delivery_calls_aws_once(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]]
) -> None:
    authorizer = make_authorizer()
    event = load_event("tag-change-authorized.json")

    first = authorizer.handle(event, FakeLambdaContext())
    second = authorizer.handle(event, FakeLambdaContext(aws_request_id="second-delivery"))

    assert len(authorize_calls) == 1
    assert first["counts"] == {"authorized": 1}
    assert second["counts"] == {"already-authorized": 1}
    assert second["decisions"][0]["reason"] == (
        "this event's grant was already made (authorized, recorded)"
    )


def test_duplicate_delivery_to_a_new_execution_environment_calls_aws_once(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]]
) -> None:
    event = load_event("tag-change-authorized.json")
    make_authorizer().handle(event, FakeLambdaContext())
    make_authorizer().handle(event, FakeLambdaContext())
    assert len(authorize_calls) == 1


def test_the_idempotency_record_is_a_conditional_put_keyed_by_event_and_grant(
    make_authorizer: MakeAuthorizer, clients: dict[str, Any], world: SeededWorld
) -> None:
    puts: list[dict[str, Any]] = []
    clients["dynamodb"].meta.events.register(
        "provide-client-params.dynamodb.PutItem", lambda params, **_: puts.append(params)
    )

    make_authorizer().handle(load_event("tag-change-authorized.json"), FakeLambdaContext())

    [put] = puts
    assert put["TableName"] == world.scenario.idempotency_table
    assert put["Item"]["id"]["S"].startswith("cache-ingress.grant#")
    assert put["Item"]["status"]["S"] == "INPROGRESS"
    assert "attribute_not_exists(#id)" in put["ConditionExpression"]
    [record] = clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)["Items"]
    assert record["status"]["S"] == "COMPLETED"
    assert int(record["expiration"]["N"]) > time.time() + 86_000


def test_different_events_for_the_same_grant_each_get_a_record_and_one_real_grant(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    authorizer = make_authorizer()
    first = authorizer.handle(tag_change(event_id="e-1"), FakeLambdaContext())
    second = authorizer.handle(tag_change(event_id="e-2"), FakeLambdaContext())

    assert first["counts"] == {"authorized": 1}
    assert second["counts"] == {"already-authorized": 1}
    assert len(authorize_calls) == 2
    assert len(ec2_groups_in(clients, "orders-cache-sg")) == 1


def test_a_stale_event_after_the_tag_was_removed_grants_nothing(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    clients["ec2"].delete_tags(Resources=[ORDERS_GROUP], Tags=[{"Key": "cache-ingress"}])

    summary = make_authorizer().handle(
        load_event("tag-change-authorized.json"), FakeLambdaContext()
    )

    assert authorize_calls == []
    [decision] = summary["decisions"]
    assert decision["outcome"] == "not-applicable"
    assert "no cache-ingress tag now" in decision["reason"]


def test_current_tags_decide_not_the_tags_in_the_event(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    clients["ec2"].create_tags(Resources=[ORDERS_GROUP], Tags=[{"Key": "env", "Value": "dev"}])

    summary = make_authorizer().handle(
        tag_change(tags={"cache-ingress": "orders", "env": "prod"}), FakeLambdaContext()
    )

    assert authorize_calls == []
    assert summary["decisions"][0]["rule"] == "required-tags"


def test_a_replayed_failure_runs_again_once_the_cause_is_fixed(
    make_authorizer: MakeAuthorizer,
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    authorizer = make_authorizer()
    event = load_event("tag-change-cache-group-missing.json")

    failed = authorizer.handle(event, FakeLambdaContext())
    clients["elasticache"].create_cache_security_group(
        CacheSecurityGroupName="inventory-cache-sg", Description="inventory"
    )
    replayed = authorizer.handle(event, FakeLambdaContext())

    assert failed["status"] == "dead-lettered"
    assert failed["decisions"][0]["error_code"] == "CacheSecurityGroupNotFound"
    assert replayed["status"] == "completed"
    assert replayed["counts"] == {"authorized": 1}
    assert len(authorize_calls) == 2
    assert (
        ec2_groups_in(clients, "inventory-cache-sg")[0]["EC2SecurityGroupName"] == "inventory-app"
    )
    assert len(dead_letters(clients["sqs"], world.dead_letter_queue_url)) == 1


def test_authorization_already_exists_is_already_authorized(
    make_authorizer: MakeAuthorizer, clients: dict[str, Any]
) -> None:
    clients["elasticache"].authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders-cache-sg",
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId=ACCOUNT,
    )

    summary = make_authorizer().handle(
        load_event("tag-change-authorized.json"), FakeLambdaContext()
    )

    assert summary["status"] == "completed"
    assert summary["decisions"][0]["outcome"] == "already-authorized"


def test_an_account_without_ec2_classic_dead_letters_and_points_at_vpc_targets(
    make_authorizer: MakeAuthorizer, clients: dict[str, Any], world: SeededWorld
) -> None:
    set_classic_enabled(ACCOUNT, REGION, False)

    summary = make_authorizer().handle(
        load_event("tag-change-authorized.json"), FakeLambdaContext()
    )

    assert summary["status"] == "dead-lettered"
    [decision] = summary["decisions"]
    assert decision["error_code"] == "CacheSecurityGroupsUnavailable"
    assert "no EC2-Classic" in decision["reason"]
    assert "VPC target" in decision["reason"]
    [message] = dead_letters(clients["sqs"], world.dead_letter_queue_url)
    assert message["body"]["responsePayload"]["decisions"][0]["failure"] == "permanent"


def test_the_dead_letter_envelope_carries_the_event_the_error_and_the_decisions(
    make_authorizer: MakeAuthorizer, clients: dict[str, Any], world: SeededWorld
) -> None:
    event = load_event("tag-change-cache-group-missing.json")

    summary = make_authorizer().handle(event, FakeLambdaContext(aws_request_id="req-42"))

    [message] = dead_letters(clients["sqs"], world.dead_letter_queue_url)
    body = message["body"]
    assert body["version"] == "1.0"
    assert body["requestContext"] == {
        "requestId": "req-42",
        "functionArn": FakeLambdaContext().invoked_function_arn,
        "condition": "DeadLetteredByFunction",
        "approximateInvokeCount": 1,
    }
    assert body["requestPayload"] == event
    assert body["responsePayload"]["errorType"] == "GrantFailed"
    assert (
        "CacheSecurityGroup inventory-cache-sg not found" in body["responsePayload"]["errorMessage"]
    )
    assert body["responsePayload"]["decisions"] == summary["decisions"]
    assert message["attributes"]["Sender"]["StringValue"] == "cache-ingress"
    assert message["attributes"]["ErrorType"]["StringValue"] == "GrantFailed"
    assert summary["decisions"][0]["group_id"] == INVENTORY_GROUP


@pytest.mark.parametrize("kind", ["throttling", "server-error", "timeout", "unreachable"])
def test_transient_authorize_faults_raise_for_retry_and_dead_letter_nothing(
    kind: str, make_authorizer: MakeAuthorizer, clients: dict[str, Any], world: SeededWorld
) -> None:
    Fault(clients["elasticache"], "AuthorizeCacheSecurityGroupIngress", kind)

    with pytest.raises(TransientFailureError, match="will be retried"):
        make_authorizer().handle(load_event("tag-change-authorized.json"), FakeLambdaContext())

    assert dead_letters(clients["sqs"], world.dead_letter_queue_url) == []
    # The failed grant left no record behind, so Lambda's retry makes it.
    assert clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)["Items"] == []


@pytest.mark.parametrize(
    ("code", "status"),
    [("AccessDenied", 403), ("InvalidParameterValue", 400), ("InvalidParameterCombination", 400)],
)
def test_permanent_authorize_faults_dead_letter_the_event(
    code: str,
    status: int,
    make_authorizer: MakeAuthorizer,
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    Fault(
        clients["elasticache"], "AuthorizeCacheSecurityGroupIngress", code, code=code, status=status
    )

    summary = make_authorizer().handle(
        load_event("tag-change-authorized.json"), FakeLambdaContext()
    )

    assert summary["status"] == "dead-lettered"
    assert summary["decisions"][0]["error_code"] == code
    assert len(dead_letters(clients["sqs"], world.dead_letter_queue_url)) == 1


def test_a_retry_after_a_transient_fault_completes_only_the_remaining_grants(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    authorizer = make_authorizer()
    event = create_tags([ORDERS_GROUP, PAYMENTS_GROUP])
    # The first grant (orders) succeeds; the second (payments) is throttled once.
    fault = Fault(
        clients["elasticache"], "AuthorizeCacheSecurityGroupIngress", "throttling", times=0
    )
    clients["elasticache"].meta.events.register(
        "provide-client-params.elasticache.AuthorizeCacheSecurityGroupIngress",
        lambda params, **_: (
            setattr(fault, "remaining", 1)
            if params["CacheSecurityGroupName"] == "payments-cache-sg" and fault.calls == 0
            else None
        ),
    )

    with pytest.raises(TransientFailureError):
        authorizer.handle(event, FakeLambdaContext())
    retried = authorizer.handle(event, FakeLambdaContext())

    assert retried["status"] == "completed"
    # orders was granted and recorded by the first attempt; only payments is made now.
    assert sorted((d["target"], d["outcome"]) for d in retried["decisions"]) == [
        ("orders", "already-authorized"),
        ("payments", "authorized"),
    ]
    granted = [call["CacheSecurityGroupName"] for call in authorize_calls]
    assert granted.count("orders-cache-sg") == 1
    assert granted.count("payments-cache-sg") == 2


class LambdaTimeout(BaseException):
    """What a Lambda timeout looks like from inside: the process stops mid-call, and no
    `except Exception` (Powertools' record clean-up included) gets to run."""


def test_a_timeout_mid_grant_leaves_a_record_that_expires_with_the_invocation(
    make_authorizer: MakeAuthorizer,
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    authorizer = make_authorizer()
    event = load_event("tag-change-authorized.json")

    def time_out(**_: Any) -> None:
        raise LambdaTimeout

    clients["elasticache"].meta.events.register(
        "before-call.elasticache.AuthorizeCacheSecurityGroupIngress", time_out
    )
    with pytest.raises(LambdaTimeout):
        authorizer.handle(event, FakeLambdaContext(remaining_millis=1))
    clients["elasticache"].meta.events.unregister(
        "before-call.elasticache.AuthorizeCacheSecurityGroupIngress", time_out
    )
    [record] = clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)["Items"]
    assert record["status"]["S"] == "INPROGRESS"
    assert int(record["in_progress_expiration"]["N"]) <= int(time.time() * 1000) + 1
    time.sleep(0.01)

    retried = authorizer.handle(event, FakeLambdaContext())

    assert retried["counts"] == {"authorized": 1}
    assert len(authorize_calls) == 2


def test_a_live_in_progress_record_makes_the_event_retry_later(
    make_authorizer: MakeAuthorizer,
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    authorizer = make_authorizer()
    event = load_event("tag-change-authorized.json")
    authorizer.handle(event, FakeLambdaContext())
    table = world.scenario.idempotency_table
    clients["dynamodb"].put_item(
        TableName=table,
        Item={
            **_only_record(clients, table),
            "status": {"S": "INPROGRESS"},
            "in_progress_expiration": {"N": str(int(time.time() * 1000) + 60_000)},
        },
    )

    with pytest.raises(TransientFailureError, match="another execution"):
        authorizer.handle(event, FakeLambdaContext())
    assert len(authorize_calls) == 1


def _only_record(clients: dict[str, Any], table: str) -> dict[str, Any]:
    [item] = clients["dynamodb"].scan(TableName=table)["Items"]
    return dict(item)


def test_a_failed_dead_letter_send_raises_rather_than_dropping(
    make_authorizer: MakeAuthorizer, clients: dict[str, Any]
) -> None:
    Fault(clients["sqs"], "SendMessage", "access-denied")

    with pytest.raises(TransientFailureError, match="could not be dead-lettered"):
        make_authorizer().handle(load_event("malformed-missing-detail.json"), FakeLambdaContext())


def test_dry_run_decides_and_logs_without_calling_authorize(
    make_authorizer: MakeAuthorizer,
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
) -> None:
    summary = make_authorizer(DRY_RUN="true").handle(
        load_event("tag-change-authorized.json"), FakeLambdaContext()
    )

    assert summary["dryRun"] is True
    assert summary["counts"] == {"dry-run": 1}
    assert authorize_calls == []
    assert ec2_groups_in(clients, "orders-cache-sg") == []
    assert clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)["Items"] == []


def test_a_broken_policy_file_grants_nothing_and_dead_letters_with_the_field(
    make_authorizer: MakeAuthorizer,
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
    world: SeededWorld,
    tmp_path: Any,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\ntargets:\n  orders: {cache_security_group: orders-cache-sg, alow: {}}\n"
    )

    summary = make_authorizer(POLICY_FILE=str(policy)).handle(
        load_event("tag-change-authorized.json"), FakeLambdaContext()
    )

    assert authorize_calls == []
    assert summary["status"] == "dead-lettered"
    assert summary["errorType"] == "PolicyInvalid"
    assert "targets.orders: unknown field 'alow'" in summary["reason"]
    [message] = dead_letters(clients["sqs"], world.dead_letter_queue_url)
    assert message["body"]["responsePayload"]["errorType"] == "PolicyInvalid"


def test_a_missing_policy_file_grants_nothing(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]], tmp_path: Any
) -> None:
    summary = make_authorizer(POLICY_FILE=str(tmp_path / "absent.yaml")).handle(
        load_event("tag-change-authorized.json"), FakeLambdaContext()
    )
    assert authorize_calls == []
    assert summary["errorType"] == "PolicyInvalid"
    assert "cannot be read" in summary["reason"]


SSM_POLICY = "version: 1\ntargets:\n  orders: {cache_security_group: orders-cache-sg}\n"


def test_the_policy_is_read_from_ssm_once_and_cached(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]], clients: dict[str, Any]
) -> None:
    clients["ssm"].put_parameter(Name="/cache-ingress/policy", Value=SSM_POLICY, Type="String")
    gets: list[dict[str, Any]] = []
    clients["ssm"].meta.events.register(
        "provide-client-params.ssm.GetParameter", lambda params, **_: gets.append(params)
    )
    authorizer = make_authorizer(POLICY_PARAMETER="/cache-ingress/policy")

    first = authorizer.handle(tag_change(event_id="e-1"), FakeLambdaContext())
    second = authorizer.handle(tag_change(PAYMENTS_GROUP, event_id="e-2"), FakeLambdaContext())

    assert first["counts"] == {"authorized": 1}
    # payments is a target of the bundled policy, not of the SSM one.
    assert second["decisions"][0]["rule"] == "unknown-target"
    assert len(gets) == 1


@pytest.mark.parametrize(
    ("fault", "expect_status"),
    [("throttling", "raised"), ("server-error", "raised"), ("access-denied", "dead-lettered")],
)
def test_ssm_policy_faults_fail_closed(
    fault: str,
    expect_status: str,
    make_authorizer: MakeAuthorizer,
    authorize_calls: list[dict[str, Any]],
    clients: dict[str, Any],
) -> None:
    clients["ssm"].put_parameter(Name="/cache-ingress/policy", Value=SSM_POLICY, Type="String")
    Fault(clients["ssm"], "GetParameter", fault)
    authorizer = make_authorizer(POLICY_PARAMETER="/cache-ingress/policy")

    if expect_status == "raised":
        with pytest.raises(TransientFailureError):
            authorizer.handle(tag_change(), FakeLambdaContext())
    else:
        assert authorizer.handle(tag_change(), FakeLambdaContext())["errorType"] == "PolicyInvalid"
    assert authorize_calls == []


def test_a_missing_ssm_parameter_dead_letters_with_its_name(
    make_authorizer: MakeAuthorizer, authorize_calls: list[dict[str, Any]]
) -> None:
    summary = make_authorizer(POLICY_PARAMETER="/cache-ingress/absent").handle(
        tag_change(), FakeLambdaContext()
    )
    assert summary["status"] == "dead-lettered"
    assert "ssm:/cache-ingress/absent" in summary["reason"]
    assert authorize_calls == []


@pytest.mark.parametrize(
    ("fault", "outcome"), [("throttling", "raised"), ("access-denied", "dead-lettered")]
)
def test_describe_faults(
    fault: str,
    outcome: str,
    make_authorizer: MakeAuthorizer,
    clients: dict[str, Any],
    authorize_calls: list[dict[str, Any]],
) -> None:
    Fault(clients["ec2"], "DescribeSecurityGroups", fault)
    if outcome == "raised":
        with pytest.raises(TransientFailureError):
            make_authorizer().handle(tag_change(), FakeLambdaContext())
    else:
        summary = make_authorizer().handle(tag_change(), FakeLambdaContext())
        assert summary["status"] == "dead-lettered"
        assert summary["errorType"] == "UnauthorizedOperation"
    assert authorize_calls == []


def test_groups_are_described_once_per_event(
    make_authorizer: MakeAuthorizer, clients: dict[str, Any]
) -> None:
    describes: list[dict[str, Any]] = []
    clients["ec2"].meta.events.register(
        "provide-client-params.ec2.DescribeSecurityGroups",
        lambda params, **_: describes.append(params),
    )
    make_authorizer().handle(
        create_tags([ORDERS_GROUP, PAYMENTS_GROUP, INVENTORY_GROUP]), FakeLambdaContext()
    )
    assert len(describes) == 1
    assert describes[0]["Filters"] == [
        {"Name": "group-id", "Values": [ORDERS_GROUP, PAYMENTS_GROUP, INVENTORY_GROUP]}
    ]


def test_a_replay_wrapper_reports_failure_instead_of_dead_lettering_again(
    function_environment: dict[str, str], clients: dict[str, Any], world: SeededWorld
) -> None:
    event = load_event("tag-change-cache-group-missing.json")

    summary = lambda_handler({"cache-ingress-replay": {"event": event}}, FakeLambdaContext())

    assert summary["status"] == "failed"
    assert summary["errorType"] == "GrantFailed"
    assert dead_letters(clients["sqs"], world.dead_letter_queue_url) == []


def test_the_handler_logs_one_structured_line_per_decision(
    function_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = capture_function_output(monkeypatch)

    lambda_handler(load_event("tag-change-unknown-target.json"), FakeLambdaContext())

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    decisions = [line for line in lines if line.get("message", "").startswith("ingress ")]
    assert {(d["target"], d["outcome"]) for d in decisions} == {
        ("orders", "authorized"),
        ("analytics", "denied"),
    }
    for line in decisions:
        assert line["correlation_id"] == "5f1d3c1a-0003-4b6e-9d3e-000000000003"
        assert {"group_id", "group_name", "owner_id", "target", "outcome", "reason"} <= set(line)
        assert "tags" not in line
    # (A first invocation in this process also writes a ColdStart document: not this one.)
    [emf] = [line for line in lines if "_aws" in line and "ColdStart" not in line]
    assert emf["Authorized"] == [1.0]
    assert emf["Denied"] == [1.0]
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "CacheIngress"


def test_a_cold_start_is_counted_once_by_its_own_metric(
    function_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = capture_function_output(monkeypatch)
    # As in a new execution environment (Powertools keeps this flag per process).
    monkeypatch.setattr(cold_start, "is_cold_start", True)

    for _ in range(2):
        lambda_handler(load_event("tag-change-unknown-target.json"), FakeLambdaContext())

    documents = [json.loads(line) for line in stream.getvalue().splitlines() if '"_aws"' in line]
    [cold] = [d for d in documents if "ColdStart" in d]
    assert cold["ColdStart"] == [1.0]
    assert cold["function_name"] == FakeLambdaContext().function_name
    assert cold["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "CacheIngress"
    assert sum("Events" in d for d in documents) == 2
