"""CloudTrail's event history for the embedded AWS: tagging calls are recorded, and
LookupEvents answers for them.

moto 5.2 records no CloudTrail events and has no LookupEvents. The function needs both to
verify a replayed event's principal (it looks the event up by its `eventID` and compares
CloudTrail's record with the event). :func:`install` wraps moto's EC2 CreateTags,
DeleteTags and CreateSecurityGroup responders so that each call, successful or failed,
leaves the record CloudTrail would write: the caller's identity as moto's STS knows it
(an assumed role's session, an IAM user, or moto's default user), the request parameters
in CloudTrail's shape (`resourcesSet`, `tagSet`, `tagSpecificationSet`) and, for a failed
call, `errorCode`. :func:`eventbridge_event` wraps a record as EventBridge delivers it.

LookupEvents answers the way CloudTrail documents it: one lookup attribute at most
(`EventId`, `EventName`, `ResourceName`, `Username`, `EventSource`, `ReadOnly`,
`AccessKeyId`, `ResourceType`), `StartTime`/`EndTime`, `MaxResults` 1-50, `NextToken`,
newest first, only the last 90 days, with the modelled faults for bad input.

State lives on moto's CloudTrail backend of each (account, region), so `mock_aws` teardown
and the server's `/moto-api/reset` clear it.

This module imports moto: the Lambda's import path must never reach it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from moto.cloudtrail.models import cloudtrail_backends
from moto.cloudtrail.responses import CloudTrailResponse
from moto.core.exceptions import JsonRESTError
from moto.ec2.responses.security_groups import SecurityGroups
from moto.ec2.responses.tags import TagResponse
from moto.sts.models import sts_backends
from moto.utilities.utils import get_partition

__all__ = ["HISTORY_DAYS", "eventbridge_event", "install", "record_call", "recorded_calls"]

HISTORY_DAYS: Final = 90
_MAX_RESULTS: Final = 50
_STATE_ATTRIBUTE: Final = "_cache_ingress_event_history"
_INSTALLED_MARK: Final = "_cache_ingress_recorded"
_LOCK = threading.RLock()


class _CloudTrailError(JsonRESTError):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__(type(self).__name__, message)


class InvalidLookupAttributesException(_CloudTrailError):  # noqa: N818 - the service's error code
    pass


class InvalidTimeRangeException(_CloudTrailError):  # noqa: N818 - the service's error code
    pass


class InvalidMaxResultsException(_CloudTrailError):  # noqa: N818 - the service's error code
    pass


class InvalidNextTokenException(_CloudTrailError):  # noqa: N818 - the service's error code
    pass


# --- the history ------------------------------------------------------------------------


def _history(account: str, region: str) -> list[dict[str, Any]]:
    backend = cloudtrail_backends[account][region]
    history = getattr(backend, _STATE_ATTRIBUTE, None)
    if history is None:
        history = []
        setattr(backend, _STATE_ATTRIBUTE, history)
    return history


def record_call(record: Mapping[str, Any]) -> None:
    """Add a CloudTrail record to its account's and region's history (`recipientAccountId`,
    `awsRegion`): how a test places a call the embedded AWS did not see, an old one say.
    """
    with _LOCK:
        _history(str(record["recipientAccountId"]), str(record["awsRegion"])).append(dict(record))


def recorded_calls(account: str, region: str) -> list[dict[str, Any]]:
    """Every record of the account and region, oldest first (copies)."""
    with _LOCK:
        return [json.loads(json.dumps(r)) for r in _history(account, region)]


def eventbridge_event(record: Mapping[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """The EventBridge event ("AWS API Call via CloudTrail") that carries `record`."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "account": record["recipientAccountId"],
        "time": record["eventTime"],
        "region": record["awsRegion"],
        "resources": [],
        "detail": json.loads(json.dumps(record)),
    }


# --- recording EC2's tagging calls ---------------------------------------------------------


def _items(pairs: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    items = []
    for pair in pairs:
        item = {"key": str(pair.get("Key", ""))}
        if pair.get("Value") is not None:
            item["value"] = str(pair["Value"])
        items.append(item)
    return items


def _tagging_parameters(response: Any) -> dict[str, Any]:
    return {
        "resourcesSet": {
            "items": [{"resourceId": str(r)} for r in response._get_param("Resources", [])]
        },
        "tagSet": {"items": _items(response._get_param("Tags", []))},
    }


def _create_group_parameters(response: Any) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "groupName": response._get_param("GroupName"),
        "groupDescription": response._get_param("Description"),
    }
    if response._get_param("VpcId"):
        parameters["vpcId"] = response._get_param("VpcId")
    specifications = response._get_param("TagSpecification") or response._get_param(
        "TagSpecifications", []
    )
    if isinstance(specifications, Mapping):
        specifications = [specifications]
    items = [
        {
            "resourceType": str(spec.get("ResourceType", "")),
            "tags": _items(spec.get("Tags") or spec.get("Tag") or []),
        }
        for spec in specifications or []
        if isinstance(spec, Mapping)
    ]
    if items:
        parameters["tagSpecificationSet"] = {"items": items}
    return parameters


def _identity(response: Any) -> dict[str, str]:
    access_key = response.get_access_key()
    account = response.current_account
    sts = sts_backends[account][get_partition(response.region)]
    principal_id, arn, identity_account = sts.get_caller_identity(access_key, response.region)
    kind = (
        "AssumedRole" if ":assumed-role/" in arn else "Root" if arn.endswith(":root") else "IAMUser"
    )
    return {
        "type": kind,
        "principalId": principal_id,
        "arn": arn,
        "accountId": identity_account,
        "accessKeyId": access_key,
    }


def _error_code(exc: Exception) -> str:
    code = getattr(exc, "error_type", None) or getattr(exc, "code", None)
    return f"Client.{code if isinstance(code, str) else type(exc).__name__}"


def _recording(
    event_name: str,
    parameters: Callable[[Any], dict[str, Any]],
    method: Callable[[Any], Any],
) -> Callable[[Any], Any]:
    @functools.wraps(method)
    def recorded(self: Any) -> Any:
        request_id = str(uuid.uuid4())
        record: dict[str, Any] = {
            "eventVersion": "1.08",
            "userIdentity": _identity(self),
            "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": "ec2.amazonaws.com",
            "eventName": event_name,
            "awsRegion": self.region,
            "sourceIPAddress": "127.0.0.1",
            "userAgent": str(self.headers.get("User-Agent", "")),
            "requestParameters": parameters(self),
            "requestID": request_id,
            "eventID": str(uuid.uuid4()),
            "readOnly": False,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": self.current_account,
            "eventCategory": "Management",
        }
        try:
            result = method(self)
        except Exception as exc:
            record.update(errorCode=_error_code(exc), errorMessage=str(exc)[:256])
            record["responseElements"] = None
            record_call(record)
            raise
        response_elements: dict[str, Any] = {"requestId": request_id, "_return": True}
        if event_name == "CreateSecurityGroup":
            response_elements["groupId"] = _created_group_id(result)
        record["responseElements"] = response_elements
        record_call(record)
        return result

    setattr(recorded, _INSTALLED_MARK, True)
    return recorded


def _created_group_id(result: Any) -> str | None:
    # moto's ActionResult keeps the result mapping it will serialise.
    for attribute in ("result", "_result", "data"):
        value = getattr(result, attribute, None)
        if isinstance(value, Mapping) and "GroupId" in value:
            return str(value["GroupId"])
    return None


_RECORDED: Final = (
    (TagResponse, "create_tags", "CreateTags", _tagging_parameters),
    (TagResponse, "delete_tags", "DeleteTags", _tagging_parameters),
    (SecurityGroups, "create_security_group", "CreateSecurityGroup", _create_group_parameters),
)


# --- LookupEvents ---------------------------------------------------------------------------


def _resources(record: Mapping[str, Any]) -> list[dict[str, str]]:
    parameters = record.get("requestParameters") or {}
    ids = [
        str(item.get("resourceId"))
        for item in (parameters.get("resourcesSet") or {}).get("items", [])
    ]
    group_id = (record.get("responseElements") or {}).get("groupId")
    if group_id:
        ids.append(str(group_id))
    kinds = {"sg": "AWS::EC2::SecurityGroup", "i": "AWS::EC2::Instance", "vpc": "AWS::EC2::VPC"}
    return [
        {"ResourceType": kinds.get(rid.split("-", 1)[0], "AWS::EC2::Resource"), "ResourceName": rid}
        for rid in ids
    ]


def _username(record: Mapping[str, Any]) -> str:
    arn = str(record.get("userIdentity", {}).get("arn", ""))
    return arn.rsplit("/", 1)[-1] if "/" in arn else arn.rsplit(":", 1)[-1]


# What each lookup attribute is compared with: one value, or several (any may match).
_ATTRIBUTE_VALUES: Final[Mapping[str, Callable[[Mapping[str, Any]], list[str]]]] = {
    "EventId": lambda r: [str(r.get("eventID"))],
    "EventName": lambda r: [str(r.get("eventName"))],
    "EventSource": lambda r: [str(r.get("eventSource"))],
    "ReadOnly": lambda r: [str(r.get("readOnly", False)).lower()],
    "Username": lambda r: [_username(r)],
    "AccessKeyId": lambda r: [str(r.get("userIdentity", {}).get("accessKeyId"))],
    "ResourceType": lambda r: [x["ResourceType"] for x in _resources(r)],
    "ResourceName": lambda r: [x["ResourceName"] for x in _resources(r)],
}


def _matches(record: Mapping[str, Any], key: str, value: str) -> bool:
    wanted = value.lower() if key == "ReadOnly" else value
    return wanted in _ATTRIBUTE_VALUES[key](record)


def _time(record: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["eventTime"]).replace("Z", "+00:00"))


def _timestamp(raw: Any, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except (TypeError, ValueError):
        try:
            return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidTimeRangeException(f"{name} is not a time: {raw!r}") from None


def _lookup_attribute(response: CloudTrailResponse) -> tuple[str, str] | None:
    attributes = response._get_param("LookupAttributes") or []
    if len(attributes) > 1:
        raise InvalidLookupAttributesException("You can specify at most one lookup attribute.")
    if not attributes:
        return None
    key, value = attributes[0].get("AttributeKey"), attributes[0].get("AttributeValue")
    if key not in _ATTRIBUTE_VALUES or not isinstance(value, str) or not value:
        raise InvalidLookupAttributesException(
            f"Lookup attribute {key!r} with value {value!r} is not valid."
        )
    return key, value


def _page(response: CloudTrailResponse) -> tuple[int, int]:
    max_results = response._get_param("MaxResults")
    if max_results is None:
        max_results = _MAX_RESULTS
    if isinstance(max_results, bool) or not isinstance(max_results, int):
        raise InvalidMaxResultsException("MaxResults must be a number from 1 to 50.")
    if not 1 <= max_results <= _MAX_RESULTS:
        raise InvalidMaxResultsException("MaxResults must be a number from 1 to 50.")
    token = response._get_param("NextToken")
    if token is None:
        return 0, max_results
    try:
        start = int(base64.b64decode(str(token), validate=True).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidNextTokenException("The NextToken is not valid.") from None
    return start, max_results


def _lookup_events(self: CloudTrailResponse) -> str:
    attribute = _lookup_attribute(self)
    now = datetime.now(UTC)
    start = _timestamp(self._get_param("StartTime"), "StartTime")
    end = _timestamp(self._get_param("EndTime"), "EndTime")
    if start is not None and end is not None and start > end:
        raise InvalidTimeRangeException("StartTime must be before EndTime.")
    offset, max_results = _page(self)
    oldest = now - timedelta(days=HISTORY_DAYS)
    with _LOCK:
        history = list(_history(self.current_account, self.region))
    # Newest first; among records of the same second, the later call first.
    newest_first = [
        record
        for _, record in sorted(
            enumerate(history), key=lambda item: (_time(item[1]), item[0]), reverse=True
        )
    ]
    found = [
        record
        for record in newest_first
        if _time(record) >= oldest
        and (start is None or _time(record) >= start)
        and (end is None or _time(record) <= end)
        and (attribute is None or _matches(record, *attribute))
    ]
    page = found[offset : offset + max_results]
    body: dict[str, Any] = {
        "Events": [
            {
                "EventId": record["eventID"],
                "EventName": record["eventName"],
                "ReadOnly": str(record.get("readOnly", False)).lower(),
                "AccessKeyId": record.get("userIdentity", {}).get("accessKeyId"),
                "EventTime": _time(record).timestamp(),
                "EventSource": record["eventSource"],
                "Username": _username(record),
                "Resources": _resources(record),
                "CloudTrailEvent": json.dumps(record),
            }
            for record in page
        ]
    }
    if offset + max_results < len(found):
        body["NextToken"] = base64.b64encode(str(offset + max_results).encode()).decode()
    return json.dumps(body)


def install() -> None:
    """Record EC2's tagging calls and answer LookupEvents; calling it again is harmless.

    Raises ``RuntimeError`` if moto gains its own LookupEvents or loses a wrapped responder,
    so that the two are never mixed silently.
    """
    with _LOCK:
        present = CloudTrailResponse.__dict__.get("lookup_events")
        if present is not None and present is not _lookup_events:
            raise RuntimeError(
                "moto's CloudTrailResponse implements lookup_events; retire this emulation"
            )
        CloudTrailResponse.lookup_events = _lookup_events  # type: ignore[attr-defined]
        for owner, name, event_name, parameters in _RECORDED:
            method = owner.__dict__.get(name)
            if method is None:
                raise RuntimeError(f"moto's {owner.__name__} no longer defines {name}")
            if getattr(method, _INSTALLED_MARK, False):
                continue
            setattr(owner, name, _recording(event_name, parameters, method))
