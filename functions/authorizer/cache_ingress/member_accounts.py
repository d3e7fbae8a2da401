"""STS adapter: a member account's read role, assumed with the external id, and the clients
that act in that account with its credentials.

A group of a member account is decided only on facts read from that account through its
own read role (docs/multi-account.md). The role has the same name in every member account
(`Members.role_name`); the credentials are kept for the rest of their hour, so a warm
function assumes each member's role about once an hour, and the sweep once per account per
run (its `assume_role_budget`).

Faults are classified like every other AWS call (`aws.aws_call_error`): throttling, STS
service faults and timeouts are transient (the event is retried); AccessDenied (no such
role, or a trust that does not admit this function or this external id) and STS disabled in
the region are permanent, with a message that says which member and what to check.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.errors import AwsCallError

if TYPE_CHECKING:
    from cache_ingress.aws import Clients
    from cache_ingress.settings import Members

ACTION = "sts:AssumeRole"


class AssumedCredentials(NamedTuple):
    """Temporary credentials of a member's read role (STS AssumeRole), and the account STS
    says the role belongs to."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    account: str
    expires_at: float  # epoch seconds


# An hour: the most a role allows by default (member.yaml's MaxSessionDuration).
SESSION_SECONDS = 3600
# Credentials this close to their end are renewed before use: an invocation never starts
# with credentials that may expire while it runs (the sweep runs up to 15 minutes).
RENEW_BEFORE_SECONDS = 16 * 60
_ASSUMED_ROLE_ARN = re.compile(r"arn:[^:]+:sts::(?P<account>[0-9]{12}):assumed-role/.+")
# AccessDenied is the answer both when the role does not exist and when its trust refuses.
_PERMANENT_HINTS = {
    "AccessDenied": (
        "the member stack (member.yaml) is not deployed in that account and region, or its "
        "CacheFunctionRoleArns or ExternalId do not match this stack's outputs"
    ),
    "RegionDisabledException": "STS is not activated for this region in that account",
}


class MemberAccounts:
    """Assumes each member's read role when first needed and keeps its credentials.

    `sts` gives the function's own STS client; `clients` makes clients with the assumed
    credentials. Thread-safe: the sweep and the operator's tools may share one.
    """

    def __init__(
        self,
        members: Members,
        clients: Clients,
        *,
        session_name: str,
        partition: str = "aws",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._members = members
        self._clients = clients
        self._session_name = session_name
        self._partition = partition
        self._clock = clock
        self._lock = threading.Lock()
        self._credentials: dict[str, AssumedCredentials] = {}
        self._account_clients: dict[tuple[str, str], tuple[AssumedCredentials, Any]] = {}
        self.assumed = 0  # AssumeRole calls made, for the sweep's budget and the benchmark

    @property
    def members(self) -> Members:
        return self._members

    def role_arn(self, account: str) -> str:
        return self._members.role_arn(account, self._partition)

    def client(self, account: str, service: str) -> Any:
        """A client of `service` acting in `account` through its read role; raises
        AwsCallError (transient or permanent) when the role cannot be assumed."""
        credentials = self.credentials(account)
        with self._lock:
            cached = self._account_clients.get((account, service))
            if cached is not None and cached[0] is credentials:
                return cached[1]
        client = self._clients.assumed(service, credentials)
        with self._lock:
            self._account_clients[(account, service)] = (credentials, client)
        return client

    def credentials(self, account: str) -> AssumedCredentials:
        with self._lock:
            known = self._credentials.get(account)
        if known is not None and known.expires_at - self._clock() > RENEW_BEFORE_SECONDS:
            return known
        credentials = self._assume(account)
        with self._lock:
            self._credentials[account] = credentials
        return credentials

    def forget(self, account: str) -> None:
        """Drop an account's credentials (they were refused): the next use assumes again."""
        with self._lock:
            self._credentials.pop(account, None)
            for key in [key for key in self._account_clients if key[0] == account]:
                del self._account_clients[key]

    def _assume(self, account: str) -> AssumedCredentials:
        role_arn = self.role_arn(account)
        with self._lock:
            self.assumed += 1
        try:
            response = self._clients.get("sts").assume_role(
                RoleArn=role_arn,
                RoleSessionName=self._session_name,
                ExternalId=self._members.external_id,
                DurationSeconds=SESSION_SECONDS,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _assume_error(exc, account, role_arn) from exc
        return _credentials(response, role_arn)


def _assume_error(exc: Exception, account: str, role_arn: str) -> AwsCallError:
    error = aws_call_error(exc, f"{ACTION} {role_arn}")
    hint = _PERMANENT_HINTS.get(error.code)
    if error.transient or hint is None:
        return AwsCallError(
            f"the read role of member account {account} could not be assumed: {error}",
            code=error.code,
            transient=error.transient,
        )
    return AwsCallError(
        f"the read role of member account {account} could not be assumed ({error}): {hint}",
        code=error.code,
        transient=False,
    )


def _credentials(response: Any, role_arn: str) -> AssumedCredentials:
    """The credentials, and the account STS says they act in. Facts read with them carry
    that account, and a group is decided only if it is the event's (rule account-agreement
    in the README), so credentials of another account never stand in for the member's.
    """
    try:
        raw = response["Credentials"]
        assumed_arn = str(response["AssumedRoleUser"]["Arn"])
        expiration = raw["Expiration"]
        expires_at = (
            expiration.timestamp() if hasattr(expiration, "timestamp") else float(expiration)
        )
        credentials = AssumedCredentials(
            access_key_id=str(raw["AccessKeyId"]),
            secret_access_key=str(raw["SecretAccessKey"]),
            session_token=str(raw["SessionToken"]),
            account=_account_of(assumed_arn),
            expires_at=expires_at,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AwsCallError(
            f"{ACTION} {role_arn} answered without usable credentials ({exc!r})",
            code="MalformedCredentials",
            transient=False,
        ) from exc
    return credentials


def _account_of(assumed_role_arn: str) -> str:
    match = _ASSUMED_ROLE_ARN.fullmatch(assumed_role_arn)
    if match is None:
        raise ValueError(f"not an assumed-role ARN: {assumed_role_arn[:200]!r}")
    return match["account"]
