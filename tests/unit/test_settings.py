from __future__ import annotations

import pytest

from cache_ingress.errors import SettingsError
from cache_ingress.settings import BUNDLED_POLICY, Settings

pytestmark = pytest.mark.unit

BASE = {
    "ACCOUNT_ID": "123456789012",
    "AWS_REGION": "us-east-1",
    "IDEMPOTENCY_TABLE": "table",
    "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
}


def test_defaults() -> None:
    settings = Settings.from_environ(BASE)
    assert settings.policy_file == BUNDLED_POLICY
    assert settings.policy_parameter is None
    assert settings.dry_run is False
    assert settings.tag_key == "cache-ingress"
    assert settings.policy_max_age_seconds == 300


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"ACCOUNT_ID": ""}, "ACCOUNT_ID is required"),
        ({"ACCOUNT_ID": "AKIAEXAMPLE"}, "ACCOUNT_ID must be a 12-digit AWS account id"),
        ({"AWS_REGION": "moon"}, "AWS_REGION must be an AWS region"),
        ({"IDEMPOTENCY_TABLE": " "}, "IDEMPOTENCY_TABLE is required"),
        ({"DRY_RUN": "maybe"}, "DRY_RUN must be true or false"),
        ({"POLICY_MAX_AGE_SECONDS": "soon"}, "POLICY_MAX_AGE_SECONDS must be an integer"),
        ({"IDEMPOTENCY_EXPIRY_SECONDS": "5"}, "IDEMPOTENCY_EXPIRY_SECONDS must be at least 60"),
        ({"POLICY_PARAMETER": "policy"}, "POLICY_PARAMETER must be an SSM parameter name"),
    ],
)
def test_bad_variables_are_named(override: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_environ({**BASE, **override})


@pytest.mark.parametrize(
    ("raw", "value"), [("true", True), ("TRUE", True), ("1", True), ("false", False), ("", False)]
)
def test_dry_run_values(raw: str, value: bool) -> None:
    assert Settings.from_environ({**BASE, "DRY_RUN": raw}).dry_run is value
