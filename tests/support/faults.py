"""Fault injection that still goes through botocore's real parsing.

A `before-call` hook answers the call with the service's own error document (query XML,
EC2 XML or JSON, by the client's protocol), parsed by botocore's own parser for that
protocol, or raises a transport error. The call never reaches moto (a `before-send` answer
would not stop moto's own before-send handler from applying the request), so an injected
fault leaves the emulated AWS untouched, as a real fault would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.parsers import create_parser


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body

    def read(self, *_: Any) -> bytes:
        return self._body


def error_body(protocol: str, code: str, message: str) -> tuple[bytes, dict[str, str]]:
    if protocol == "query":
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>fault-1</RequestId></ErrorResponse>"
        )
        return body.encode(), {"Content-Type": "text/xml"}
    if protocol == "ec2":
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            "</Errors><RequestID>fault-1</RequestID></Response>"
        )
        return body.encode(), {"Content-Type": "text/xml"}
    payload = {"__type": code, "message": message}
    return json.dumps(payload).encode(), {
        "Content-Type": "application/x-amz-json-1.0",
        "x-amzn-query-error": f"{code};Sender",
    }


TRANSPORT_ERRORS: dict[str, Callable[[], Exception]] = {
    "timeout": lambda: ReadTimeoutError(endpoint_url="https://aws.example"),
    "connect-timeout": lambda: ConnectTimeoutError(endpoint_url="https://aws.example"),
    "unreachable": lambda: EndpointConnectionError(endpoint_url="https://aws.example"),
}

ERRORS: dict[str, tuple[str, int]] = {
    "throttling": ("Throttling", 400),
    "server-error": ("InternalFailure", 500),
    "access-denied": ("AccessDenied", 403),
}


class Fault:
    """Fails the next `times` calls of one operation (None: every call) with one fault."""

    def __init__(
        self,
        client: Any,
        operation: str,
        kind: str,
        *,
        times: int | None = None,
        code: str | None = None,
        status: int | None = None,
        message: str = "injected",
    ) -> None:
        self.client = client
        self.operation = operation
        self.kind = kind
        self.remaining = times
        self.code = code
        self.status = status
        self.message = message
        self.calls = 0
        service = client.meta.service_model.endpoint_prefix
        self._event = f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}"
        self._service = service
        client.meta.events.register(self._event, self._answer)

    def clear(self) -> None:
        self.client.meta.events.unregister(self._event, self._answer)

    def _answer(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if self.remaining is not None:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
        self.calls += 1
        if self.kind in TRANSPORT_ERRORS:
            raise TRANSPORT_ERRORS[self.kind]()
        code, status = ERRORS.get(self.kind, (self.code or self.kind, self.status or 400))
        protocol = self.client.meta.service_model.protocol
        if self.kind == "access-denied" and protocol == "ec2":
            code = "UnauthorizedOperation"
        body, headers = error_body(protocol, code, self.message)
        parsed = create_parser(protocol).parse(
            {"status_code": status, "headers": headers, "body": body}, model.output_shape
        )
        http = AWSResponse("https://aws.example", status, headers, _Raw(body))  # type: ignore[arg-type]
        return http, parsed
