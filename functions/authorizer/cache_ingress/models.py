"""Plain data shared by intake, policy, grants and the handler. No AWS, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
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
    # Revocation, for a pair whose reason is gone (README, "Revocation"): the function's own
    # grant was revoked; it was left because the function does not own it; or the rule was
    # kept because another owner's reason remains.
    REVOKED = "revoked"
    NOT_OWNED = "not-owned"
    RETAINED = "retained"


class FailureKind(StrEnum):
    """How a failed grant is handled: retried by Lambda, or dead-lettered at once."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


class TargetKind(StrEnum):
    """The destination a policy target names: a classic cache security group, or a VPC cache
    (a replication group or cache cluster, looked up) or a VPC security group (given).
    """

    CACHE_SECURITY_GROUP = "cache-security-group"
    REPLICATION_GROUP = "replication-group"
    CACHE_CLUSTER = "cache-cluster"
    VPC_SECURITY_GROUP = "vpc-security-group"


@dataclass(frozen=True, slots=True)
class VpcDestination:
    """What a VPC target names, as the policy says it: hashable, so lookups are keyed by it.

    `port` is set only for an explicit `vpc_security_group`; for a replication group or a
    cache cluster the port is looked up with the security group.
    """

    kind: TargetKind
    identifier: str
    port: int | None = None

    @property
    def label(self) -> str:
        """For reasons a reader sees: `replication group sessions-redis`."""
        return f"{self.kind.replace('-', ' ')} {self.identifier}"

    @property
    def cache(self) -> str | None:
        """`replication-group:ID` or `cache-cluster:ID`; None for an explicit security group."""
        if self.kind is TargetKind.VPC_SECURITY_GROUP:
            return None
        return f"{self.kind}:{self.identifier}"


@dataclass(frozen=True, slots=True)
class VpcCacheFacts:
    """The cache's VPC security group as it is now, with the port the cache listens on."""

    group_id: str
    vpc_id: str | None
    owner_id: str
    port: int


@dataclass(frozen=True, slots=True)
class UnresolvedDestination:
    """Why a VPC destination could not be looked up; the pair fails, never grants."""

    reason: str
    error_code: str
    failure: FailureKind


DestinationFacts = VpcCacheFacts | UnresolvedDestination


@dataclass(frozen=True, slots=True)
class TrailCall:
    """The parts of a CloudTrail record of an EC2 tagging call that can decide anything.

    Read from an event's `detail`, or from CloudTrail's own copy of the record
    (`LookupEvents`) when a replayed event's principal is verified: both go through the
    same reader, so they compare field by field.
    """

    event_id: str | None
    event_name: str
    principal: str | None
    group_ids: tuple[str, ...]
    # The tags the call itself set, in request order: CreateTags' tagSet, CreateSecurityGroup's
    # tag specifications for the security group, DeleteTags' keys (a missing value is "").
    request_tags: tuple[tuple[str, str], ...] = ()
    event_source: str | None = None
    region: str | None = None
    account: str | None = None  # recipientAccountId: the account the call was made in
    event_time: str | None = None
    error_code: str | None = None
    caller_account: str | None = None  # userIdentity.accountId: the caller's account

    def requested_values(self, key: str) -> tuple[str, ...]:
        """Every value this call gave the tag `key` (usually one; none if it did not set it)."""
        return tuple(value for tag_key, value in self.request_tags if tag_key == key)


@dataclass(frozen=True, slots=True)
class TagRequest:
    """What an event asks: which security groups to look at now, and who asked.

    `replayed` is set for an event that did not come straight from EventBridge's rules: an
    archive replay (`replay-name`) or an operator's replay from the dead-letter queue. Its
    principal is only the message's word until CloudTrail confirms it (`Provenance`).
    """

    event_id: str
    source: str
    detail_type: str
    account: str
    region: str
    group_ids: tuple[str, ...]
    principal: str | None = None
    event_name: str | None = None
    replay_name: str | None = None
    trail: TrailCall | None = None
    replayed: bool = False
    # Where the event names an account other than `account`, as (where, account): a resource
    # ARN's account, CloudTrail's recipientAccountId or userIdentity.accountId. Any denies
    # the event's groups (rule account-agreement).
    other_accounts: tuple[tuple[str, str], ...] = ()


class ProvenanceStatus(StrEnum):
    """What CloudTrail said about a replayed event's principal."""

    # CloudTrail's record of the event is the same call by the same principal.
    VERIFIED = "verified"
    # It never can be: no such record, a different call, a failed call, or too old.
    REFUTED = "refuted"
    # It could not be asked now (throttled, unavailable, not permitted).
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Provenance:
    """The answer to "did this principal really make this call?" for a replayed event."""

    status: ProvenanceStatus
    reason: str
    error_code: str | None = None
    failure: FailureKind | None = None

    @property
    def verified(self) -> bool:
        return self.status is ProvenanceStatus.VERIFIED


@dataclass(frozen=True, slots=True)
class SecurityGroupFacts:
    """An EC2 security group as it is now, read from EC2 (never from the event)."""

    group_id: str
    group_name: str
    owner_id: str
    vpc_id: str | None
    region: str
    tags: dict[str, str] = field(default_factory=dict)
    # The VPC destinations this group's tag names, as they are now: looked up by an adapter
    # before the decision (the decision itself never calls AWS). Empty for classic targets.
    destinations: Mapping[VpcDestination, DestinationFacts] = field(default_factory=dict)
    # The account whose credentials read the group: a member's, as STS named its read role's
    # session; None for the function's own.
    read_account: str | None = None
    # The active peering connection (its id) from the group's VPC to each cache VPC, for the
    # VPC targets whose policy admits peered VPCs: looked up before the decision too.
    peerings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Grant:
    """One ingress the policy allows: the tagged group into one target's destination.

    The destination is a classic cache security group (`cache_security_group`) or a VPC
    security group (`vpc_security_group` and `port`, with the `cache` it belongs to).
    `idempotency_data` is the idempotency key, so a duplicate delivery of the same event
    never calls AWS twice for the same grant.
    """

    event_id: str
    target: str
    cache_security_group: str | None
    group_id: str
    group_name: str
    owner_id: str
    vpc_security_group: str | None = None
    port: int | None = None
    cache: str | None = None
    # The group belongs to another account than the cache's group (a shared VPC), so the
    # rule must name its owner.
    cross_account: bool = False
    # The member account the event came from (None: the function's own account), and the
    # peering connection a VPC grant crosses (None: the cache's own VPC). Not in the key.
    account: str | None = None
    peering: str | None = None

    @property
    def is_vpc(self) -> bool:
        return self.vpc_security_group is not None

    def decision(
        self,
        outcome: Outcome,
        reason: str,
        principal: str | None,
        *,
        failure: FailureKind | None = None,
        error_code: str | None = None,
        rule: str | None = None,
    ) -> Decision:
        """The decision for this grant, naming its destination whichever kind it is."""
        return Decision(
            group_id=self.group_id,
            target=self.target,
            outcome=outcome,
            reason=reason,
            rule=rule,
            group_name=self.group_name,
            owner_id=self.owner_id,
            cache_security_group=self.cache_security_group,
            principal=principal,
            failure=failure,
            error_code=error_code,
            vpc_security_group=self.vpc_security_group,
            port=self.port,
            cache=self.cache,
            account=self.account,
            peering=self.peering,
        )

    def idempotency_data(self) -> dict[str, str | int | bool]:
        """The classic key is exactly the six fields it always was, so records written before
        VPC targets existed still match; a VPC key adds the destination, so grants to
        different destinations never share a record.
        """
        data: dict[str, str | int | bool] = {
            "event_id": self.event_id,
            "target": self.target,
            "group_id": self.group_id,
            "group_name": self.group_name,
            "owner_id": self.owner_id,
        }
        if self.cache_security_group is not None:
            data["cache_security_group"] = self.cache_security_group
        if self.vpc_security_group is not None and self.port is not None:
            data["vpc_security_group"] = self.vpc_security_group
            data["port"] = self.port
            data["cross_account"] = self.cross_account
            if self.cache is not None:
                data["cache"] = self.cache
        return data


@dataclass(frozen=True, slots=True)
class Authorized:
    """What an authorize adapter answered; `rule_id` is the VPC rule's SecurityGroupRuleId."""

    outcome: Outcome
    rule_id: str | None = None


@dataclass(frozen=True, slots=True)
class FoundRule:
    """A VPC rule as EC2 holds it now: its SecurityGroupRuleId and its description."""

    rule_id: str
    description: str | None


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
    vpc_security_group: str | None = None
    port: int | None = None
    cache: str | None = None
    account: str | None = None  # a member account's event (None: the function's own)
    peering: str | None = None  # the peering connection a VPC grant crosses

    def as_log_fields(self) -> dict[str, Any]:
        # Every field is a scalar: a shallow read is asdict() without its deep copies.
        fields = {name: getattr(self, name) for name in _DECISION_FIELDS}
        fields["outcome"] = str(self.outcome)
        if self.failure is not None:
            fields["failure"] = str(self.failure)
        return {key: value for key, value in fields.items() if value is not None}


_DECISION_FIELDS = tuple(f.name for f in dataclass_fields(Decision))
