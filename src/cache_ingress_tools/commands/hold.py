"""`cache-ingress hold`: stop one (security group, target) pair from being granted.

The hold is an item in the grant ledger. While it stands, neither an event nor the sweep
grants the pair (outcome `denied`, rule `hold`, with the reason), and for a target with
`revoke: true` the function's own grant of the pair is revoked: by the next event for the
group, or by the next sweep in enforce mode. `cache-ingress release` ends it. The command
needs only the ledger's rights (the stack's `LedgerOperatorPolicy`).

Exit status: 0 the hold stands; 1 it could not be written; 2 a usage error (a bad id or
name, no ledger table, no or refused credentials).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import IO, Any

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import EXIT_OK, CommandError
from cache_ingress_tools.commands._ledger import (
    add_ledger_connection,
    group_id,
    ledger_problem,
    open_ledger,
    target_name,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hold",
        help=COMMANDS["hold"].help,
        description=(
            "Place a hold on one (security group, target) pair in the grant ledger: while it "
            "stands, no event and no sweep grants the pair (denied, rule hold), and for a "
            "target with revoke: true the function's own grant is revoked by the next event "
            "for the group or the next enforcing sweep. Placing it again replaces the reason. "
            "`cache-ingress release` ends it. Exit status: 0 held, 1 not written, 2 usage."
        ),
    )
    parser.add_argument("--group", required=True, type=group_id, help="the security group id")
    parser.add_argument("--target", required=True, type=target_name, help="the policy target")
    parser.add_argument(
        "--reason", required=True, help="why, for whoever reads the ledger (e.g. 'incident 123')"
    )
    add_ledger_connection(parser)
    parser.set_defaults(handler=run)


def run(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    from cache_ingress.errors import AwsCallError  # noqa: PLC0415

    reason = " ".join(arguments.reason.split())
    if not reason:
        return CommandError("--reason must say why").report("hold")
    try:
        connection, ledger = open_ledger(arguments)
        by = connection.caller_arn()
        try:
            before = ledger.hold(arguments.group, arguments.target, reason=reason, by=by)
        except AwsCallError as exc:
            raise ledger_problem(exc, "the hold could not be written") from exc
    except CommandError as exc:
        return exc.report("hold")
    out.write(f"held: {arguments.group} for {arguments.target}: {reason!r} (by {by})\n")
    if before is not None:
        out.write(f"  replaces the hold {before.summary}\n")
    out.write(
        "  no event and no sweep grants the pair while it stands; with revoke: true, the "
        "function's own grant of it is revoked by the next event for the group or the next "
        "enforcing sweep\n"
        f"  end it with: cache-ingress release --group {arguments.group} --target "
        f"{arguments.target}{_connection_options(arguments)}\n"
    )
    return EXIT_OK


def _connection_options(arguments: argparse.Namespace) -> str:
    """The options this hold was placed with that find the same ledger again, so the hint
    can be pasted as it is (an environment's LEDGER_TABLE is left to the environment)."""
    given = (
        ("--stack-name", arguments.stack_name),
        ("--ledger-table", arguments.ledger_table),
        ("--region", arguments.region),
        ("--profile", arguments.profile),
        ("--endpoint-url", arguments.endpoint_url),
    )
    return "".join(f" {option} {shlex.quote(value)}" for option, value in given if value)
