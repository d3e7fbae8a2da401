"""The cache-security-group emulation, checked through botocore against the service model.

Every call goes through an unmodified boto3 client, so requests are serialized and
responses parsed by botocore exactly as they would be against AWS.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.error import HTTPError

import boto3
import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer

from cache_ingress_tools.emulator.cache_security_groups import (
    CACHE_SECURITY_GROUP_QUOTA,
    CLASSIC_NOT_PERMITTED_MESSAGE,
    EMULATED_FAULTS,
    FAULTS_NOT_EMULATED,
    install,
    set_classic_enabled,
)

if TYPE_CHECKING:
    from mypy_boto3_elasticache import ElastiCacheClient

from tests.support.fixtures import MotoWorld

pytestmark = pytest.mark.emulation

REGION = "us-east-1"
ACCOUNT = DEFAULT_ACCOUNT_ID
APP_ACCOUNT = "210987654321"
NAMESPACE = "{http://elasticache.amazonaws.com/doc/2015-02-02/}"
OPERATIONS = (
    "CreateCacheSecurityGroup",
    "DescribeCacheSecurityGroups",
    "AuthorizeCacheSecurityGroupIngress",
    "RevokeCacheSecurityGroupIngress",
    "DeleteCacheSecurityGroup",
)


def _arn(name: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:aws:elasticache:{region}:{account}:securitygroup:{name}"


def _group(
    name: str,
    description: str = "orders cache",
    ingress: tuple[tuple[str, str], ...] = (),
    region: str = REGION,
    account: str = ACCOUNT,
) -> dict[str, Any]:
    return {
        "OwnerId": account,
        "CacheSecurityGroupName": name,
        "Description": description,
        "EC2SecurityGroups": [
            {"Status": "authorized", "EC2SecurityGroupName": sg, "EC2SecurityGroupOwnerId": owner}
            for sg, owner in ingress
        ],
        "ARN": _arn(name, region, account),
    }


@pytest.fixture
def aws(moto_world: MotoWorld) -> MotoWorld:
    """The suite's moto world (tests/support/fixtures.py), emptied for this test."""
    moto_world.reset()
    return moto_world


@pytest.fixture
def client(aws: Any) -> ElastiCacheClient:
    return boto3.client("elasticache", region_name=REGION)


@pytest.fixture
def unvalidated_client(aws: Any) -> ElastiCacheClient:
    """Skips botocore's client-side checks, to reach what only a raw request could send."""
    return boto3.client(
        "elasticache", region_name=REGION, config=Config(parameter_validation=False)
    )


# --- success --------------------------------------------------------------------------------


def test_round_trip_create_describe_authorize_revoke_delete(client: ElastiCacheClient) -> None:
    created = client.create_cache_security_group(
        CacheSecurityGroupName="Orders-Cache-SG", Description="orders cache"
    )
    # AWS stores the name lower-case.
    assert created["CacheSecurityGroup"] == _group("orders-cache-sg")

    authorized = client.authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders-cache-sg",
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId=APP_ACCOUNT,
    )
    assert authorized["CacheSecurityGroup"] == _group(
        "orders-cache-sg", ingress=(("orders-app", APP_ACCOUNT),)
    )
    client.authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders-cache-sg",
        EC2SecurityGroupName="orders-worker",
        EC2SecurityGroupOwnerId=ACCOUNT,
    )

    described = client.describe_cache_security_groups(CacheSecurityGroupName="ORDERS-CACHE-SG")
    assert described["CacheSecurityGroups"] == [
        _group(
            "orders-cache-sg",
            ingress=(("orders-app", APP_ACCOUNT), ("orders-worker", ACCOUNT)),
        )
    ]
    assert "Marker" not in described

    revoked = client.revoke_cache_security_group_ingress(
        CacheSecurityGroupName="orders-cache-sg",
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId=APP_ACCOUNT,
    )
    assert revoked["CacheSecurityGroup"] == _group(
        "orders-cache-sg", ingress=(("orders-worker", ACCOUNT),)
    )

    deleted = client.delete_cache_security_group(CacheSecurityGroupName="orders-cache-sg")
    assert set(deleted) == {"ResponseMetadata"}
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert client.describe_cache_security_groups()["CacheSecurityGroups"] == []


def test_same_ec2_group_name_from_two_owners_is_two_authorizations(
    client: ElastiCacheClient,
) -> None:
    client.create_cache_security_group(CacheSecurityGroupName="orders", Description="d")
    for owner in (ACCOUNT, APP_ACCOUNT):
        client.authorize_cache_security_group_ingress(
            CacheSecurityGroupName="orders",
            EC2SecurityGroupName="app",
            EC2SecurityGroupOwnerId=owner,
        )

    groups = client.describe_cache_security_groups()["CacheSecurityGroups"]

    assert groups == [_group("orders", "d", ingress=(("app", ACCOUNT), ("app", APP_ACCOUNT)))]


def test_paginator_walks_every_page(client: ElastiCacheClient) -> None:
    names = [f"group-{index:02d}" for index in range(45)]
    for name in reversed(names):
        client.create_cache_security_group(CacheSecurityGroupName=name, Description=name)

    pages = list(
        client.get_paginator("describe_cache_security_groups").paginate(
            PaginationConfig={"PageSize": 20}
        )
    )

    assert [len(page["CacheSecurityGroups"]) for page in pages] == [20, 20, 5]
    assert ["Marker" in page for page in pages] == [True, True, False]
    listed = [
        group["CacheSecurityGroupName"] for page in pages for group in page["CacheSecurityGroups"]
    ]
    assert listed == names


def test_marker_survives_deletion_of_the_last_listed_group(client: ElastiCacheClient) -> None:
    for index in range(25):
        client.create_cache_security_group(
            CacheSecurityGroupName=f"group-{index:02d}", Description="d"
        )
    first = client.describe_cache_security_groups(MaxRecords=20)
    client.delete_cache_security_group(CacheSecurityGroupName="group-19")

    second = client.describe_cache_security_groups(MaxRecords=20, Marker=first["Marker"])

    assert [group["CacheSecurityGroupName"] for group in second["CacheSecurityGroups"]] == [
        f"group-{index:02d}" for index in range(20, 25)
    ]


# --- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultCase:
    operation: str
    shape: str
    code: str
    status: int
    message: str
    call: Callable[[ElastiCacheClient], object]
    needs_raw_request: bool = False


def _create(name: str = "orders", **extra: Any) -> Callable[[ElastiCacheClient], object]:
    return lambda c: c.create_cache_security_group(
        CacheSecurityGroupName=name, Description="d", **extra
    )


def _ingress(
    method: str, group: str = "orders", sg: str = "app", owner: str = ACCOUNT
) -> Callable[[ElastiCacheClient], object]:
    return lambda c: getattr(c, method)(
        CacheSecurityGroupName=group, EC2SecurityGroupName=sg, EC2SecurityGroupOwnerId=owner
    )


def _authorize(**kwargs: str) -> Callable[[ElastiCacheClient], object]:
    return _ingress("authorize_cache_security_group_ingress", **kwargs)


def _revoke(**kwargs: str) -> Callable[[ElastiCacheClient], object]:
    return _ingress("revoke_cache_security_group_ingress", **kwargs)


def _fill_quota(c: ElastiCacheClient) -> object:
    for index in range(CACHE_SECURITY_GROUP_QUOTA - 1):  # "orders" already exists
        c.create_cache_security_group(CacheSecurityGroupName=f"extra-{index}", Description="d")
    return c.create_cache_security_group(CacheSecurityGroupName="one-too-many", Description="d")


def _delete_group_in_use(c: ElastiCacheClient) -> object:
    c.create_cache_cluster(
        CacheClusterId="orders-cache",
        Engine="redis",
        CacheNodeType="cache.t3.micro",
        NumCacheNodes=1,
        CacheSecurityGroupNames=["orders"],
    )
    return c.delete_cache_security_group(CacheSecurityGroupName="orders")


_CREATE, _DESCRIBE, _AUTHORIZE, _REVOKE, _DELETE = OPERATIONS
_IPV = ("InvalidParameterValueException", "InvalidParameterValue", 400)
_IPC = ("InvalidParameterCombinationException", "InvalidParameterCombination", 400)
_NOT_FOUND = ("CacheSecurityGroupNotFoundFault", "CacheSecurityGroupNotFound", 404)
_BLANK_NAME = "The parameter CacheSecurityGroupName must be provided and must not be blank."
_HALF_PAIR = "EC2SecurityGroupName and EC2SecurityGroupOwnerId must be specified together."
_BAD_OWNER = (
    "Invalid EC2SecurityGroupOwnerId: AKIAIOSFODNN7EXAMPLE. "
    "It must be a 12-digit AWS account number, not an access key ID."
)

# Each case runs with a group "orders" that authorizes EC2 group "app" of ACCOUNT.
FAULT_CASES: dict[str, FaultCase] = {
    "create-duplicate": FaultCase(
        _CREATE,
        "CacheSecurityGroupAlreadyExistsFault",
        "CacheSecurityGroupAlreadyExists",
        400,
        "CacheSecurityGroup orders already exists.",
        _create("ORDERS"),
    ),
    "create-beyond-quota": FaultCase(
        _CREATE,
        "CacheSecurityGroupQuotaExceededFault",
        "QuotaExceeded.CacheSecurityGroup",
        400,
        "Quota of 50 cache security groups exceeded.",
        _fill_quota,
    ),
    "create-too-many-tags": FaultCase(
        _CREATE,
        "TagQuotaPerResourceExceeded",
        "TagQuotaPerResourceExceeded",
        400,
        "The request would exceed the limit of 50 tags per resource.",
        _create("tagged", Tags=[{"Key": f"k{index}", "Value": "v"} for index in range(51)]),
    ),
    "create-empty-name": FaultCase(_CREATE, *_IPV, _BLANK_NAME, _create("")),
    "create-default": FaultCase(
        _CREATE, *_IPV, "CacheSecurityGroupName cannot be the word Default.", _create("Default")
    ),
    "create-name-too-long": FaultCase(
        _CREATE,
        *_IPV,
        "The parameter CacheSecurityGroupName must be at most 255 characters long.",
        _create("g" * 256),
    ),
    "create-without-description": FaultCase(
        _CREATE,
        *_IPV,
        "The parameter Description must be provided.",
        lambda c: c.create_cache_security_group(CacheSecurityGroupName="other"),  # type: ignore[call-arg]
        needs_raw_request=True,
    ),
    "describe-missing": FaultCase(
        _DESCRIBE,
        *_NOT_FOUND,
        "CacheSecurityGroup orders-cache-sg not found.",
        lambda c: c.describe_cache_security_groups(CacheSecurityGroupName="orders-cache-sg"),
    ),
    "describe-empty-name": FaultCase(
        _DESCRIBE,
        *_IPV,
        _BLANK_NAME,
        lambda c: c.describe_cache_security_groups(CacheSecurityGroupName=""),
    ),
    "describe-max-records-too-small": FaultCase(
        _DESCRIBE,
        *_IPV,
        "Invalid value for MaxRecords: 19. It must be between 20 and 100.",
        lambda c: c.describe_cache_security_groups(MaxRecords=19),
    ),
    "describe-max-records-too-large": FaultCase(
        _DESCRIBE,
        *_IPV,
        "Invalid value for MaxRecords: 101. It must be between 20 and 100.",
        lambda c: c.describe_cache_security_groups(MaxRecords=101),
    ),
    "describe-bad-marker": FaultCase(
        _DESCRIBE,
        *_IPV,
        "Invalid marker: not-a-marker",
        lambda c: c.describe_cache_security_groups(Marker="not-a-marker"),
    ),
    "authorize-missing-group": FaultCase(
        _AUTHORIZE,
        *_NOT_FOUND,
        "CacheSecurityGroup orders-cache-sg not found.",
        _authorize(group="orders-cache-sg"),
    ),
    "authorize-duplicate": FaultCase(
        _AUTHORIZE,
        "AuthorizationAlreadyExistsFault",
        "AuthorizationAlreadyExists",
        400,
        f"EC2 security group app owned by {ACCOUNT} is already authorized for "
        "CacheSecurityGroup orders.",
        _authorize(),
    ),
    "authorize-access-key-as-owner": FaultCase(
        _AUTHORIZE, *_IPV, _BAD_OWNER, _authorize(owner="AKIAIOSFODNN7EXAMPLE")
    ),
    "authorize-short-owner": FaultCase(
        _AUTHORIZE,
        *_IPV,
        "Invalid EC2SecurityGroupOwnerId: 12345. "
        "It must be a 12-digit AWS account number, not an access key ID.",
        _authorize(owner="12345"),
    ),
    "authorize-empty-group-name": FaultCase(_AUTHORIZE, *_IPV, _BLANK_NAME, _authorize(group="")),
    "authorize-empty-ec2-name": FaultCase(
        _AUTHORIZE,
        *_IPV,
        "The parameter EC2SecurityGroupName must be provided and must not be blank.",
        _authorize(sg=""),
    ),
    "authorize-name-without-owner": FaultCase(
        _AUTHORIZE,
        *_IPC,
        _HALF_PAIR,
        lambda c: c.authorize_cache_security_group_ingress(  # type: ignore[call-arg]
            CacheSecurityGroupName="orders", EC2SecurityGroupName="web"
        ),
        needs_raw_request=True,
    ),
    "revoke-missing-group": FaultCase(
        _REVOKE,
        *_NOT_FOUND,
        "CacheSecurityGroup orders-cache-sg not found.",
        _revoke(group="orders-cache-sg"),
    ),
    "revoke-missing-pair": FaultCase(
        _REVOKE,
        "AuthorizationNotFoundFault",
        "AuthorizationNotFound",
        404,
        f"EC2 security group app owned by {APP_ACCOUNT} is not authorized for "
        "CacheSecurityGroup orders.",
        _revoke(owner=APP_ACCOUNT),
    ),
    "revoke-access-key-as-owner": FaultCase(
        _REVOKE, *_IPV, _BAD_OWNER, _revoke(owner="AKIAIOSFODNN7EXAMPLE")
    ),
    "revoke-owner-without-name": FaultCase(
        _REVOKE,
        *_IPC,
        _HALF_PAIR,
        lambda c: c.revoke_cache_security_group_ingress(  # type: ignore[call-arg]
            CacheSecurityGroupName="orders", EC2SecurityGroupOwnerId=ACCOUNT
        ),
        needs_raw_request=True,
    ),
    "delete-missing": FaultCase(
        _DELETE,
        *_NOT_FOUND,
        "CacheSecurityGroup orders-cache-sg not found.",
        lambda c: c.delete_cache_security_group(CacheSecurityGroupName="orders-cache-sg"),
    ),
    "delete-default": FaultCase(
        _DELETE,
        *_IPV,
        "The default cache security group cannot be deleted.",
        lambda c: c.delete_cache_security_group(CacheSecurityGroupName="default"),
    ),
    "delete-empty-name": FaultCase(
        _DELETE,
        *_IPV,
        _BLANK_NAME,
        lambda c: c.delete_cache_security_group(CacheSecurityGroupName=""),
    ),
    "delete-in-use": FaultCase(
        _DELETE,
        "InvalidCacheSecurityGroupStateFault",
        "InvalidCacheSecurityGroupState",
        400,
        "CacheSecurityGroup orders is in use by orders-cache.",
        _delete_group_in_use,
    ),
}


def _seed(client: ElastiCacheClient) -> None:
    client.create_cache_security_group(CacheSecurityGroupName="orders", Description="d")
    client.authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders", EC2SecurityGroupName="app", EC2SecurityGroupOwnerId=ACCOUNT
    )


def _assert_fault(client: ElastiCacheClient, case: FaultCase) -> None:
    exception_class = getattr(client.exceptions, case.shape)
    with pytest.raises(exception_class) as raised:
        case.call(client)
    error = raised.value
    # botocore builds one class per modeled shape: this proves it parsed the modeled fault.
    assert type(error).__name__ == case.shape
    assert error.response["Error"]["Code"] == case.code
    assert error.response["Error"]["Type"] == "Sender"
    assert error.response["Error"]["Message"] == case.message
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == case.status


@pytest.mark.parametrize("case", FAULT_CASES.values(), ids=FAULT_CASES.keys())
def test_modeled_fault(
    case: FaultCase, client: ElastiCacheClient, unvalidated_client: ElastiCacheClient
) -> None:
    _seed(client)
    _assert_fault(unvalidated_client if case.needs_raw_request else client, case)


def test_fault_cases_cover_every_emulated_fault() -> None:
    covered = {(case.operation, case.shape) for case in FAULT_CASES.values()}
    emulated = {(op, fault.shape) for op, faults in EMULATED_FAULTS.items() for fault in faults}
    assert covered == emulated


def test_fault_table_matches_botocore_model() -> None:
    model = botocore.session.get_session().get_service_model("elasticache")
    assert set(EMULATED_FAULTS) == set(OPERATIONS)
    for operation in OPERATIONS:
        modeled = {
            shape.name: (shape.metadata["error"]["code"], shape.metadata["error"]["httpStatusCode"])
            for shape in model.operation_model(operation).error_shapes
        }
        emulated = {
            fault.shape: (fault.code, fault.http_status) for fault in EMULATED_FAULTS[operation]
        }
        not_emulated = set(FAULTS_NOT_EMULATED.get(operation, {}))
        assert not emulated.keys() & not_emulated, operation
        assert emulated.keys() | not_emulated == modeled.keys(), operation
        assert emulated == {shape: modeled[shape] for shape in emulated}, operation


# --- EC2-Classic switch ---------------------------------------------------------------------

EVERY_OPERATION: dict[str, Callable[[ElastiCacheClient], object]] = {
    _CREATE: _create("other"),
    _DESCRIBE: lambda c: c.describe_cache_security_groups(),
    _AUTHORIZE: _authorize(owner=APP_ACCOUNT),
    _REVOKE: _revoke(),
    _DELETE: lambda c: c.delete_cache_security_group(CacheSecurityGroupName="orders"),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_account_without_classic_refuses_every_operation(
    operation: str, client: ElastiCacheClient
) -> None:
    _seed(client)
    set_classic_enabled(ACCOUNT, REGION, enabled=False)

    case = FaultCase(operation, *_IPV, CLASSIC_NOT_PERMITTED_MESSAGE, EVERY_OPERATION[operation])
    _assert_fault(client, case)


def test_classic_switch_is_per_region_and_reversible(client: ElastiCacheClient) -> None:
    _seed(client)
    set_classic_enabled(ACCOUNT, "us-west-2", enabled=False)
    west = boto3.client("elasticache", region_name="us-west-2")

    with pytest.raises(west.exceptions.InvalidParameterValueException):
        west.describe_cache_security_groups()
    assert len(client.describe_cache_security_groups()["CacheSecurityGroups"]) == 1

    set_classic_enabled(ACCOUNT, "us-west-2", enabled=True)
    assert west.describe_cache_security_groups()["CacheSecurityGroups"] == []


def test_reset_restores_classic(aws: Any, client: ElastiCacheClient) -> None:
    set_classic_enabled(ACCOUNT, REGION, enabled=False)

    aws.reset()

    assert client.describe_cache_security_groups()["CacheSecurityGroups"] == []


# --- isolation and reset --------------------------------------------------------------------


def test_state_is_per_account_and_region(client: ElastiCacheClient) -> None:
    other_account = "222222222222"
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{other_account}:role/cache-admin", RoleSessionName="isolation"
    )["Credentials"]
    other_account_client = boto3.client(
        "elasticache",
        region_name=REGION,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    other_region_client = boto3.client("elasticache", region_name="eu-west-1")

    client.create_cache_security_group(CacheSecurityGroupName="orders", Description="here")
    assert other_account_client.describe_cache_security_groups()["CacheSecurityGroups"] == []
    assert other_region_client.describe_cache_security_groups()["CacheSecurityGroups"] == []

    # The same name is free elsewhere, and each group names its own owner and region.
    assert other_account_client.create_cache_security_group(
        CacheSecurityGroupName="orders", Description="there"
    )["CacheSecurityGroup"] == _group("orders", "there", account=other_account)
    assert other_region_client.create_cache_security_group(
        CacheSecurityGroupName="orders", Description="there"
    )["CacheSecurityGroup"] == _group("orders", "there", region="eu-west-1")
    assert client.describe_cache_security_groups()["CacheSecurityGroups"] == [
        _group("orders", "here")
    ]


def test_mock_reset_clears_state(aws: Any, client: ElastiCacheClient) -> None:
    _seed(client)

    aws.reset()

    assert client.describe_cache_security_groups()["CacheSecurityGroups"] == []
    created = client.create_cache_security_group(CacheSecurityGroupName="orders", Description="d")
    assert created["CacheSecurityGroup"] == _group("orders", "d")


def test_install_is_idempotent(aws: Any) -> None:
    install()
    install()

    created = boto3.client("elasticache", region_name=REGION).create_cache_security_group(
        CacheSecurityGroupName="orders", Description="d"
    )
    assert created["CacheSecurityGroup"]["CacheSecurityGroupName"] == "orders"


# --- moto server ----------------------------------------------------------------------------


@pytest.fixture
def server_endpoint(aws: MotoWorld) -> Iterator[str]:
    """A moto server in this process: it serves the same (emptied) state as the module's
    in-process moto, and its reset at the end empties it again."""
    install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        _post(f"{endpoint}/moto-api/reset", {})
        server.stop()


def _post(url: str, form: dict[str, str]) -> tuple[int, bytes]:
    """POST a form signed with SigV4 for ElastiCache: the credential scope routes it."""
    body = urllib.parse.urlencode(form).encode()
    signed = AWSRequest(method="POST", url=url, data=body)
    signed.headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
    SigV4Auth(Credentials("testing", "testing"), "elasticache", REGION).add_auth(signed)
    request = urllib.request.Request(  # noqa: S310 - a local moto server on 127.0.0.1
        url, data=body, headers=dict(signed.headers.items()), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - as above
            return response.status, response.read()
    except HTTPError as error:
        return error.code, error.read()


def test_moto_server_round_trip_and_reset(server_endpoint: str) -> None:
    client = boto3.client("elasticache", region_name=REGION, endpoint_url=server_endpoint)
    client.create_cache_security_group(CacheSecurityGroupName="orders", Description="d")
    authorized = client.authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders", EC2SecurityGroupName="app", EC2SecurityGroupOwnerId=ACCOUNT
    )
    assert authorized["CacheSecurityGroup"] == _group("orders", "d", ingress=(("app", ACCOUNT),))
    with pytest.raises(client.exceptions.AuthorizationNotFoundFault) as raised:
        client.revoke_cache_security_group_ingress(
            CacheSecurityGroupName="orders",
            EC2SecurityGroupName="app",
            EC2SecurityGroupOwnerId=APP_ACCOUNT,
        )
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    status, _ = _post(f"{server_endpoint}/moto-api/reset", {})

    assert status == 200
    assert client.describe_cache_security_groups()["CacheSecurityGroups"] == []


def test_moto_server_answers_in_the_service_xml_shapes(server_endpoint: str) -> None:
    def call(action: str, **parameters: str) -> tuple[int, ET.Element]:
        status, body = _post(
            server_endpoint, {"Action": action, "Version": "2015-02-02", **parameters}
        )
        return status, ET.fromstring(body)  # noqa: S314 - the local moto server's own output

    call("CreateCacheSecurityGroup", CacheSecurityGroupName="orders", Description="d")
    ingress = {"CacheSecurityGroupName": "orders", "EC2SecurityGroupName": "app"}

    status, success = call(
        "AuthorizeCacheSecurityGroupIngress", **ingress, EC2SecurityGroupOwnerId=ACCOUNT
    )

    assert status == 200
    assert success.tag == f"{NAMESPACE}AuthorizeCacheSecurityGroupIngressResponse"
    group = success.find(
        f"{NAMESPACE}AuthorizeCacheSecurityGroupIngressResult/{NAMESPACE}CacheSecurityGroup"
    )
    assert group is not None
    assert group.findtext(f"{NAMESPACE}CacheSecurityGroupName") == "orders"
    assert group.findtext(f"{NAMESPACE}ARN") == _arn("orders")
    members = group.findall(f"{NAMESPACE}EC2SecurityGroups/{NAMESPACE}EC2SecurityGroup")
    assert [
        {child.tag.removeprefix(NAMESPACE): child.text for child in member} for member in members
    ] == [
        {"Status": "authorized", "EC2SecurityGroupName": "app", "EC2SecurityGroupOwnerId": ACCOUNT}
    ]
    assert success.findtext(f"{NAMESPACE}ResponseMetadata/{NAMESPACE}RequestId")

    status, failure = call(
        "AuthorizeCacheSecurityGroupIngress", **ingress, EC2SecurityGroupOwnerId=ACCOUNT
    )

    assert status == 400
    assert failure.tag == f"{NAMESPACE}ErrorResponse"
    assert failure.findtext(f"{NAMESPACE}Error/{NAMESPACE}Code") == "AuthorizationAlreadyExists"
    assert failure.findtext(f"{NAMESPACE}Error/{NAMESPACE}Type") == "Sender"
    assert failure.findtext(f"{NAMESPACE}RequestId")
