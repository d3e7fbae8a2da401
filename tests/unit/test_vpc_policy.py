"""Policy targets of the VPC kinds: parsing, and validation that names the bad field."""

from __future__ import annotations

import pytest

from cache_ingress.errors import PolicyError
from cache_ingress.policy import Allow, TargetKind, VpcDestination, parse_policy

pytestmark = pytest.mark.unit

POLICY = """
version: 1
targets:
  orders:
    cache_security_group: orders-cache-sg
  sessions:
    replication_group: sessions-redis
    allow: {required_tags: {env: prod}}
  legacy:
    cache_cluster: legacy-memcached-001
    region: us-east-1
  reports:
    vpc_security_group: {group_id: sg-0123456789abcdef0, port: 6380}
  short-id:
    vpc_security_group: {group_id: sg-01234567, port: 1}
"""


def test_each_kind_parses_into_its_destination() -> None:
    targets = parse_policy(POLICY, source="test").targets

    assert (targets["orders"].kind, targets["orders"].vpc) == (
        TargetKind.CACHE_SECURITY_GROUP,
        None,
    )
    sessions = targets["sessions"]
    assert sessions.kind is TargetKind.REPLICATION_GROUP
    assert sessions.cache_security_group is None
    assert sessions.vpc == VpcDestination(TargetKind.REPLICATION_GROUP, "sessions-redis")
    assert sessions.allow == Allow(required_tags={"env": ("prod",)})
    assert targets["legacy"].vpc == VpcDestination(TargetKind.CACHE_CLUSTER, "legacy-memcached-001")
    assert targets["legacy"].region == "us-east-1"
    assert targets["reports"].vpc == VpcDestination(
        TargetKind.VPC_SECURITY_GROUP, "sg-0123456789abcdef0", 6380
    )
    assert targets["short-id"].vpc == VpcDestination(
        TargetKind.VPC_SECURITY_GROUP, "sg-01234567", 1
    )


def test_destinations_label_themselves_for_reasons_and_logs() -> None:
    targets = parse_policy(POLICY, source="test").targets
    sessions, reports = targets["sessions"].vpc, targets["reports"].vpc
    assert sessions is not None and reports is not None

    assert sessions.label == "replication group sessions-redis"
    assert sessions.cache == "replication-group:sessions-redis"
    assert reports.cache is None


def test_json_policies_take_vpc_targets_too() -> None:
    text = '{"version": 1, "targets": {"a": {"cache_cluster": "c1"}}}'
    assert parse_policy(text, source="t").targets["a"].vpc == VpcDestination(
        TargetKind.CACHE_CLUSTER, "c1"
    )


def wrap(target: str) -> str:
    return f"version: 1\ntargets: {{a: {target}}}"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "{replication_group: r, cache_security_group: x}",
            r"^policy test: targets\.a: names both cache_security_group and replication_group; "
            r"a target names exactly one destination \(line 2\)$",
        ),
        (
            "{cache_cluster: c, vpc_security_group: {group_id: sg-01234567, port: 1}}",
            r"targets\.a: names both cache_cluster and vpc_security_group",
        ),
        ("{region: us-east-1}", r"targets\.a\.cache_security_group: required field is missing"),
        ("{region: us-east-1}", "replication_group, cache_cluster or vpc_security_group"),
        ("{replication_group: Sessions}", r"targets\.a\.replication_group: must be an ElastiCache"),
        ("{replication_group: 9lives}", r"targets\.a\.replication_group: .*starting with a letter"),
        ("{replication_group: a--b}", r"targets\.a\.replication_group"),
        ("{replication_group: ab-}", r"targets\.a\.replication_group"),
        ("{replication_group: [a]}", r"targets\.a\.replication_group"),
        ("{replication_group: " + "a" * 41 + "}", r"targets\.a\.replication_group: .*1-40"),
        ("{cache_cluster: " + "a" * 51 + "}", r"targets\.a\.cache_cluster: .*1-50"),
        ("{cache_cluster: ''}", r"targets\.a\.cache_cluster: must be an ElastiCache cache cluster"),
        (
            "{vpc_security_group: sg-0123456789abcdef0}",
            r"targets\.a\.vpc_security_group: must be a mapping",
        ),
        (
            "{vpc_security_group: {group_id: sg-0123456789abcdef0}}",
            r"targets\.a\.vpc_security_group\.port: required field is missing",
        ),
        (
            "{vpc_security_group: {port: 6379}}",
            r"targets\.a\.vpc_security_group\.group_id: required field is missing",
        ),
        (
            "{vpc_security_group: {group_id: sg-0123456789abcdef0, port: 6379, cidr: 0.0.0.0/0}}",
            r"targets\.a\.vpc_security_group: unknown field 'cidr' \(expected group_id, port\)",
        ),
        (
            "{vpc_security_group: {group_id: sg-123, port: 6379}}",
            r"targets\.a\.vpc_security_group\.group_id: must be a security group id",
        ),
        (
            "{vpc_security_group: {group_id: orders-cache-sg, port: 6379}}",
            r"targets\.a\.vpc_security_group\.group_id",
        ),
        (
            "{vpc_security_group: {group_id: sg-0123456789abcdef0, port: 0}}",
            r"targets\.a\.vpc_security_group\.port: must be a TCP port number from 1 to 65535",
        ),
        (
            "{vpc_security_group: {group_id: sg-0123456789abcdef0, port: 65536}}",
            r"targets\.a\.vpc_security_group\.port",
        ),
        (
            "{vpc_security_group: {group_id: sg-0123456789abcdef0, port: '6379'}}",
            r"targets\.a\.vpc_security_group\.port",
        ),
        (
            "{vpc_security_group: {group_id: sg-0123456789abcdef0, port: true}}",
            r"targets\.a\.vpc_security_group\.port",
        ),
        ("{replication_group: r, region: mars}", r"targets\.a\.region"),
        (
            "{replication_group: r, allow: {owners: []}}",
            r"targets\.a\.allow: unknown field 'owners'",
        ),
        ("{replication_group: r, port: 6379}", r"targets\.a: unknown field 'port'"),
    ],
)
def test_invalid_vpc_targets_are_rejected_naming_the_field(target: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(wrap(target), source="test")


def test_the_destination_is_checked_before_the_region_as_for_the_classic_kind() -> None:
    with pytest.raises(PolicyError, match=r"targets\.a\.replication_group"):
        parse_policy(wrap("{replication_group: Bad, region: mars}"), source="test")
