"""AWS Organizations adapter: the active accounts of the organization, for the sweep across
member accounts (docs/multi-account.md). `ListAccounts` answers only in the management
account or a delegated administrator; anywhere else it is refused (permanent)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.aws import aws_call_error

ACTION = "organizations:ListAccounts"


def active_accounts(organizations: Any) -> list[str]:
    """The ids of the organization's ACTIVE accounts, sorted. Raises AwsCallError."""
    found: set[str] = set()
    request: dict[str, Any] = {}
    try:
        while True:
            page = organizations.list_accounts(**request)
            for account in page.get("Accounts", []):
                if account.get("Status") == "ACTIVE" and account.get("Id"):
                    found.add(str(account["Id"]))
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
    except (ClientError, BotoCoreError) as exc:
        raise aws_call_error(exc, ACTION) from exc
    return sorted(found)
