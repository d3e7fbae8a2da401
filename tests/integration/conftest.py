"""The handler and adapters against moto (in process) and the emulation.

The fixtures are the suite's plugin's (tests/support/fixtures.py); they and its helpers are
named here too, for the modules that import them from here.
"""

from __future__ import annotations

from tests.support.fixtures import (
    SERVICES,
    TEST_CLIENT_CONFIG,
    authorize_calls,
    aws,
    clients,
    dead_letters,
    function_environment,
    make_authorizer,
    world,
)

__all__ = [
    "SERVICES",
    "TEST_CLIENT_CONFIG",
    "authorize_calls",
    "aws",
    "clients",
    "dead_letters",
    "function_environment",
    "make_authorizer",
    "world",
]
