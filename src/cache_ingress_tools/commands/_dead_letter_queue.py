"""What `peek` and `replay` share: queue options, selection, cells.

The connection, errors, tables and progress come from the commands' base (`_base`). The leading
underscore keeps this module out of the command table.
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import timedelta

from cache_ingress_tools.commands._base import (
    Connection,
    Progress,
    UsageError,
    add_aws_arguments,
    render_table,
    shorten,
    write_json_line,
)
from cache_ingress_tools.dead_letters import DeadLetter, Origin, Unrecognised
from cache_ingress_tools.replay import Selection

# Connection, Progress, UsageError, render_table, shorten and write_json_line are the base's;
# they are named here too for the callers that import them from this module.
__all__ = [
    "QUEUE_URL_ENV",
    "Connection",
    "Progress",
    "UsageError",
    "add_connection_arguments",
    "add_selection_arguments",
    "age_cell",
    "duration",
    "event_cell",
    "groups_cell",
    "positive_integer",
    "queue_url",
    "render_table",
    "selection_from",
    "shorten",
    "write_json_line",
]

QUEUE_URL_ENV = "CACHE_INGRESS_DLQ_URL"
_DURATION = re.compile(r"(?P<amount>\d+)(?P<unit>[smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# --- options ------------------------------------------------------------------------------


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("queue and connection")
    group.add_argument(
        "--queue-url",
        default=os.environ.get(QUEUE_URL_ENV),
        help=f"the dead-letter queue URL (default: ${QUEUE_URL_ENV}, or the stack's output)",
    )
    add_aws_arguments(
        group,
        stack_help="the deployed stack: its outputs give the queue (and for --local the "
        "table), its parameters the policy parameter and tag key",
    )
    group.add_argument(
        "--visibility-timeout",
        type=positive_integer,
        help="seconds each received message stays hidden while the run lasts",
    )
    group.add_argument(
        "--wait-seconds",
        type=int,
        choices=range(21),
        default=1,
        metavar="0-20",
        help="long-poll wait per receive; 0 on the emulator (default: 1)",
    )
    group.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("selection")
    group.add_argument(
        "--event-id", action="append", default=[], metavar="ID", help="only this event (repeat)"
    )
    group.add_argument(
        "--error",
        action="append",
        default=[],
        metavar="TEXT",
        help="only messages whose error type is TEXT or whose error message contains it",
    )
    group.add_argument(
        "--origin",
        action="append",
        default=[],
        choices=[str(o) for o in Origin],
        metavar="ORIGIN",
        help="only messages that got into the queue this way (repeat): "
        + ", ".join(str(o) for o in Origin),
    )
    group.add_argument(
        "--older-than", type=duration, metavar="AGE", help="only events older than AGE (30m, 2h)"
    )
    group.add_argument(
        "--newer-than", type=duration, metavar="AGE", help="only events at most AGE old"
    )
    group.add_argument(
        "--max", type=positive_integer, dest="max_messages", metavar="N", help="at most N"
    )


def selection_from(arguments: argparse.Namespace) -> Selection:
    return Selection(
        event_ids=frozenset(arguments.event_id),
        errors=tuple(arguments.error),
        origins=frozenset(Origin(o) for o in arguments.origin),
        older_than=arguments.older_than,
        newer_than=arguments.newer_than,
    )


def duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `3d`, or combined as `1h30m`."""
    text = text.strip().lower()
    parts = list(_DURATION.finditer(text))
    if not parts or "".join(p.group(0) for p in parts) != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 15m, 2h, 1d")
    return timedelta(seconds=sum(int(p["amount"]) * _UNIT_SECONDS[p["unit"]] for p in parts))


def positive_integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


# --- the queue ----------------------------------------------------------------------------


def queue_url(arguments: argparse.Namespace, connection: Connection) -> str:
    if arguments.queue_url:
        return str(arguments.queue_url)
    if arguments.stack_name:
        url = connection.stack_outputs(arguments.stack_name).get("DeadLetterQueueUrl")
        if url:
            return url
        raise UsageError(f"stack {arguments.stack_name!r} has no DeadLetterQueueUrl output")
    raise UsageError(f"the queue is unknown: pass --queue-url, --stack-name or set {QUEUE_URL_ENV}")


# --- output -------------------------------------------------------------------------------


def event_cell(message: DeadLetter | Unrecognised) -> str:
    """The event id, or for a message with none the SQS message id, marked as such."""
    if isinstance(message, DeadLetter) and message.event_id:
        return message.event_id
    return f"(message {message.message_id})"


def groups_cell(message: DeadLetter | Unrecognised) -> str:
    if isinstance(message, DeadLetter) and message.scheduled_run:
        return "(reconcile run)"
    if isinstance(message, Unrecognised) or not message.security_groups:
        return "-"
    groups = message.security_groups
    shown = ",".join(groups[:2])
    return shown if len(groups) <= 2 else f"{shown} +{len(groups) - 2}"


def age_cell(age: timedelta | None) -> str:
    if age is None:
        return "-"
    seconds = max(int(age.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"
