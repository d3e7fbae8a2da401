"""The functions' settings: typed objects, built once from the environment.

`Settings` is what every path needs (the event path, the scheduled sweep, the operator's
tools); `ReconcileOptions` is what only the sweep adds. Both parse here, with one set of
rules and one kind of message naming the bad variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

from cache_ingress.errors import SettingsError

BUNDLED_POLICY = Path(__file__).with_name("policy.yaml")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_ROLE_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}")
_ORGANIZATION = re.compile(r"o-[a-z0-9]{10,32}")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}
# DescribeSecurityGroups MaxResults bounds: the sweep's page size.
PAGE_SIZE_MIN, PAGE_SIZE_MAX = 5, 1000


@dataclass(frozen=True, slots=True)
class Settings:
    account_id: str
    region: str
    idempotency_table: str
    dead_letter_queue_url: str
    tag_key: str
    policy_file: Path
    policy_parameter: str | None
    policy_max_age_seconds: int
    idempotency_expiry_seconds: int
    dry_run: bool
    # Member accounts (docs/multi-account.md): none unless the read role's name is set.
    members: Members | None = None

    def serves(self, account: str) -> bool:
        """Whether an event of `account` is this function's to decide: its own account, or a
        member account (listed, or any account of the organization when one is named).
        """
        return account == self.account_id or (
            self.members is not None and self.members.admits(account)
        )

    # The grant ledger (LEDGER_TABLE): who was granted what, by which event, and the holds.
    # Unset only where no stack made one (a local run, a stack from before the ledger):
    # then grants are made as before, with no entry, no hold and no revocation.
    ledger_table: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Build and validate; the error names the variable and what it must be."""
        policy_parameter = environ.get("POLICY_PARAMETER", "").strip() or None
        if policy_parameter is not None and not policy_parameter.startswith("/"):
            raise SettingsError(
                f"POLICY_PARAMETER must be an SSM parameter name starting with '/', "
                f"got {policy_parameter!r}"
            )
        return cls(
            account_id=_matching(environ, "ACCOUNT_ID", _ACCOUNT, "a 12-digit AWS account id"),
            region=_matching(environ, "AWS_REGION", _REGION, "an AWS region such as us-east-1"),
            idempotency_table=_required(environ, "IDEMPOTENCY_TABLE"),
            dead_letter_queue_url=_required(environ, "DEAD_LETTER_QUEUE_URL"),
            tag_key=environ.get("TAG_KEY", "cache-ingress").strip() or "cache-ingress",
            policy_file=Path(environ.get("POLICY_FILE", "").strip() or BUNDLED_POLICY),
            policy_parameter=policy_parameter,
            policy_max_age_seconds=_integer(environ, "POLICY_MAX_AGE_SECONDS", 300, 0),
            idempotency_expiry_seconds=_integer(environ, "IDEMPOTENCY_EXPIRY_SECONDS", 86_400, 60),
            dry_run=_boolean(environ, "DRY_RUN"),
            members=Members.from_environ(environ),
            ledger_table=environ.get("LEDGER_TABLE", "").strip() or None,
        )


class Members(NamedTuple):
    """The member accounts the function serves, and how it reads them: each member's read
    role (same name in every account) assumed with the external id.

    `accounts` are the accounts named one by one; `organization`, when set, admits every
    account of it (the bus policy and IAM's aws:ResourceOrgID keep everything else out).
    A NamedTuple, not a dataclass: it is built on every cold start, single-account ones
    too, and a dataclass costs several times as much to build.
    """

    role_name: str
    external_id: str
    accounts: tuple[str, ...] = ()
    organization: str | None = None

    def admits(self, account: str) -> bool:
        if not _ACCOUNT.fullmatch(account):
            return False
        return self.organization is not None or account in self.accounts

    def role_arn(self, account: str, partition: str = "aws") -> str:
        return f"arn:{partition}:iam::{account}:role/{self.role_name}"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Members | None:
        """MEMBER_ROLE_NAME (none: a single-account deployment), MEMBER_EXTERNAL_ID,
        MEMBER_ACCOUNTS (comma-separated ids), MEMBER_ORGANIZATION."""
        role_name = environ.get("MEMBER_ROLE_NAME", "").strip()
        if not role_name:
            return None
        if not _ROLE_NAME.fullmatch(role_name):
            raise SettingsError(
                f"environment variable MEMBER_ROLE_NAME must be an IAM role name, got {role_name!r}"
            )
        external_id = environ.get("MEMBER_EXTERNAL_ID", "").strip()
        if not _EXTERNAL_ID.fullmatch(external_id):
            raise SettingsError(
                "environment variable MEMBER_EXTERNAL_ID must be the external id member roles "
                "require (2-1224 of letters, digits and +=,.@:/-) when MEMBER_ROLE_NAME is set"
            )
        accounts = []
        for item in environ.get("MEMBER_ACCOUNTS", "").split(","):
            account = item.strip()
            if not account:
                continue
            if not _ACCOUNT.fullmatch(account):
                raise SettingsError(
                    f"environment variable MEMBER_ACCOUNTS must list 12-digit account ids, "
                    f"got {account!r}"
                )
            accounts.append(account)
        organization = environ.get("MEMBER_ORGANIZATION", "").strip() or None
        if organization is not None and not _ORGANIZATION.fullmatch(organization):
            raise SettingsError(
                f"environment variable MEMBER_ORGANIZATION must be an organization id such as "
                f"o-a1b2c3d4e5, got {organization!r}"
            )
        if not accounts and organization is None:
            raise SettingsError(
                "MEMBER_ROLE_NAME is set but neither MEMBER_ACCOUNTS nor MEMBER_ORGANIZATION "
                "says which accounts are members"
            )
        return cls(role_name, external_id, tuple(dict.fromkeys(accounts)), organization)


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """The sweep's own settings, beside the function's `Settings`."""

    page_size: int = PAGE_SIZE_MAX
    time_reserve_ms: int = 60_000
    resume_max_age_seconds: int = 21_600
    # Member accounts: the AssumeRole calls one run may make, so the accounts it sweeps.
    accounts_per_run: int = 100
    # Revoke owned grants whose reason is gone (targets with `revoke: true`); otherwise the
    # sweep only reports them (RECONCILE_ENFORCE, the stack's ReconcileEnforce).
    enforce: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ReconcileOptions:
        """RECONCILE_PAGE_SIZE, RECONCILE_TIME_RESERVE_SECONDS, RECONCILE_RESUME_MAX_AGE_SECONDS,
        RECONCILE_ACCOUNTS_PER_RUN, RECONCILE_ENFORCE."""
        return cls(
            page_size=_integer(
                environ, "RECONCILE_PAGE_SIZE", PAGE_SIZE_MAX, PAGE_SIZE_MIN, PAGE_SIZE_MAX
            ),
            time_reserve_ms=1000 * _integer(environ, "RECONCILE_TIME_RESERVE_SECONDS", 60, 1, 900),
            resume_max_age_seconds=_integer(
                environ, "RECONCILE_RESUME_MAX_AGE_SECONDS", 21_600, 60, 7 * 86_400
            ),
            accounts_per_run=_integer(environ, "RECONCILE_ACCOUNTS_PER_RUN", 100, 1, 10_000),
            enforce=_boolean(environ, "RECONCILE_ENFORCE"),
        )


@cache
def current_settings() -> Settings:
    """The settings of this execution environment, read once."""
    return Settings.from_environ(os.environ)


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} is required and is not set")
    return value


def _matching(environ: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = _required(environ, name)
    if not pattern.fullmatch(value):
        raise SettingsError(f"environment variable {name} must be {what}, got {value!r}")
    return value


def _integer(
    environ: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(
            f"environment variable {name} must be an integer, got {raw!r}"
        ) from None
    if maximum is not None and not minimum <= value <= maximum:
        raise SettingsError(
            f"environment variable {name} must be between {minimum} and {maximum}, got {value}"
        )
    if value < minimum:
        raise SettingsError(f"environment variable {name} must be at least {minimum}, got {value}")
    return value


def _boolean(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"environment variable {name} must be true or false, got {raw!r}")
