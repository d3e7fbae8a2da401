"""The STS adapter (member_accounts.py) against the embedded AWS's member scenario: the
read role assumed with the external id through STS's own trust evaluation, credentials kept
for their hour, and every failure classified as transient (retry) or permanent (dead-letter)
like any other AWS fault."""

from __future__ import annotations

import json

import pytest

from cache_ingress.aws import Clients
from cache_ingress.errors import AwsCallError
from cache_ingress.member_accounts import RENEW_BEFORE_SECONDS, MemberAccounts
from cache_ingress.settings import Members, Settings
from cache_ingress_tools.emulator.organization import account_client
from cache_ingress_tools.emulator.scenario import SeededWorld
from tests.support.faults import Fault
from tests.support.fixtures import REGION, TEST_CLIENT_CONFIG, function_clients, shared_session

pytestmark = pytest.mark.integration

MEMBER = "111122223333"
CHECKOUT_APP = "sg-0d1e2f3a4b5c6d7e8"


def _members(world: SeededWorld, **change: str) -> Members:
    settings = Settings.from_environ({**world.function_environment(), **change})
    assert settings.members is not None
    return settings.members


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _accounts(
    world: SeededWorld, clock: Clock | None = None, clients: Clients | None = None, **change: str
) -> MemberAccounts:
    return MemberAccounts(
        _members(world, **change),
        clients or function_clients(world),
        session_name="cache-ingress",
        **({"clock": clock} if clock is not None else {}),
    )


def test_the_function_reads_a_member_account_through_its_read_role(
    member_world: SeededWorld,
) -> None:
    accounts = _accounts(member_world)

    ec2 = accounts.client(MEMBER, "ec2")
    groups = ec2.describe_security_groups(GroupIds=[CHECKOUT_APP])["SecurityGroups"]

    assert [(g["GroupId"], g["OwnerId"]) for g in groups] == [(CHECKOUT_APP, MEMBER)]
    assert accounts.credentials(MEMBER).account == MEMBER
    identity = accounts.client(MEMBER, "sts").get_caller_identity()["Arn"]
    assert (
        identity == f"arn:aws:sts::{MEMBER}:assumed-role/cache-ingress-read-us-east-1/cache-ingress"
    )


def test_the_role_is_assumed_once_for_all_clients_until_its_credentials_near_their_end(
    member_world: SeededWorld,
) -> None:
    clock = Clock()
    accounts = _accounts(member_world, clock)
    expires_at = accounts.credentials(MEMBER).expires_at
    clock.now = expires_at - 3600  # what STS gives is relative to the real clock

    first = accounts.client(MEMBER, "ec2")
    assert accounts.client(MEMBER, "ec2") is first
    accounts.client(MEMBER, "cloudtrail")
    assert accounts.assumed == 1

    clock.now = expires_at - RENEW_BEFORE_SECONDS + 1
    renewed = accounts.client(MEMBER, "ec2")
    assert accounts.assumed == 2
    assert renewed is not first


def test_the_wrong_external_id_is_refused_for_good_with_what_to_check(
    member_world: SeededWorld,
) -> None:
    accounts = _accounts(member_world, MEMBER_EXTERNAL_ID="another-stacks-id")

    with pytest.raises(AwsCallError) as raised:
        accounts.client(MEMBER, "ec2")

    error = raised.value
    assert (error.code, error.transient) == ("AccessDenied", False)
    assert f"the read role of member account {MEMBER} could not be assumed" in str(error)
    assert "CacheFunctionRoleArns or ExternalId do not match" in str(error)


def test_an_account_without_the_member_stack_is_refused_for_good(
    member_world: SeededWorld,
) -> None:
    # Listed as a member, but no read role there (the stack set never reached it).
    accounts = _accounts(member_world, MEMBER_ACCOUNTS="210987654321")
    from cache_ingress_tools.emulator import accounts as emulated

    emulated.govern("210987654321")

    with pytest.raises(AwsCallError) as raised:
        accounts.client("210987654321", "ec2")

    assert (raised.value.code, raised.value.transient) == ("AccessDenied", False)
    assert "member stack (member.yaml) is not deployed" in str(raised.value)


def test_another_principal_of_the_cache_account_cannot_assume_the_read_role(
    member_world: SeededWorld,
) -> None:
    # An administrator of the cache account, with the right external id: neither a function
    # role nor a named operator.
    session = shared_session()
    iam = session.client("iam", region_name=REGION, config=TEST_CLIENT_CONFIG)
    trust = {
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "123456789012"}, "Action": "sts:AssumeRole"}
        ]
    }
    admin_role = iam.create_role(RoleName="Admin", AssumeRolePolicyDocument=json.dumps(trust))
    sts = session.client("sts", region_name=REGION, config=TEST_CLIENT_CONFIG)
    keys = sts.assume_role(RoleArn=admin_role["Role"]["Arn"], RoleSessionName="admin")[
        "Credentials"
    ]
    admin = session.client(
        "sts",
        region_name=REGION,
        config=TEST_CLIENT_CONFIG,
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        aws_session_token=keys["SessionToken"],
    )
    members = _members(member_world)

    with pytest.raises(Exception, match="AccessDenied"):
        admin.assume_role(
            RoleArn=members.role_arn(MEMBER),
            RoleSessionName="admin",
            ExternalId=members.external_id,
        )


def test_the_read_role_may_only_read(member_world: SeededWorld) -> None:
    iam = account_client(
        lambda service: shared_session().client(service, region_name=REGION), "iam", MEMBER
    )
    role = _members(member_world).role_name
    actions = set()
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            actions.update(
                [statement["Action"]]
                if isinstance(statement["Action"], str)
                else statement["Action"]
            )
    assert actions == {"ec2:DescribeSecurityGroups", "cloudtrail:LookupEvents"}
    assert not iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]


@pytest.mark.parametrize(
    ("kind", "code", "transient"),
    [
        ("throttling", "Throttling", True),
        ("server-error", "InternalFailure", True),
        ("timeout", "ReadTimeoutError", True),
        ("unreachable", "EndpointConnectionError", True),
        ("access-denied", "AccessDenied", False),
    ],
)
def test_sts_faults_are_transient_or_permanent_like_any_other(
    member_world: SeededWorld, kind: str, code: str, transient: bool
) -> None:
    clients = function_clients(member_world)
    accounts = _accounts(member_world, clients=clients)
    Fault(clients.get("sts"), "AssumeRole", kind, times=1)

    with pytest.raises(AwsCallError) as raised:
        accounts.client(MEMBER, "ec2")

    assert (raised.value.code, raised.value.transient) == (code, transient)
    # Nothing was kept: the next use assumes the role again and succeeds.
    assert accounts.client(MEMBER, "ec2").describe_security_groups(GroupIds=[CHECKOUT_APP])
    assert accounts.assumed == 2


def test_sts_disabled_in_the_region_is_permanent(member_world: SeededWorld) -> None:
    clients = function_clients(member_world)
    accounts = _accounts(member_world, clients=clients)
    Fault(clients.get("sts"), "AssumeRole", "RegionDisabledException", status=403, times=1)

    with pytest.raises(AwsCallError, match="STS is not activated") as raised:
        accounts.client(MEMBER, "ec2")

    assert not raised.value.transient
