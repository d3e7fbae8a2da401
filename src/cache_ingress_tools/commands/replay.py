"""`cache-ingress replay`: process dead-lettered events again, deleting only what succeeds."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import (
    CommandError,
    Connection,
    UsageError,
    add_ledger_arguments,
    function_environment,
    function_output_to,
    render_table,
    require_ledger,
    shorten,
    stop_on_interrupt,
    write_json_line,
)
from cache_ingress_tools.commands._dead_letter_queue import (
    Progress,
    add_connection_arguments,
    add_selection_arguments,
    event_cell,
    groups_cell,
    positive_integer,
    queue_url,
    selection_from,
)
from cache_ingress_tools.replay import (
    DISCARDED_STATUS,
    UNREPLAYABLE_STATUS,
    DeadLetterQueue,
    FunctionInvoker,
    LocalReplayer,
    MessageReport,
    Processor,
    Received,
    ReplayOptions,
    ReplayReport,
    Result,
    dry_run_processor,
    replay,
)

if TYPE_CHECKING:
    from cache_ingress_tools.dead_letters import DeadLetter, Unrecognised

DEFAULT_CONCURRENCY = 8
# Failed and skipped messages stay hidden until the run ends, so that it ends: this must
# outlast the run (SQS allows up to 12 hours).
REPLAY_VISIBILITY_SECONDS = 900
# A synchronous invoke lasts as long as the function runs (at most 15 minutes).
INVOKE_READ_TIMEOUT_SECONDS = 900
HEADERS = ("RESULT", "EVENT ID", "ORIGIN", "GROUPS", "STATUS", "REASON")
STOPPING = "stopping: no new replays; the rest is made visible now, the replays under way finish"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay",
        help=COMMANDS["replay"].help,
        description=(
            "Recover each message's original event and process it again, through the deployed "
            "function (--function-name) or in this process (--local). A message is deleted only "
            "after its replay succeeded; failures, unrecognised and unselected messages are "
            "kept and made visible again when the run ends (at once on Ctrl-C). Exit status: "
            "0 all done, 1 some still failing, 2 usage error, 3 unrecognised messages kept, "
            "4 run stopped early, 130 interrupted."
        ),
    )
    mode = parser.add_argument_group("how to replay (one of)").add_mutually_exclusive_group()
    mode.add_argument(
        "--function-name",
        metavar="NAME",
        help="invoke the deployed function synchronously (name, ARN or NAME:alias)",
    )
    mode.add_argument(
        "--local", action="store_true", help="run the installed function code in this process"
    )
    add_connection_arguments(parser)
    add_selection_arguments(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be replayed; change nothing"
    )
    parser.add_argument(
        "--concurrency",
        type=positive_integer,
        default=DEFAULT_CONCURRENCY,
        help=f"messages replayed at once (default: {DEFAULT_CONCURRENCY})",
    )
    discard = parser.add_argument_group(
        "messages that are never replayed (without --function-name or --local, only these "
        "are acted on)"
    )
    discard.add_argument(
        "--discard-scheduled-runs",
        action="store_true",
        help="delete failed scheduled reconciliation runs (once `cache-ingress reconcile` has "
        "run) instead of keeping them",
    )
    discard.add_argument(
        "--discard-unreplayable",
        action="store_true",
        help="delete the messages no replay can ever succeed with (unrecognised, or a malformed "
        "event), each once written to --archive; --dry-run lists them",
    )
    discard.add_argument(
        "--archive",
        type=Path,
        metavar="FILE",
        help="JSON lines file the discarded unreplayable messages are appended to (body and "
        "attributes, as received), each before it is deleted",
    )
    local = parser.add_argument_group("--local settings (default: the environment)")
    local.add_argument("--idempotency-table", help="default: $IDEMPOTENCY_TABLE or stack output")
    add_ledger_arguments(local)
    local.add_argument("--account-id", help="default: $ACCOUNT_ID or sts get-caller-identity")
    local.add_argument("--policy-file", help="default: $POLICY_FILE or the bundled policy")
    local.add_argument(
        "--policy-parameter", help="default: $POLICY_PARAMETER or the stack's PolicyParameterName"
    )
    local.add_argument("--tag-key", help="default: $TAG_KEY, the stack's TagKey or cache-ingress")
    local.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the function's own log lines, on stderr (default: WARNING)",
    )
    parser.set_defaults(handler=run, visibility_timeout=REPLAY_VISIBILITY_SECONDS)


def run(
    arguments: argparse.Namespace,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        _check_options(arguments)
        connection = Connection.from_arguments(arguments, pool_size=arguments.concurrency + 4)
        queue = DeadLetterQueue(connection.client("sqs"), queue_url(arguments, connection))
        connection.account_id()  # the credentials and the endpoint work, or say what to do
        processor = _processor(arguments, connection, queue.url)
        archive = _archive(arguments, queue.url)
    except CommandError as exc:
        return exc.report("replay", err)
    options = ReplayOptions(
        selection=selection_from(arguments),
        max_messages=arguments.max_messages,
        dry_run=arguments.dry_run,
        concurrency=arguments.concurrency,
        visibility_timeout=arguments.visibility_timeout,
        wait_seconds=arguments.wait_seconds,
        discard_scheduled_runs=arguments.discard_scheduled_runs,
        discard_unreplayable=arguments.discard_unreplayable,
    )
    now = datetime.now(UTC)
    total = queue.approximate_count()
    progress = Progress(
        err, min(total, arguments.max_messages or total) if total is not None else None
    )

    def on_message(report: MessageReport) -> None:
        progress.advance(str(report.result))
        if arguments.json:
            write_json_line(out, report.as_dict(now))

    with (
        stop_on_interrupt(err, STOPPING) as stop,
        function_output_to(err, arguments.log_level) if arguments.local else nullcontext(),
    ):
        try:
            result = replay(
                queue,
                processor,
                options,
                on_message=on_message,
                now=now,
                stop=stop,
                archive=archive,
            )
        finally:
            progress.close()
    _write_result(out, result, as_json=arguments.json)
    return result.exit_status


def _check_options(arguments: argparse.Namespace) -> None:
    replays = arguments.function_name or arguments.local
    discards = arguments.discard_scheduled_runs or arguments.discard_unreplayable
    if not (replays or discards or arguments.dry_run):
        raise UsageError(
            "say how to replay: --function-name NAME or --local (or --dry-run, or only "
            "--discard-unreplayable / --discard-scheduled-runs)"
        )
    if arguments.discard_unreplayable and not arguments.dry_run and arguments.archive is None:
        raise UsageError(
            "--discard-unreplayable writes each message to --archive FILE before deleting it: "
            "pass --archive"
        )
    if arguments.archive is not None and not arguments.discard_unreplayable:
        raise UsageError("--archive is where --discard-unreplayable writes: pass both, or neither")


def _processor(
    arguments: argparse.Namespace, connection: Connection, dead_letter_queue_url: str
) -> Processor | None:
    if arguments.function_name:
        from botocore.config import Config  # noqa: PLC0415

        invoke_config = Config(read_timeout=INVOKE_READ_TIMEOUT_SECONDS, connect_timeout=10)
        return FunctionInvoker(
            connection.client("lambda", invoke_config), str(arguments.function_name)
        )
    if arguments.local:
        return local_replayer(arguments, connection, dead_letter_queue_url, os.environ)
    # A dry run processes nothing; a run that only discards replays nothing.
    return dry_run_processor if arguments.dry_run else None


def local_replayer(
    arguments: argparse.Namespace,
    connection: Connection,
    dead_letter_queue_url: str,
    environ: Mapping[str, str],
) -> LocalReplayer:
    """The Authorizer, wired as in the function but with this command's clients and
    settings: options first, then the environment, then the stack (so that a stack whose
    policy lives in SSM is replayed with that policy, not the one bundled here). The policy
    is read once before any message is: one that cannot be read stops the run at once.
    """
    # Imported here: the function's code is needed by --local only.
    from cache_ingress.errors import PolicyError, SettingsError  # noqa: PLC0415
    from cache_ingress.settings import Settings  # noqa: PLC0415
    from cache_ingress.wiring import build_authorizer, build_policy_source  # noqa: PLC0415

    environment = function_environment(arguments, connection, environ)
    environment["DEAD_LETTER_QUEUE_URL"] = dead_letter_queue_url
    if not environment.get("IDEMPOTENCY_TABLE", "").strip():
        raise UsageError(
            "--local: the idempotency table is unknown: pass --idempotency-table or "
            "--stack-name, or set IDEMPOTENCY_TABLE"
        )
    try:
        require_ledger(environment, arguments)
    except UsageError as exc:
        raise UsageError(f"--local: {exc}") from exc
    try:
        settings = Settings.from_environ(environment)
    except SettingsError as exc:
        raise UsageError(f"--local: {exc}") from exc
    clients = connection.function_clients(settings.region)
    try:
        build_policy_source(settings, clients).current()
    except PolicyError as exc:
        raise UsageError(f"--local: {exc}") from exc
    return LocalReplayer(build_authorizer(settings, clients))


class JsonLinesArchive:
    """Appends each discarded message as received (body, message attributes, attributes)
    to a JSON lines file, flushed to disk before the message may be deleted."""

    def __init__(self, path: Path, queue_url: str) -> None:
        self.path = path
        self._queue_url = queue_url
        try:
            self._file = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--archive {path}: cannot be written: {exc}") from exc

    def __call__(self, received: Received, message: DeadLetter | Unrecognised, why: str) -> None:
        raw = received.raw
        line = {
            "archivedAt": datetime.now(UTC).isoformat(timespec="seconds"),
            "queueUrl": self._queue_url,
            "messageId": received.message_id,
            "eventId": getattr(message, "event_id", None),
            "reason": why,
            "body": raw.get("Body"),
            "messageAttributes": raw.get("MessageAttributes", {}),
            "attributes": raw.get("Attributes", {}),
        }
        self._file.write(json.dumps(line, separators=(",", ":"), default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


def _archive(arguments: argparse.Namespace, queue_url: str) -> JsonLinesArchive | None:
    if arguments.archive is None or arguments.dry_run:
        return None
    return JsonLinesArchive(arguments.archive, queue_url)


def _write_result(out: IO[str], result: ReplayReport, *, as_json: bool) -> None:
    if as_json:
        write_json_line(out, {"summary": result.summary()})
        return
    rows = [
        [
            str(m.result),
            event_cell(m.message),
            str(getattr(m.message, "origin", "unrecognised")),
            groups_cell(m.message),
            m.status or "-",
            shorten(m.reason, 240),
        ]
        for m in result.messages
    ]
    if rows:
        out.write(render_table(HEADERS, rows))
    counts = result.counts
    if result.dry_run:
        line = f"dry run: would replay {counts['wouldReplay']}"
    else:
        line = (
            f"replayed {counts['replayed']}: succeeded {counts['succeeded']}, "
            f"still failing {counts['stillFailing']}"
        )
    line += f"; skipped {counts['skipped']}; unrecognised {counts['unrecognised']}"
    line += _discard_counts(result)
    if result.aborted:
        line += f"; stopped early: {result.aborted}"
    if result.interrupted:
        line += "; interrupted: the messages not replayed are visible again"
    out.write(f"{line} (exit status {result.exit_status})\n")


def _discard_counts(result: ReplayReport) -> str:
    discarded = [m for m in result.messages if m.result is Result.DISCARDED]
    scheduled = sum(m.status == DISCARDED_STATUS for m in discarded)
    unreplayable = sum(m.status == UNREPLAYABLE_STATUS for m in discarded)
    text = ""
    if scheduled:
        text += f"; discarded {scheduled} scheduled run(s)"
    if unreplayable:
        text += f"; discarded {unreplayable} unreplayable (archived)"
    if result.counts["wouldDiscard"]:
        text += f"; would discard {result.counts['wouldDiscard']}"
    return text
