"""The project's own exceptions. Adapters raise these `from` the AWS error that caused them."""

from __future__ import annotations


class CacheIngressError(Exception):
    """Base class: every error the project raises on purpose."""

    code = "CacheIngressError"


class MalformedEventError(CacheIngressError):
    """The event is not a shape this function can read; it is dead-lettered, not retried."""

    code = "MalformedEvent"


class PolicyError(CacheIngressError):
    """The policy could not be read or is invalid; nothing is granted."""

    code = "PolicyInvalid"


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
