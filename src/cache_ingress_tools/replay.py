"""Replay the dead-letter queue: receive in batches, process concurrently, delete on success.

The engine is independent of how an event is processed: a *processor* takes a recognised
`DeadLetter` and returns a `ProcessResult` (the deployed function invoked synchronously,
or the Authorizer in this process; see `FunctionInvoker` and `LocalReplayer`).

Guarantees, by construction:

- a message is deleted only after its replay succeeded (status completed or ignored);
- every other message received in a run (failed, unrecognised, not selected, over the
  limit, dry run) is kept: it stays invisible while the run lasts, so the run ends, and is
  made visible again (visibility 0) when it ends, also after an error or when it is asked
  to stop (`stop`, which the command sets on Ctrl-C): then what no replay holds is made
  visible at once, before the replays under way are waited for;
- a message that can never be replayed (unrecognised, or its event malformed) is deleted
  only when asked (`discard_unreplayable`), and only after `archive` has written it;
- replaying twice, or two runs at once, never grants twice: the function's idempotency
  records and its decisions on the groups' current state see to that, not this module.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.errors import TransientFailureError
from cache_ingress.intake import replay_payload
from cache_ingress_tools.dead_letters import DeadLetter, Origin, Unrecognised, read_dead_letter
from cache_ingress_tools.lambda_context import LocalContext

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from cache_ingress.authorizer import Authorizer

SQS_BATCH = 10
# A failed scheduled reconciliation lands in the same queue (ReconcileFunction's on-failure
# destination). Replayed through the ingress function it would be "ignored" and deleted,
# losing the operator's only sign that a sweep failed; it is kept and pointed at instead.
SCHEDULED_RUN_REASON = (
    "a failed scheduled reconciliation run, not a tag event: run `cache-ingress reconcile` "
    "(or wait for the next scheduled run), then remove it with --discard-scheduled-runs"
)
DISCARDED_STATUS = "discarded"
UNREPLAYABLE_STATUS = "unreplayable"
NOT_SELECTED = "not selected"
NOT_REPLAYED = "not replayed: pass --function-name or --local to replay it"
RUN_STOPPED = "run stopped first"
# How often a run waiting on its replays looks whether it was asked to stop.
STOP_CHECK_SECONDS = 0.2
OVER_MAX = "over --max"
SUCCESS_STATUSES = frozenset({"completed", "ignored"})
# The deny rule of a replayed event whose principal CloudTrail did not confirm.
PROVENANCE_RULE = "principal-provenance"
# Errors that will fail every message the same way: stop the run instead of repeating them.
FATAL_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "ResourceNotFoundException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "AuthFailure",
    }
)


class ReplayAbortedError(Exception):
    """Raised by a processor when no further message can succeed (e.g. access denied)."""


class QueueError(Exception):
    """The dead-letter queue itself could not be read or written."""


class Result(StrEnum):
    """What a run did with one message."""

    SUCCEEDED = "succeeded"
    STILL_FAILING = "still-failing"
    SKIPPED = "skipped"
    UNRECOGNISED = "unrecognised"
    WOULD_REPLAY = "would-replay"
    DISCARDED = "discarded"
    WOULD_DISCARD = "would-discard"


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """The answer of one replay: success deletes the message, anything else keeps it."""

    succeeded: bool
    status: str
    reason: str | None = None
    error_type: str | None = None


Processor = Callable[[DeadLetter], ProcessResult]


def result_from_summary(summary: object) -> ProcessResult:
    """Read the function's summary (`Authorizer.handle`): completed/ignored is success.

    A dry-run function that would have granted something has granted nothing, so that
    event is not done and its message stays.
    """
    if not isinstance(summary, Mapping):
        return ProcessResult(False, "unreadable", f"the function returned {summary!r:.200}")
    status = str(summary.get("status"))
    reason = summary.get("reason")
    error_type = summary.get("errorType")
    if status in SUCCESS_STATUSES:
        counts = summary.get("counts") or {}
        if summary.get("dryRun") and isinstance(counts, Mapping) and counts.get("dry-run"):
            return ProcessResult(
                False, status, "the function runs in dry-run mode: nothing was granted", "DryRun"
            )
        unproven = _unproven_principals(summary.get("decisions"))
        if unproven:
            reason = f"{status}; {unproven}"
        return ProcessResult(True, status, None if reason is None else str(reason))
    return ProcessResult(
        False,
        status,
        None if reason is None else str(reason),
        None if error_type is None else str(error_type),
    )


def _unproven_principals(decisions: object) -> str | None:
    """Targets denied because CloudTrail did not confirm the replayed event's principal: the
    event is done (its message goes), and the report says what the operator can do.
    """
    if not isinstance(decisions, list):
        return None
    denied = [d for d in decisions if isinstance(d, Mapping) and d.get("rule") == PROVENANCE_RULE]
    if not denied:
        return None
    targets = ", ".join(sorted({str(d.get("target")) for d in denied}))
    return f"{targets} denied ({PROVENANCE_RULE}): {denied[0].get('reason')}"


# --- selection ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """Which recognised messages to replay; empty criteria select everything."""

    event_ids: frozenset[str] = frozenset()
    errors: tuple[str, ...] = ()
    origins: frozenset[Origin] = frozenset()
    older_than: timedelta | None = None
    newer_than: timedelta | None = None

    def matches(self, letter: DeadLetter, now: datetime) -> bool:
        if self.event_ids and letter.event_id not in self.event_ids:
            return False
        if self.origins and letter.origin not in self.origins:
            return False
        if self.errors and not any(_error_matches(letter, wanted) for wanted in self.errors):
            return False
        return self._age_matches(letter.age(now))

    def matches_unrecognised(self, message: Unrecognised, now: datetime) -> bool:
        """An unrecognised message has no event: it matches only a selection by age (since
        it was dead-lettered), or none."""
        if self.event_ids or self.origins or self.errors:
            return False
        return self._age_matches(message.age(now))

    def _age_matches(self, age: timedelta | None) -> bool:
        if self.older_than is None and self.newer_than is None:
            return True
        if age is None:
            return False
        if self.older_than is not None and age < self.older_than:
            return False
        return self.newer_than is None or age <= self.newer_than


def _error_matches(letter: DeadLetter, wanted: str) -> bool:
    """The error type or one of the failed grants' error codes equals `wanted`, or the error
    message contains it (case-insensitive): `--error GrantFailed`, `--error
    CacheSecurityGroupNotFound` and `--error ReplicationGroupNotFoundFault` all work.
    """
    wanted = wanted.casefold()
    if letter.error_type is not None and letter.error_type.casefold() == wanted:
        return True
    if any(code.casefold() == wanted for code in letter.error_codes):
        return True
    return letter.error_message is not None and wanted in letter.error_message.casefold()


# --- the queue ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    receipt_handle: str
    raw: Mapping[str, Any]


class DeadLetterQueue:
    """SQS adapter for the replay tool: receive, delete and release in batches of 10."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self.url = queue_url

    def approximate_count(self) -> int | None:
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
        except (ClientError, BotoCoreError):
            return None
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def receive(self, *, visibility_timeout: int, wait_seconds: int) -> list[Received]:
        try:
            response = self._sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=SQS_BATCH,
                VisibilityTimeout=visibility_timeout,
                WaitTimeSeconds=wait_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"sqs:ReceiveMessage failed: {exc}") from exc
        return [
            Received(str(m["MessageId"]), str(m["ReceiptHandle"]), m)
            for m in response.get("Messages", [])
        ]

    def delete(self, messages: Sequence[Received]) -> dict[str, str]:
        """Delete; returns {message id: why} for those SQS did not delete."""
        return self._batch(
            "delete_message_batch",
            messages,
            lambda i, m: {"Id": str(i), "ReceiptHandle": m.receipt_handle},
        )

    def release(self, messages: Sequence[Received]) -> dict[str, str]:
        """Make the messages visible again at once; returns those SQS did not change."""
        return self._batch(
            "change_message_visibility_batch",
            messages,
            lambda i, m: {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0},
        )

    def _batch(
        self,
        operation: str,
        messages: Sequence[Received],
        entry: Callable[[int, Received], dict[str, Any]],
    ) -> dict[str, str]:
        failed: dict[str, str] = {}
        for start in range(0, len(messages), SQS_BATCH):
            chunk = messages[start : start + SQS_BATCH]
            try:
                response = getattr(self._sqs, operation)(
                    QueueUrl=self.url, Entries=[entry(i, m) for i, m in enumerate(chunk)]
                )
            except (ClientError, BotoCoreError) as exc:
                failed.update((m.message_id, str(exc)) for m in chunk)
                continue
            for failure in response.get("Failed", []):
                message = chunk[int(failure["Id"])]
                failed[message.message_id] = (
                    f"{failure.get('Code', 'Failed')}: {failure.get('Message', '')}".strip()
                )
        return failed


# --- reports ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReport:
    """What happened to one message in a run."""

    message: DeadLetter | Unrecognised
    result: Result
    status: str | None = None
    reason: str | None = None
    error_type: str | None = None

    def as_dict(self, now: datetime) -> dict[str, Any]:
        fields = {"result": str(self.result), **self.message.as_dict(now)}
        fields["replayStatus"] = self.status
        fields["replayReason"] = self.reason
        fields["replayErrorType"] = self.error_type
        return fields


@dataclass(slots=True)
class ReplayReport:
    """A run: every message it received once, and whether it had to stop early."""

    dry_run: bool
    started: datetime
    messages: list[MessageReport] = field(default_factory=list)
    aborted: str | None = None
    interrupted: bool = False
    release_failures: dict[str, str] = field(default_factory=dict)

    def count(self, result: Result) -> int:
        return sum(1 for m in self.messages if m.result is result)

    @property
    def counts(self) -> dict[str, int]:
        succeeded = self.count(Result.SUCCEEDED)
        still_failing = self.count(Result.STILL_FAILING)
        return {
            "replayed": succeeded + still_failing,
            "succeeded": succeeded,
            "stillFailing": still_failing,
            "skipped": self.count(Result.SKIPPED),
            "unrecognised": self.count(Result.UNRECOGNISED),
            "wouldReplay": self.count(Result.WOULD_REPLAY),
            "discarded": self.count(Result.DISCARDED),
            "wouldDiscard": self.count(Result.WOULD_DISCARD),
        }

    @property
    def exit_status(self) -> int:
        return exit_status(self)

    def summary(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"dryRun": self.dry_run, **self.counts}
        fields["exitStatus"] = self.exit_status
        if self.aborted is not None:
            fields["aborted"] = self.aborted
        if self.interrupted:
            fields["interrupted"] = True
        if self.release_failures:
            fields["notReleased"] = len(self.release_failures)
        return fields


EXIT_OK = 0
EXIT_STILL_FAILING = 1
EXIT_USAGE = 2
EXIT_UNRECOGNISED = 3
EXIT_ABORTED = 4
EXIT_INTERRUPTED = 130


def exit_status(report: ReplayReport) -> int:
    """0 all selected messages done; 1 some still failing (kept); 3 unrecognised messages
    (kept) but nothing failing; 4 the run stopped early (queue or processor unusable);
    130 it was interrupted (Ctrl-C).
    """
    if report.interrupted:
        return EXIT_INTERRUPTED
    if report.aborted is not None:
        return EXIT_ABORTED
    if report.count(Result.STILL_FAILING):
        return EXIT_STILL_FAILING
    if report.count(Result.UNRECOGNISED):
        return EXIT_UNRECOGNISED
    return EXIT_OK


# --- the engine ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    selection: Selection = Selection()
    max_messages: int | None = None
    dry_run: bool = False
    concurrency: int = 8
    # Kept messages stay invisible until the run ends; this must outlast the run.
    visibility_timeout: int = 900
    wait_seconds: int = 1
    # Delete failed scheduled reconciliation runs instead of keeping them (after the operator
    # has reconciled); never replayed either way.
    discard_scheduled_runs: bool = False
    # Delete messages that can never be replayed (unrecognised, or a malformed event), each
    # once `replay(archive=...)` has written it; kept otherwise.
    discard_unreplayable: bool = False


Archive = Callable[["Received", "DeadLetter | Unrecognised", str], None]
"""Writes one message (as received) and why it is discarded; raises OSError if it cannot."""


def replay(
    queue: DeadLetterQueue,
    processor: Processor | None,
    options: ReplayOptions = ReplayOptions(),
    *,
    on_message: Callable[[MessageReport], None] | None = None,
    now: datetime | None = None,
    stop: threading.Event | None = None,
    archive: Archive | None = None,
) -> ReplayReport:
    """Drain the queue once through `processor`; see the module docstring for guarantees.

    Without a processor the run only discards (what its options say) and keeps every
    selected message. Setting `stop` ends the run between two steps, as if the queue were
    empty: the report says `interrupted`. `archive` is required with
    `options.discard_unreplayable`.
    """
    if options.discard_unreplayable and archive is None and not options.dry_run:
        raise ValueError("discarding unreplayable messages needs an archive")
    run = _Run(
        queue,
        processor,
        options,
        on_message,
        now or datetime.now(UTC),
        stop or threading.Event(),
        archive,
    )
    return run.execute()


def peek(
    queue: DeadLetterQueue,
    *,
    selection: Selection = Selection(),
    max_messages: int | None = None,
    visibility_timeout: int = 60,
    wait_seconds: int = 1,
    now: datetime | None = None,
    stop: threading.Event | None = None,
) -> list[DeadLetter | Unrecognised]:
    """Read the queue without consuming it: every message is made visible again at the end
    (messages must stay hidden while reading, or the same ones would be read again).
    Setting `stop` ends the reading early; what was read so far is returned.
    """
    options = ReplayOptions(
        selection=selection,
        max_messages=max_messages,
        dry_run=True,
        visibility_timeout=visibility_timeout,
        wait_seconds=wait_seconds,
    )
    report = replay(queue, dry_run_processor, options, now=now, stop=stop)
    if report.aborted is not None:
        raise QueueError(report.aborted)
    # Skipped for the selection or --max: not asked for. A scheduled run, which a replay
    # skips too, is listed: peek shows everything that is there.
    return [
        m.message
        for m in report.messages
        if m.result is not Result.SKIPPED or m.reason == SCHEDULED_RUN_REASON
    ]


def dry_run_processor(_letter: DeadLetter) -> ProcessResult:
    """The processor of a dry run, which processes nothing."""
    raise AssertionError("a dry run processes nothing")


class _Run:
    def __init__(
        self,
        queue: DeadLetterQueue,
        processor: Processor | None,
        options: ReplayOptions,
        on_message: Callable[[MessageReport], None] | None,
        now: datetime,
        stop: threading.Event,
        archive: Archive | None,
    ) -> None:
        if options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._queue = queue
        # Without a processor nothing selected is replayed (see _take_letter).
        self._replays = processor is not None
        self._processor = processor or dry_run_processor
        self._options = options
        self._on_message = on_message
        self._now = now
        self._stop = stop
        self._archive = archive
        self.report = ReplayReport(dry_run=options.dry_run, started=now)
        self._seen: set[str] = set()
        self._kept: list[Received] = []
        self._succeeded: list[tuple[Received, DeadLetter | Unrecognised, ProcessResult]] = []
        self._backlog: deque[tuple[Received, DeadLetter]] = deque()
        self._in_flight: dict[Future[ProcessResult], tuple[Received, DeadLetter]] = {}
        self._selected = 0
        self._receiving = True

    def execute(self) -> ReplayReport:
        with ThreadPoolExecutor(
            max_workers=self._options.concurrency, thread_name_prefix="replay"
        ) as pool:
            try:
                self._loop(pool)
            except QueueError as exc:
                self.report.aborted = str(exc)
            finally:
                # However the run ends (asked to stop, an error, a second Ctrl-C): what
                # succeeded is deleted and what no replay holds is made visible, at once;
                # then the replays under way finish, and the same is done with them.
                self._receiving = False
                self.report.interrupted = self._stop.is_set()
                for received, letter in self._backlog:
                    self._keep(received, letter, Result.SKIPPED, reason=RUN_STOPPED)
                self._backlog.clear()
                self._delete_succeeded()
                self._release_kept()
                self._settle(wait(self._in_flight).done)
                self._delete_succeeded()
                self._release_kept()
        return self.report

    def _release_kept(self) -> None:
        if self._kept:
            kept, self._kept = self._kept, []
            self.report.release_failures.update(self._queue.release(kept))

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        limit = self._options.concurrency
        while True:
            if self._stop.is_set():
                return
            if self._receiving and len(self._in_flight) + len(self._backlog) < limit:
                self._take(
                    self._queue.receive(
                        visibility_timeout=self._options.visibility_timeout,
                        wait_seconds=self._options.wait_seconds,
                    )
                )
            while self._backlog and len(self._in_flight) < limit:
                received, letter = self._backlog.popleft()
                future = pool.submit(self._processor, letter)
                self._in_flight[future] = (received, letter)
            if not self._in_flight:
                if self._receiving or self._backlog:
                    continue
                return
            if self._receiving and len(self._in_flight) + len(self._backlog) < limit:
                continue
            done, _ = wait(self._in_flight, timeout=STOP_CHECK_SECONDS, return_when=FIRST_COMPLETED)
            self._settle(done)
            self._delete_succeeded(full_batches_only=True)

    def _take(self, batch: Iterable[Received]) -> None:
        received_any = False
        for received in batch:
            received_any = True
            if received.message_id in self._seen:
                # Seen earlier in this run (its visibility ran out): report it once only.
                self._kept.append(received)
                continue
            self._seen.add(received.message_id)
            message = read_dead_letter(received.raw)
            if isinstance(message, Unrecognised):
                self._take_unrecognised(received, message)
            else:
                self._take_letter(received, message)
        if not received_any or self._limit_reached():
            self._receiving = False

    def _take_letter(self, received: Received, message: DeadLetter) -> None:
        if not self._options.selection.matches(message, self._now):
            self._keep(received, message, Result.SKIPPED, reason=NOT_SELECTED)
        elif message.malformed and self._options.discard_unreplayable:
            self._discard(received, message, message.intake_note or "malformed event")
        elif message.scheduled_run:
            self._take_scheduled_run(received, message)
        elif self._limit_reached():
            self._keep(received, message, Result.SKIPPED, reason=OVER_MAX)
        elif not (self._replays or self._options.dry_run):
            self._keep(received, message, Result.SKIPPED, reason=NOT_REPLAYED)
        else:
            self._selected += 1
            if self._options.dry_run:
                self._keep(received, message, Result.WOULD_REPLAY)
            else:
                self._backlog.append((received, message))

    def _take_unrecognised(self, received: Received, message: Unrecognised) -> None:
        if self._options.discard_unreplayable and self._options.selection.matches_unrecognised(
            message, self._now
        ):
            self._discard(received, message, f"unrecognised: {message.reason}")
        else:
            self._keep(received, message, Result.UNRECOGNISED, reason=message.reason)

    def _discard(self, received: Received, message: DeadLetter | Unrecognised, why: str) -> None:
        """An unreplayable message: archived, then deleted with the run's successes."""
        if self._options.dry_run:
            reason = f"would be archived and discarded (--discard-unreplayable): {why}"
            self._keep(received, message, Result.WOULD_DISCARD, reason=reason)
            return
        if self.report.aborted is not None or self._archive is None:
            self._keep(received, message, Result.SKIPPED, reason=f"not archived: {why}")
            return
        try:
            self._archive(received, message, why)
        except OSError as exc:
            self._receiving = False
            self.report.aborted = f"the archive cannot be written, nothing more is discarded: {exc}"
            self._keep(received, message, Result.SKIPPED, reason=f"not archived: {why}")
            return
        reason = f"archived and discarded: {why}"
        self._succeeded.append(
            (received, message, ProcessResult(True, UNREPLAYABLE_STATUS, reason))
        )

    def _take_scheduled_run(self, received: Received, message: DeadLetter) -> None:
        if not self._options.discard_scheduled_runs:
            self._keep(received, message, Result.SKIPPED, reason=SCHEDULED_RUN_REASON)
        elif self._options.dry_run:
            reason = "would be discarded (--discard-scheduled-runs)"
            self._keep(received, message, Result.WOULD_DISCARD, reason=reason)
        else:
            reason = "a failed scheduled reconciliation run, discarded as asked"
            self._succeeded.append(
                (received, message, ProcessResult(True, DISCARDED_STATUS, reason))
            )

    def _limit_reached(self) -> bool:
        limit = self._options.max_messages
        return limit is not None and self._selected >= limit

    def _settle(self, done: Iterable[Future[ProcessResult]]) -> None:
        for future in done:
            received, letter = self._in_flight.pop(future)
            try:
                result = future.result()
            except ReplayAbortedError as exc:
                self._receiving = False
                self.report.aborted = str(exc)
                result = ProcessResult(False, "aborted", str(exc))
            except Exception as exc:  # any failure keeps the message
                result = ProcessResult(False, "error", f"{type(exc).__name__}: {exc}")
            except BaseException:
                # Ctrl-C (or exit) inside a replay: keep the message, then stop the run.
                self._keep(received, letter, Result.STILL_FAILING, status="interrupted")
                raise
            if result.succeeded:
                self._succeeded.append((received, letter, result))
            else:
                self._keep(
                    received,
                    letter,
                    Result.STILL_FAILING,
                    status=result.status,
                    reason=result.reason,
                    error_type=result.error_type,
                )

    def _delete_succeeded(self, *, full_batches_only: bool = False) -> None:
        ready = len(self._succeeded)
        if full_batches_only:
            ready -= ready % SQS_BATCH
        if not ready:
            return
        batch, self._succeeded = self._succeeded[:ready], self._succeeded[ready:]
        failed = self._queue.delete([received for received, _, _ in batch])
        for received, letter, result in batch:
            if received.message_id in failed:
                # Replayed but still in the queue: a later replay is an idempotent no-op.
                self._keep(
                    received,
                    letter,
                    Result.STILL_FAILING,
                    status=result.status,
                    reason=f"replayed, but the message was not deleted: "
                    f"{failed[received.message_id]}",
                    error_type="DeleteFailed",
                )
            else:
                discarded = result.status in {DISCARDED_STATUS, UNREPLAYABLE_STATUS}
                done = Result.DISCARDED if discarded else Result.SUCCEEDED
                self._record(MessageReport(letter, done, result.status, result.reason))

    def _keep(
        self,
        received: Received,
        message: DeadLetter | Unrecognised,
        result: Result,
        *,
        status: str | None = None,
        reason: str | None = None,
        error_type: str | None = None,
    ) -> None:
        self._kept.append(received)
        self._record(MessageReport(message, result, status, reason, error_type))

    def _record(self, report: MessageReport) -> None:
        self.report.messages.append(report)
        if self._on_message is not None:
            self._on_message(report)


# --- processors ---------------------------------------------------------------------------


class FunctionInvoker:
    """Replays through the deployed function: a synchronous invoke of the replay payload,
    so the function reports a permanent failure instead of dead-lettering the event again.
    """

    def __init__(self, lambda_client: Any, function_name: str) -> None:
        self._lambda = lambda_client
        self._function_name = function_name

    def __call__(self, letter: DeadLetter) -> ProcessResult:
        try:
            response = self._lambda.invoke(
                FunctionName=self._function_name,
                InvocationType="RequestResponse",
                Payload=json.dumps(replay_payload(letter.event), separators=(",", ":")).encode(),
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            if code in FATAL_CODES:
                raise ReplayAbortedError(f"lambda:Invoke {self._function_name}: {exc}") from exc
            return ProcessResult(False, "invoke-failed", str(exc), code)
        except BotoCoreError as exc:
            return ProcessResult(False, "invoke-failed", str(exc), type(exc).__name__)
        raw = response["Payload"].read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        function_error = response.get("FunctionError")
        if function_error:
            # The function raised (e.g. TransientFailureError): its error is the payload.
            error = payload if isinstance(payload, Mapping) else {}
            error_type = str(error.get("errorType") or function_error)
            message = str(error.get("errorMessage") or raw[:500].decode(errors="replace"))
            return ProcessResult(
                False, "function-error", f"{function_error}: {error_type}: {message}", error_type
            )
        if payload is None:
            return ProcessResult(
                False, "unreadable", f"unreadable payload: {raw[:200].decode(errors='replace')}"
            )
        return result_from_summary(payload)


LOCAL_REPLAY_SECONDS = 300


class LocalReplayer:
    """Replays in this process with the installed code; never dead-letters again."""

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    def __call__(self, letter: DeadLetter) -> ProcessResult:
        # A context of its own, so a replay killed mid-grant leaves an in-progress record
        # that expires within LOCAL_REPLAY_SECONDS instead of the record's full lifetime.
        context = LocalContext(
            function_name="cache-ingress-replay",
            invoked_function_arn="local-replay",
            memory_limit_in_mb=0,
            timeout_seconds=LOCAL_REPLAY_SECONDS,
        )
        try:
            summary = self._authorizer.handle(
                letter.event, cast("LambdaContext", context), replay=True
            )
        except TransientFailureError as exc:
            return ProcessResult(False, "retry-later", str(exc), TransientFailureError.code)
        return result_from_summary(summary)
