"""What `grants`, `hold` and `release` share: the ledger table, found as the other commands
find theirs (--ledger-table, else LEDGER_TABLE, else the stack's output `LedgerTableName`),
and the function's own ledger adapter on this command's connection.

These commands need only the ledger's rights (the stack's `LedgerOperatorPolicy`), plus
sts:GetCallerIdentity, which needs none; `grants --check` also reads what AWS grants now.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING, Any, Final

from cache_ingress_tools.commands._base import (
    CommandError,
    Connection,
    UsageError,
    add_aws_arguments,
)

if TYPE_CHECKING:
    from cache_ingress.ledger import Ledger

EXIT_FAILED: Final = 1

# As intake and the policy read them (a tool's typo must fail, not match nothing).
GROUP_ID: Final = re.compile(r"sg-[0-9a-f]{8,17}")
TARGET_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def add_ledger_connection(parser: argparse.ArgumentParser | Any) -> None:
    group = parser.add_argument_group("the ledger")
    add_aws_arguments(group, stack_help="the deployed stack: its output names the ledger table")
    group.add_argument(
        "--ledger-table", help="the grant ledger table (default: LEDGER_TABLE, or the stack's)"
    )


def group_id(value: str) -> str:
    """An argparse type: a security group id."""
    if not GROUP_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a security group id (sg-…)")
    return value


def target_name(value: str) -> str:
    """An argparse type: a policy target's name."""
    if not TARGET_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a target name (1-64 letters, digits, '.', '_' or '-')"
        )
    return value


def ledger_table(arguments: argparse.Namespace, connection: Connection) -> str:
    table = arguments.ledger_table or os.environ.get("LEDGER_TABLE", "").strip()
    if not table and arguments.stack_name:
        table = connection.stack_outputs(arguments.stack_name).get("LedgerTableName", "")
        if not table:
            raise UsageError(
                f"stack {arguments.stack_name!r} has no LedgerTableName output: it was "
                "deployed before the grant ledger; deploy this version first"
            )
    if not table:
        raise UsageError("the ledger table is unknown: pass --ledger-table or --stack-name")
    return str(table)


def open_ledger(arguments: argparse.Namespace) -> tuple[Connection, Ledger]:
    """The connection (its credentials checked) and the ledger, or a UsageError saying why
    not."""
    from cache_ingress.aws import CLIENT_CONFIG  # noqa: PLC0415
    from cache_ingress.ledger import Ledger  # noqa: PLC0415

    connection = Connection.from_arguments(arguments)
    connection.account_id()  # the credentials and the endpoint work, or say what to do
    table = ledger_table(arguments, connection)
    return connection, Ledger(connection.client("dynamodb", CLIENT_CONFIG), table)


def ledger_problem(exc: Exception, doing: str) -> CommandError:
    """A failed ledger call (an AwsCallError), in words: a table that does not exist is a
    usage error (2); anything else failed the command (1)."""
    if getattr(exc, "code", "") == "ResourceNotFoundException":
        return UsageError(f"{doing}: {exc} (is it the stack's ledger table?)")
    return CommandError(f"{doing}: {exc}", EXIT_FAILED)
