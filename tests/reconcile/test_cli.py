"""`cache-ingress reconcile`: the sweep on demand, in process, as a table or JSON."""

# The integration fixtures are imported by name, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cache_ingress_tools.cli import main
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.cli import stub_stack
from tests.integration.conftest import (  # noqa: F401 - fixtures
    aws,
    clients,
    function_environment,
)
from tests.reconcile import (
    classic_files,
    granted_pairs,
    seed_classic_world,
)
from tests.support.events import ACCOUNT

pytestmark = pytest.mark.cli

ORDERS = "orders-cache-sg"


@pytest.fixture
def world(clients: dict[str, Any], tmp_path: Path) -> SeededWorld:
    """The classic world (tests/reconcile/__init__.py), not the growing default one."""
    return seed_classic_world(clients, tmp_path)


@pytest.fixture(autouse=True)
def classic_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, policy = classic_files(tmp_path)
    monkeypatch.setenv("POLICY_FILE", str(policy))


def test_a_dry_run_as_json_reports_drift_changes_nothing_and_exits_3(
    function_environment: dict[str, str],
    clients: dict[str, Any],
    world: SeededWorld,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clients["elasticache"].create_cache_security_group(
        CacheSecurityGroupName="inventory-cache-sg", Description="inventory"
    )

    status = main(["reconcile", "--dry-run", "--json"])

    out = capsys.readouterr().out
    report = json.loads(out)
    assert status == 3
    assert report["dryRun"] is True
    assert report["counts"]["drift"] == 3
    assert report["counts"]["needs-event"] == 1
    assert report["counts"]["failed"] == 0
    assert {f["group_name"] for f in report["findings"] if f["status"] == "drift"} == {
        "orders-app",
        "reporting-app",
        "inventory-app",
    }
    assert granted_pairs(clients["elasticache"], ORDERS) == set()
    table = world.scenario.idempotency_table
    assert clients["dynamodb"].scan(TableName=table)["Items"] == []


def test_the_table_lists_findings_and_a_summary_and_stdout_holds_nothing_else(
    function_environment: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["reconcile", "--dry-run"])

    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    # a failed pair (inventory's cache group does not exist) outweighs drift
    assert status == 1
    assert lines[0].split() == [
        "STATUS",
        "GROUP",
        "ID",
        "GROUP",
        "NAME",
        "TARGET",
        "DESTINATION",
        "REASON",
    ]
    rows = {
        (line.split()[0], line.split()[2])
        for line in lines[1:]
        if line and not line.startswith("run ")
    }
    assert rows == {
        ("drift", "orders-app"),
        ("drift", "reporting-app"),
        ("denied", "reporting-app"),
        ("denied", "orders-staging-app"),
        ("needs-event", "payments-app"),
        ("failed", "inventory-app"),
    }
    assert lines[-1].startswith("run reconcile-")
    assert "completed (dry run: nothing changed); 5 tagged group(s) on 1 page(s)" in lines[-1]
    assert not [line for line in lines if line.startswith("{")]
    # warnings and errors of the sweep go to stderr as JSON lines
    assert any(json.loads(line)["message"] == "drift found" for line in captured.err.splitlines())


def test_a_repair_run_grants_what_is_missing_and_exits_1_while_a_pair_fails(
    function_environment: dict[str, str],
    clients: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["reconcile", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["counts"]["repaired"] == 2
    assert granted_pairs(clients["elasticache"], ORDERS) == {
        ("orders-app", ACCOUNT),
        ("reporting-app", ACCOUNT),
    }

    clients["elasticache"].create_cache_security_group(
        CacheSecurityGroupName="inventory-cache-sg", Description="inventory"
    )
    assert main(["reconcile", "--json", "--all"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["repaired"] == 1
    assert {p["status"] for p in report["pairs"]} == {
        "in-sync",
        "repaired",
        "denied",
        "needs-event",
    }


def test_repairs_without_an_idempotency_table_are_a_usage_error(
    function_environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("IDEMPOTENCY_TABLE")

    assert main(["reconcile"]) == 2
    assert "--idempotency-table" in capsys.readouterr().err


def test_a_bad_page_size_names_the_option_variable(
    function_environment: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reconcile", "--dry-run", "--page-size", "3"]) == 2
    assert "RECONCILE_PAGE_SIZE" in capsys.readouterr().err


def test_the_stack_gives_the_table_the_policy_parameter_and_the_tag_key(
    function_environment: dict[str, str],
    clients: dict[str, Any],
    world: SeededWorld,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the variables name nothing; the stack names the table and an SSM policy that
    # allows only orders (inventory's missing cache group is then no longer a failure)
    for name in ("IDEMPOTENCY_TABLE", "POLICY_FILE", "TAG_KEY"):
        monkeypatch.delenv(name, raising=False)
    clients["ssm"].put_parameter(
        Name="/cache-ingress/policy",
        Type="String",
        Value="version: 1\ntargets:\n  orders:\n    cache_security_group: orders-cache-sg\n"
        "    allow: {required_tags: {env: prod}}\n",
    )
    stubbers = stub_stack(
        monkeypatch,
        "cache-ingress",
        outputs={"IdempotencyTableName": world.scenario.idempotency_table},
        parameters={"PolicyParameterName": "/cache-ingress/policy", "TagKey": "cache-ingress"},
    )

    status = main(["reconcile", "--stack-name", "cache-ingress", "--json"])

    report = json.loads(capsys.readouterr().out)
    assert status == 0
    [stubber] = stubbers
    stubber.assert_no_pending_responses()
    assert report["counts"]["repaired"] == 2
    assert report["counts"]["failed"] == 0
    assert granted_pairs(clients["elasticache"], ORDERS) == {
        ("orders-app", ACCOUNT),
        ("reporting-app", ACCOUNT),
    }
    assert clients["dynamodb"].scan(TableName=world.scenario.idempotency_table)["Count"] == 2


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--policy-file", "/no/such/policy.yaml"], "policy /no/such/policy.yaml: cannot be read"),
        (["--policy-parameter", "/cache-ingress/none"], "ssm:/cache-ingress/none: cannot be read"),
        (["--policy-parameter", "cache-ingress"], "POLICY_PARAMETER must be an SSM parameter"),
        (["--account-id", "1234"], "ACCOUNT_ID must be a 12-digit AWS account id"),
    ],
    ids=["missing-file", "missing-parameter", "parameter-name", "account-id"],
)
def test_a_settings_error_is_a_usage_error_without_a_log_line(
    function_environment: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    expected: str,
) -> None:
    status = main(["reconcile", "--dry-run", *options])

    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("cache-ingress reconcile: ")
    assert expected in line
