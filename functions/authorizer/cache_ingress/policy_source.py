"""Where the policy comes from: the bundled file, or an SSM parameter (cached by Powertools).

Parsed policies are cached by their text, so a warm function neither re-reads the file nor
re-parses an unchanged parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error
from cache_ingress.errors import PolicyError
from cache_ingress.policy import Policy, parse_policy

_PERMANENT_SSM_CODES = frozenset({"ParameterNotFound", "ParameterVersionNotFound"})


class PolicySource:
    """Loads the policy for each event; raises PolicyError (permanent) or AwsCallError."""

    def __init__(
        self,
        *,
        tag_key: str,
        policy_file: Path,
        parameter: str | None = None,
        max_age_seconds: int = 300,
        ssm_client: Callable[[], Any] | None = None,
    ) -> None:
        self._tag_key = tag_key
        self._policy_file = policy_file
        self._parameter = parameter
        self._max_age_seconds = max_age_seconds
        self._ssm_client = ssm_client
        self._provider: Any = None
        self._parsed: tuple[str, Policy] | None = None

    @property
    def description(self) -> str:
        return f"ssm:{self._parameter}" if self._parameter else str(self._policy_file)

    def current(self) -> Policy:
        text = self._read_parameter() if self._parameter else self._read_file()
        if self._parsed is not None and self._parsed[0] == text:
            return self._parsed[1]
        policy = parse_policy(text, source=self.description, expected_tag_key=self._tag_key)
        self._parsed = (text, policy)
        return policy

    def _read_file(self) -> str:
        if self._parsed is not None:
            return self._parsed[0]
        try:
            return self._policy_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"policy {self._policy_file}: cannot be read: {exc}") from exc

    def _read_parameter(self) -> str:
        # Imported here: the bundled-policy path never pays for the Parameters utility.
        from aws_lambda_powertools.utilities.parameters import SSMProvider  # noqa: PLC0415
        from aws_lambda_powertools.utilities.parameters.exceptions import (  # noqa: PLC0415
            GetParameterError,
        )

        if self._provider is None:
            client = self._ssm_client() if self._ssm_client is not None else None
            self._provider = SSMProvider(boto3_client=client)
        try:
            value = self._provider.get(self._parameter, max_age=self._max_age_seconds)
        except GetParameterError as exc:
            cause = exc.__cause__ or exc.__context__
            if not isinstance(cause, ClientError | BotoCoreError):
                raise PolicyError(f"policy {self.description}: cannot be read: {exc}") from exc
            error = aws_call_error(cause, "ssm:GetParameter")
            if error.code in _PERMANENT_SSM_CODES or not error.transient:
                raise PolicyError(f"policy {self.description}: cannot be read: {error}") from exc
            raise error from exc
        if not isinstance(value, str):
            raise PolicyError(f"policy {self.description}: parameter value is not text")
        return value
