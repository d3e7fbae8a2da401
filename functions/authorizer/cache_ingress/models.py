"""Plain data shared by intake, policy, grants and the handler. No AWS, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """The one outcome every (security group, target) pair ends with."""

    AUTHORIZED = "authorized"
    ALREADY_AUTHORIZED = "already-authorized"
    DENIED = "denied"
    NOT_APPLICABLE = "not-applicable"
    DRY_RUN = "dry-run"
    FAILED = "failed"


class FailureKind(StrEnum):
    """How a failed grant is handled: retried by Lambda, or dead-lettered at once."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class TagRequest:
    """What an event asks: which security groups to look at now, and who asked."""

    event_id: str
    source: str
    detail_type: str
    account: str
    region: str
    group_ids: tuple[str, ...]
    principal: str | None = None
    event_name: str | None = None
    replay_name: str | None = None


@dataclass(frozen=True, slots=True)
class SecurityGroupFacts:
    """An EC2 security group as it is now, read from EC2 (never from the event)."""

    group_id: str
    group_name: str
    owner_id: str
    vpc_id: str | None
    region: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Grant:
    """One ingress the policy allows: the tagged group into one target's cache group.

    Its fields (with the event id) are the idempotency key, so a duplicate delivery of
    the same event never calls AWS twice for the same grant.
    """

    event_id: str
    target: str
    cache_security_group: str
    group_id: str
    group_name: str
    owner_id: str

    def idempotency_data(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Decision:
    """One outcome for one (security group, target) pair, with the reason for it."""

    group_id: str
    target: str | None
    outcome: Outcome
    reason: str
    rule: str | None = None
    group_name: str | None = None
    owner_id: str | None = None
    cache_security_group: str | None = None
    principal: str | None = None
    failure: FailureKind | None = None
    error_code: str | None = None

    def as_log_fields(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["outcome"] = str(self.outcome)
        if self.failure is not None:
            fields["failure"] = str(self.failure)
        return {key: value for key, value in fields.items() if value is not None}
