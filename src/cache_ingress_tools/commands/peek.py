"""`cache-ingress peek`: list what is in the dead-letter queue without consuming it."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import IO, Any

from cache_ingress_tools.commands._dead_letter_queue import (
    Connection,
    UsageError,
    add_connection_arguments,
    add_selection_arguments,
    age_cell,
    event_cell,
    groups_cell,
    queue_url,
    render_table,
    selection_from,
    shorten,
    write_json_line,
)
from cache_ingress_tools.dead_letters import DeadLetter, Unrecognised
from cache_ingress_tools.replay import (
    EXIT_ABORTED,
    EXIT_OK,
    EXIT_USAGE,
    DeadLetterQueue,
    QueueError,
    peek,
)

# Long enough to read a large queue once; every message is made visible again at the end.
PEEK_VISIBILITY_SECONDS = 120
ERROR_CHARS = 240
# The error goes last: it is the longest, and the one read in full.
HEADERS = ("EVENT ID", "SOURCE", "GROUPS", "ORIGIN", "ATTEMPTS", "AGE", "ERROR")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "peek",
        help="list the dead-letter queue without consuming it",
        description=(
            "List the messages in the dead-letter queue: event id, source, security groups, "
            "how each got there, the error, attempts and age. Messages are hidden while the "
            "queue is read and made visible again at once afterwards. Reading increments "
            "each message's receive count."
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
    except UsageError as exc:
        sys.stderr.write(f"cache-ingress peek: {exc}\n")
        return EXIT_USAGE
    now = datetime.now(UTC)
    try:
        messages = peek(
            queue,
            selection=selection_from(arguments),
            max_messages=arguments.max_messages,
            visibility_timeout=arguments.visibility_timeout,
            wait_seconds=arguments.wait_seconds,
            now=now,
        )
    except QueueError as exc:
        sys.stderr.write(f"cache-ingress peek: {exc}\n")
        return EXIT_ABORTED
    if arguments.json:
        for message in messages:
            write_json_line(out, message.as_dict(now))
        return EXIT_OK
    out.write(render_table(HEADERS, [_row(m, now) for m in messages]))
    unrecognised = sum(isinstance(m, Unrecognised) for m in messages)
    out.write(f"{len(messages)} message(s), {unrecognised} unrecognised\n")
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
