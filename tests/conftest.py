"""Shared fixtures: an AWS environment that can only ever reach moto."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cache_ingress.settings import current_settings
from cache_ingress.wiring import current_authorizer


@pytest.fixture(autouse=True)
def offline_aws_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_SESSION_TOKEN",
        "POLICY_PARAMETER",
        "POLICY_FILE",
        "DRY_RUN",
        "POWERTOOLS_IDEMPOTENCY_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "cache-ingress")
    current_settings.cache_clear()
    current_authorizer.cache_clear()
    yield
    current_settings.cache_clear()
    current_authorizer.cache_clear()
