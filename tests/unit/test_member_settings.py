"""Member accounts in the settings (docs/multi-account.md): none unless the read role is
named; every variable checked, with the variable in the message."""

from __future__ import annotations

import pytest

from cache_ingress.errors import SettingsError
from cache_ingress.settings import Members, Settings

pytestmark = pytest.mark.unit

BASE = {
    "ACCOUNT_ID": "123456789012",
    "AWS_REGION": "us-east-1",
    "IDEMPOTENCY_TABLE": "table",
    "DEAD_LETTER_QUEUE_URL": "https://queue",
}
MEMBERS = {
    "MEMBER_ROLE_NAME": "cache-ingress-read-us-east-1",
    "MEMBER_EXTERNAL_ID": "51af3dc0-da77-11e4-872e-1234567db123",
    "MEMBER_ACCOUNTS": "111122223333, 444455556666,111122223333",
}


def test_a_single_account_deployment_has_no_members_and_serves_its_account_only() -> None:
    # The template's variables, empty as a single-account stack sets them.
    settings = Settings.from_environ(
        {**BASE, "MEMBER_ROLE_NAME": "", "MEMBER_EXTERNAL_ID": "", "MEMBER_ACCOUNTS": ""}
    )

    assert settings.members is None
    assert settings.serves("123456789012")
    assert not settings.serves("111122223333")


def test_listed_members_are_served_and_nobody_else() -> None:
    settings = Settings.from_environ({**BASE, **MEMBERS})

    assert settings.members == Members(
        role_name="cache-ingress-read-us-east-1",
        external_id="51af3dc0-da77-11e4-872e-1234567db123",
        accounts=("111122223333", "444455556666"),
    )
    assert settings.serves("111122223333")
    assert settings.serves("123456789012")
    assert not settings.serves("210987654321")
    assert settings.members.role_arn("111122223333") == (
        "arn:aws:iam::111122223333:role/cache-ingress-read-us-east-1"
    )


def test_an_organization_serves_any_account_id_but_nothing_else() -> None:
    settings = Settings.from_environ(
        {**BASE, **MEMBERS, "MEMBER_ACCOUNTS": "", "MEMBER_ORGANIZATION": "o-a1b2c3d4e5"}
    )

    assert settings.serves("210987654321")
    assert not settings.serves("21098765432")
    assert not settings.serves("AKIAIOSFODNN7EXAMPLE")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MEMBER_EXTERNAL_ID": ""}, "MEMBER_EXTERNAL_ID must be the external id"),
        ({"MEMBER_EXTERNAL_ID": "x"}, "MEMBER_EXTERNAL_ID must be the external id"),
        ({"MEMBER_EXTERNAL_ID": "has space"}, "MEMBER_EXTERNAL_ID must be the external id"),
        ({"MEMBER_ROLE_NAME": "role/with/path"}, "MEMBER_ROLE_NAME must be an IAM role name"),
        ({"MEMBER_ACCOUNTS": "1111222233334"}, "MEMBER_ACCOUNTS must list 12-digit account ids"),
        ({"MEMBER_ACCOUNTS": "111122223333,abc"}, "got 'abc'"),
        ({"MEMBER_ACCOUNTS": ""}, "neither MEMBER_ACCOUNTS nor MEMBER_ORGANIZATION"),
        ({"MEMBER_ORGANIZATION": "org-1"}, "MEMBER_ORGANIZATION must be an organization id"),
    ],
)
def test_a_bad_member_variable_is_named(change: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_environ({**BASE, **MEMBERS, **change})
