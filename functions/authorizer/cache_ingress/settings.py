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

from cache_ingress.errors import SettingsError

BUNDLED_POLICY = Path(__file__).with_name("policy.yaml")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
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
            ledger_table=environ.get("LEDGER_TABLE", "").strip() or None,
        )


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """The sweep's own settings, beside the function's `Settings`."""

    page_size: int = PAGE_SIZE_MAX
    time_reserve_ms: int = 60_000
    resume_max_age_seconds: int = 21_600
    # Revoke owned grants whose reason is gone (targets with `revoke: true`); otherwise the
    # sweep only reports them (RECONCILE_ENFORCE, the stack's ReconcileEnforce).
    enforce: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ReconcileOptions:
        """RECONCILE_PAGE_SIZE, RECONCILE_TIME_RESERVE_SECONDS, RECONCILE_RESUME_MAX_AGE_SECONDS,
        RECONCILE_ENFORCE."""
        return cls(
            page_size=_integer(
                environ, "RECONCILE_PAGE_SIZE", PAGE_SIZE_MAX, PAGE_SIZE_MIN, PAGE_SIZE_MAX
            ),
            time_reserve_ms=1000 * _integer(environ, "RECONCILE_TIME_RESERVE_SECONDS", 60, 1, 900),
            resume_max_age_seconds=_integer(
                environ, "RECONCILE_RESUME_MAX_AGE_SECONDS", 21_600, 60, 7 * 86_400
            ),
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
