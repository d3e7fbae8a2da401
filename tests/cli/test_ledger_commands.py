"""`cache-ingress grants`, `hold` and `release`, run as an operator runs them, in process
against moto and the emulation (the function's environment names the ledger).
"""

# The integration fixtures are imported by name, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cache_ingress.authorizer import Authorizer
from cache_ingress.ledger import Ledger
from cache_ingress_tools.cli import main
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.cli import stub_stack
from tests.cli.test_plain_install import without_extra
from tests.integration.conftest import (  # noqa: F401 - fixtures
    aws,
    clients,
    function_environment,
    make_authorizer,
    world,
)
from tests.support.events import ACCOUNT, ORDERS_GROUP, STAGING_GROUP, tag_change
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.cli

ORDERS = "orders-cache-sg"
POLICY = """
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
    revoke: true
    allow: {required_tags: {env: prod}}
"""


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    monkeypatch.setenv("POLICY_FILE", str(path))
    return str(path)


@pytest.fixture
def handle(
    make_authorizer: Callable[..., Authorizer], policy_file: str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda event: make_authorizer(POLICY_FILE=policy_file).handle(event, FakeLambdaContext())


@pytest.fixture
def ledger(clients: dict[str, Any], world: SeededWorld) -> Ledger:
    return Ledger(clients["dynamodb"], str(world.scenario.ledger_table))


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def untag(clients: dict[str, Any]) -> None:
    clients["ec2"].delete_tags(Resources=[ORDERS_GROUP], Tags=[{"Key": "cache-ingress"}])


# --- hold and release ---------------------------------------------------------------------


def test_a_hold_is_placed_with_who_and_why_and_released(
    function_environment: dict[str, str],
    ledger: Ledger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(
        capsys, "hold", "--group", ORDERS_GROUP, "--target", "orders", "--reason", "incident 123"
    )

    assert (status, err) == (0, "")
    assert out.startswith(f"held: {ORDERS_GROUP} for orders: 'incident 123' (by arn:aws:")
    assert f"cache-ingress release --group {ORDERS_GROUP} --target orders" in out
    [hold] = ledger.holds(ORDERS_GROUP)
    assert (hold.reason, hold.held_by) == ("incident 123", f"arn:aws:sts::{ACCOUNT}:user/moto")

    again, out, _ = run(
        capsys, "hold", "--group", ORDERS_GROUP, "--target", "orders", "--reason", "incident 124"
    )
    assert again == 0
    assert "replaces the hold 'incident 123'" in out

    released, out, _ = run(
        capsys, "release", "--group", ORDERS_GROUP, "--target", "orders", "--reason", "fixed"
    )
    assert released == 0
    assert out.startswith(f"released: {ORDERS_GROUP} for orders")
    assert ledger.holds(ORDERS_GROUP) == []


def test_releasing_a_pair_no_hold_stands_on_exits_1(
    function_environment: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "release", "--group", ORDERS_GROUP, "--target", "orders")

    assert (status, out) == (1, "")
    assert err == f"cache-ingress release: no hold stands on {ORDERS_GROUP} for orders\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--group", "sg-nothex", "--target", "orders"], "is not a security group id"),
        (["--group", ORDERS_GROUP, "--target", "or ders"], "is not a target name"),
        (["--group", ORDERS_GROUP, "--target", "orders", "--reason", "  "], "must say why"),
    ],
)
def test_a_bad_hold_is_a_usage_error(
    function_environment: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    if "--reason" not in arguments:
        arguments = [*arguments, "--reason", "r"]

    status = _exit_status(lambda: main(["hold", *arguments]))

    assert status == 2
    assert message in capsys.readouterr().err


def test_without_a_ledger_table_the_commands_say_how_to_name_it(
    function_environment: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LEDGER_TABLE")

    status, _, err = run(capsys, "grants")
    assert status == 2
    assert err == (
        "cache-ingress grants: the ledger table is unknown: pass --ledger-table or --stack-name\n"
    )
    status, _, err = run(capsys, "grants", "--ledger-table", "no-such-table")
    assert status == 2
    assert "is it the stack's ledger table?" in err


def test_the_stack_names_the_ledger(
    function_environment: dict[str, str],
    world: SeededWorld,
    ledger: Ledger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LEDGER_TABLE")
    stubbers = stub_stack(
        monkeypatch,
        "cache-ingress",
        outputs={"LedgerTableName": str(world.scenario.ledger_table)},
        parameters={},
    )

    status, out, err = run(
        capsys, "hold", "--stack-name", "cache-ingress", "--group", ORDERS_GROUP,
        "--target", "orders", "--reason", "by stack",
    )  # fmt: skip

    assert (status, err) == (0, "")
    [stubber] = stubbers
    stubber.assert_no_pending_responses()
    assert [h.reason for h in ledger.holds(ORDERS_GROUP)] == ["by stack"]
    # The hint to end it names the same ledger, so it can be pasted as it is.
    assert (
        f"end it with: cache-ingress release --group {ORDERS_GROUP} --target orders "
        "--stack-name cache-ingress\n"
    ) in out


# --- grants -------------------------------------------------------------------------------


def test_grants_lists_who_asked_when_and_what_became_of_it(
    function_environment: dict[str, str],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    clients: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle(tag_change(event_id="tag-1"))
    untag(clients)
    handle(tag_change(event_id="untag-1", tags={}))
    main(["hold", "--group", ORDERS_GROUP, "--target", "orders", "--reason", "incident 9"])
    capsys.readouterr()

    status, out, _ = run(capsys, "grants")

    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "STATUS", "RECORDED", "GROUP", "ID", "GROUP", "NAME", "TARGET", "DESTINATION",
        "PATH", "PRINCIPAL", "EVENT", "POLICY", "WHY",
    ]  # fmt: skip
    [row] = [line for line in lines[1:] if ORDERS_GROUP in line and "revoked" in line]
    assert "orders-app" in row and ORDERS in row and "tag-1" in row and "sha256:" in row
    assert "the group's cache-ingress tag no longer names orders" in row
    assert "1 entr(y/ies): revoked 1" in out
    assert "incident 9" in out
    assert out.rstrip().endswith("1 hold(s) standing")


def test_grants_as_json_lines_filtered_by_group_status_and_time(
    function_environment: dict[str, str],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle(tag_change(event_id="tag-1"))
    handle(tag_change(event_id="tag-2"))

    status, out, _ = run(
        capsys, "grants", "--json", "--group", ORDERS_GROUP, "--status", "in-force", "--since", "1d"
    )

    assert status == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["kind"], line["eventId"], line["ownership"]) for line in lines] == [
        ("entry", "tag-1", "made"),
        ("entry", "tag-2", "joined"),
    ]
    # A Tag Change names no principal: the path says what made it.
    assert (lines[0]["path"], "principal" in lines[0]) == ("event", False)
    _, later, _ = run(capsys, "grants", "--json", "--since", "2999-01-01")
    assert later == ""
    bad = _exit_status(lambda: main(["grants", "--since", "yesterday"]))
    assert bad == 2
    assert "is not a time" in capsys.readouterr().err


def test_check_finds_an_owned_grant_removed_by_hand_and_what_the_sweep_would_do(
    function_environment: dict[str, str],
    policy_file: str,
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    clients: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle(tag_change(event_id="tag-1"))
    assert run(capsys, "grants", "--check", "--group", ORDERS_GROUP)[0] == 0

    clients["elasticache"].revoke_cache_security_group_ingress(
        CacheSecurityGroupName=ORDERS,
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId=ACCOUNT,
    )
    status, out, _ = run(capsys, "grants", "--check", "--group", ORDERS_GROUP)

    assert status == 3
    checks = [line.split()[0] for line in out.splitlines() if line.startswith(("gone", "would-"))]
    assert checks == ["gone", "would-repair"]
    assert "check: 2 difference(s)" in out

    clients["elasticache"].authorize_cache_security_group_ingress(
        CacheSecurityGroupName=ORDERS,
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId=ACCOUNT,
    )
    untag(clients)
    status, out, _ = run(capsys, "grants", "--check", "--json", "--group", ORDERS_GROUP)
    checks = [json.loads(line) for line in out.splitlines()]
    assert status == 3
    assert [c["check"] for c in checks if c["kind"] == "check"] == ["would-revoke"]


def test_the_ledger_commands_run_without_the_emulator_extra() -> None:
    for command in ("grants", "hold", "release"):
        completed, loaded = without_extra(command, "--help")

        assert completed.returncode == 0, completed.stderr
        assert f"usage: cache-ingress {command}" in completed.stdout
        assert not [m for m in loaded if m.startswith(("moto", "cfnlint"))]
        assert not [m for m in loaded if m.startswith("cache_ingress_tools.emulator")]


def _exit_status(call: Callable[[], int]) -> int:
    """argparse exits (status 2) on a bad option; main returns its status otherwise."""
    try:
        return call()
    except SystemExit as exc:
        return int(exc.code or 0)


# --- explain and plan read the ledger (docs/policy.md) ----------------------------------------


def explained(capsys: pytest.CaptureFixture[str], *arguments: str) -> dict[str, Any]:
    status, out, err = run(capsys, "explain", "--json", "--group", ORDERS_GROUP, *arguments)
    assert (status, err) == (0, "")
    document: dict[str, Any] = json.loads(out)
    return document


def test_explain_shows_a_hold_as_the_rule_that_denies_a_pair_the_policy_allows(
    function_environment: dict[str, str],
    policy_file: str,
    ledger: Ledger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    oncall = f"arn:aws:iam::{ACCOUNT}:user/oncall"
    ledger.hold(ORDERS_GROUP, "orders", reason="incident 123", by=oncall)

    document = explained(capsys, "--target", "orders")

    assert document["ledgerRead"] is True
    [pair] = document["pairs"]
    assert (pair["outcome"], pair["rule"]) == ("denied", "hold")
    assert "incident 123" in pair["reason"] and oncall in pair["reason"]
    assert (pair["checks"][-1]["rule"], pair["checks"][-1]["verdict"]) == ("hold", "denies")
    assert [c["verdict"] for c in pair["checks"][:-1] if c["verdict"] == "denies"] == []
    assert (pair["hold"]["reason"], pair["hold"]["heldBy"]) == ("incident 123", oncall)


def test_explain_without_a_hold_shows_the_hold_check_holding_and_nothing_to_revoke(
    function_environment: dict[str, str],
    policy_file: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [pair] = explained(capsys, "--target", "orders")["pairs"]

    assert pair["outcome"] == "allowed"
    assert (pair["checks"][-1]["rule"], pair["checks"][-1]["verdict"]) == ("hold", "holds")
    assert pair["revocation"]["revoke"] is True
    assert pair["revocation"]["summary"].startswith("nothing to revoke")


def test_explain_says_the_function_would_revoke_its_own_grant_and_changes_nothing(
    function_environment: dict[str, str],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    clients: dict[str, Any],
    ledger: Ledger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle(tag_change(ORDERS_GROUP))  # the function grants: its entry is in force
    untag(clients)

    document = explained(capsys)

    # The group's tag names no target now: the group's line says what revocation would do.
    [pair] = document["pairs"]
    assert pair["target"] is None
    revocation = pair["revocation"]
    assert [f["outcome"] for f in revocation["findings"]] == ["would revoke orders"]
    assert "no longer names orders" in revocation["findings"][0]["reason"]
    status, out, _ = run(capsys, "explain", "--group", ORDERS_GROUP)
    assert status == 0
    assert "revocation: would revoke orders" in out
    # Only read: the grant and its entry are as they were.
    assert "orders-app" in _admitted(clients, ORDERS)
    [entry] = ledger.live(ORDERS_GROUP)
    assert str(entry.status) == "in-force"


def test_explain_says_none_while_the_reason_remains_and_off_without_revoke(
    function_environment: dict[str, str],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    policy_file: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle(tag_change(ORDERS_GROUP))  # owned, and its reason remains

    [pair] = explained(capsys, "--target", "orders")["pairs"]
    assert pair["revocation"]["summary"] == "none: the reason of its 1 open entr(y/ies) remains"

    Path(policy_file).write_text(POLICY.replace("revoke: true", "revoke: false"), "utf-8")
    [pair] = explained(capsys, "--target", "orders")["pairs"]
    assert pair["revocation"]["revoke"] is False
    assert pair["revocation"]["summary"].startswith("off")


def test_explain_says_a_grant_the_function_does_not_own_is_left(
    function_environment: dict[str, str],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    clients: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _grant_by_hand(clients)
    handle(tag_change(ORDERS_GROUP))  # already-authorized: recorded, not owned
    untag(clients)

    [pair] = explained(capsys, "--target", "orders")["pairs"]

    assert pair["assumedTag"] == "orders"
    [finding] = pair["revocation"]["findings"]
    assert finding["outcome"] == "not-owned"
    assert "does not own the grant" in finding["reason"]


def test_plan_reports_the_revocation_a_new_policy_causes_and_the_grant_it_leaves(
    function_environment: dict[str, str],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    clients: dict[str, Any],
    ledger: Ledger,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle(tag_change(ORDERS_GROUP))  # owned
    clients["ec2"].create_tags(
        Resources=[STAGING_GROUP], Tags=[{"Key": "cache-ingress", "Value": "orders"}]
    )
    _grant_by_hand(clients, "orders-staging-app")  # beyond policy, not the function's
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(POLICY.replace("env: prod", "env: qa"), encoding="utf-8")

    status, out, err = run(capsys, "plan", "--json", "--policy-file", str(stricter))

    assert (status, err) == (2, "")
    document = json.loads(out)
    assert document["ledgerRead"] is True
    changes = {(c["groupId"], c["change"]): c for c in document["changes"]}
    revoked = changes[(ORDERS_GROUP, "revoked")]
    assert revoked["revocation"]["status"] == "would-revoke"
    assert "revoked" in revoked["effect"] and "env" in revoked["effect"]
    assert document["counts"]["revoked"] == 1
    # The staging group was denied before and is now: no change, and nothing of it revoked.
    assert not [c for c in document["changes"] if c["groupId"] == STAGING_GROUP]
    # Only read: the grants and the entry are as they were.
    assert {"orders-app", "orders-staging-app"} <= _admitted(clients, ORDERS)
    [entry] = ledger.live(ORDERS_GROUP)
    assert str(entry.status) == "in-force"


def test_plan_says_a_denied_grant_it_does_not_own_stays(
    function_environment: dict[str, str],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    clients: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _grant_by_hand(clients)
    handle(tag_change(ORDERS_GROUP))  # already-authorized: not owned
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(POLICY.replace("env: prod", "env: qa"), encoding="utf-8")

    status, out, _ = run(capsys, "plan", "--policy-file", str(stricter))

    assert status == 2
    [row] = [line for line in out.splitlines() if ORDERS_GROUP in line]
    assert row.startswith("deny") and "the grant stays: the function does not own it" in row


def _grant_by_hand(clients: dict[str, Any], group_name: str = "orders-app") -> None:
    clients["elasticache"].authorize_cache_security_group_ingress(
        CacheSecurityGroupName=ORDERS,
        EC2SecurityGroupName=group_name,
        EC2SecurityGroupOwnerId=ACCOUNT,
    )


def _admitted(clients: dict[str, Any], name: str) -> set[str]:
    [group] = clients["elasticache"].describe_cache_security_groups(CacheSecurityGroupName=name)[
        "CacheSecurityGroups"
    ]
    return {pair["EC2SecurityGroupName"] for pair in group["EC2SecurityGroups"]}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_grants_shows_its_progress_on_a_terminal_and_nothing_in_a_pipe(
    function_environment: dict[str, str],
    handle: Callable[[dict[str, Any]], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle(tag_change(event_id="tag-1"))
    capsys.readouterr()
    terminal, captured = _Terminal(), sys.stderr
    monkeypatch.setattr(sys, "stderr", terminal)

    status = main(["grants"])

    assert status == 0
    drawn = terminal.getvalue()
    assert drawn.startswith("\r") and "read 1" in drawn and "entries/s" in drawn
    assert drawn.endswith("\r\x1b[2K")  # the line is cleared before the table
    monkeypatch.setattr(sys, "stderr", captured)
    assert run(capsys, "grants")[2] == ""  # not a terminal: nothing on stderr


def test_plan_says_when_revocations_cannot_be_shown_without_the_ledger(
    function_environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("LEDGER_TABLE")
    current, new = tmp_path / "current.yaml", tmp_path / "new.yaml"
    current.write_text(POLICY.replace("revoke: true", "revoke: false"), encoding="utf-8")
    new.write_text(POLICY, encoding="utf-8")
    arguments = ["--policy-file", str(new), "--current-policy", str(current)]

    status, out, _ = run(capsys, "plan", *arguments)
    assert status in (0, 2)
    assert "the grant ledger is unknown" in out and "revocations are not shown" in out

    _, out, _ = run(capsys, "plan", "--json", *arguments)
    assert json.loads(out)["ledgerRead"] is False
