"""Several accounts in the embedded AWS: roles are assumed the way STS decides, and a rule
may name a security group of another account.

moto keys its state by account and answers a request as the account its access key belongs
to (credentials from its STS belong to the role's account), so one moto serves a cache
account and its member accounts at once. Two gaps would make a member account look unlike
AWS to the function, and :func:`install` fills them in moto's own classes:

1. moto's ``AssumeRole`` hands out credentials for any role ARN, existing or not, whoever
   asks. AWS assumes a role only if it exists and its trust policy allows the caller; else
   ``AccessDenied`` (the same answer for both, so the caller learns nothing). In an account
   marked as governed (:func:`govern`: the member accounts a scenario declares; other
   accounts keep moto's leniency, which tests use to act as anyone) the trust policy is
   evaluated: ``Allow`` statements for ``sts:AssumeRole`` whose ``Principal``
   names the caller (its account root, or its exact ARN: for a role session the role's
   ARN) and whose conditions hold, none of the ``Deny`` ones. The condition keys evaluated
   are ``sts:ExternalId``, ``aws:PrincipalArn``, ``aws:PrincipalAccount`` and
   ``aws:PrincipalOrgID`` (the organizations :func:`set_organization` records), with the
   operators ``StringEquals``, ``StringLike``, ``ArnEquals`` and ``ArnLike``; any other key
   or operator refuses, so that an unknown condition never passes by accident.
2. moto looks for the source group of an ingress rule (``UserIdGroupPairs``) in the rule's
   own account, so a pair naming another account's group fails ``InvalidGroup.NotFound``.
   AWS finds it in the account the pair names (``UserId``); so does this.

:func:`function_credentials` gives a function the credentials of its execution role, as
Lambda does (no trust policy is asked: Lambda is the service the role trusts).

State (organizations, governed accounts) lives on moto's STS backend of each account, so a
reset clears it.
This module imports moto: the Lambda's import path must never reach it.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from moto.core.exceptions import AccessDeniedError
from moto.ec2.models.security_groups import SecurityGroupBackend
from moto.iam.exceptions import NotFoundException
from moto.iam.models import iam_backends
from moto.sts.models import sts_backends
from moto.sts.responses import TokenResponse

from cache_ingress_tools.emulator.policies import PARTITION, Caller, refusal

__all__ = [
    "Caller",
    "function_credentials",
    "govern",
    "install",
    "organization_of",
    "set_organization",
    "trust_refusal",
]

_ORGANIZATION_ATTRIBUTE: Final = "_cache_ingress_organization"
_GOVERNED_ATTRIBUTE: Final = "_cache_ingress_governed"
_INSTALLED_MARK: Final = "_cache_ingress_accounts"
_LOCK = threading.Lock()


# --- organizations ------------------------------------------------------------------------


def set_organization(account: str, organization: str | None) -> None:
    """Record the organization `account` belongs to (None: none), for aws:PrincipalOrgID."""
    setattr(sts_backends[account][PARTITION], _ORGANIZATION_ATTRIBUTE, organization)


def govern(account: str) -> None:
    """Roles of `account` are assumed only as STS would allow (until the next reset)."""
    setattr(sts_backends[account][PARTITION], _GOVERNED_ATTRIBUTE, True)


def _governed(account: str) -> bool:
    return bool(getattr(sts_backends[account][PARTITION], _GOVERNED_ATTRIBUTE, False))


def organization_of(account: str) -> str | None:
    value = getattr(sts_backends[account][PARTITION], _ORGANIZATION_ATTRIBUTE, None)
    return value if isinstance(value, str) else None


# --- the trust policy, as STS evaluates it ------------------------------------------------


def trust_refusal(document: str, caller: Caller, external_id: str | None) -> str | None:
    """Why a role's trust policy refuses `caller` (None: it allows)."""
    return refusal(document, "sts:AssumeRole", caller, {"sts:ExternalId": external_id})


def _caller(response: TokenResponse) -> Caller:
    access_key = response.get_access_key()
    account = response.current_account
    sts = sts_backends[account][PARTITION]
    session = sts.get_assumed_role_from_access_key(access_key)
    if session is not None:
        return Caller(session.role_arn, session.account_id, organization_of(account))
    user = iam_backends[account][PARTITION].get_user_from_access_key_id(access_key)
    if user is not None:
        return Caller(user.arn, account, organization_of(account))
    # moto's own identity for credentials it did not issue: its user `moto`, as IAM names it.
    return Caller(default_principal(account), account, organization_of(account))


def default_principal(account: str) -> str:
    """The principal ARN (as IAM conditions see it) of a request with credentials moto did
    not issue, such as the emulator's dummy keys: the operator's, in a local run."""
    return f"arn:{PARTITION}:iam::{account}:user/moto"


def _checked_assume_role(original: Any) -> Any:
    def assume_role(self: TokenResponse) -> Any:
        role_arn = str(self._get_param("RoleArn") or "")
        caller = _caller(self)
        refusal = _refusal(role_arn, caller, self._get_param("ExternalId"))
        if refusal is not None:
            # STS's answer for a role that does not exist and for a trust that refuses, alike.
            raise AccessDeniedError(caller.principal_arn, f"sts:AssumeRole on resource: {role_arn}")
        return original(self)

    setattr(assume_role, _INSTALLED_MARK, True)
    return assume_role


def _refusal(role_arn: str, caller: Caller, external_id: str | None) -> str | None:
    parts = role_arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "iam" or not parts[5].startswith("role/"):
        return "not a role ARN"
    if not _governed(parts[4]):
        return None
    try:
        role = iam_backends[parts[4]][PARTITION].get_role_by_arn(role_arn)
    except NotFoundException:
        return "no such role"
    return trust_refusal(role.assume_role_policy_document, caller, external_id)


# --- a function's own credentials -----------------------------------------------------------


def function_credentials(role_arn: str, session_name: str, region: str) -> dict[str, str]:
    """The credentials Lambda gives a function whose execution role is `role_arn` (the
    role must exist): boto3's variable names, so they go straight into an environment."""
    account = role_arn.split(":")[4]
    iam_backends[account][PARTITION].get_role_by_arn(role_arn)
    session = sts_backends[account][PARTITION].assume_role(
        region_name=region,
        role_session_name=session_name,
        role_arn=role_arn,
        policy="",
        duration=43_200,
        external_id="",
    )
    return {
        "AWS_ACCESS_KEY_ID": session.access_key_id,
        "AWS_SECRET_ACCESS_KEY": session.secret_access_key,
        "AWS_SESSION_TOKEN": session.session_token,
    }


# --- a rule naming another account's group ------------------------------------------------


def _cross_account_source_groups(original: Any) -> Any:
    def add_source_group(
        self: Any, source_groups: list[dict[str, Any]] | None, vpc_id: str | None
    ) -> list[dict[str, Any]]:
        foreign = [
            item
            for item in source_groups or []
            if item.get("UserId") not in (None, self.account_id) and "GroupId" in item
        ]
        own = [item for item in source_groups or [] if item not in foreign]
        checked = original(self, own, vpc_id)
        for item in foreign:
            _require_group(str(item["UserId"]), self.region_name, str(item["GroupId"]))
            item.setdefault("OwnerId", item["UserId"])
        return list(checked) + foreign

    setattr(add_source_group, _INSTALLED_MARK, True)
    return add_source_group


def _require_group(account: str, region: str, group_id: str) -> None:
    from moto.ec2.exceptions import InvalidSecurityGroupNotFoundError  # noqa: PLC0415
    from moto.ec2.models import ec2_backends  # noqa: PLC0415

    backend = ec2_backends[account][region]
    if backend.get_security_group_by_name_or_id(group_id, None) is None:
        raise InvalidSecurityGroupNotFoundError(group_id)


# --- installing -----------------------------------------------------------------------------


def _wrap(owner: type, name: str, wrapper_of: Any) -> None:
    present = owner.__dict__.get(name)
    if present is None:
        raise RuntimeError(f"moto's {owner.__name__} no longer defines {name}; revisit this")
    if getattr(present, _INSTALLED_MARK, False):
        return
    setattr(owner, name, wrapper_of(present))


def install() -> None:
    """Fill both gaps in moto's classes, for the rest of the process; calling it again is
    harmless. Call it before ``mock_aws()`` starts or a moto server serves."""
    with _LOCK:
        _wrap(TokenResponse, "assume_role", _checked_assume_role)
        _wrap(SecurityGroupBackend, "_add_source_group", _cross_account_source_groups)
