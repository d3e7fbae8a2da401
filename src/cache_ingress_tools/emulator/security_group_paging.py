"""Make moto's DescribeSecurityGroups page as EC2 documents.

moto 5.2 answers DescribeSecurityGroups with every matching group at once: it ignores
MaxResults and NextToken. :func:`install` makes it page as EC2 documents (MaxResults
5-1000, not together with GroupIds; an opaque NextToken), so the reconciliation sweep's
pagination and its resume token go through botocore exactly as they would against AWS.
Without either parameter moto answers as before (the function's per-event describe never
pages). Inferred, not observed: the order of groups (by id here), and the error code for a
token EC2 does not accept (``InvalidPaginationToken`` here; the sweep does not depend on it).

This module imports moto: the Lambda's import path must never reach it.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, InvalidParameterCombination
from moto.ec2.responses.security_groups import SecurityGroups

__all__ = ["install"]

# Not a secret: the marker inside the opaque NextToken this emulation hands out.
_TOKEN_PREFIX = "security-group-page:"  # noqa: S105  # nosec B105
_LOCK = threading.Lock()
_ORIGINAL: Callable[[SecurityGroups], ActionResult] | None = None


def _encode(last_group_id: str) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{last_group_id}".encode()).decode()


def _decode(token: str) -> str:
    try:
        decoded = base64.b64decode(token, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    if not decoded.startswith(_TOKEN_PREFIX):
        raise EC2ClientError(
            "InvalidPaginationToken", f"The pagination token {token} is not valid or is expired."
        )
    return decoded.removeprefix(_TOKEN_PREFIX)


def _describe_security_groups_paged(self: SecurityGroups) -> ActionResult:
    if _ORIGINAL is None:
        raise RuntimeError("security-group paging answered before install()")
    max_results = self._get_param("MaxResults")
    token = self._get_param("NextToken")
    if max_results is None and not token:
        return _ORIGINAL(self)
    if self._get_param("GroupIds", []):
        raise InvalidParameterCombination(
            "The parameter groupIdSet cannot be used with the parameter maxResults"
        )
    groups = sorted(
        self.ec2_backend.describe_security_groups(
            groupnames=self._get_param("GroupNames", []),
            filters=self._filters_from_querystring(),
        ),
        key=lambda group: group.id,
    )
    if token:
        # The token names the last group returned, so a page boundary survives groups being
        # created or deleted between two requests.
        after = _decode(str(token))
        groups = [group for group in groups if group.id > after]
    size = int(max_results) if max_results is not None else 1000
    page = groups[:size]
    result: dict[str, Any] = {"SecurityGroups": page}
    if len(groups) > size:
        result["NextToken"] = _encode(page[-1].id)
    return ActionResult(result)


def install() -> None:
    """Make moto's DescribeSecurityGroups honour MaxResults/NextToken; calling it again is
    harmless. Without either parameter moto answers as before.
    """
    global _ORIGINAL  # noqa: PLW0603 - installed once per process, like the emulation
    with _LOCK:
        present = SecurityGroups.__dict__["describe_security_groups"]
        if present is _describe_security_groups_paged:
            return
        _ORIGINAL = present
        SecurityGroups.describe_security_groups = _describe_security_groups_paged  # type: ignore[method-assign]
