"""The operator's commands for member accounts (docs/multi-account.md), against the embedded
AWS serving the member scenario: `explain` decides a member's group read through its read
role, `peek` shows the account a dead-lettered event comes from, and `replay --local`
replays a member's event through the same role. The operator is the embedded AWS's own
identity, which the scenario's member stacks name in OperatorRoleArns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cache_ingress.envelope import function_envelope
from cache_ingress_tools import cli
from cache_ingress_tools.commands._base import EXIT_OK
from cache_ingress_tools.commands.reconcile import EXIT_DRIFT
from cache_ingress_tools.emulator.scenario import MEMBER_SCENARIO, load_scenario
from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS, EmbeddedAws
from tests.support.events import load_event

pytestmark = pytest.mark.cli

CACHE = "123456789012"
MEMBER = "111122223333"
CHECKOUT_APP = "sg-0d1e2f3a4b5c6d7e8"
MEMBER_VARIABLES = ("MEMBER_ROLE_NAME", "MEMBER_EXTERNAL_ID", "MEMBER_ACCOUNTS")


@pytest.fixture(scope="module")
def running() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(load_scenario(MEMBER_SCENARIO), port=0) as aws:
        yield aws


@pytest.fixture
def aws(running: EmbeddedAws, monkeypatch: pytest.MonkeyPatch) -> EmbeddedAws:
    """The operator's shell: the embedded AWS's own credentials, and the stack's member
    settings and policy as the function has them."""
    world = running.reset()
    environment = world.function_environment()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_CREDENTIALS["aws_secret_access_key"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name in (*MEMBER_VARIABLES, "MEMBER_ORGANIZATION", "POLICY_FILE", "LEDGER_TABLE"):
        monkeypatch.setenv(name, environment[name])
    for name in ("POLICY_PARAMETER", "TAG_KEY", "ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)
    return running


def client(aws: EmbeddedAws, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=aws.endpoint_url, region_name="us-east-1", **DUMMY_CREDENTIALS
    )


def dead_letter(aws: EmbeddedAws, event: dict[str, Any]) -> None:
    envelope = function_envelope(
        event,
        error_type="AccessDenied",
        error_message=f"the read role of member account {MEMBER} could not be assumed",
        request_id="r-1",
        function_arn=f"arn:aws:lambda:us-east-1:{CACHE}:function:IngressFunction",
    )
    client(aws, "sqs").send_message(
        QueueUrl=aws.world.dead_letter_queue_url, MessageBody=json.dumps(envelope)
    )


def test_explain_decides_a_members_group_read_through_its_role(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        [
            "explain", "--endpoint-url", aws.endpoint_url, "--json",
            "--group", CHECKOUT_APP, "--member-account", MEMBER,
        ]
    )  # fmt: skip

    document = json.loads(capsys.readouterr().out)
    assert status == EXIT_OK
    [pair] = document["pairs"]
    assert (pair["target"], pair["outcome"]) == ("orders", "allowed")
    agreement = [c for c in pair["checks"] if c["rule"] == "account-agreement"]
    assert [c["verdict"] for c in agreement] == ["holds", "holds"]
    assert f"read as account {MEMBER}" in agreement[1]["fact"]


def test_explain_refuses_an_account_that_is_no_member(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMBER_ORGANIZATION", "")
    status = cli.main(
        [
            "explain", "--endpoint-url", aws.endpoint_url,
            "--group", CHECKOUT_APP, "--member-account", "210987654321",
        ]
    )  # fmt: skip

    assert status == 2
    assert "not a member account of this stack" in capsys.readouterr().err


def test_peek_shows_the_account_and_replay_local_grants_through_the_members_role(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    event = load_event("member-tag-change-authorized.json")
    dead_letter(aws, event)
    queue = ["--endpoint-url", aws.endpoint_url, "--queue-url", aws.world.dead_letter_queue_url]

    assert cli.main(["peek", *queue, "--wait-seconds", "0"]) == EXIT_OK
    header, row, _total = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["EVENT", "ID", "SOURCE", "ACCOUNT"]
    assert row.split()[:4] == [event["id"], "aws.tag", MEMBER, CHECKOUT_APP]

    assert cli.main(["peek", *queue, "--wait-seconds", "0", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["account"] == MEMBER

    status = cli.main(
        [
            "replay", "--local", *queue, "--wait-seconds", "0", "--json",
            "--idempotency-table", aws.world.scenario.idempotency_table,
        ]
    )  # fmt: skip

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == EXIT_OK, lines
    assert lines[0]["result"] == "succeeded"
    [cache_group] = client(aws, "elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="orders-cache-sg"
    )["CacheSecurityGroups"]
    assert [
        (g["EC2SecurityGroupName"], g["EC2SecurityGroupOwnerId"])
        for g in cache_group["EC2SecurityGroups"]
    ] == [("checkout-app", MEMBER)]


def test_reconcile_dry_run_reports_every_account(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    # docs/multi-account.md, "Check it": a dry run sweeps every member, one line per account.
    status = cli.main(["reconcile", "--endpoint-url", aws.endpoint_url, "--dry-run"])

    out = capsys.readouterr().out
    assert status == EXIT_DRIFT, out  # drift found (the member's groups are not granted yet)
    lines = [line for line in out.splitlines() if line.startswith("account ")]
    assert [line.split(":")[0] for line in lines] == [
        f"account {CACHE}",
        f"account {MEMBER}",
        "account 444455556666",
    ]
    assert all(": completed;" in line for line in lines)
    assert "AssumeRole calls 1" in lines[1]
    assert "drift" in out and CHECKOUT_APP in out


def test_plan_covers_the_members_groups_read_through_their_roles(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    # The new policy stops admitting the member into sessions: its peered group's pair changes.
    current = Path(aws.world.function_environment()["POLICY_FILE"])
    new = tmp_path / "policy.yaml"
    new.write_text(
        current.read_text(encoding="utf-8").replace(
            'owner_accounts: ["123456789012", "111122223333"]\n      required_tags:\n'
            "        env: prod\n      peered_vpcs: true",
            'owner_accounts: ["123456789012"]\n      required_tags:\n'
            "        env: prod\n      peered_vpcs: true",
        ),
        encoding="utf-8",
    )
    assert new.read_text(encoding="utf-8") != current.read_text(encoding="utf-8")

    status = cli.main(
        ["plan", "--endpoint-url", aws.endpoint_url, "--policy-file", str(new), "--json"]
    )

    document = json.loads(capsys.readouterr().out)
    assert status == 2, document
    assert (document["pages"], document["groupsSeen"]) == (3, 6)  # the cache account, 2 members
    [change] = document["changes"]
    assert (change["groupId"], change["target"], change["change"]) == (
        "sg-0d2e3f4a5b6c7d8e9",
        "sessions",
        "deny",
    )
    assert change["new"]["rule"] == "owner-accounts"
