"""`cache-ingress peek`: list what is in the dead-letter queue without consuming it."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import IO, Any

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandError,
    Connection,
    render_table,
    shorten,
    stop_on_interrupt,
    write_json_line,
)
from cache_ingress_tools.commands._dead_letter_queue import (
    add_connection_arguments,
    add_selection_arguments,
    age_cell,
    event_cell,
    groups_cell,
    queue_url,
    selection_from,
)
from cache_ingress_tools.dead_letters import DeadLetter, Unrecognised
from cache_ingress_tools.replay import EXIT_ABORTED, DeadLetterQueue, QueueError, peek

# Long enough to read a large queue once; every message is made visible again at the end.
PEEK_VISIBILITY_SECONDS = 120
ERROR_CHARS = 240
# The error goes last: it is the longest, and the one read in full.
HEADERS = ("EVENT ID", "SOURCE", "GROUPS", "ORIGIN", "ATTEMPTS", "AGE", "ERROR")
# Shown after SOURCE when a message comes from another account than the queue's (a member's).
ACCOUNT_HEADER = "ACCOUNT"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "peek",
        help=COMMANDS["peek"].help,
        description=(
            "List the messages in the dead-letter queue: event id, source, (when any comes "
            "from a member account) the account, security groups, "
            "how each got there, the error, attempts and age. Messages are hidden while the "
            "queue is read and made visible again at once afterwards, also on Ctrl-C (exit "
            "status 130, with what was read so far). Reading increments each message's "
            "receive count."
        ),
    )
    add_connection_arguments(parser)
    add_selection_arguments(parser)
    parser.set_defaults(handler=run, visibility_timeout=PEEK_VISIBILITY_SECONDS)


def run(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    try:
        connection = Connection.from_arguments(arguments)
        queue = DeadLetterQueue(connection.client("sqs"), queue_url(arguments, connection))
        own_account = connection.account_id()  # the credentials and the endpoint work
    except CommandError as exc:
        return exc.report("peek")
    now = datetime.now(UTC)
    with stop_on_interrupt(
        sys.stderr, "stopping: the messages read so far are made visible"
    ) as stop:
        try:
            messages = peek(
                queue,
                selection=selection_from(arguments),
                max_messages=arguments.max_messages,
                visibility_timeout=arguments.visibility_timeout,
                wait_seconds=arguments.wait_seconds,
                now=now,
                stop=stop,
            )
        except QueueError as exc:
            return CommandError(str(exc), EXIT_ABORTED).report("peek")
    if arguments.json:
        for message in messages:
            write_json_line(out, message.as_dict(now))
    else:
        rows = [_row(m, now) for m in messages]
        accounts = [m.account if isinstance(m, DeadLetter) else None for m in messages]
        if any(account not in (None, own_account) for account in accounts):
            headers = (*HEADERS[:2], ACCOUNT_HEADER, *HEADERS[2:])
            rows = [
                [*row[:2], account or "-", *row[2:]]
                for row, account in zip(rows, accounts, strict=True)
            ]
            out.write(render_table(headers, rows))
        else:
            out.write(render_table(HEADERS, rows))
        unrecognised = sum(isinstance(m, Unrecognised) for m in messages)
        out.write(f"{len(messages)} message(s), {unrecognised} unrecognised\n")
    if stop.is_set():
        sys.stderr.write(
            "cache-ingress peek: interrupted: the list holds what was read before Ctrl-C; "
            "every message is visible again\n"
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _row(message: DeadLetter | Unrecognised, now: datetime) -> list[str]:
    if isinstance(message, Unrecognised):
        return [
            event_cell(message),
            "-",
            "-",
            "unrecognised",
            "-",
            age_cell(message.age(now)),
            shorten(message.reason, ERROR_CHARS),
        ]
    error = ": ".join(p for p in (message.error_type, message.error_message) if p)
    return [
        event_cell(message),
        message.source or "-",
        groups_cell(message),
        str(message.origin),
        "-" if message.attempts is None else str(message.attempts),
        age_cell(message.age(now)),
        shorten(error or message.intake_note, ERROR_CHARS),
    ]
