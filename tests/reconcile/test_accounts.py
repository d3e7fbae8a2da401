"""The sweep across member accounts (reconcile/accounts.py, docs/multi-account.md), against
the member scenario: the cache account, then each member through its read role, each with
its own resume token; bounded by the AssumeRole budget and time, rotating, and reported per
account; a member that cannot be read fails alone."""

from __future__ import annotations

from typing import Any

import pytest

from cache_ingress.organization_accounts import active_accounts
from cache_ingress.reconcile import CURSOR_KEY, PairStatus, build_accounts_sweep
from cache_ingress.reconcile.accounts import ROTATION_KEY, AccountsSweep, member_cursor_key
from cache_ingress.reconcile_handler import lambda_handler
from cache_ingress.settings import ReconcileOptions, Settings
from cache_ingress_tools.emulator import accounts as emulated
from cache_ingress_tools.emulator.organization import account_client
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.support.faults import Fault
from tests.support.fixtures import REGION, TEST_CLIENT_CONFIG, function_clients, shared_session
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.integration

CACHE = "123456789012"
MEMBER = "111122223333"
OTHER_MEMBER = "444455556666"
CHECKOUT_APP = "sg-0d1e2f3a4b5c6d7e8"
CHECKOUT_SESSIONS = "sg-0d2e3f4a5b6c7d8e9"
CHECKOUT_UNPEERED = "sg-0d4f5a6b7c8d9eafb"
LEDGER_APP = "sg-0e1f2a3b4c5d6e7f8"
SESSIONS_CACHE_GROUP = "sg-0c1a2b3c4d5e6f701"


def _as(account: str, service: str) -> Any:
    return account_client(
        lambda name: shared_session().client(name, region_name=REGION, config=TEST_CLIENT_CONFIG),
        service,
        account,
    )


def _sweep(
    world: SeededWorld, options: ReconcileOptions | None = None, **env: str
) -> AccountsSweep:
    environment = {**world.function_environment(), "MEMBER_ORGANIZATION": "", **env}
    return build_accounts_sweep(
        Settings.from_environ(environment), options or ReconcileOptions(), function_clients(world)
    )


def _pairs(summary: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {
        (f["group_id"], f.get("target"), f["status"], f.get("account")) for f in summary["findings"]
    }


def _cursor_keys() -> set[str]:
    items = _as(CACHE, "dynamodb").scan(TableName="cache-ingress-idempotency")["Items"]
    return {item["id"]["S"] for item in items if item["id"]["S"].startswith(CURSOR_KEY)}


def test_every_member_is_swept_through_its_role_and_reported_per_account(
    member_world: SeededWorld,
) -> None:
    report = _sweep(member_world).run(resume=False)

    summary = report.summary()
    accounts = {a["account"]: a for a in summary["accounts"]}
    assert [a["account"] for a in summary["accounts"]] == [CACHE, MEMBER, OTHER_MEMBER]
    assert {a["status"] for a in accounts.values()} == {"completed"}
    assert (accounts[MEMBER]["assumeRoleCalls"], accounts[OTHER_MEMBER]["assumeRoleCalls"]) == (
        1,
        1,
    )
    assert accounts[MEMBER]["groupsSeen"] == 4
    assert _pairs(summary) >= {
        (CHECKOUT_APP, "orders", "repaired", MEMBER),
        (CHECKOUT_SESSIONS, "sessions", "repaired", MEMBER),
        (CHECKOUT_UNPEERED, "sessions", "denied", MEMBER),
        (LEDGER_APP, "orders", "denied", OTHER_MEMBER),
    }
    # Made in the cache account, naming the member as the groups' owner.
    [cache_group] = _as(CACHE, "elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="orders-cache-sg"
    )["CacheSecurityGroups"]
    owners = {(g["EC2SecurityGroupName"], g["EC2SecurityGroupOwnerId"]) for g in cache_group[
        "EC2SecurityGroups"
    ]}  # fmt: skip
    assert ("checkout-app", MEMBER) in owners
    [sessions] = _as(CACHE, "ec2").describe_security_groups(GroupIds=[SESSIONS_CACHE_GROUP])[
        "SecurityGroups"
    ]
    pairs = {(p["GroupId"], p.get("UserId")) for r in sessions["IpPermissions"] for p in r[
        "UserIdGroupPairs"
    ]}  # fmt: skip
    assert (CHECKOUT_SESSIONS, MEMBER) in pairs

    # A second run finds them in sync.
    again = _sweep(member_world).run(resume=False)
    assert again.counts()[PairStatus.REPAIRED] == 0


def test_the_assume_role_budget_leaves_the_rest_to_the_next_run_which_starts_there(
    member_world: SeededWorld,
) -> None:
    options = ReconcileOptions(accounts_per_run=1)

    first = _sweep(member_world, options).run().summary()

    assert [(a["account"], a["status"]) for a in first["accounts"]] == [
        (CACHE, "completed"),
        (MEMBER, "completed"),
        (OTHER_MEMBER, "not-reached"),
    ]
    assert first["status"] == "partial"
    assert ROTATION_KEY in _cursor_keys()

    second = _sweep(member_world, options).run().summary()

    assert [(a["account"], a["status"]) for a in second["accounts"]] == [
        (CACHE, "completed"),
        (OTHER_MEMBER, "completed"),
        (MEMBER, "not-reached"),
    ]


def test_a_member_whose_role_is_refused_fails_alone_with_the_reason(
    member_world: SeededWorld,
) -> None:
    # A listed account where the stack set never deployed the member stack: no read role.
    emulated.govern("210987654321")
    summary = (
        _sweep(member_world, MEMBER_ACCOUNTS=f"{MEMBER},{OTHER_MEMBER},210987654321")
        .run(resume=False)
        .summary()
    )

    accounts = {a["account"]: a for a in summary["accounts"]}
    assert accounts["210987654321"]["status"] == "failed"
    assert "member stack (member.yaml) is not deployed" in accounts["210987654321"]["reason"]
    assert accounts[MEMBER]["status"] == accounts[OTHER_MEMBER]["status"] == "completed"
    assert summary["status"] == "failed"


def test_an_organization_that_cannot_be_listed_sweeps_the_listed_members_and_says_so(
    member_world: SeededWorld,
) -> None:
    environment = member_world.function_environment()
    clients = function_clients(member_world)
    # ListAccounts answers only in the management account or a delegated administrator.
    Fault(clients.get("organizations"), "ListAccounts", "access-denied")
    sweep = build_accounts_sweep(Settings.from_environ(environment), ReconcileOptions(), clients)

    summary = sweep.run(resume=False).summary()

    assert "could not be listed" in summary["accountsProblem"]
    assert [a["account"] for a in summary["accounts"]] == [CACHE, MEMBER, OTHER_MEMBER]


def test_the_scheduled_function_sweeps_every_account_with_a_resume_token_each(
    member_world: SeededWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**member_world.function_environment(), "MEMBER_ORGANIZATION": ""}.items():
        monkeypatch.setenv(name, value)
    from cache_ingress.wiring import current_reconciler

    current_reconciler.cache_clear()
    summary = lambda_handler({"id": "schedule-1"}, FakeLambdaContext(remaining_millis=900_000))
    current_reconciler.cache_clear()

    assert [(a["account"], a["status"]) for a in summary["accounts"]] == [
        (CACHE, "completed"),
        (MEMBER, "completed"),
        (OTHER_MEMBER, "completed"),
    ]
    assert summary["groupsSeen"] == 1 + 4 + 1
    # Every account completed: no resume token left, and the next run starts at the top.
    assert not {member_cursor_key(MEMBER), member_cursor_key(OTHER_MEMBER), ROTATION_KEY} & (
        _cursor_keys()
    )


def test_organization_accounts_lists_the_active_accounts(clients: dict[str, Any]) -> None:
    organizations = shared_session().client(
        "organizations", region_name=REGION, config=TEST_CLIENT_CONFIG
    )
    organizations.create_organization(FeatureSet="ALL")
    created = organizations.create_account(AccountName="apps", Email="apps@example.com")
    new_account = created["CreateAccountStatus"]["AccountId"]

    assert set(active_accounts(organizations)) == {CACHE, new_account}


def test_a_member_stopped_by_time_resumes_from_its_own_token_in_the_next_run(
    member_world: SeededWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cache_ingress.reconcile import listing

    ec2 = _as(MEMBER, "ec2")
    for index in range(8):
        group = ec2.create_security_group(GroupName=f"batch-{index}", Description="batch")
        ec2.create_tags(
            Resources=[group["GroupId"]],
            Tags=[{"Key": "cache-ingress", "Value": "orders"}, {"Key": "env", "Value": "prod"}],
        )
    context = FakeLambdaContext(remaining_millis=900_000)
    real_page = listing.tagged_group_page

    def page_then_out_of_time(*args: Any, **kwargs: Any) -> Any:
        page = real_page(*args, **kwargs)
        if kwargs.get("token") and any(group.owner_id == MEMBER for group in page.groups):
            context.remaining_millis = 1_000  # the member's second page uses up the run
        return page

    monkeypatch.setattr(listing, "tagged_group_page", page_then_out_of_time)
    options = ReconcileOptions(page_size=5, time_reserve_ms=5_000)

    first = _sweep(member_world, options).run(context).summary()

    assert [(a["account"], a["status"]) for a in first["accounts"]] == [
        (CACHE, "completed"),
        (MEMBER, "stopped"),
        (OTHER_MEMBER, "not-reached"),
    ]
    assert member_cursor_key(MEMBER) in _cursor_keys()

    monkeypatch.setattr(listing, "tagged_group_page", real_page)
    second = _sweep(member_world, options).run(FakeLambdaContext(remaining_millis=900_000))

    accounts = [(a.account, a.status, a.report.resumed if a.report else None) for a in
                second.accounts]  # fmt: skip
    assert accounts == [
        (CACHE, "completed", False),
        (OTHER_MEMBER, "completed", False),
        (MEMBER, "completed", True),
    ]
    assert member_cursor_key(MEMBER) not in _cursor_keys()
    granted = {
        g["EC2SecurityGroupName"]
        for g in _as(CACHE, "elasticache").describe_cache_security_groups(
            CacheSecurityGroupName="orders-cache-sg"
        )["CacheSecurityGroups"][0]["EC2SecurityGroups"]
    }
    assert {f"batch-{index}" for index in range(8)} <= granted


def test_the_organization_benchmark_runs_and_reports_per_account() -> None:
    # docs/benchmarks.md, "Sweeping an organization": the command as written, smaller.
    import subprocess
    import sys
    from pathlib import Path

    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.organization_sweep", "--accounts", "2", "--groups",
         "10", "--show", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr[-2000:]
    out = completed.stdout
    assert "organization sweep: 2 member accounts x 10 tagged groups" in out
    assert "first sweep:" in out and "completed 2" in out
    assert "200000000001" in out and "AuthorizeCacheSecurityGroupIngress 8" in out


def test_the_sweep_revokes_a_members_grant_whose_group_was_deleted(
    member_world: SeededWorld, tmp_path: Any
) -> None:
    # docs/multi-account.md: a deletion the event path missed is found by the sweep's
    # revocation phase (enforce), which reads the member's groups through its role.
    from cache_ingress.ledger import Ledger
    from tests.integration.test_member_events import REVOKING_POLICY

    policy = tmp_path / "policy.yaml"
    policy.write_text(REVOKING_POLICY, encoding="utf-8")
    options = ReconcileOptions(enforce=True)
    first = _sweep(member_world, options, POLICY_FILE=str(policy)).run(resume=False)
    assert (CHECKOUT_APP, "orders", "repaired", MEMBER) in _pairs(first.summary())
    ledger = Ledger(_as(CACHE, "dynamodb"), member_world.function_environment()["LEDGER_TABLE"])
    [entry] = ledger.live(CHECKOUT_APP)
    assert entry.grant.account == MEMBER

    _as(MEMBER, "ec2").delete_security_group(GroupId=CHECKOUT_APP)
    second = _sweep(member_world, options, POLICY_FILE=str(policy)).run(resume=False)

    assert ledger.live(CHECKOUT_APP) == []
    [cache_group] = _as(CACHE, "elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="orders-cache-sg"
    )["CacheSecurityGroups"]
    assert "checkout-app" not in {
        g["EC2SecurityGroupName"] for g in cache_group["EC2SecurityGroups"]
    }
    assert second.summary()["status"] == "completed"
