"""boto3 clients, created once per execution environment and lazily; tests inject their own.

Also the one place that turns botocore errors into the project's AwsCallError, so every
adapter classifies faults the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from cache_ingress.errors import AwsCallError

if TYPE_CHECKING:
    from botocore.client import BaseClient

    from cache_ingress.member_accounts import AssumedCredentials

# Bounded so that a hung dependency becomes a transient failure well inside the timeout.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=3,
    read_timeout=10,
)

# CloudTrail's LookupEvents allows 2 requests a second per account and region: back off
# adaptively and try longer, so a replay of many gated events is slowed down, not failed.
CLOUDTRAIL_CONFIG = CLIENT_CONFIG.merge(
    Config(retries={"mode": "adaptive", "total_max_attempts": 6})
)
_SERVICE_CONFIG = {"cloudtrail": CLOUDTRAIL_CONFIG}

_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServerErrorException",
        "InvalidCacheSecurityGroupState",
        "TransactionConflict",
    }
)
_TRANSPORT_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


# How a client is made for a service, given the function's configuration for it; and how a
# client is made with a member account's assumed credentials.
ClientFactory = Callable[[str, Config], Any]
AssumedClientFactory = Callable[[str, Config, "AssumedCredentials"], Any]


def assumed_client(
    service: str, config: Config, credentials: AssumedCredentials, *, region: str | None = None
) -> Any:
    """A boto3 client acting with `credentials` (AWS_ENDPOINT_URL, if set, applies as to any)."""
    return boto3.client(  # type: ignore[call-overload]
        service,
        region_name=region,
        config=config,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
    )


class Clients:
    """Lazily created clients for one region; `inject` replaces one in tests.

    `factory` makes every client the function asks for (the operator's tools pass theirs,
    so that any service the function uses, now or later, goes to their session and
    endpoint); by default, boto3's default session in `region`. `assumed_factory` makes the
    clients that act in a member account with the credentials of its read role
    (`member_accounts`); by default boto3's, in `region`.
    """

    def __init__(
        self,
        region: str | None = None,
        *,
        factory: ClientFactory | None = None,
        assumed_factory: AssumedClientFactory | None = None,
    ) -> None:
        self._region = region
        self._factory = factory
        self._assumed_factory = assumed_factory
        self._clients: dict[str, BaseClient] = {}

    def get(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            config = _SERVICE_CONFIG.get(service, CLIENT_CONFIG)
            if self._factory is not None:
                client = self._factory(service, config)
            else:
                client = boto3.client(service, region_name=self._region, config=config)  # type: ignore[call-overload]
            self._clients[service] = client
        return client

    def inject(self, service: str, client: BaseClient) -> None:
        self._clients[service] = client

    def assumed(self, service: str, credentials: AssumedCredentials) -> Any:
        """A new client of `service` acting with a member account's credentials."""
        config = _SERVICE_CONFIG.get(service, CLIENT_CONFIG)
        if self._assumed_factory is not None:
            return self._assumed_factory(service, config, credentials)
        return assumed_client(service, config, credentials, region=self._region)


def aws_call_error(exc: Exception, action: str) -> AwsCallError:
    """Classify a botocore failure as transient (retry) or permanent (dead-letter)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        transient = code in _TRANSIENT_CODES or status >= 500
        return AwsCallError(f"{action} failed: {code}: {message}", code=code, transient=transient)
    if isinstance(exc, _TRANSPORT_ERRORS):
        return AwsCallError(f"{action} failed: {exc}", code=type(exc).__name__, transient=True)
    if isinstance(exc, BotoCoreError):
        return AwsCallError(f"{action} failed: {exc}", code=type(exc).__name__, transient=False)
    raise TypeError(f"not a botocore error: {type(exc).__name__}") from exc
