"""The command-line tests use the same moto world as the integration tests."""

from tests.integration.conftest import aws, clients, world

__all__ = ["aws", "clients", "world"]
