"""`cache-ingress explain` against the embedded AWS: each rule in the README's order with the
fact it read and its verdict, the first that decides as the outcome, what is granted now;
replayed events checked with CloudTrail; never a write. Exit 0 explained, 1 a read failed,
2 a usage error.

What is expected comes from the default scenario (docs/local.md) and the bundled policy
(README, "Policy reference"): orders-app (env=prod) may enter orders, orders-staging-app
(env=staging) may not, payments needs the platform role's own CreateTags.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cache_ingress_tools import cli
from cache_ingress_tools.commands._base import Connection, WriteRefusedError
from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS, EmbeddedAws
from tests.cli import on_failure_record
from tests.support.events import (
    ORDERS_GROUP,
    PAYMENTS_GROUP,
    PLATFORM_PRINCIPAL,
    STAGING_GROUP,
    create_tags,
)
from tests.support.tagging import Tagger

pytestmark = pytest.mark.cli

DEVELOPER = "arn:aws:sts::123456789012:assumed-role/developer/bob"
SESSIONS_CACHE_GROUP = "sg-0c1a2b3c4d5e6f701"
RULES_IN_ORDER = [
    "event-account",
    "event-region",
    "group-exists",
    "tag",
    "unknown-target",
    "same-region",
    "owner-id",
    "owner-accounts",
    "required-tags",
    "principals",
    "principal-binding",
    "principal-provenance",
]


@pytest.fixture(scope="module")
def running() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(port=0) as aws:
        yield aws


@pytest.fixture
def aws(running: EmbeddedAws, monkeypatch: pytest.MonkeyPatch) -> EmbeddedAws:
    running.reset()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name in ("POLICY_FILE", "POLICY_PARAMETER", "TAG_KEY", "ACCOUNT_ID", "LEDGER_TABLE"):
        monkeypatch.delenv(name, raising=False)
    return running


def client(aws: EmbeddedAws, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=aws.endpoint_url, region_name="us-east-1", **DUMMY_CREDENTIALS
    )


def explain(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], *arguments: str
) -> tuple[int, dict[str, Any], str]:
    status = cli.main(["explain", "--endpoint-url", aws.endpoint_url, "--json", *arguments])
    captured = capsys.readouterr()
    return status, json.loads(captured.out) if captured.out else {}, captured.err


def only_pair(document: dict[str, Any]) -> dict[str, Any]:
    [pair] = document["pairs"]
    return pair


def verdicts(pair: dict[str, Any]) -> list[tuple[str, str]]:
    return [(check["rule"], check["verdict"]) for check in pair["checks"]]


def first_deciding(pair: dict[str, Any]) -> dict[str, Any] | None:
    deciding = ("denies", "not-applicable", "unknown", "pending")
    return next((c for c in pair["checks"] if c["verdict"] in deciding), None)


def test_an_allowed_group_shows_every_rule_holding_and_nothing_granted_yet(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document, _ = explain(aws, capsys, "--group", ORDERS_GROUP)

    pair = only_pair(document)
    assert status == 0
    assert document["question"] == "a Tag Change event now (it names no principal)"
    assert (pair["target"], pair["outcome"]) == ("orders", "allowed")
    assert pair["cache_security_group"] == "orders-cache-sg"
    assert [rule for rule, _ in verdicts(pair)] == RULES_IN_ORDER
    assert first_deciding(pair) is None
    assert pair["grantedNow"] is False
    facts = {check["rule"]: check["fact"] for check in pair["checks"]}
    assert "env = 'prod'; accepted: prod" in facts["required-tags"]


def test_what_is_granted_now_follows_the_cache_security_group(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    client(aws, "elasticache").authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders-cache-sg",
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId="123456789012",
    )

    _, document, _ = explain(aws, capsys, "--group", ORDERS_GROUP)

    pair = only_pair(document)
    assert pair["grantedNow"] is True
    assert pair["grantedNote"] == "orders-cache-sg admits this group"


def test_a_denied_group_names_the_first_rule_that_denies_and_its_fact(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document, _ = explain(aws, capsys, "--group", STAGING_GROUP)

    pair = only_pair(document)
    deciding = first_deciding(pair)
    assert status == 0
    assert (pair["outcome"], pair["rule"]) == ("denied", "required-tags")
    assert deciding is not None
    assert deciding["rule"] == pair["rule"]
    assert deciding["fact"] == "env = 'staging'; accepted: prod"
    assert deciding["reason"] == pair["reason"]


@pytest.mark.parametrize(
    ("principal", "outcome", "rule"),
    [
        (None, "denied", "principals"),
        (PLATFORM_PRINCIPAL, "allowed", None),
        (DEVELOPER, "denied", "principals"),
    ],
)
def test_a_principal_is_asked_about_as_its_own_create_tags(
    aws: EmbeddedAws,
    capsys: pytest.CaptureFixture[str],
    principal: str | None,
    outcome: str,
    rule: str | None,
) -> None:
    asked = ("--principal", principal) if principal else ()

    status, document, _ = explain(aws, capsys, "--group", PAYMENTS_GROUP, *asked)

    pair = only_pair(document)
    assert status == 0
    assert (pair["outcome"], pair.get("rule")) == (outcome, rule)
    binding = dict(verdicts(pair))["principal-binding"]
    # Its own call set the tag to what the group carries now; a Tag Change never binds.
    assert binding == ("holds" if principal else "denies")


def test_a_target_the_tag_does_not_name_is_traced_as_if_it_did(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document, _ = explain(aws, capsys, "--group", ORDERS_GROUP, "--target", "sessions")

    pair = only_pair(document)
    assert status == 0
    assert pair["assumedTag"] == "orders,sessions"
    assert (pair["outcome"], pair["vpc_security_group"], pair["port"]) == (
        "allowed",
        SESSIONS_CACHE_GROUP,
        6379,
    )
    assert ("same-vpc", "holds") in verdicts(pair)
    assert pair["grantedNow"] is False


def test_a_group_that_does_not_exist_is_not_applicable(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document, _ = explain(aws, capsys, "--group", "sg-0123456789abcdef9")

    pair = only_pair(document)
    assert status == 0
    assert (pair["target"], pair["outcome"]) == (None, "not-applicable")
    assert verdicts(pair)[-1] == ("group-exists", "not-applicable")


def test_a_replayed_event_is_checked_with_cloudtrail_as_the_function_does(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real = Tagger("platform", "alice", endpoint_url=aws.endpoint_url).tag(
        ORDERS_GROUP, {"cache-ingress": "payments"}
    )
    forged = create_tags([ORDERS_GROUP], event_id="forged-0001", principal=PLATFORM_PRINCIPAL)
    for name, event in (("real", real), ("forged", forged)):
        (tmp_path / f"{name}.json").write_text(on_failure_record(event), encoding="utf-8")

    _, verified, _ = explain(aws, capsys, "--event", str(tmp_path / "real.json"))
    _, refuted, _ = explain(aws, capsys, "--event", str(tmp_path / "forged.json"))

    assert verified["request"]["replayed"] is True
    assert verified["provenance"]["status"] == "verified"
    assert only_pair(verified)["outcome"] == "allowed"
    assert refuted["provenance"]["status"] == "refuted"
    assert (only_pair(refuted)["outcome"], only_pair(refuted)["rule"]) == (
        "denied",
        "principal-provenance",
    )


def test_an_event_the_function_ignores_is_said_so(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document, _ = explain(aws, capsys, "--event", "events/tag-change-other-resource.json")

    assert status == 0
    assert document["decided"] is False
    assert document["reason"].startswith("ignored: ")


def test_the_text_report_shows_the_outcome_the_rules_and_what_is_granted(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["explain", "--endpoint-url", aws.endpoint_url, "--group", STAGING_GROUP])
    out = capsys.readouterr().out

    assert status == 0
    assert "policy: functions/authorizer/cache_ingress/policy.yaml" in out
    assert (
        f"{STAGING_GROUP} orders: denied (required-tags): required tag 'env' has a value not "
        "accepted"
    ) in out
    assert "  granted now: no: orders-cache-sg does not admit this group" in out
    assert "  required-tags         denies   env = 'staging'; accepted: prod" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "name the group: --group sg-..., or give an event with --event FILE"),
        (["--group", ORDERS_GROUP, "--replayed"], "--replayed is about an event"),
        (["--event", "/no/such/event.json"], "event /no/such/event.json: cannot be read"),
        (
            ["--event", "events/tag-change-authorized.json", "--group", STAGING_GROUP],
            f"the event does not name {STAGING_GROUP}: it names {ORDERS_GROUP}",
        ),
        (
            ["--group", ORDERS_GROUP, "--policy-parameter", "/cache-ingress/absent"],
            "policy ssm:/cache-ingress/absent: cannot be read",
        ),
    ],
)
def test_a_question_that_cannot_be_asked_exits_2(
    aws: EmbeddedAws,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    status, document, err = explain(aws, capsys, *arguments)

    assert status == 2
    assert document == {}
    assert err.startswith(f"cache-ingress explain: {message}")


def test_an_invalid_policy_file_exits_2_with_its_problems(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 2\ntargets: {}\n", encoding="utf-8")

    status, _, err = explain(aws, capsys, "--group", ORDERS_GROUP, "--policy-file", str(policy))

    assert status == 2
    assert "version: must be 1, got 2 (line 1)" in err


def test_a_read_that_fails_exits_1(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    def refuse(**_: Any) -> None:
        error = {"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}
        raise ClientError(error, "DescribeSecurityGroups")

    original = Connection.client

    def with_refusal(self: Connection, service: str, config: Any = None) -> Any:
        made = original(self, service, config)
        if service == "ec2":
            made.meta.events.register("before-call.ec2.DescribeSecurityGroups", refuse)
        return made

    monkeypatch.setattr(Connection, "client", with_refusal)

    status, _, err = explain(aws, capsys, "--group", ORDERS_GROUP)

    assert status == 1
    assert err.startswith("cache-ingress explain: a read failed: ")
    assert "UnauthorizedOperation" in err


def test_explain_never_writes_whatever_it_is_asked(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = Connection.client

    def recording(self: Connection, service: str, config: Any = None) -> Any:
        made = original(self, service, config)
        made.meta.events.register(
            "before-call", lambda model, **_: calls.append(f"{service}:{model.name}")
        )
        return made

    monkeypatch.setattr(Connection, "client", recording)
    for arguments in (
        ["--group", ORDERS_GROUP],
        ["--group", PAYMENTS_GROUP, "--principal", PLATFORM_PRINCIPAL],
        ["--group", ORDERS_GROUP, "--target", "reports"],
        ["--event", "events/cloudtrail-create-tags-archive-replay.json"],
    ):
        assert explain(aws, capsys, *arguments)[0] == 0

    assert calls
    assert all(
        call.split(":")[1].startswith(("Describe", "Get", "List", "Lookup")) for call in calls
    )
    assert "cloudtrail:LookupEvents" in calls


def test_a_read_only_connection_refuses_a_write_before_it_is_sent(aws: EmbeddedAws) -> None:
    connection = Connection(
        boto3.Session(region_name="us-east-1"), aws.endpoint_url, read_only=True
    )

    with pytest.raises(WriteRefusedError, match="AuthorizeCacheSecurityGroupIngress refused"):
        connection.client("elasticache").authorize_cache_security_group_ingress(
            CacheSecurityGroupName="orders-cache-sg",
            EC2SecurityGroupName="orders-app",
            EC2SecurityGroupOwnerId="123456789012",
        )

    [group] = client(aws, "elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="orders-cache-sg"
    )["CacheSecurityGroups"]
    assert group["EC2SecurityGroups"] == []
