"""The scheduled sweep against moto and the emulation; helpers shared by its tests.

The embedded AWS pages DescribeSecurityGroups as EC2 does
(`cache_ingress_tools.emulator.security_group_paging`, installed with the rest of the
emulation), so the sweep's pagination and resume token are exercised as against AWS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cache_ingress.aws import Clients
from cache_ingress.reconcile import ReconcileOptions, Reconciler, build_reconciler
from cache_ingress.settings import Settings
from cache_ingress_tools.emulator.scenario import SeededWorld, load_scenario, seed

CLASSIC_SCENARIO = """
account_id: "123456789012"
region: us-east-1
security_groups:
  - {id: sg-0a1b2c3d4e5f60718, name: orders-app, tags: {cache-ingress: orders, env: prod}}
  - id: sg-0b2c3d4e5f6071829
    name: orders-staging-app
    tags: {cache-ingress: orders, env: staging}
  - {id: sg-0c3d4e5f607182930, name: payments-app, tags: {cache-ingress: payments, env: prod}}
  - {id: sg-0e5f6071829304152, name: retired-app, tags: {env: prod}}
  - id: sg-0f60718293041526a
    name: inventory-app
    tags: {cache-ingress: inventory, env: prod}
  - id: sg-01a2b3c4d5e6f7081
    name: reporting-app
    tags: {cache-ingress: "orders, analytics", env: prod}
cache_security_groups:
  - name: orders-cache-sg
  - name: payments-cache-sg
idempotency_table: cache-ingress-idempotency
ledger_table: cache-ingress-ledger
dead_letter_queue: cache-ingress-dlq
"""
CLASSIC_POLICY = """
version: 1
tag_key: cache-ingress
targets:
  orders:
    cache_security_group: orders-cache-sg
    allow: {required_tags: {env: prod}}
  payments:
    cache_security_group: payments-cache-sg
    allow:
      required_tags: {env: prod}
      principals: ["arn:aws:sts::123456789012:assumed-role/platform/*"]
  inventory:
    cache_security_group: inventory-cache-sg
    allow: {required_tags: {env: prod}}
"""


@dataclass
class ClockedContext:
    """A Lambda context whose remaining time the test sets, step by step.

    `remaining` is called with the number of times the sweep has asked so far.
    """

    remaining: Callable[[int], int]
    aws_request_id: str = "reconcile-request-1"
    function_name: str = "cache-ingress-reconcile"
    function_version: str = "$LATEST"
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:cache-ingress-reconcile"
    )
    memory_limit_in_mb: int = 512
    log_group_name: str = "/aws/lambda/cache-ingress-reconcile"
    log_stream_name: str = "2026/11/20/[$LATEST]def"
    asked: int = field(default=0)

    def get_remaining_time_in_millis(self) -> int:
        value = self.remaining(self.asked)
        self.asked += 1
        return value


def classic_files(directory: Path) -> tuple[Path, Path]:
    """(scenario file, policy file) of the classic world, written in `directory`."""
    scenario, policy = directory / "classic-scenario.yaml", directory / "classic-policy.yaml"
    scenario.write_text(CLASSIC_SCENARIO, encoding="utf-8")
    policy.write_text(CLASSIC_POLICY, encoding="utf-8")
    return scenario, policy


def seed_classic_world(clients: dict[str, Any], directory: Path) -> SeededWorld:
    """Seed the classic world; `classic_environment` gives the function's variables."""
    scenario, _ = classic_files(directory)
    return seed(load_scenario(scenario), clients)


def classic_environment(world: SeededWorld, directory: Path) -> dict[str, str]:
    return {**world.function_environment(), "POLICY_FILE": str(directory / "classic-policy.yaml")}


def make_reconciler(
    environment: dict[str, str],
    clients: dict[str, Any],
    *,
    options: ReconcileOptions | None = None,
) -> Reconciler:
    """A Reconciler wired as the function wires it, on the test's clients."""
    settings = Settings.from_environ(environment)
    injected = Clients(settings.region)
    for name, client in clients.items():
        injected.inject(name, client)
    return build_reconciler(settings, options or ReconcileOptions(), injected)


def granted_pairs(elasticache: Any, cache_group: str) -> set[tuple[str, str]]:
    """(EC2 group name, owner) pairs the cache security group grants now."""
    response = elasticache.describe_cache_security_groups(CacheSecurityGroupName=cache_group)
    return {
        (pair["EC2SecurityGroupName"], pair["EC2SecurityGroupOwnerId"])
        for pair in response["CacheSecurityGroups"][0]["EC2SecurityGroups"]
    }


def count_calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """Every request of one operation the client sends from now on, as sent."""
    calls: list[dict[str, Any]] = []
    service = client.meta.service_model.service_id.hyphenize()

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    client.meta.events.register(f"provide-client-params.{service}.{operation}", record)
    return calls
