"""The embedded AWS pages DescribeSecurityGroups as EC2 documents, through botocore's own
paginator and parsing."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.emulation

REGION = "us-east-1"


@pytest.fixture
def ec2(aws: None) -> Any:
    """The suite's moto world (tests/support/fixtures.py), emptied, with 23 tagged groups."""
    client = boto3.client("ec2", region_name=REGION)
    vpc = client.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    for index in range(23):
        client.create_security_group(
            GroupName=f"app-{index:02}",
            Description="app",
            VpcId=vpc,
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [{"Key": "cache-ingress", "Value": "orders"}],
                }
            ],
        )
    return client


TAGGED = [{"Name": "tag-key", "Values": ["cache-ingress"]}]


def test_pages_hold_at_most_max_results_and_cover_every_group_once(ec2: Any) -> None:
    pages = list(
        ec2.get_paginator("describe_security_groups").paginate(
            Filters=TAGGED, PaginationConfig={"PageSize": 5}
        )
    )

    sizes = [len(page["SecurityGroups"]) for page in pages]
    ids = [group["GroupId"] for page in pages for group in page["SecurityGroups"]]
    assert sizes == [5, 5, 5, 5, 3]
    assert len(ids) == len(set(ids)) == 23
    assert ids == sorted(ids)
    assert "NextToken" not in pages[-1]


def test_a_page_boundary_survives_a_group_deleted_between_requests(ec2: Any) -> None:
    first = ec2.describe_security_groups(Filters=TAGGED, MaxResults=10)
    ec2.delete_security_group(GroupId=first["SecurityGroups"][-1]["GroupId"])

    rest = ec2.describe_security_groups(
        Filters=TAGGED, MaxResults=1000, NextToken=first["NextToken"]
    )

    assert len(rest["SecurityGroups"]) == 13
    assert "NextToken" not in rest


def test_without_max_results_every_group_comes_at_once(ec2: Any) -> None:
    response = ec2.describe_security_groups(Filters=TAGGED)

    assert len(response["SecurityGroups"]) == 23
    assert "NextToken" not in response


@pytest.mark.parametrize(
    ("parameters", "code"),
    [
        ({"MaxResults": 5, "GroupIds": ["sg-0123456789abcdef0"]}, "InvalidParameterCombination"),
        ({"MaxResults": 5, "NextToken": "not-a-token"}, "InvalidPaginationToken"),
    ],
    ids=["with-group-ids", "foreign-token"],
)
def test_what_ec2_refuses_is_refused(ec2: Any, parameters: dict[str, Any], code: str) -> None:
    with pytest.raises(ClientError) as raised:
        ec2.describe_security_groups(**parameters)

    assert raised.value.response["Error"]["Code"] == code
