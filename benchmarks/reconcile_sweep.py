"""Sweep 5,000 tagged security groups: the time a run takes and its AWS calls per group.

    .venv/bin/python benchmarks/reconcile_sweep.py [--groups 5000] [--targets 40]
                                                   [--page-size 1000] [--latency-ms 0]

AWS is the project's embedded AWS (moto's ThreadedMotoServer on 127.0.0.1 with the
cache-security-group emulation, and the EC2 paging the reconcile tests install, since moto
5.2 ignores MaxResults), run in a child process so that its work does not share this
process's interpreter lock, as AWS would not. This process runs the function's own
`Reconciler` (built by `cache_ingress.reconcile.build_reconciler`) against it.

The account: `--targets` cache security groups (40 by default; the emulation, like AWS,
allows 50 per region), each the destination of one policy target `svc-NN` that requires
env=prod, plus the scenario's `payments` target, which requires a principal. The groups: 80%
tagged `svc-NN` with env=prod (allowed), 10% with env=staging (denied), 10% `payments`
(needs-event). Runs, in this order, on the same account:

- listing only: the tagged groups, paged with the tag-key filter (no decision, no grant);
  the floor any sweep pays, and the baseline of the ratios;
- first sweep: nothing granted yet, every allowed pair is repaired (a deploy on an old
  account, or a week of lost events);
- after a 10% revoke: a tenth of the allowed grants revoked by hand, then swept;
- in sync: nothing to do (the hourly steady state);
- in sync, dry run.

`--latency-ms` adds a fixed delay before every request this process sends, standing in for
the round trip to AWS. The figures are a measurement, never an assertion.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("ec2", "elasticache", "dynamodb", "ssm")


# --- the server, in a child process -------------------------------------------------------


def index_ec2_tags() -> None:
    """moto finds a resource's tags by scanning every tag of the account, so a filtered
    describe of N groups costs N x (all tags): 340 s for one page of 1,000 out of 5,000.
    Looking them up by resource id gives the same answers and leaves the figures to the
    sweep. Benchmark only; the tests' accounts are small.
    """
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self: Any) -> list[dict[str, str]]:
        if not self.id:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        return [
            {"resource_id": self.id, "key": key, "value": value, "resource_type": kind}
            for key, value in self.ec2_backend.tags.get(self.id, {}).items()
        ]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]


def serve() -> None:
    """Child mode: the embedded AWS (paging EC2 as AWS does); prints where it listens."""
    from cache_ingress_tools.emulator.server import EmbeddedAws

    index_ec2_tags()
    with EmbeddedAws(port=0) as aws:
        world = aws.world
        print(
            json.dumps(
                {
                    "endpoint": aws.endpoint_url,
                    "environment": world.function_environment(),
                    "vpc": world.vpc_id,
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # until the parent closes it


@dataclass
class Server:
    endpoint: str
    environment: dict[str, str]
    vpc_id: str


@contextmanager
def server() -> Iterator[Server]:
    process = subprocess.Popen(  # noqa: S603 - this file, with this interpreter
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        yield Server(ready["endpoint"], ready["environment"], ready["vpc"])
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=60)


# --- metered clients ----------------------------------------------------------------------


class Meter:
    """Counts every API call by operation, and delays each request by the latency."""

    def __init__(self, latency_seconds: float) -> None:
        self.latency = latency_seconds
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1

    def delay(self, **_: Any) -> None:
        if self.latency:
            time.sleep(self.latency)

    def reset(self) -> Counter[str]:
        with self._lock:
            calls, self.calls = self.calls, Counter()
        return calls


def clients(endpoint: str, region: str, meter: Meter) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    from cache_ingress.aws import CLIENT_CONFIG
    from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS

    # The function's client settings, but moto renders a page of 1,000 groups in seconds
    # where AWS takes well under one: a longer read timeout, so no call is retried for it.
    config = CLIENT_CONFIG.merge(Config(read_timeout=120))
    session = boto3.Session(region_name=region, **DUMMY_CREDENTIALS)
    session.events.register("before-call", meter.count)
    session.events.register("before-send", meter.delay)
    return {
        service: session.client(service, endpoint_url=endpoint, config=config)
        for service in SERVICES
    }


# --- the account --------------------------------------------------------------------------


def policy(targets: int) -> str:
    lines = ["version: 1", "targets:"]
    for index in range(targets):
        lines += [
            f"  svc-{index:02d}:",
            f"    cache_security_group: bench-cache-{index:02d}",
            "    allow: {required_tags: {env: prod}}",
        ]
    lines += [
        "  payments:",
        "    cache_security_group: payments-cache-sg",
        "    allow:",
        "      required_tags: {env: prod}",
        '      principals: ["arn:aws:sts::123456789012:assumed-role/platform/*"]',
    ]
    return "\n".join(lines) + "\n"


def seed(connected: dict[str, Any], vpc_id: str, count: int, targets: int) -> list[tuple[str, str]]:
    """The cache groups and `count` tagged groups; (group name, cache group) of the allowed."""
    for index in range(targets):
        connected["elasticache"].create_cache_security_group(
            CacheSecurityGroupName=f"bench-cache-{index:02d}", Description="benchmark"
        )

    def create(index: int) -> tuple[str, str] | None:
        kind, slot = index % 10, (index // 10) % targets
        target, env = (f"svc-{slot:02d}", "staging" if kind == 8 else "prod")
        if kind == 9:
            target = "payments"
        name = f"bench-{index:05d}"
        connected["ec2"].create_security_group(
            GroupName=name,
            Description="benchmark group",
            VpcId=vpc_id,
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [
                        {"Key": "cache-ingress", "Value": target},
                        {"Key": "env", "Value": env},
                    ],
                }
            ],
        )
        return (name, f"bench-cache-{slot:02d}") if kind < 8 else None

    # One at a time: moto's EC2 backend is not safe for concurrent creates.
    return [pair for pair in map(create, range(count)) if pair is not None]


def revoke(elasticache: Any, pairs: list[tuple[str, str]], account: str) -> None:
    def one(pair: tuple[str, str]) -> None:
        name, cache_group = pair
        elasticache.revoke_cache_security_group_ingress(
            CacheSecurityGroupName=cache_group,
            EC2SecurityGroupName=name,
            EC2SecurityGroupOwnerId=account,
        )

    for pair in pairs:
        one(pair)


# --- the runs -----------------------------------------------------------------------------


@dataclass
class Context:
    """Enough of a Lambda context for the granter: the 15 minutes the function gets."""

    aws_request_id: str = "benchmark"
    function_name: str = "cache-ingress-reconcile"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:reconcile"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class Row:
    name: str
    seconds: float
    cpu_seconds: float  # this process: the function's code and botocore
    groups: int
    counts: dict[str, int]
    calls: Counter[str]


def list_only(ec2: Any, tag_key: str, page_size: int) -> int:
    seen, token = 0, None
    while True:
        request: dict[str, Any] = {
            "Filters": [{"Name": "tag-key", "Values": [tag_key]}],
            "MaxResults": page_size,
        }
        if token:
            request["NextToken"] = token
        page = ec2.describe_security_groups(**request)
        seen += len(page["SecurityGroups"])
        token = page.get("NextToken")
        if not token:
            return seen


def measure(name: str, meter: Meter, run: Any) -> Row:
    meter.reset()
    started, cpu_started = time.perf_counter(), time.process_time()
    groups, counts = run()
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return Row(name, seconds, cpu_seconds, groups, counts, meter.reset())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=5000)
    parser.add_argument("--targets", type=int, default=40, help="cache groups (at most 48)")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.serve:
        serve()
        return 0

    import logging
    import warnings

    from cache_ingress.aws import Clients
    from cache_ingress.observability import logger
    from cache_ingress.reconcile import ReconcileOptions, build_reconciler
    from cache_ingress.settings import Settings

    logger.setLevel(logging.ERROR)  # thousands of "drift found" lines are not the point
    warnings.filterwarnings("ignore", message="Couldn't determine the remaining time")
    meter = Meter(arguments.latency_ms / 1000)
    with server() as aws, tempfile.TemporaryDirectory() as directory:
        policy_file = Path(directory) / "policy.yaml"
        policy_file.write_text(policy(arguments.targets), encoding="utf-8")
        settings = Settings.from_environ({**aws.environment, "POLICY_FILE": str(policy_file)})
        connected = clients(aws.endpoint, settings.region, meter)
        seeded_at = time.perf_counter()
        allowed = seed(connected, aws.vpc_id, arguments.groups, arguments.targets)
        seed_seconds = time.perf_counter() - seeded_at
        injected = Clients(settings.region)
        for service, client in connected.items():
            injected.inject(service, client)
        options = ReconcileOptions(page_size=arguments.page_size, time_reserve_ms=60_000)
        reconciler = build_reconciler(settings, options, injected)

        def sweep(dry_run: bool = False) -> Any:
            def run() -> tuple[int, dict[str, int]]:
                report = reconciler.run(Context(), dry_run=dry_run)
                assert report.status == "completed", report.summary(0)
                return report.groups_seen, report.counts()

            return run

        rows = [
            measure(
                "listing only",
                meter,
                lambda: (list_only(connected["ec2"], settings.tag_key, arguments.page_size), {}),
            ),
            measure("first sweep", meter, sweep()),
        ]
        revoke(connected["elasticache"], allowed[::10], settings.account_id)
        meter.reset()
        rows.append(measure("after a 10% revoke", meter, sweep()))
        rows.append(measure("in sync", meter, sweep()))
        rows.append(measure("in sync, dry run", meter, sweep(dry_run=True)))

    baseline = rows[0].seconds
    print(
        f"reconcile sweep: {arguments.groups} tagged groups ({len(allowed)} allowed, into "
        f"{arguments.targets} cache groups) + the scenario's 5, page size {arguments.page_size}, "
        f"latency {arguments.latency_ms:g} ms; "
        f"python {platform.python_version()}, seeded in {seed_seconds:.1f} s"
    )
    print(
        f"{'run':<20} {'seconds':>8} {'x listing':>9} {'ms/group':>9} {'cpu s':>6} {'calls':>6} "
        f"{'calls/group':>11}  repaired  calls by operation"
    )
    for row in rows:
        total = sum(row.calls.values())
        by_operation = ", ".join(f"{op} {n}" for op, n in sorted(row.calls.items()))
        print(
            f"{row.name:<20} {row.seconds:>8.2f} {row.seconds / baseline:>9.2f} "
            f"{1000 * row.seconds / row.groups:>9.3f} {row.cpu_seconds:>6.2f} {total:>6} "
            f"{total / row.groups:>11.4f}  "
            f"{row.counts.get('repaired', 0):>8}  {by_operation}"
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (the sweeps, botocore, the harness): {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
