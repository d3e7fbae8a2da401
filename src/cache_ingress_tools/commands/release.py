"""`cache-ingress release`: end the hold on one (security group, target) pair.

The hold's item stays in the ledger, marked released (by whom, when, why): the next event
or sweep may grant the pair again as the policy allows. Needs only the ledger's rights.

Exit status: 0 released; 1 no hold stood on the pair, or it could not be written; 2 a usage
error.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import EXIT_OK, CommandError
from cache_ingress_tools.commands._ledger import (
    EXIT_FAILED,
    add_ledger_connection,
    group_id,
    ledger_problem,
    open_ledger,
    target_name,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "release",
        help=COMMANDS["release"].help,
        description=(
            "End the hold on one (security group, target) pair. The hold stays in the ledger, "
            "marked released; events and the sweep grant the pair again as the policy allows. "
            "Exit status: 0 released, 1 no hold stood (or not written), 2 usage."
        ),
    )
    parser.add_argument("--group", required=True, type=group_id, help="the security group id")
    parser.add_argument("--target", required=True, type=target_name, help="the policy target")
    parser.add_argument("--reason", help="why it ends (kept in the ledger)")
    add_ledger_connection(parser)
    parser.set_defaults(handler=run)


def run(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    from cache_ingress.errors import AwsCallError  # noqa: PLC0415

    reason = " ".join((arguments.reason or "").split()) or None
    try:
        connection, ledger = open_ledger(arguments)
        by = connection.caller_arn()
        try:
            released = ledger.release(arguments.group, arguments.target, by=by, reason=reason)
        except AwsCallError as exc:
            raise ledger_problem(exc, "the hold could not be released") from exc
    except CommandError as exc:
        return exc.report("release")
    if released is None:
        return CommandError(
            f"no hold stands on {arguments.group} for {arguments.target}", EXIT_FAILED
        ).report("release")
    out.write(
        f"released: {arguments.group} for {arguments.target} (by {by}); it was held "
        f"{released.summary}\n"
    )
    return EXIT_OK
