"""`cache-ingress reconcile`: the scheduled sweep's view on demand, as a table or JSON.

Runs the function's own reconciliation code in this process against the account (or the
emulator, with --endpoint-url): every tagged security group, decided by the policy, compared
with what the cache security groups grant now. `--dry-run` reports drift and changes
nothing. The command always sweeps from the start, without a time limit, and never reads or
moves the scheduled function's resume token.

Exit status: 0 in sync (or repaired); 1 a pair failed or the sweep could not run; 2 a usage
or settings error; 3 a dry run found drift it would repair.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DRIFT = 3
SERVICES = ("ec2", "elasticache", "dynamodb", "ssm")
HEADERS = ("STATUS", "GROUP ID", "GROUP NAME", "TARGET", "DESTINATION", "REASON")
REASON_WIDTH = 90
# Settings requires it; the sweep never sends to the dead-letter queue (Lambda's on-failure
# destination does), so the command does not ask for it.
_UNUSED_QUEUE = "unused-by-reconcile"
_UNUSED_TABLE = "unused-in-dry-run"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="sweep every tagged security group and repair missing ingress (or --dry-run)",
        description=(
            "Sweep every security group carrying the tag key, decide each by the policy, "
            "compare with what the cache security groups grant now, and authorize what is "
            "missing through the function's idempotent grant code. Targets that require a "
            "principal are reported as needs-event and never granted here."
        ),
    )
    parser.add_argument("--dry-run", action="store_true", help="report drift, change nothing")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--all", action="store_true", help="list every pair, in-sync ones included")
    parser.add_argument("--verbose", action="store_true", help="print the sweep's log lines")
    connection = parser.add_argument_group("account and connection")
    connection.add_argument("--region", help="AWS region (default: AWS_REGION or the profile's)")
    connection.add_argument("--profile", help="AWS named profile")
    connection.add_argument(
        "--endpoint-url", help="send every AWS call here, e.g. the emulator http://127.0.0.1:5000"
    )
    connection.add_argument(
        "--account-id", help="the account the function serves (default: ACCOUNT_ID, or STS)"
    )
    function = parser.add_argument_group("the function's settings (default: its variables)")
    function.add_argument(
        "--idempotency-table", help="the stack's idempotency table (IDEMPOTENCY_TABLE)"
    )
    function.add_argument("--tag-key", help="the stack's tag key (TAG_KEY)")
    function.add_argument("--policy-file", help="a policy file (POLICY_FILE)")
    function.add_argument("--policy-parameter", help="an SSM parameter name (POLICY_PARAMETER)")
    function.add_argument(
        "--page-size", type=int, help="groups per DescribeSecurityGroups page (5-1000)"
    )
    parser.set_defaults(handler=run)


def run(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    # Imported here: `cache-ingress --help` and the other commands never load the function.
    from cache_ingress.errors import CacheIngressError, SettingsError  # noqa: PLC0415
    from cache_ingress.reconcile import (  # noqa: PLC0415
        PairStatus,
        ReconcileOptions,
        build_reconciler,
    )
    from cache_ingress.settings import Settings  # noqa: PLC0415

    with _quiet_logs(verbose=arguments.verbose):
        try:
            clients, region = _clients(arguments)
            environment = _environment(arguments, region, clients)
            settings = Settings.from_environ(environment)
            options = ReconcileOptions.from_environ(environment)
        except (SettingsError, UsageError) as exc:
            sys.stderr.write(f"cache-ingress reconcile: {exc}\n")
            return EXIT_USAGE
        reconciler = build_reconciler(settings, options, clients)
        try:
            report = reconciler.run(None, dry_run=arguments.dry_run or None, resume=False)
        except CacheIngressError as exc:
            sys.stderr.write(f"cache-ingress reconcile: the sweep could not run: {exc}\n")
            return EXIT_FAILED
    pairs = report.pairs if arguments.all else report.findings()
    if arguments.json:
        summary = report.summary(findings_limit=len(report.pairs))
        if arguments.all:
            summary["pairs"] = [pair.as_fields() for pair in report.pairs]
        out.write(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    else:
        out.write(_table([pair.as_fields() for pair in pairs]))
        out.write(_summary_line(report.summary(findings_limit=0)))
    counts = report.counts()
    if counts[PairStatus.FAILED]:
        return EXIT_FAILED
    if report.dry_run and counts[PairStatus.DRIFT]:
        return EXIT_DRIFT
    return EXIT_OK


class UsageError(Exception):
    """An option is missing or wrong; the command prints it and exits with status 2."""


def _clients(arguments: argparse.Namespace) -> tuple[Any, str]:
    import boto3  # noqa: PLC0415
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415

    from cache_ingress.aws import CLIENT_CONFIG, Clients  # noqa: PLC0415

    try:
        session = boto3.Session(profile_name=arguments.profile, region_name=arguments.region)
    except BotoCoreError as exc:
        raise UsageError(str(exc)) from exc
    region = arguments.region or os.environ.get("AWS_REGION") or session.region_name
    if not region:
        raise UsageError("no region: pass --region or set AWS_REGION")
    clients = Clients(region)
    for service in (*SERVICES, "sts"):
        clients.inject(
            service,
            session.client(  # type: ignore[call-overload]
                service,
                region_name=region,
                endpoint_url=arguments.endpoint_url,
                config=CLIENT_CONFIG,
            ),
        )
    return clients, region


def _environment(arguments: argparse.Namespace, region: str, clients: Any) -> dict[str, str]:
    """The function's environment as the command sees it: variables, then options."""
    environment = dict(os.environ)
    overrides = {
        "AWS_REGION": region,
        "ACCOUNT_ID": arguments.account_id,
        "IDEMPOTENCY_TABLE": arguments.idempotency_table,
        "TAG_KEY": arguments.tag_key,
        "POLICY_FILE": arguments.policy_file,
        "POLICY_PARAMETER": arguments.policy_parameter,
        "RECONCILE_PAGE_SIZE": None if arguments.page_size is None else str(arguments.page_size),
    }
    environment.update({name: value for name, value in overrides.items() if value is not None})
    if arguments.dry_run:
        environment["DRY_RUN"] = "true"
    if not environment.get("ACCOUNT_ID", "").strip():
        environment["ACCOUNT_ID"] = _caller_account(clients)
    if not environment.get("IDEMPOTENCY_TABLE", "").strip():
        if not arguments.dry_run:
            raise UsageError(
                "repairs go through the idempotency table: pass --idempotency-table "
                "(or set IDEMPOTENCY_TABLE), or use --dry-run"
            )
        environment["IDEMPOTENCY_TABLE"] = _UNUSED_TABLE
    environment.setdefault("DEAD_LETTER_QUEUE_URL", _UNUSED_QUEUE)
    return environment


def _caller_account(clients: Any) -> str:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        return str(clients.get("sts").get_caller_identity()["Account"])
    except (BotoCoreError, ClientError) as exc:
        raise UsageError(f"no account id: pass --account-id ({exc})") from exc


@contextmanager
def _quiet_logs(*, verbose: bool) -> Iterator[None]:
    """The sweep's JSON log lines go to stderr (all of them with --verbose, else warnings and
    errors), so stdout holds only the report; restored afterwards.
    """
    from cache_ingress.observability import logger  # noqa: PLC0415

    handler = logger.registered_handler
    stream = getattr(handler, "stream", None)
    level = logger.log_level
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(sys.stderr)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Powertools warns that no Lambda context gives in-progress records a deadline;
            # here the record's own expiry bounds them.
            warnings.filterwarnings("ignore", message="Couldn't determine the remaining time")
            yield
    finally:
        if isinstance(handler, logging.StreamHandler) and stream is not None:
            handler.setStream(stream)
        logger.setLevel(level)


def _table(rows: list[Mapping[str, Any]]) -> str:
    cells = [
        (
            str(row.get("status", "")),
            str(row.get("group_id", "")),
            str(row.get("group_name", "")),
            str(row.get("target") or "-"),
            _destination(row),
            _shorten(str(row.get("reason", ""))),
        )
        for row in rows
    ]
    if not cells:
        return "no findings: every tagged pair is in sync\n"
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
    lines = [
        "  ".join(value.ljust(widths[i]) for i, value in enumerate(line)).rstrip()
        for line in (HEADERS, *cells)
    ]
    return "\n".join(lines) + "\n"


def _destination(row: Mapping[str, Any]) -> str:
    if row.get("cache_security_group"):
        return str(row["cache_security_group"])
    if row.get("vpc_security_group"):
        return f"{row['vpc_security_group']}:{row.get('port', '?')}"
    return "-"


def _shorten(text: str) -> str:
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 1] + "…"


def _summary_line(summary: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{status} {count}" for status, count in summary["counts"].items())
    mode = " (dry run: nothing changed)" if summary["dryRun"] else ""
    return (
        f"\nrun {summary['runId']}: {summary['status']}{mode}; {summary['groupsSeen']} tagged "
        f"group(s) on {summary['pages']} page(s); {counts}; drift found "
        f"{summary['driftFound']}, granted beyond policy {summary['grantedBeyondPolicy']}\n"
    )
