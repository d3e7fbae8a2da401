"""What a person checks after an invoke, read back from the embedded AWS: the cache security
groups with their ingress, the VPC caches' security groups with their rules, the grant
ledger, and the dead-letter queue (peeked, not consumed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress_tools.dead_letters import DeadLetter, Unrecognised, read_dead_letter
from cache_ingress_tools.local_invoke.environment import LocalInvokeError, Target


@dataclass(frozen=True, slots=True)
class Ingress:
    ec2_security_group_name: str
    owner_id: str
    status: str
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class VpcIngress:
    """One inbound rule of a VPC cache's security group whose source is another group."""

    protocol: str
    from_port: int | None
    to_port: int | None
    source_group_id: str
    source_group_name: str | None
    description: str

    def ports(self) -> str:
        if self.from_port is None or self.from_port == self.to_port:
            return f"{self.protocol}/{self.from_port if self.from_port is not None else 'all'}"
        return f"{self.protocol}/{self.from_port}-{self.to_port}"


@dataclass(frozen=True, slots=True)
class LedgerLine:
    """One ledger entry as an invoke shows it: a new or changed one is this run's doing."""

    key: str
    status: str
    group_id: str
    group_name: str
    target: str
    destination: str
    event_id: str
    why: str | None


@dataclass(frozen=True, slots=True)
class WorldState:
    """What a person checks after an invoke: cache security groups, the security groups of
    VPC caches (by group id, with the caches using them) and the DLQ."""

    cache_security_groups: dict[str, tuple[Ingress, ...]]
    dead_letter_count: int
    dead_letters: tuple[DeadLetter | Unrecognised, ...]
    vpc_cache_groups: dict[str, tuple[VpcIngress, ...]] = field(default_factory=dict)
    vpc_cache_users: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ledger: tuple[LedgerLine, ...] = ()


def read_state(target: Target) -> WorldState:
    """The cache security groups with their ingress, and the DLQ (peeked, not consumed)."""
    elasticache, ec2, sqs = (target.client(s) for s in ("elasticache", "ec2", "sqs"))
    try:
        names = {
            g["GroupName"]: g["GroupId"]
            for page in ec2.get_paginator("describe_security_groups").paginate()
            for g in page["SecurityGroups"]
        }
        groups: dict[str, tuple[Ingress, ...]] = {}
        for page in elasticache.get_paginator("describe_cache_security_groups").paginate():
            for group in page["CacheSecurityGroups"]:
                groups[group["CacheSecurityGroupName"]] = tuple(
                    Ingress(
                        ec2_security_group_name=pair["EC2SecurityGroupName"],
                        owner_id=pair["EC2SecurityGroupOwnerId"],
                        status=pair.get("Status", ""),
                        group_id=names.get(pair["EC2SecurityGroupName"]),
                    )
                    for pair in group.get("EC2SecurityGroups", [])
                )
        vpc_cache_groups, vpc_cache_users = _vpc_cache_groups(elasticache, ec2)
        ledger = _ledger_lines(target)
        queue = target.dead_letter_queue_url
        count = int(
            sqs.get_queue_attributes(
                QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
        )
        # Visibility 0: a peek that leaves every message where the replay tool will find it.
        received = sqs.receive_message(
            QueueUrl=queue,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
    except (ClientError, BotoCoreError) as exc:
        raise LocalInvokeError(f"cannot read the state of {target.endpoint_url}: {exc}") from exc
    return WorldState(
        cache_security_groups=groups,
        dead_letter_count=count,
        dead_letters=tuple(read_dead_letter(m) for m in received),
        vpc_cache_groups=vpc_cache_groups,
        vpc_cache_users=vpc_cache_users,
        ledger=ledger,
    )


def _ledger_lines(target: Target) -> tuple[LedgerLine, ...]:
    """Every entry of the scenario's ledger (none without one), read by the function's own
    adapter."""
    table = target.scenario.ledger_table
    if table is None:
        return ()
    from cache_ingress.errors import AwsCallError  # noqa: PLC0415
    from cache_ingress.ledger import Ledger  # noqa: PLC0415

    try:
        entries = list(Ledger(target.client("dynamodb"), table).entries())
    except AwsCallError as exc:
        raise LocalInvokeError(f"cannot read the ledger {table}: {exc}") from exc
    return tuple(
        LedgerLine(
            key=f"{entry.rule}/{entry.key}",
            status=f"{entry.status} ({entry.ownership})" if entry.ownership else str(entry.status),
            group_id=entry.grant.group_id,
            group_name=entry.grant.group_name,
            target=entry.grant.target,
            destination=entry.grant.cache_security_group
            or f"{entry.grant.vpc_security_group}:{entry.grant.port}",
            event_id=entry.grant.event_id,
            why=entry.closed_reason,
        )
        for entry in sorted(entries, key=lambda e: (e.recorded_at, e.key))
    )


def _vpc_cache_groups(
    elasticache: Any, ec2: Any
) -> tuple[dict[str, tuple[VpcIngress, ...]], dict[str, tuple[str, ...]]]:
    """The security groups VPC caches use, with their group-sourced inbound rules."""
    users: dict[str, list[str]] = {}
    for page in elasticache.get_paginator("describe_cache_clusters").paginate():
        for cluster in page["CacheClusters"]:
            cache = cluster.get("ReplicationGroupId") or cluster["CacheClusterId"]
            for membership in cluster.get("SecurityGroups", []):
                named = users.setdefault(membership["SecurityGroupId"], [])
                if cache not in named:
                    named.append(cache)
    if not users:
        return {}, {}
    described = ec2.describe_security_groups(GroupIds=sorted(users))["SecurityGroups"]
    sources = {
        pair["GroupId"]
        for group in described
        for permission in group.get("IpPermissions", [])
        for pair in permission.get("UserIdGroupPairs", [])
    }
    names: dict[str, str] = {}
    if sources:
        names = {
            group["GroupId"]: group["GroupName"]
            for group in ec2.describe_security_groups(
                Filters=[{"Name": "group-id", "Values": sorted(sources)}]
            )["SecurityGroups"]
        }
    groups = {
        group["GroupId"]: tuple(
            VpcIngress(
                protocol=permission.get("IpProtocol", "-1"),
                from_port=permission.get("FromPort"),
                to_port=permission.get("ToPort"),
                source_group_id=pair["GroupId"],
                source_group_name=names.get(pair["GroupId"]),
                description=pair.get("Description", ""),
            )
            for permission in group.get("IpPermissions", [])
            for pair in permission.get("UserIdGroupPairs", [])
        )
        for group in described
    }
    return groups, {group_id: tuple(caches) for group_id, caches in users.items()}
