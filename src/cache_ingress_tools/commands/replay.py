"""`cache-ingress replay`: process dead-lettered events again, deleting only what succeeds."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import CLIENT_CONFIG, Clients
from cache_ingress.errors import SettingsError
from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from cache_ingress_tools.commands._dead_letter_queue import (
    Connection,
    Progress,
    UsageError,
    add_connection_arguments,
    add_selection_arguments,
    event_cell,
    groups_cell,
    positive_integer,
    queue_url,
    render_table,
    selection_from,
    shorten,
    write_json_line,
)
from cache_ingress_tools.replay import (
    EXIT_USAGE,
    DeadLetterQueue,
    FunctionInvoker,
    LocalReplayer,
    MessageReport,
    Processor,
    ReplayOptions,
    ReplayReport,
    dry_run_processor,
    replay,
)

DEFAULT_CONCURRENCY = 8
# Failed and skipped messages stay hidden until the run ends, so that it ends: this must
# outlast the run (SQS allows up to 12 hours).
REPLAY_VISIBILITY_SECONDS = 900
# A synchronous invoke lasts as long as the function runs (at most 15 minutes).
INVOKE_CONFIG = Config(read_timeout=900, connect_timeout=10)
LOCAL_SERVICES = ("ec2", "elasticache", "dynamodb", "ssm", "sqs")
HEADERS = ("RESULT", "EVENT ID", "ORIGIN", "GROUPS", "STATUS", "REASON")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="replay the dead-letter queue; delete only what succeeds",
        description=(
            "Recover each message's original event and process it again, through the deployed "
            "function (--function-name) or in this process (--local). A message is deleted only "
            "after its replay succeeded; failures, unrecognised and unselected messages are "
            "kept and made visible again when the run ends. Exit status: 0 all done, 1 some "
            "still failing, 2 usage error, 3 unrecognised messages kept, 4 run stopped early."
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
        "--discard-scheduled-runs",
        action="store_true",
        help="delete failed scheduled reconciliation runs (once `cache-ingress reconcile` has "
        "run) instead of keeping them; they are never replayed",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_integer,
        default=DEFAULT_CONCURRENCY,
        help=f"messages replayed at once (default: {DEFAULT_CONCURRENCY})",
    )
    local = parser.add_argument_group("--local settings (default: the environment)")
    local.add_argument("--idempotency-table", help="default: $IDEMPOTENCY_TABLE or stack output")
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
    if not (arguments.dry_run or arguments.function_name or arguments.local):
        err.write(
            "cache-ingress replay: say how to replay: --function-name NAME or --local "
            "(or --dry-run)\n"
        )
        return EXIT_USAGE
    try:
        connection = Connection.from_arguments(arguments, pool_size=arguments.concurrency + 4)
        queue = DeadLetterQueue(connection.client("sqs"), queue_url(arguments, connection))
        processor = _processor(arguments, connection, queue.url)
    except UsageError as exc:
        err.write(f"cache-ingress replay: {exc}\n")
        return EXIT_USAGE
    options = ReplayOptions(
        selection=selection_from(arguments),
        max_messages=arguments.max_messages,
        dry_run=arguments.dry_run,
        concurrency=arguments.concurrency,
        visibility_timeout=arguments.visibility_timeout,
        wait_seconds=arguments.wait_seconds,
        discard_scheduled_runs=arguments.discard_scheduled_runs,
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

    with _function_output_to(err, local=bool(arguments.local), level=arguments.log_level):
        try:
            result = replay(queue, processor, options, on_message=on_message, now=now)
        finally:
            progress.close()
    _write_result(out, result, as_json=arguments.json)
    return result.exit_status


def _processor(
    arguments: argparse.Namespace, connection: Connection, dead_letter_queue_url: str
) -> Processor:
    if arguments.dry_run and not (arguments.function_name or arguments.local):
        return dry_run_processor
    if arguments.function_name:
        return FunctionInvoker(
            connection.client("lambda", INVOKE_CONFIG), str(arguments.function_name)
        )
    return local_replayer(arguments, connection, dead_letter_queue_url, os.environ)


def local_replayer(
    arguments: argparse.Namespace,
    connection: Connection,
    dead_letter_queue_url: str,
    environ: Mapping[str, str],
) -> LocalReplayer:
    """The Authorizer, wired as in the function but with this command's clients and
    settings: options first, then the environment, then the stack (so that a stack whose
    policy lives in SSM is replayed with that policy, not the one bundled here).
    """
    stack_name = arguments.stack_name
    outputs = connection.stack_outputs(stack_name) if stack_name else {}
    parameters = connection.stack_parameters(stack_name) if stack_name else {}
    settings_environ = {
        **environ,
        "AWS_REGION": connection.region,
        "DEAD_LETTER_QUEUE_URL": dead_letter_queue_url,
        "ACCOUNT_ID": arguments.account_id
        or environ.get("ACCOUNT_ID")
        or _caller_account(connection),
        "IDEMPOTENCY_TABLE": arguments.idempotency_table
        or environ.get("IDEMPOTENCY_TABLE")
        or outputs.get("IdempotencyTableName", ""),
    }
    for option, name, stack_parameter in (
        ("policy_file", "POLICY_FILE", None),
        ("policy_parameter", "POLICY_PARAMETER", "PolicyParameterName"),
        ("tag_key", "TAG_KEY", "TagKey"),
    ):
        value = getattr(arguments, option) or environ.get(name)
        if not value and stack_parameter is not None:
            value = parameters.get(stack_parameter)
        if value:
            settings_environ[name] = value
    try:
        settings = Settings.from_environ(settings_environ)
    except SettingsError as exc:
        raise UsageError(f"--local: {exc}") from exc
    clients = Clients(settings.region)
    for service in LOCAL_SERVICES:
        clients.inject(service, connection.client(service, CLIENT_CONFIG))
    return LocalReplayer(build_authorizer(settings, clients))


def _caller_account(connection: Connection) -> str:
    try:
        return str(connection.client("sts").get_caller_identity()["Account"])
    except (ClientError, BotoCoreError) as exc:
        raise UsageError(f"the account id is unknown (pass --account-id): {exc}") from exc


@contextlib.contextmanager
def _function_output_to(err: IO[str], *, local: bool, level: str) -> Iterator[None]:
    """In --local mode the function's log lines go to stderr at the chosen level, and its
    metric flushes (EMF, printed to stdout, meaningful only in Lambda) too, so stdout holds
    only this command's output.
    """
    if not local:
        yield
        return
    from cache_ingress.observability import logger, metrics  # noqa: PLC0415

    handler = logger.registered_handler
    previous_stream = handler.setStream(err) if isinstance(handler, logging.StreamHandler) else None
    previous_level = logger.log_level
    logger.setLevel(level)
    try:
        with contextlib.redirect_stdout(err), warnings.catch_warnings():
            # Without a Lambda context, in-progress idempotency records carry no expiry of
            # their own; Powertools warns about it on every grant.
            warnings.filterwarnings("ignore", message="Couldn't determine the remaining time")
            yield
    finally:
        metrics.clear_metrics()
        logger.setLevel(previous_level)
        if previous_stream is not None and isinstance(handler, logging.StreamHandler):
            handler.setStream(previous_stream)


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
    if counts["discarded"]:
        line += f"; discarded {counts['discarded']} scheduled run(s)"
    if result.aborted:
        line += f"; stopped early: {result.aborted}"
    out.write(f"{line} (exit status {result.exit_status})\n")
