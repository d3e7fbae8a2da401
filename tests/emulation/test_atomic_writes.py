"""The embedded AWS keeps AWS's atomicity: a conditional write is checked and applied at once.

Many threads race on the same keys through unmodified boto3 clients, with the interpreter
switching threads as often as it can, which is how two replays at once (or the threaded
moto server) meet. Without ``atomic_writes`` moto lets several writers pass
``attribute_not_exists`` on one key; DynamoDB and EC2 never do.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from cache_ingress_tools.emulator import atomic_writes

pytestmark = pytest.mark.emulation

REGION = "us-east-1"
THREADS = 6
KEYS = 20


@pytest.fixture
def clients(aws: None) -> dict[str, Any]:
    """Clients of the suite's moto world (tests/support/fixtures.py), emptied for this test;
    it has the one install every embedded AWS uses."""
    return {name: boto3.client(name, region_name=REGION) for name in ("dynamodb", "ec2")}


@pytest.fixture
def eager_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so a race shows if there is one."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def records_table(clients: dict[str, Any]) -> Any:
    """A table keyed like the idempotency table (`id`); returns the DynamoDB client."""
    dynamodb = clients["dynamodb"]
    dynamodb.create_table(
        TableName="records",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return dynamodb


def race(attempt: Callable[[int], bool]) -> Counter[int]:
    """Every thread attempts every key once; how many attempts succeeded, per key."""
    wins: Counter[int] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def worker() -> None:
        barrier.wait()
        for key in range(KEYS):
            if attempt(key):
                with lock:
                    wins[key] += 1

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return wins


def test_conditional_puts_on_one_key_admit_exactly_one_writer(
    clients: dict[str, Any], eager_switching: None
) -> None:
    dynamodb = records_table(clients)

    def put_once(key: int) -> bool:
        try:
            dynamodb.put_item(
                TableName="records",
                Item={"id": {"S": f"key-{key}"}, "status": {"S": "INPROGRESS"}},
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
            return False
        return True

    wins = race(put_once)

    assert wins == dict.fromkeys(range(KEYS), 1)


def test_conditional_updates_on_one_key_admit_exactly_one_writer(
    clients: dict[str, Any], eager_switching: None
) -> None:
    dynamodb = records_table(clients)
    for key in range(KEYS):
        dynamodb.put_item(
            TableName="records", Item={"id": {"S": f"key-{key}"}, "status": {"S": "INPROGRESS"}}
        )

    def complete_once(key: int) -> bool:
        try:
            dynamodb.update_item(
                TableName="records",
                Key={"id": {"S": f"key-{key}"}},
                UpdateExpression="SET #s = :done",
                ConditionExpression="#s = :open",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":done": {"S": "COMPLETED"},
                    ":open": {"S": "INPROGRESS"},
                },
            )
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
            return False
        return True

    wins = race(complete_once)

    assert wins == dict.fromkeys(range(KEYS), 1)


def test_one_ingress_rule_racing_is_added_once_and_the_rest_are_duplicates(
    clients: dict[str, Any], eager_switching: None
) -> None:
    ec2 = clients["ec2"]
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    cache = ec2.create_security_group(GroupName="cache", Description="c", VpcId=vpc)["GroupId"]
    apps = [
        ec2.create_security_group(GroupName=f"app-{key}", Description="a", VpcId=vpc)["GroupId"]
        for key in range(KEYS)
    ]

    def allow_once(key: int) -> bool:
        try:
            ec2.authorize_security_group_ingress(
                GroupId=cache,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 6379,
                        "ToPort": 6379,
                        "UserIdGroupPairs": [{"GroupId": apps[key]}],
                    }
                ],
            )
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidPermission.Duplicate"
            return False
        return True

    wins = race(allow_once)

    assert wins == dict.fromkeys(range(KEYS), 1)
    [described] = ec2.describe_security_groups(GroupIds=[cache])["SecurityGroups"]
    sources = [
        pair["GroupId"] for rule in described["IpPermissions"] for pair in rule["UserIdGroupPairs"]
    ]
    assert sorted(sources) == sorted(apps)


def test_installing_again_wraps_nothing_twice() -> None:
    atomic_writes.install()
    first = {(owner, name): owner.__dict__[name] for owner, name in atomic_writes.ATOMIC_OPERATIONS}
    atomic_writes.install()

    for (owner, name), method in first.items():
        assert owner.__dict__[name] is method


def test_deletes_from_one_queue_at_once_lose_none(
    clients: dict[str, Any], eager_switching: None
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
    for key in range(THREADS * KEYS):
        sqs.send_message(QueueUrl=url, MessageBody=f"message-{key}")
    handles: list[str] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300
    ).get("Messages"):
        handles.extend(message["ReceiptHandle"] for message in batch)
    assert len(handles) == THREADS * KEYS
    shares = [handles[index::THREADS] for index in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def operator(share: list[str]) -> None:
        barrier.wait()
        for handle in share:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)

    threads = [threading.Thread(target=operator, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
