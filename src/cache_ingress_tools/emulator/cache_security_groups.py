"""ElastiCache cache-security-group operations for moto, answered through botocore's model.

moto 5.2 implements none of CreateCacheSecurityGroup, DescribeCacheSecurityGroups,
AuthorizeCacheSecurityGroupIngress, RevokeCacheSecurityGroupIngress and
DeleteCacheSecurityGroup. :func:`install` adds them to moto's ``ElastiCacheResponse``, which
dispatches query actions by their snake-case name. The handlers return moto ``ActionResult``
values and raise moto ``ServiceException`` values, so moto's serializer renders the
service's own XML shapes and looks up each fault's HTTP status in the model: a client under
test goes through real botocore serialization and parsing, as it would against AWS.

State lives on moto's ``ElastiCacheBackend`` instance for each (account, region), so
``mock_aws`` teardown and the moto server's ``/moto-api/reset`` clear it, together with the
EC2-Classic switch (:func:`set_classic_enabled`), which returns to its default (enabled).

Choices where AWS documents nothing (inferred, not observed):

- ingress settles at once: authorize answers ``Status: authorized`` and revoke removes the
  pair, because nothing here is asynchronous;
- no ``default`` group is pre-created; the name is reserved (create and delete refuse it);
- messages other than the EC2-Classic one are modelled on AWS's wording, not copied from it.

This module imports moto: the Lambda's import path must never reach it.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, EmptyResult
from moto.elasticache.models import ElastiCacheBackend, elasticache_backends
from moto.elasticache.responses import ElastiCacheResponse
from moto.utilities.utils import get_partition

from cache_ingress_tools.emulator import (
    accounts,
    atomic_writes,
    cloudtrail_history,
    event_buses,
    security_group_paging,
    vpc_caches,
)

__all__ = [
    "CACHE_SECURITY_GROUP_QUOTA",
    "CLASSIC_NOT_PERMITTED_MESSAGE",
    "EMULATED_FAULTS",
    "FAULTS_NOT_EMULATED",
    "install",
    "set_classic_enabled",
]

CACHE_SECURITY_GROUP_QUOTA: Final = 50
"""Cache security groups per account and region before QuotaExceeded.CacheSecurityGroup."""

CLASSIC_NOT_PERMITTED_MESSAGE: Final = (
    "Use of cache security groups is not permitted in this API version for your account."
)

_TAG_QUOTA_PER_RESOURCE: Final = 50
_MAX_NAME_LENGTH: Final = 255
_MAX_RECORDS_MIN: Final = 20
_MAX_RECORDS_MAX: Final = 100
_RESERVED_NAME: Final = "default"
_ACCOUNT_NUMBER = re.compile(r"\d{12}")
_MARKER_PREFIX: Final = "cache-security-group:"
_STATE_ATTRIBUTE: Final = "_cache_ingress_cache_security_groups"
# The moto server answers requests on several threads; state changes hold this lock.
_LOCK = threading.RLock()

_CREATE: Final = "CreateCacheSecurityGroup"
_DESCRIBE: Final = "DescribeCacheSecurityGroups"
_AUTHORIZE: Final = "AuthorizeCacheSecurityGroupIngress"
_REVOKE: Final = "RevokeCacheSecurityGroupIngress"
_DELETE: Final = "DeleteCacheSecurityGroup"


# --- faults -----------------------------------------------------------------------------


class CacheSecurityGroupFault(ServiceException):
    """A fault of the model; moto finds the error shape (and the HTTP status) by ``code``.

    ``shape`` and ``http_status`` restate the model so the tests can catch a botocore
    release that changes it; the serializer itself reads the status from the model.
    """

    shape: ClassVar[str]
    http_status: ClassVar[int]

    def __init__(self, message: str) -> None:
        super().__init__(message)


class CacheSecurityGroupNotFound(CacheSecurityGroupFault):
    shape = "CacheSecurityGroupNotFoundFault"
    code = "CacheSecurityGroupNotFound"
    http_status = 404


class CacheSecurityGroupAlreadyExists(CacheSecurityGroupFault):
    shape = "CacheSecurityGroupAlreadyExistsFault"
    code = "CacheSecurityGroupAlreadyExists"
    http_status = 400


class CacheSecurityGroupQuotaExceeded(CacheSecurityGroupFault):
    shape = "CacheSecurityGroupQuotaExceededFault"
    code = "QuotaExceeded.CacheSecurityGroup"
    http_status = 400


class InvalidCacheSecurityGroupState(CacheSecurityGroupFault):
    shape = "InvalidCacheSecurityGroupStateFault"
    code = "InvalidCacheSecurityGroupState"
    http_status = 400


class AuthorizationAlreadyExists(CacheSecurityGroupFault):
    shape = "AuthorizationAlreadyExistsFault"
    code = "AuthorizationAlreadyExists"
    http_status = 400


class AuthorizationNotFound(CacheSecurityGroupFault):
    shape = "AuthorizationNotFoundFault"
    code = "AuthorizationNotFound"
    http_status = 404


class TagQuotaPerResourceExceeded(CacheSecurityGroupFault):
    shape = "TagQuotaPerResourceExceeded"
    code = "TagQuotaPerResourceExceeded"
    http_status = 400


class InvalidParameterValue(CacheSecurityGroupFault):
    shape = "InvalidParameterValueException"
    code = "InvalidParameterValue"
    http_status = 400


class InvalidParameterCombination(CacheSecurityGroupFault):
    shape = "InvalidParameterCombinationException"
    code = "InvalidParameterCombination"
    http_status = 400


EMULATED_FAULTS: Final[Mapping[str, tuple[type[CacheSecurityGroupFault], ...]]] = {
    _CREATE: (
        CacheSecurityGroupAlreadyExists,
        CacheSecurityGroupQuotaExceeded,
        TagQuotaPerResourceExceeded,
        InvalidParameterValue,
    ),
    _DESCRIBE: (CacheSecurityGroupNotFound, InvalidParameterValue),
    _AUTHORIZE: (
        CacheSecurityGroupNotFound,
        AuthorizationAlreadyExists,
        InvalidParameterValue,
        InvalidParameterCombination,
    ),
    _REVOKE: (
        CacheSecurityGroupNotFound,
        AuthorizationNotFound,
        InvalidParameterValue,
        InvalidParameterCombination,
    ),
    _DELETE: (CacheSecurityGroupNotFound, InvalidCacheSecurityGroupState, InvalidParameterValue),
}
"""Per operation, the modeled faults this emulation can answer with."""

_SETTLED = "ingress settles at once, so a group is never in a transient state"
_NO_COMBINATION = "no combination of this operation's parameters is invalid"

FAULTS_NOT_EMULATED: Final[Mapping[str, Mapping[str, str]]] = {
    _CREATE: {"InvalidParameterCombinationException": _NO_COMBINATION},
    _DESCRIBE: {"InvalidParameterCombinationException": _NO_COMBINATION},
    _AUTHORIZE: {"InvalidCacheSecurityGroupStateFault": _SETTLED},
    _REVOKE: {"InvalidCacheSecurityGroupStateFault": _SETTLED},
    _DELETE: {"InvalidParameterCombinationException": _NO_COMBINATION},
}
"""Per operation, modeled faults (by shape name) this emulation never produces, and why."""


# --- state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ingress:
    ec2_security_group_name: str
    ec2_security_group_owner_id: str


@dataclass
class _CacheSecurityGroup:
    owner_id: str
    name: str
    description: str
    arn: str
    ingress: list[_Ingress] = field(default_factory=list)

    def to_response(self) -> dict[str, Any]:
        return {
            "OwnerId": self.owner_id,
            "CacheSecurityGroupName": self.name,
            "Description": self.description,
            # The model documents Status without an enum. RDS reports "authorizing" and then
            # "authorized"; nothing is asynchronous here, so an authorization is settled.
            "EC2SecurityGroups": [
                {
                    "Status": "authorized",
                    "EC2SecurityGroupName": pair.ec2_security_group_name,
                    "EC2SecurityGroupOwnerId": pair.ec2_security_group_owner_id,
                }
                for pair in self.ingress
            ],
            "ARN": self.arn,
        }


@dataclass
class _RegionState:
    groups: dict[str, _CacheSecurityGroup] = field(default_factory=dict)
    classic_enabled: bool = True


def _state_of(backend: ElastiCacheBackend) -> _RegionState:
    # Hung on moto's backend so that moto's reset (which empties the backend's __dict__)
    # clears it too.
    with _LOCK:
        state = getattr(backend, _STATE_ATTRIBUTE, None)
        if not isinstance(state, _RegionState):
            state = _RegionState()
            setattr(backend, _STATE_ATTRIBUTE, state)
        return state


def set_classic_enabled(account_id: str, region: str, enabled: bool) -> None:
    """Emulate an account with (default) or without EC2-Classic in one region.

    Without it every cache-security-group operation fails with InvalidParameterValue, as
    AWS answers on current accounts. A moto reset restores the default.
    """
    backend: ElastiCacheBackend = elasticache_backends[account_id][region]
    _state_of(backend).classic_enabled = enabled


# --- request handling -------------------------------------------------------------------


def _region_state(response: ElastiCacheResponse) -> _RegionState:
    state = _state_of(response.elasticache_backend)
    if not state.classic_enabled:
        raise InvalidParameterValue(CLASSIC_NOT_PERMITTED_MESSAGE)
    return state


def _text_param(response: ElastiCacheResponse, name: str) -> str | None:
    value = response._get_param(name)
    return None if value is None else str(value)


def _required_name(response: ElastiCacheResponse, parameter: str) -> str:
    value = _text_param(response, parameter)
    if value is None or not value.strip():
        raise InvalidParameterValue(
            f"The parameter {parameter} must be provided and must not be blank."
        )
    if len(value) > _MAX_NAME_LENGTH:
        raise InvalidParameterValue(
            f"The parameter {parameter} must be at most {_MAX_NAME_LENGTH} characters long."
        )
    return value


def _group_name(response: ElastiCacheResponse) -> str:
    # AWS stores the name lower-case, so lookups ignore case.
    return _required_name(response, "CacheSecurityGroupName").lower()


def _existing_group(state: _RegionState, name: str) -> _CacheSecurityGroup:
    group = state.groups.get(name)
    if group is None:
        raise CacheSecurityGroupNotFound(f"CacheSecurityGroup {name} not found.")
    return group


def _ingress_pair(response: ElastiCacheResponse) -> _Ingress:
    name = _text_param(response, "EC2SecurityGroupName")
    owner = _text_param(response, "EC2SecurityGroupOwnerId")
    if (name is None) != (owner is None):
        raise InvalidParameterCombination(
            "EC2SecurityGroupName and EC2SecurityGroupOwnerId must be specified together."
        )
    name = _required_name(response, "EC2SecurityGroupName")
    owner = _required_name(response, "EC2SecurityGroupOwnerId")
    if not _ACCOUNT_NUMBER.fullmatch(owner):
        raise InvalidParameterValue(
            f"Invalid EC2SecurityGroupOwnerId: {owner}. "
            "It must be a 12-digit AWS account number, not an access key ID."
        )
    return _Ingress(ec2_security_group_name=name, ec2_security_group_owner_id=owner)


def _create_cache_security_group(self: ElastiCacheResponse) -> ActionResult:
    state = _region_state(self)
    name = _group_name(self)
    description = _text_param(self, "Description")
    if description is None:
        raise InvalidParameterValue("The parameter Description must be provided.")
    if name == _RESERVED_NAME:
        raise InvalidParameterValue("CacheSecurityGroupName cannot be the word Default.")
    tags = self._get_param("Tags", [])
    if len(tags) > _TAG_QUOTA_PER_RESOURCE:
        raise TagQuotaPerResourceExceeded(
            f"The request would exceed the limit of {_TAG_QUOTA_PER_RESOURCE} tags per resource."
        )
    account_id, region = self.current_account, self.region
    with _LOCK:
        if name in state.groups:
            raise CacheSecurityGroupAlreadyExists(f"CacheSecurityGroup {name} already exists.")
        if len(state.groups) >= CACHE_SECURITY_GROUP_QUOTA:
            raise CacheSecurityGroupQuotaExceeded(
                f"Quota of {CACHE_SECURITY_GROUP_QUOTA} cache security groups exceeded."
            )
        group = _CacheSecurityGroup(
            owner_id=account_id,
            name=name,
            description=description,
            arn=f"arn:{get_partition(region)}:elasticache:{region}:{account_id}"
            f":securitygroup:{name}",
        )
        state.groups[name] = group
        return ActionResult({"CacheSecurityGroup": group.to_response()})


def _encode_marker(last_name: str) -> str:
    return base64.urlsafe_b64encode(f"{_MARKER_PREFIX}{last_name}".encode()).decode()


def _decode_marker(marker: str) -> str:
    """The name of the last group a previous page returned."""
    try:
        decoded = base64.b64decode(marker, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise InvalidParameterValue(f"Invalid marker: {marker}") from error
    if not decoded.startswith(_MARKER_PREFIX):
        raise InvalidParameterValue(f"Invalid marker: {marker}")
    return decoded.removeprefix(_MARKER_PREFIX)


def _max_records(response: ElastiCacheResponse) -> int:
    value = response._get_param("MaxRecords")
    if value is None:
        return _MAX_RECORDS_MAX
    try:
        max_records = int(value)
    except (TypeError, ValueError) as error:
        raise InvalidParameterValue(f"Invalid value for MaxRecords: {value}") from error
    if not _MAX_RECORDS_MIN <= max_records <= _MAX_RECORDS_MAX:
        raise InvalidParameterValue(
            f"Invalid value for MaxRecords: {max_records}. "
            f"It must be between {_MAX_RECORDS_MIN} and {_MAX_RECORDS_MAX}."
        )
    return max_records


def _describe_cache_security_groups(self: ElastiCacheResponse) -> ActionResult:
    state = _region_state(self)
    max_records = _max_records(self)
    marker = _text_param(self, "Marker")
    with _LOCK:
        if _text_param(self, "CacheSecurityGroupName") is not None:
            matching = [_existing_group(state, _group_name(self))]
        else:
            matching = [state.groups[name] for name in sorted(state.groups)]
        # The marker names the last group already returned, so a page boundary survives
        # groups being created or deleted between requests.
        if marker:
            after = _decode_marker(marker)
            matching = [group for group in matching if group.name > after]
        page = matching[:max_records]
        result: dict[str, Any] = {"CacheSecurityGroups": [group.to_response() for group in page]}
    if len(matching) > max_records:
        result["Marker"] = _encode_marker(page[-1].name)
    return ActionResult(result)


def _authorize_cache_security_group_ingress(self: ElastiCacheResponse) -> ActionResult:
    state = _region_state(self)
    name = _group_name(self)
    pair = _ingress_pair(self)
    with _LOCK:
        group = _existing_group(state, name)
        if pair in group.ingress:
            raise AuthorizationAlreadyExists(
                f"EC2 security group {pair.ec2_security_group_name} owned by "
                f"{pair.ec2_security_group_owner_id} is already authorized for "
                f"CacheSecurityGroup {name}."
            )
        group.ingress.append(pair)
        return ActionResult({"CacheSecurityGroup": group.to_response()})


def _revoke_cache_security_group_ingress(self: ElastiCacheResponse) -> ActionResult:
    state = _region_state(self)
    name = _group_name(self)
    pair = _ingress_pair(self)
    with _LOCK:
        group = _existing_group(state, name)
        if pair not in group.ingress:
            raise AuthorizationNotFound(
                f"EC2 security group {pair.ec2_security_group_name} owned by "
                f"{pair.ec2_security_group_owner_id} is not authorized for "
                f"CacheSecurityGroup {name}."
            )
        group.ingress.remove(pair)
        return ActionResult({"CacheSecurityGroup": group.to_response()})


def _users_of(backend: ElastiCacheBackend, name: str) -> list[str]:
    """Ids of moto's clusters and replication groups created with this cache security group."""
    holders: list[Any] = [*backend.cache_clusters.values(), *backend.replication_groups.values()]
    users: list[str] = []
    for holder in holders:
        names = getattr(holder, "cache_security_group_names", None) or []
        if name in (str(member).lower() for member in names):
            identifier = getattr(holder, "cache_cluster_id", None) or getattr(
                holder, "replication_group_id", "?"
            )
            users.append(str(identifier))
    return users


def _delete_cache_security_group(self: ElastiCacheResponse) -> ActionResult:
    state = _region_state(self)
    name = _group_name(self)
    if name == _RESERVED_NAME:
        raise InvalidParameterValue("The default cache security group cannot be deleted.")
    with _LOCK:
        _existing_group(state, name)
        users = _users_of(self.elasticache_backend, name)
        if users:
            raise InvalidCacheSecurityGroupState(
                f"CacheSecurityGroup {name} is in use by {', '.join(sorted(users))}."
            )
        del state.groups[name]
    return EmptyResult()


_HANDLERS: Final[Mapping[str, Callable[[ElastiCacheResponse], ActionResult]]] = {
    "create_cache_security_group": _create_cache_security_group,
    "describe_cache_security_groups": _describe_cache_security_groups,
    "authorize_cache_security_group_ingress": _authorize_cache_security_group_ingress,
    "revoke_cache_security_group_ingress": _revoke_cache_security_group_ingress,
    "delete_cache_security_group": _delete_cache_security_group,
}


def install() -> None:
    """Add the five operations to moto's ElastiCache responder; calling it again is harmless.

    It installs the rest of the emulation too, so that every embedded AWS, the server's and
    the tests', is the same emulation: the VPC-cache gaps (:func:`vpc_caches.install`),
    atomic conditional writes (:func:`atomic_writes.install`), DescribeSecurityGroups
    paging (:func:`security_group_paging.install`), CloudTrail's event history of the
    tagging calls (:func:`cloudtrail_history.install`), several accounts (STS trust and
    cross-account group references, :func:`accounts.install`) and EventBridge across
    accounts (:func:`event_buses.install`).

    Call it before ``mock_aws()`` starts or a ``ThreadedMotoServer`` serves in this process.
    Raises ``RuntimeError`` if moto has gained its own implementation of one of them, so
    that the two are never mixed silently.
    """
    vpc_caches.install()
    atomic_writes.install()
    security_group_paging.install()
    cloudtrail_history.install()
    accounts.install()
    event_buses.install()
    with _LOCK:
        for method_name, handler in _HANDLERS.items():
            present = ElastiCacheResponse.__dict__.get(method_name)
            if present is handler:
                continue
            if present is not None:
                raise RuntimeError(
                    f"moto's ElastiCacheResponse already implements {method_name}; "
                    "retire this emulation for that operation"
                )
            setattr(ElastiCacheResponse, method_name, handler)
