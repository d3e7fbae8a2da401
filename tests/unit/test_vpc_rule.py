"""The inbound rule a VPC grant asks EC2 for: built from the grant alone, no AWS."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache_ingress.models import Grant
from cache_ingress.vpc_ingress import DESCRIPTION_MAX, ip_permissions, rule_description

pytestmark = pytest.mark.unit

ACCOUNT = "111122223333"
APP = "sg-0a0a0a0a0a0a0a0a0"
GRANT = Grant(
    "bddcf1d6-0251-35a1-aab0-adc1fb47c11c",
    "sessions",
    None,
    APP,
    "app",
    ACCOUNT,
    vpc_security_group="sg-0c0c0c0c0c0c0c0c0",
    port=6379,
    cache="replication-group:sessions-redis",
)
# EC2's rule description alphabet (botocore's model for UserIdGroupPair.Description).
ALLOWED = re.compile(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=;{}!$*]*")


def test_the_rule_is_tcp_on_the_cache_port_from_the_group_only() -> None:
    assert ip_permissions(GRANT) == [
        {
            "IpProtocol": "tcp",
            "FromPort": 6379,
            "ToPort": 6379,
            "UserIdGroupPairs": [
                {
                    "GroupId": APP,
                    "Description": f"cache-ingress sessions event {GRANT.event_id}",
                }
            ],
        }
    ]


def test_a_group_of_another_account_is_named_with_its_owner() -> None:
    shared = replace(GRANT, owner_id="444455556666", cross_account=True)
    [permission] = ip_permissions(shared)
    assert permission["UserIdGroupPairs"][0]["UserId"] == "444455556666"


def test_a_classic_grant_has_no_ip_permissions() -> None:
    with pytest.raises(ValueError, match="not a VPC grant"):
        ip_permissions(Grant("e", "orders", "orders-cache-sg", APP, "app", ACCOUNT))


def test_characters_ec2_refuses_are_replaced_and_the_length_is_capped() -> None:
    odd = replace(GRANT, event_id="évent?<id>&" + "x" * 300)
    description = rule_description(odd)
    assert description.startswith("cache-ingress sessions event _vent__id__")
    assert len(description) == DESCRIPTION_MAX


@pytest.mark.property
@given(target=st.text(max_size=80), event_id=st.text(max_size=300))
def test_every_description_is_one_ec2_accepts(target: str, event_id: str) -> None:
    description = rule_description(replace(GRANT, target=target, event_id=event_id))
    assert ALLOWED.fullmatch(description)
    assert len(description) <= DESCRIPTION_MAX
