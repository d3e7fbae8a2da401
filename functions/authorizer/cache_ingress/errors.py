"""The project's own exceptions. Adapters raise these `from` the AWS error that caused them."""

from __future__ import annotations

from typing import NamedTuple


class CacheIngressError(Exception):
    """Base class: every error the project raises on purpose."""

    code = "CacheIngressError"


class MalformedEventError(CacheIngressError):
    """The event is not a shape this function can read; it is dead-lettered, not retried."""

    code = "MalformedEvent"


class PolicyProblem(NamedTuple):
    """One thing wrong with a policy: where (`path`, the field as a reader names it), what,
    and on which line of its text (`line`, 1-based; None when the text has no lines to
    point at, or the problem is with the whole document).

    A NamedTuple: this module is on every cold start, where a dataclass costs 0.6 ms to build.
    """

    path: tuple[object, ...]
    message: str
    line: int | None = None

    @property
    def field(self) -> str:
        return ".".join(str(part) for part in self.path) or "(top level)"

    def __str__(self) -> str:
        located = f" (line {self.line})" if self.line is not None else ""
        return f"{self.field}: {self.message}{located}"

    def listing(self, source: str) -> str:
        """`SOURCE:LINE: field: message`, the form editors and CI annotations jump from."""
        at = f"{source}:{self.line}" if self.line is not None else source
        return f"{at}: {self.field}: {self.message}"


class PolicyError(CacheIngressError):
    """The policy could not be read or is invalid; nothing is granted.

    `problems` lists everything wrong with an invalid policy (empty when it could not be
    read at all); the message names the source and the first few.
    """

    code = "PolicyInvalid"
    # The message goes into logs and dead-letter envelopes: the rest are counted.
    PROBLEMS_IN_MESSAGE = 10

    def __init__(self, message: str, *, problems: tuple[PolicyProblem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems

    @classmethod
    def invalid(cls, source: str, problems: tuple[PolicyProblem, ...]) -> PolicyError:
        shown = "; ".join(str(problem) for problem in problems[: cls.PROBLEMS_IN_MESSAGE])
        more = len(problems) - cls.PROBLEMS_IN_MESSAGE
        if more > 0:
            shown += f"; and {more} more problem{'s' if more > 1 else ''}"
        return cls(f"policy {source}: {shown}", problems=problems)


class SettingsError(CacheIngressError):
    """An environment variable is missing or invalid."""

    code = "SettingsInvalid"


class AwsCallError(CacheIngressError):
    """An AWS call failed. `transient` says whether a retry may succeed."""

    def __init__(self, message: str, *, code: str, transient: bool) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


class TransientFailureError(CacheIngressError):
    """Raised out of the handler so that Lambda retries the whole event.

    Grants already made are held by their idempotency records and are not repeated.
    """

    code = "TransientFailure"
