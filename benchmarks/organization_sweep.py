"""Sweep a simulated organization: time and AWS calls per member account.

    .venv/bin/python -m benchmarks.organization_sweep [--accounts 50] [--groups 200]
                                                      [--targets 40] [--page-size 1000]

The cache account and `--accounts` member accounts, each with `--groups` tagged security
groups, deployed as docs/multi-account.md deploys them (template.yaml's side in the cache
account, member.yaml's read role in every member) in the project's embedded AWS, in this
process (moto with the emulation: STS evaluates each read role's trust). The function's own
sweep across accounts (`cache_ingress.reconcile.build_accounts_sweep`), with its execution
role's credentials, runs three times on the same organization:

- listing only (the floor, and the baseline of the ratios): each member's read role assumed
  and its tagged groups listed through it, nothing decided or granted;
- first sweep: nothing granted yet; every allowed pair of every member is repaired;
- in sync: nothing to do (the hourly steady state).

The groups of each member: 80% tagged `svc-NN` with env=prod (allowed; the policy's
`owner_accounts` lists every member), 10% env=staging (denied), 10% a target the policy does
not have (denied). Calls are counted per account: those made through the member's role and
those the cache account makes for it (reading what is granted, the grants, the records).
The figures are a measurement, never an assertion; they vary with the machine's load.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REGION = "us-east-1"
CACHE = "123456789012"
OFFLINE = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
}


class Meter:
    """Every API call, by the account whose sweep is running and by operation."""

    def __init__(self) -> None:
        self.account = "-"
        self.calls: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._lock = threading.Lock()

    def count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[self.account][model.name] += 1

    def reset(self) -> defaultdict[str, Counter[str]]:
        with self._lock:
            calls, self.calls = self.calls, defaultdict(Counter)
        return calls


def member_ids(count: int) -> list[str]:
    return [f"{200000000000 + index:012d}" for index in range(count)]


def organization_policy(members: list[str], targets: int) -> str:
    owners = ", ".join(f'"{account}"' for account in [CACHE, *members])
    lines = ["version: 1", "targets:"]
    for index in range(targets):
        lines += [
            f"  svc-{index:02d}:",
            f"    cache_security_group: bench-cache-{index:02d}",
            f"    allow: {{owner_accounts: [{owners}], required_tags: {{env: prod}}}}",
        ]
    return "\n".join(lines) + "\n"


def scenario(members: list[str], groups: int, targets: int) -> Any:
    from cache_ingress_tools.emulator.scenario import (
        MEMBER_SCENARIO,
        MemberAccountSeed,
        SecurityGroupSeed,
        load_scenario,
    )

    def group(account_index: int, index: int) -> SecurityGroupSeed:
        kind, slot = index % 10, (index // 10) % targets
        target = "unknown" if kind == 9 else f"svc-{slot:02d}"
        env = "staging" if kind == 8 else "prod"
        return SecurityGroupSeed(
            f"sg-{account_index:05x}{index:012x}",
            f"bench-{index:05d}",
            "benchmark group",
            {"cache-ingress": target, "env": env},
        )

    base = load_scenario(MEMBER_SCENARIO)
    return replace(
        base,
        security_groups=base.security_groups,
        cache_security_groups=tuple(f"bench-cache-{i:02d}" for i in range(targets)),
        member_accounts=tuple(
            MemberAccountSeed(account, tuple(group(n, i) for i in range(groups)))
            for n, account in enumerate(members)
        ),
        policy=None,
    )


@dataclass
class Run:
    name: str
    seconds: float
    per_account: dict[str, tuple[float, int, Counter[str], str, int]]
    # account -> (seconds, groups seen, calls by operation, status, AssumeRole calls)


class Organization:
    """The seeded organization and the function's clients (its execution role's session,
    the member roles' assumed clients), every call metered."""

    def __init__(self, arguments: argparse.Namespace, world: Any, policy_file: Path) -> None:
        import boto3

        from cache_ingress.settings import Settings

        self.arguments = arguments
        self.members = member_ids(arguments.accounts)
        self.meter = Meter()
        credentials = world.members.function_credentials
        self.settings = Settings.from_environ(
            {
                **world.function_environment(),
                "POLICY_FILE": str(policy_file),
                "MEMBER_ACCOUNTS": ",".join(self.members),
                "MEMBER_ORGANIZATION": "",
            }
        )
        self.function = boto3.Session(
            region_name=REGION,
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=credentials["AWS_SESSION_TOKEN"],
        )
        self.function.events.register("before-call", self.meter.count)

    def clients(self) -> Any:
        from cache_ingress.aws import Clients

        return Clients(
            REGION,
            factory=lambda service, config: self.function.client(service, config=config),
            assumed_factory=self._assumed,
        )

    def _assumed(self, service: str, config: Any, keys: Any) -> Any:
        import boto3

        client = boto3.client(
            service,
            region_name=REGION,
            config=config,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            aws_session_token=keys.session_token,
        )
        client.meta.events.register("before-call", self.meter.count)
        return client

    def listing_only(self) -> Run:
        """Each member's role assumed and its tagged groups listed: the floor."""
        from cache_ingress.reconcile.listing import tagged_group_page
        from cache_ingress.wiring import build_member_accounts

        accounts = build_member_accounts(self.settings, self.clients())
        assert accounts is not None
        self.meter.reset()
        started = time.perf_counter()
        per_account = {}
        for account in self.members:
            self.meter.account = account
            began, seen, token = time.perf_counter(), 0, None
            while True:
                page = tagged_group_page(
                    accounts.client(account, "ec2"),
                    self.settings.tag_key,
                    REGION,
                    page_size=self.arguments.page_size,
                    token=token,
                )
                seen += len(page.groups)
                token = page.next_token
                if token is None:
                    break
            calls = self.meter.calls[account]
            seconds = time.perf_counter() - began
            per_account[account] = (seconds, seen, calls, "listed", calls["AssumeRole"])
        return Run("listing only", time.perf_counter() - started, per_account)

    def sweep(self, name: str) -> Run:
        """The function's sweep across accounts, as the scheduled function runs it."""
        from cache_ingress.reconcile import ReconcileOptions, build_accounts_sweep

        options = ReconcileOptions(page_size=self.arguments.page_size, accounts_per_run=10_000)
        swept = build_accounts_sweep(self.settings, options, self.clients())
        self.meter.reset()
        started = time.perf_counter()
        report = swept.run(resume=False)
        seconds = time.perf_counter() - started
        calls = self.meter.reset()
        per_account = {
            a.account: (
                a.seconds,
                a.report.groups_seen if a.report else 0,
                calls[a.account],
                a.status,
                a.assume_role_calls,
            )
            for a in report.accounts
        }
        return Run(name, seconds, per_account)


def metered_by_account(meter: Meter) -> None:
    """Each account's sweep names the account its calls are counted for (benchmark only)."""
    from cache_ingress.reconcile import Reconciler

    real_sweep = Reconciler.sweep

    def sweep(self: Reconciler, *args: Any, **kwargs: Any) -> None:
        meter.account = self.account
        try:
            real_sweep(self, *args, **kwargs)
        finally:
            meter.account = "-"

    Reconciler.sweep = sweep  # type: ignore[method-assign]


def report(arguments: argparse.Namespace, runs: list[Run], seed_seconds: float) -> None:
    members = member_ids(arguments.accounts)
    baseline = runs[0]
    base_seconds = sum(baseline.per_account[a][0] for a in members)
    print(
        f"organization sweep: {arguments.accounts} member accounts x {arguments.groups} tagged "
        f"groups (80% allowed, into {arguments.targets} cache groups), page size "
        f"{arguments.page_size}; python {platform.python_version()}, embedded AWS in process, "
        f"seeded in {seed_seconds:.1f} s"
    )
    for run in runs:
        rows = [run.per_account[a] for a in members if a in run.per_account]
        seconds = sum(row[0] for row in rows)
        calls = sum(sum(row[2].values()) for row in rows)
        statuses = Counter(row[3] for row in rows)
        print(
            f"\n{run.name}: {run.seconds:.2f} s in all ({run.seconds / baseline.seconds:.2f} x "
            f"listing only); members {seconds:.2f} s ({seconds / base_seconds:.2f} x their "
            f"listing), {seconds / len(members) * 1000:.0f} ms and {calls / len(members):.1f} "
            "AWS calls per account; "
            + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
        )
        if CACHE in run.per_account:
            own_seconds, groups, own_calls, status, _ = run.per_account[CACHE]
            print(
                f"  cache account {CACHE}: {own_seconds:.2f} s, {groups} groups, "
                f"{sum(own_calls.values())} calls, {status}"
            )
        print(f"  {'account':<14} {'seconds':>8} {'groups':>6} {'calls':>6} {'assume':>6}  by op")
        for account in members[: arguments.show]:
            took, groups, by_operation, _, assumes = run.per_account[account]
            operations = ", ".join(f"{op} {n}" for op, n in sorted(by_operation.items()))
            print(
                f"  {account:<14} {took:>8.3f} {groups:>6} {sum(by_operation.values()):>6} "
                f"{assumes:>6}  {operations}"
            )
        if len(members) > arguments.show:
            print(f"  ... {len(members) - arguments.show} more accounts, alike")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS (the embedded AWS, the sweeps, botocore): {peak_mib:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--groups", type=int, default=200, help="tagged groups per member")
    parser.add_argument("--targets", type=int, default=40, help="cache groups (at most 48)")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--show", type=int, default=5, help="member rows printed per run")
    arguments = parser.parse_args(argv)
    os.environ.update(OFFLINE)

    import boto3
    from moto import mock_aws

    from benchmarks.reconcile_sweep import index_ec2_tags
    from cache_ingress.observability import logger
    from cache_ingress_tools.emulator.cache_security_groups import install
    from cache_ingress_tools.emulator.scenario import seed

    logger.setLevel(logging.ERROR)  # thousands of "drift found" lines are not the point
    warnings.filterwarnings("ignore", message="Couldn't determine the remaining time")
    install()
    index_ec2_tags()
    members = member_ids(arguments.accounts)
    with mock_aws(), tempfile.TemporaryDirectory() as directory:
        session = boto3.Session(region_name=REGION)
        seeded_at = time.perf_counter()
        world = seed(
            scenario(members, arguments.groups, arguments.targets),
            {s: session.client(s) for s in ("ec2", "elasticache", "dynamodb", "sqs", "ssm")},
            client_for=session.client,
        )
        seed_seconds = time.perf_counter() - seeded_at
        policy_file = Path(directory) / "policy.yaml"
        policy_file.write_text(organization_policy(members, arguments.targets), "utf-8")
        organization = Organization(arguments, world, policy_file)
        metered_by_account(organization.meter)
        runs = [
            organization.listing_only(),
            organization.sweep("first sweep"),
            organization.sweep("in sync"),
        ]
    report(arguments, runs, seed_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
