"""What every command shares: its error type and exit statuses, the AWS session and endpoint,
the function's settings as a command sees them, where the function's logs go, tables, and
Ctrl-C.

Nothing heavy is imported here at module level (boto3 comes with the first session), so that
`cache-ingress --help` and a command's `--help` stay fast. The leading underscore keeps this
module out of the command table (`cache_ingress_tools.commands.COMMANDS`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any, Final

EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
# What a shell reports for a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED: Final = 130
EMULATOR_HINT: Final = "start it with `cache-ingress emulator`, or check --endpoint-url"
# Credentials that the embedded AWS accepts and that AWS refuses: the emulator's dummies.
EMULATOR_CREDENTIALS: Final = "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"


class CommandError(Exception):
    """A command cannot go on. The message says what to do; `exit_status` is how it ends
    (2, a usage error, unless said otherwise)."""

    def __init__(self, message: str, exit_status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_status = exit_status

    def report(self, command: str, stream: IO[str] | None = None) -> int:
        """Print `cache-ingress COMMAND: message` on stderr; return the exit status."""
        (stream if stream is not None else sys.stderr).write(f"cache-ingress {command}: {self}\n")
        return self.exit_status


class UsageError(CommandError):
    """An option is missing or wrong, or the run cannot start as set up: exit status 2."""


# --- AWS ----------------------------------------------------------------------------------


def add_aws_arguments(parser: argparse.ArgumentParser | Any, *, stack_help: str) -> None:
    """--stack-name, --region, --profile and --endpoint-url, alike in every command."""
    parser.add_argument("--stack-name", help=stack_help)
    parser.add_argument("--region", help="AWS region (default: AWS_REGION or the profile's)")
    parser.add_argument("--profile", help="AWS named profile")
    parser.add_argument(
        "--endpoint-url", help="send every AWS call here, e.g. the emulator http://127.0.0.1:5000"
    )


# The only operations a read-only command (`explain`, `plan`) may call: DynamoDB's reads of
# the grant ledger (BatchGetItem, Query, Scan) with them. AssumeRole changes nothing: it gives
# a member account's read role (docs/multi-account.md), itself read-only.
READ_OPERATIONS: Final = (
    "Describe",
    "Get",
    "List",
    "Lookup",
    "BatchGetItem",
    "Query",
    "Scan",
    "AssumeRole",
)


class WriteRefusedError(RuntimeError):
    """A read-only command was about to call an operation that changes something."""


def refuse_writes(model: Any, **_: Any) -> None:
    """botocore's `before-call` hook of a read-only command's clients: an operation that is
    not a read (Describe*, Get*, List*, Lookup*; DynamoDB's BatchGetItem, Query, Scan) is
    refused before any request is sent.
    """
    if not str(model.name).startswith(READ_OPERATIONS):
        raise WriteRefusedError(
            f"{model.service_model.service_name}:{model.name} refused: this command only reads"
        )


@dataclass
class Connection:
    """One boto3 session for the command. Clients are made here, in the main thread,
    because creating clients from one session in several threads at once is not safe.

    With `read_only`, every client refuses any call that is not a read (`refuse_writes`):
    a command that promises to change nothing cannot, whatever code it runs.
    """

    session: Any
    endpoint_url: str | None
    pool_size: int = 10
    read_only: bool = False
    _stack_description: tuple[dict[str, str], dict[str, str]] | None = field(
        default=None, repr=False
    )
    _account_id: str | None = field(default=None, repr=False)
    _caller_arn: str | None = field(default=None, repr=False)

    @classmethod
    def from_arguments(
        cls, arguments: argparse.Namespace, *, pool_size: int = 10, read_only: bool = False
    ) -> Connection:
        """The session of --profile and --region (or AWS_REGION, or the profile's region)."""
        import boto3  # noqa: PLC0415 - only commands that reach AWS pay for it
        from botocore.exceptions import BotoCoreError  # noqa: PLC0415

        try:
            session = boto3.Session(
                profile_name=arguments.profile,
                # botocore reads AWS_DEFAULT_REGION; the Lambda runtime and many shells set
                # AWS_REGION.
                region_name=arguments.region or os.environ.get("AWS_REGION") or None,
            )
        except BotoCoreError as exc:
            raise UsageError(f"{exc}: pass an existing --profile, or none") from exc
        if not session.region_name:
            raise UsageError("no AWS region: pass --region or set AWS_REGION")
        return cls(session, arguments.endpoint_url, pool_size, read_only)

    @property
    def region(self) -> str:
        return str(self.session.region_name)

    def client(self, service: str, config: Any = None) -> Any:
        from botocore.config import Config  # noqa: PLC0415

        pool = Config(
            max_pool_connections=self.pool_size,
            retries={"mode": "standard", "total_max_attempts": 5},
        )
        client = self.session.client(
            service,
            endpoint_url=self.endpoint_for(service),
            config=pool.merge(config) if config is not None else pool,
        )
        if self.read_only:
            client.meta.events.register("before-call", refuse_writes)
        return client

    def assumed_client(self, service: str, config: Any, credentials: Any) -> Any:
        """A client acting with a member account's assumed credentials (`Clients.assumed`),
        to the same endpoint, read-only if this connection is."""
        from botocore.config import Config  # noqa: PLC0415

        pool = Config(max_pool_connections=self.pool_size)
        client = self.session.client(
            service,
            endpoint_url=self.endpoint_for(service),
            config=pool.merge(config) if config is not None else pool,
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
        )
        if self.read_only:
            client.meta.events.register("before-call", refuse_writes)
        return client

    def function_clients(self, region: str) -> Any:
        """The function's `Clients` for a command: every client, the member accounts'
        too, made by this connection."""
        from cache_ingress.aws import Clients  # noqa: PLC0415

        return Clients(region, factory=self.client, assumed_factory=self.assumed_client)

    def endpoint_for(self, _service: str) -> str | None:
        """Where calls to a service go: --endpoint-url, or AWS's own endpoint."""
        return self.endpoint_url

    def account_id(self) -> str:
        """The account the credentials belong to (sts:GetCallerIdentity, which needs no
        permission). Called before a command changes or reads anything, it is also the check
        that the credentials and the endpoint work: a failure says what to do.
        """
        if self._account_id is None:
            try:
                identity = self.client("sts").get_caller_identity()
            except Exception as exc:
                raise self.problem(exc) from exc
            self._account_id = str(identity["Account"])
            self._caller_arn = str(identity.get("Arn") or "")
        return self._account_id

    def caller_arn(self) -> str:
        """Who the credentials are (the same sts:GetCallerIdentity): what a hold records."""
        self.account_id()
        return self._caller_arn or "unknown"

    def problem(self, exc: Exception, doing: str | None = None) -> CommandError:
        """A usage error that says what to do about a failed AWS call."""
        prefix = f"{doing}: " if doing else ""
        return UsageError(prefix + explain_aws_error(exc, self.endpoint_url))

    def stack_outputs(self, stack_name: str) -> dict[str, str]:
        return self._stack(stack_name)[0]

    def stack_parameters(self, stack_name: str) -> dict[str, str]:
        return self._stack(stack_name)[1]

    def _stack(self, stack_name: str) -> tuple[dict[str, str], dict[str, str]]:
        if self._stack_description is None:
            try:
                stacks = self.client("cloudformation").describe_stacks(StackName=stack_name)
            except Exception as exc:
                raise self.problem(exc, f"stack {stack_name!r} cannot be read") from exc
            stack = stacks["Stacks"][0]
            self._stack_description = (
                {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
                {
                    p["ParameterKey"]: p.get("ResolvedValue", p.get("ParameterValue", ""))
                    for p in stack.get("Parameters", [])
                },
            )
        return self._stack_description


_REFUSED_CREDENTIALS: Final = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
    }
)


def explain_aws_error(exc: Exception, endpoint_url: str | None) -> str:
    """What went wrong with an AWS call, in words that say what to do (as `invoke` does for
    an emulator that is not running). Errors of no known kind are shown as they are.
    """
    from botocore.exceptions import (  # noqa: PLC0415
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        if endpoint_url:
            return (
                f"no AWS credentials ({exc}); the embedded AWS takes any, e.g. "
                f"{EMULATOR_CREDENTIALS}"
            )
        return (
            f"no AWS credentials ({exc}): pass --profile, or set AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        if endpoint_url:
            return f"nothing answers at {endpoint_url} ({exc}); {EMULATOR_HINT}"
        return f"AWS cannot be reached ({exc}): check the network and --region"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _REFUSED_CREDENTIALS:
            return (
                f"AWS refused the credentials ({code}: {error.get('Message', '')}): renew "
                "them (e.g. `aws sso login`) or pass another --profile"
            )
    return str(exc)


# --- the function's settings --------------------------------------------------------------


def function_environment(
    arguments: argparse.Namespace, connection: Connection, environ: Mapping[str, str]
) -> dict[str, str]:
    """The function's variables as a command sees them: its options first, then the
    environment, then the stack (--stack-name: outputs `IdempotencyTableName` and
    `LedgerTableName`, parameters `PolicyParameterName` and `TagKey`), so that a stack whose
    policy lives in SSM is run with that policy, not the one bundled here. The account, when
    none is given, is the credentials' own. A stack that serves member accounts gives their
    settings too (parameters `MemberAccountIds`, `MemberOrganizationId`,
    `MemberReadRoleName`, output `MemberExternalId`), unless MEMBER_ROLE_NAME is set here.
    """
    stack_name = getattr(arguments, "stack_name", None)
    outputs = connection.stack_outputs(stack_name) if stack_name else {}
    parameters = connection.stack_parameters(stack_name) if stack_name else {}
    environment = {**environ, "AWS_REGION": connection.region}
    for option, name, from_stack in (
        ("account_id", "ACCOUNT_ID", None),
        ("idempotency_table", "IDEMPOTENCY_TABLE", outputs.get("IdempotencyTableName")),
        ("ledger_table", "LEDGER_TABLE", outputs.get("LedgerTableName")),
        ("policy_file", "POLICY_FILE", None),
        ("policy_parameter", "POLICY_PARAMETER", parameters.get("PolicyParameterName")),
        ("tag_key", "TAG_KEY", parameters.get("TagKey")),
    ):
        value = getattr(arguments, option, None) or environ.get(name, "").strip() or from_stack
        if value:
            environment[name] = str(value)
    if not environment.get("ACCOUNT_ID", "").strip():
        environment["ACCOUNT_ID"] = connection.account_id()
    if not environ.get("MEMBER_ROLE_NAME", "").strip():
        environment.update(_member_environment(parameters, outputs, connection.region))
    return environment


def _member_environment(
    parameters: Mapping[str, str], outputs: Mapping[str, str], region: str
) -> dict[str, str]:
    """The member settings the stack gives its functions (template.yaml): none unless it
    serves member accounts (docs/multi-account.md)."""
    accounts = parameters.get("MemberAccountIds", "").strip()
    organization = parameters.get("MemberOrganizationId", "").strip()
    external_id = outputs.get("MemberExternalId", "").strip()
    if not (accounts or organization) or not external_id:
        return {}
    role = parameters.get("MemberReadRoleName", "").strip() or "cache-ingress-read"
    return {
        "MEMBER_ROLE_NAME": f"{role}-{region}",
        "MEMBER_EXTERNAL_ID": external_id,
        "MEMBER_ACCOUNTS": accounts,
        "MEMBER_ORGANIZATION": organization,
    }


def add_ledger_arguments(group: argparse.ArgumentParser | Any) -> None:
    """--ledger-table and --no-ledger, for the commands that run the function's grants."""
    group.add_argument("--ledger-table", help="the stack's grant ledger (LEDGER_TABLE)")
    group.add_argument(
        "--no-ledger",
        action="store_true",
        help="run without the grant ledger: only for a stack deployed before it had one "
        "(grants then have no entry, and no hold is read)",
    )


def require_ledger(environment: dict[str, str], arguments: argparse.Namespace) -> None:
    """The grant ledger must be known to a command that grants: every grant has its entry,
    and a hold is never passed over. `--no-ledger` says the stack has none."""
    if getattr(arguments, "no_ledger", False):
        environment.pop("LEDGER_TABLE", None)
        return
    if not environment.get("LEDGER_TABLE", "").strip():
        raise UsageError(
            "the grant ledger is unknown: pass --ledger-table or --stack-name (or set "
            "LEDGER_TABLE); for a stack deployed before it had a ledger, pass --no-ledger"
        )


# --- the function's output ----------------------------------------------------------------


@contextlib.contextmanager
def function_output_to(
    stream: IO[str], level: str | int, *, capture_stdout: bool = True
) -> Iterator[None]:
    """While the function's code runs in this process, its log lines go to `stream` at
    `level`, and (with `capture_stdout`) its metric flushes too (EMF, printed to stdout,
    meaningful only in Lambda), so a command's stdout holds only its own output. Restored
    afterwards.
    """
    from cache_ingress.observability import logger, metrics  # noqa: PLC0415

    handler = logger.registered_handler
    previous_stream = (
        handler.setStream(stream) if isinstance(handler, logging.StreamHandler) else None
    )
    previous_level = logger.log_level
    logger.setLevel(level)
    try:
        with contextlib.ExitStack() as stack:
            if capture_stdout:
                stack.enter_context(contextlib.redirect_stdout(stream))
            stack.enter_context(warnings.catch_warnings())
            # Without a Lambda context, in-progress idempotency records carry no expiry of
            # their own; Powertools warns about it on every grant.
            warnings.filterwarnings("ignore", message="Couldn't determine the remaining time")
            yield
    finally:
        metrics.clear_metrics()
        logger.setLevel(previous_level)
        if previous_stream is not None and isinstance(handler, logging.StreamHandler):
            handler.setStream(previous_stream)


# --- output -------------------------------------------------------------------------------


def write_json_line(stream: IO[str], document: Mapping[str, Any]) -> None:
    stream.write(json.dumps(document, separators=(",", ":"), default=str) + "\n")
    stream.flush()


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart, no trailing blanks."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path as a person would type it here: relative when it is below the working folder."""
    from pathlib import Path  # noqa: PLC0415

    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def shorten(text: str | None, limit: int) -> str:
    """One line of at most `limit` characters; `-` for nothing."""
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Progress:
    """A one-line progress indicator on a terminal's stderr; silent anywhere else."""

    _INTERVAL = 0.1
    _WIDTH = 24

    def __init__(
        self, stream: IO[str] | None = None, total: int | None = None, *, unit: str = "msg"
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._unit = unit
        self._enabled = bool(getattr(self._stream, "isatty", lambda: False)())
        self._total = total
        self._counts: dict[str, int] = {}
        self._started = time.monotonic()
        self._drawn = 0.0

    @property
    def enabled(self) -> bool:
        return self._enabled

    def advance(self, result: str, count: int = 1) -> None:
        self._counts[result] = self._counts.get(result, 0) + count
        now = time.monotonic()
        if self._enabled and now - self._drawn >= self._INTERVAL:
            self._drawn = now
            self._draw(now)

    def close(self) -> None:
        if self._enabled and self._drawn:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        done = sum(self._counts.values())
        rate = done / max(now - self._started, 1e-6)
        if self._total:
            filled = min(self._WIDTH, self._WIDTH * done // self._total)
            bar = "#" * filled + "." * (self._WIDTH - filled)
            position = f"[{bar}] {done}/~{self._total}"
        else:
            position = f"{done}"
        counts = " ".join(f"{name} {count}" for name, count in sorted(self._counts.items()))
        self._stream.write(f"\r\x1b[2K{position}  {counts}  {rate:.1f} {self._unit}/s")
        self._stream.flush()


# --- Ctrl-C -------------------------------------------------------------------------------


@contextlib.contextmanager
def stop_on_interrupt(stream: IO[str], announcement: str) -> Iterator[threading.Event]:
    """The first Ctrl-C sets the event (and prints `announcement`) instead of raising, so a
    run can stop between two steps and put back what it holds; a second Ctrl-C raises
    KeyboardInterrupt as usual. Outside the main thread, where no handler can be set, the
    event is only ever set by the caller.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_interrupt(_signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        stream.write(f"\n{announcement} (Ctrl-C again to quit at once)\n")
        stream.flush()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
