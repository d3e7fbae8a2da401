"""Cross-account threats (SECURITY.md, "Member accounts"), end to end: every combination of
the account an event comes from, the accounts it names (resource ARN, CloudTrail's
recipient and caller) and the group it names, through the Authorizer against the member
scenario, must send exactly the authorize requests the oracle allows (oracle.py, written from
docs/multi-account.md and the README's rules, not from the code).

The accounts: the cache account, a member the policy admits, a member it does not, and an
account outside the organization. The groups: one of each account, a member's group in a VPC
peered with the caches' and one in a VPC that is not."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from cache_ingress.settings import Settings
from cache_ingress.wiring import build_authorizer
from cache_ingress_tools.emulator.organization import account_client
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.security import oracle
from tests.support.events import create_tags, tag_change
from tests.support.fixtures import REGION, TEST_CLIENT_CONFIG, function_clients, shared_session

pytestmark = pytest.mark.integration

CACHE = "123456789012"
MEMBER = "111122223333"
OTHER_MEMBER = "444455556666"
OUTSIDER = "210987654321"
ACCOUNTS = (CACHE, MEMBER, OTHER_MEMBER, OUTSIDER)
GROUPS = (
    "sg-0a1b2c3d4e5f60718",  # the cache account's orders-app: orders
    "sg-0d1e2f3a4b5c6d7e8",  # MEMBER's checkout-app: orders
    "sg-0d2e3f4a5b6c7d8e9",  # MEMBER's checkout-sessions, peered VPC: sessions
    "sg-0d4f5a6b7c8d9eafb",  # MEMBER's checkout-unpeered: sessions
    "sg-0e1f2a3b4c5d6e7f8",  # OTHER_MEMBER's ledger-app: orders
)
KINDS = ("tag-change", "cloudtrail")
EMULATOR = Path(__file__).resolve().parents[2] / "src" / "cache_ingress_tools" / "emulator"


def _as(account: str, service: str) -> Any:
    return account_client(
        lambda name: shared_session().client(name, region_name=REGION, config=TEST_CLIENT_CONFIG),
        service,
        account,
    )


def _event(kind: str, account: str, group: str, named: str, index: int) -> dict[str, Any]:
    """An event of `account` naming `group`, whose ARN (Tag Change) or CloudTrail accounts
    say `named`."""
    event_id = f"cross-{index}"
    if kind == "tag-change":
        event = tag_change(group, event_id=event_id)
        event["resources"] = [f"arn:aws:ec2:{REGION}:{named}:security-group/{group}"]
    else:
        event = create_tags([group], event_id=event_id)
        detail = event["detail"]
        detail["recipientAccountId"] = named
        detail["userIdentity"]["accountId"] = named
        detail["userIdentity"]["arn"] = f"arn:aws:sts::{named}:assumed-role/platform/bob"
    event["account"] = account
    return event


def _groups_by_account() -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for account in ACCOUNTS[:3]:
        for group in _as(account, "ec2").describe_security_groups()["SecurityGroups"]:
            found.setdefault(account, {})[group["GroupId"]] = {
                "name": group["GroupName"],
                "owner_id": group["OwnerId"],
                "region": REGION,
                "vpc_id": group.get("VpcId"),
                "tags": {t["Key"]: t["Value"] for t in group.get("Tags", [])},
            }
    return found


def _caches() -> dict[str, oracle.CacheFacts]:
    [replication_group] = _as(CACHE, "elasticache").describe_replication_groups(
        ReplicationGroupId="sessions-redis"
    )["ReplicationGroups"]
    [cluster_id] = replication_group["MemberClusters"][:1]
    [cluster] = _as(CACHE, "elasticache").describe_cache_clusters(CacheClusterId=cluster_id)[
        "CacheClusters"
    ]
    [cache_group] = [g["SecurityGroupId"] for g in cluster["SecurityGroups"]]
    [described] = _as(CACHE, "ec2").describe_security_groups(GroupIds=[cache_group])[
        "SecurityGroups"
    ]
    return {"sessions": oracle.CacheFacts(cache_group, described["VpcId"], 6379)}


def _peerings() -> frozenset[frozenset[str]]:
    connections = _as(CACHE, "ec2").describe_vpc_peering_connections()["VpcPeeringConnections"]
    return frozenset(
        frozenset({c["RequesterVpcInfo"]["VpcId"], c["AccepterVpcInfo"]["VpcId"]})
        for c in connections
        if c["Status"]["Code"] == "active"
    )


def test_no_event_grants_what_the_documented_cross_account_rules_do_not_allow(
    member_world: SeededWorld,
) -> None:
    environment = member_world.function_environment()
    clients = function_clients(member_world)
    sent: list[tuple[Any, ...]] = []
    clients.get("elasticache").meta.events.register(
        "provide-client-params.elasticache.AuthorizeCacheSecurityGroupIngress",
        lambda params, **_: sent.append(
            (params["CacheSecurityGroupName"], params["EC2SecurityGroupName"],
             params["EC2SecurityGroupOwnerId"])
        ),
    )  # fmt: skip
    clients.get("ec2").meta.events.register(
        "provide-client-params.ec2.AuthorizeSecurityGroupIngress",
        lambda params, **_: sent.extend(
            (params["GroupId"], permission["FromPort"], pair["GroupId"], pair.get("UserId"))
            for permission in params["IpPermissions"]
            for pair in permission["UserIdGroupPairs"]
        ),
    )
    authorizer = build_authorizer(Settings.from_environ(environment), clients)
    policy = yaml.safe_load(Path(environment["POLICY_FILE"]).read_text(encoding="utf-8"))
    organization = oracle.Organization(CACHE, REGION, frozenset({MEMBER, OTHER_MEMBER}))
    groups, caches, peerings = _groups_by_account(), _caches(), _peerings()
    granted_somewhere = 0

    cases = itertools.product(KINDS, ACCOUNTS, GROUPS, ("own", "other"))
    for index, (kind, account, group, naming) in enumerate(cases):
        named = account if naming == "own" else next(a for a in ACCOUNTS if a != account)
        event = _event(kind, account, group, named, index)
        sent.clear()

        summary = authorizer.handle(event)

        permits = oracle.permitted_in_organization(
            [group], groups, event, policy, organization, caches, peerings
        )
        expected = {
            p.authorize_parameters if p.cache_security_group else (
                *p.rule_parameters[:2], p.group_id, p.owner_id if p.owner_id != CACHE else None
            )
            for p in permits
        }  # fmt: skip
        case = f"{kind} of {account} naming {group} (accounts named: {named})"
        assert set(sent) == expected, case
        assert summary["status"] in {"completed", "dead-lettered"}, case
        for decision in summary["decisions"]:
            assert decision["reason"], case
        granted_somewhere += bool(expected)

    # The rules admit some: the member's own groups, from its own events, and the cache's.
    assert granted_somewhere >= 4
