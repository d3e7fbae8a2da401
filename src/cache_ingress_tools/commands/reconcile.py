"""`cache-ingress reconcile`: the scheduled sweep's view on demand, as a table or JSON.

Runs the function's own reconciliation code in this process against the account (or the
emulator, with --endpoint-url): every tagged security group, decided by the policy, compared
with what the cache security groups grant now; with a revoking target, every open entry of
the grant ledger first. `--dry-run` reports drift and changes nothing; `--enforce` revokes
the function's own grants whose reason is gone (otherwise they are reported, would-revoke).
The command always sweeps from the start, without a time limit, and never reads or moves
the scheduled function's resume tokens.

Before the sweep starts, the settings, the credentials (and endpoint) and the policy are
checked, so a run that cannot start says why, with exit status 2 and no log line.

Exit status: 0 in sync (or repaired, or revoked); 1 a pair failed or the sweep could not
run; 2 a usage or settings error (the policy included); 3 the run left something it found to
do: drift in a dry run, or a grant it would revoke without --enforce.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import (
    CommandError,
    Connection,
    UsageError,
    add_aws_arguments,
    add_ledger_arguments,
    function_environment,
    function_output_to,
    render_table,
    require_ledger,
    shorten,
)

if TYPE_CHECKING:
    from cache_ingress.reconcile import AccountsSweep, Reconciler

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DRIFT = 3
HEADERS = ("STATUS", "GROUP ID", "GROUP NAME", "TARGET", "DESTINATION", "REASON")
REASON_WIDTH = 90
# Settings requires it; the sweep never sends to the dead-letter queue (Lambda's on-failure
# destination does), so the command does not ask for it.
_UNUSED_QUEUE = "unused-by-reconcile"
_UNUSED_TABLE = "unused-in-dry-run"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help=COMMANDS["reconcile"].help,
        description=(
            "Sweep every security group carrying the tag key, decide each by the policy, "
            "compare with what the cache security groups grant now, and authorize what is "
            "missing through the function's idempotent grant code. Targets that require a "
            "principal are reported as needs-event and never granted here. With a target that "
            "has revoke: true, the function's own grants whose reason is gone are reported "
            "(would-revoke), or revoked with --enforce. Exit status: 0 in sync, repaired or "
            "revoked, 1 a pair failed or the sweep could not run, 2 a usage or settings "
            "error, 3 the run found what it left undone (drift in a dry run, would-revoke)."
        ),
    )
    parser.add_argument("--dry-run", action="store_true", help="report drift, change nothing")
    parser.add_argument(
        "--enforce",
        action="store_true",
        help="revoke the function's own grants whose reason is gone (targets with revoke: "
        "true); default: report them (RECONCILE_ENFORCE)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--all", action="store_true", help="list every pair, in-sync ones included")
    parser.add_argument("--verbose", action="store_true", help="print the sweep's log lines")
    connection = parser.add_argument_group("account and connection")
    add_aws_arguments(
        connection,
        stack_help="the deployed stack: its output gives the idempotency table, its parameters "
        "the policy parameter and tag key",
    )
    connection.add_argument(
        "--account-id", help="the account the function serves (default: ACCOUNT_ID, or STS)"
    )
    function = parser.add_argument_group(
        "the function's settings (default: its variables, then the stack)"
    )
    function.add_argument(
        "--idempotency-table", help="the stack's idempotency table (IDEMPOTENCY_TABLE)"
    )
    add_ledger_arguments(function)
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
    from cache_ingress.errors import CacheIngressError  # noqa: PLC0415
    from cache_ingress.reconcile import PairStatus  # noqa: PLC0415

    try:
        reconciler = _reconciler(arguments)
    except CommandError as exc:
        return exc.report("reconcile")
    level = logging.INFO if arguments.verbose else logging.WARNING
    # The sweep's JSON log lines go to stderr, so stdout holds only the report.
    with function_output_to(sys.stderr, level):
        try:
            report = reconciler.run(None, dry_run=arguments.dry_run or None, resume=False)
        except CacheIngressError as exc:
            message = f"the sweep could not run: {exc}"
            return CommandError(message, EXIT_FAILED).report("reconcile")
    pairs = report.pairs if arguments.all else report.findings()
    if arguments.json:
        summary = report.summary(findings_limit=len(report.pairs))
        if arguments.all:
            summary["pairs"] = [pair.as_fields() for pair in report.pairs]
        out.write(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    else:
        out.write(_table([pair.as_fields() for pair in pairs]))
        out.write(_summary_line(report.summary(findings_limit=0)))
        for account in report.summary(findings_limit=0).get("accounts", []):
            out.write(_account_line(account))
    counts = report.counts()
    if counts[PairStatus.FAILED]:
        return EXIT_FAILED
    if report.dry_run and counts[PairStatus.DRIFT]:
        return EXIT_DRIFT
    if counts.get(PairStatus.WOULD_REVOKE):
        return EXIT_DRIFT
    return EXIT_OK


def _reconciler(arguments: argparse.Namespace) -> Reconciler | AccountsSweep:
    """The function's reconciler with this command's clients and settings, once the settings,
    the credentials and the policy are known to work (else a usage error saying why).
    """
    connection = Connection.from_arguments(arguments)
    connection.account_id()  # the credentials and the endpoint work, or say what to do
    return build_for(arguments, connection)


def build_for(arguments: argparse.Namespace, connection: Connection) -> Reconciler | AccountsSweep:
    """The reconciler of these options on this connection (also `grants --check`'s): the
    sweep across accounts in a stack that serves member accounts."""
    from cache_ingress.errors import PolicyError, SettingsError  # noqa: PLC0415
    from cache_ingress.settings import ReconcileOptions, Settings  # noqa: PLC0415
    from cache_ingress.wiring import build_accounts_sweep, build_reconciler  # noqa: PLC0415

    environment = _environment(arguments, connection)
    try:
        settings = Settings.from_environ(environment)
        options = ReconcileOptions.from_environ(environment)
    except SettingsError as exc:
        raise UsageError(str(exc)) from exc
    clients = connection.function_clients(settings.region)
    reconciler: Reconciler | AccountsSweep = (
        build_accounts_sweep(settings, options, clients)
        if settings.members is not None
        else build_reconciler(settings, options, clients)
    )
    try:
        reconciler.policy()
    except PolicyError as exc:
        raise UsageError(str(exc)) from exc
    return reconciler


def _environment(arguments: argparse.Namespace, connection: Connection) -> dict[str, str]:
    """The function's environment as the command sees it: options, variables, the stack."""
    environment = function_environment(arguments, connection, os.environ)
    if arguments.page_size is not None:
        environment["RECONCILE_PAGE_SIZE"] = str(arguments.page_size)
    if arguments.enforce:
        environment["RECONCILE_ENFORCE"] = "true"
    if arguments.dry_run:
        environment["DRY_RUN"] = "true"
    if not environment.get("IDEMPOTENCY_TABLE", "").strip():
        if not arguments.dry_run:
            raise UsageError(
                "repairs go through the idempotency table: pass --idempotency-table or "
                "--stack-name (or set IDEMPOTENCY_TABLE), or use --dry-run"
            )
        environment["IDEMPOTENCY_TABLE"] = _UNUSED_TABLE
    if not arguments.dry_run:
        # A repair or a revocation is an entry in the ledger, and a held pair is not repaired.
        require_ledger(environment, arguments)
    elif arguments.no_ledger:
        environment.pop("LEDGER_TABLE", None)
    environment.setdefault("DEAD_LETTER_QUEUE_URL", _UNUSED_QUEUE)
    return environment


def _table(rows: list[Mapping[str, Any]]) -> str:
    if not rows:
        return "no findings: every tagged pair is in sync\n"
    cells = [
        (
            str(row.get("status", "")),
            str(row.get("group_id", "")),
            str(row.get("group_name", "")),
            str(row.get("target") or "-"),
            _destination(row),
            shorten(str(row.get("reason", "")), REASON_WIDTH),
        )
        for row in rows
    ]
    return render_table(HEADERS, cells)


def _destination(row: Mapping[str, Any]) -> str:
    if row.get("cache_security_group"):
        return str(row["cache_security_group"])
    if row.get("vpc_security_group"):
        return f"{row['vpc_security_group']}:{row.get('port', '?')}"
    return "-"


def _account_line(account: Mapping[str, Any]) -> str:
    """One account of a sweep across member accounts (docs/multi-account.md)."""
    counts = account.get("counts") or {}
    shown = ", ".join(f"{status} {count}" for status, count in counts.items() if count)
    reason = f" ({account['reason']})" if account.get("reason") else ""
    return (
        f"account {account['account']}: {account['status']}{reason}; "
        f"{account.get('groupsSeen', 0)} tagged group(s); {shown or 'no pairs'}; "
        f"AssumeRole calls {account.get('assumeRoleCalls', 0)}\n"
    )


def _summary_line(summary: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{status} {count}" for status, count in summary["counts"].items())
    mode = " (dry run: nothing changed)" if summary["dryRun"] else ""
    if "revocation" in summary:
        mode += (
            f"; revocation {summary['revocation']}, {summary['entriesJudged']} ledger "
            "entr(y/ies) judged"
        )
    return (
        f"\nrun {summary['runId']}: {summary['status']}{mode}; {summary['groupsSeen']} tagged "
        f"group(s) on {summary['pages']} page(s); {counts}; drift found "
        f"{summary['driftFound']}, granted beyond policy {summary['grantedBeyondPolicy']}\n"
    )
