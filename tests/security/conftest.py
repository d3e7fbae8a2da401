"""Fixtures of the security tests.

The per-test moto world of the integration tests is re-exported for the few tests that
need a world of their own (fault injection); the many-case tests share one world per
module and start each case from the seeded state (`harness.SharedWorld.fresh`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures, found by name
    authorize_calls,
    aws,
    clients,
    function_environment,
    make_authorizer,
    world,
)
from tests.security.harness import (
    AUTHORIZE_EVENT,
    Fresh,
    SharedWorld,
    shared_session,
    shared_world,
)


@pytest.fixture(scope="module")
def shared() -> Iterator[SharedWorld]:
    with pytest.MonkeyPatch.context() as patch:
        # Module scope runs before the per-test offline environment: set it here too.
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        with shared_world() as world_:
            yield world_


@pytest.fixture
def fresh(shared: SharedWorld, monkeypatch: pytest.MonkeyPatch) -> Fresh:
    """A case's own table and queue, the seeded tags and no ingress; the function's
    environment set for the real handler."""
    state = shared.fresh()
    for name, value in state.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "cache-ingress")
    return state


@pytest.fixture
def handler_authorize_calls(fresh: Fresh) -> Iterator[list[dict[str, Any]]]:
    """Authorize requests sent by the clients the handler creates for itself.

    The handler builds its clients from boto3's default session, so the hook goes there
    (after moto has reset that session) and comes off afterwards.
    """
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(params)

    session = shared_session()
    boto3.DEFAULT_SESSION = session
    session.events.register(AUTHORIZE_EVENT, record)
    yield calls
    session.events.unregister(AUTHORIZE_EVENT, record)
    boto3.DEFAULT_SESSION = None
