"""Builds the Authorizer from settings and clients, once per execution environment."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, partial

from cache_ingress.authorizer import Authorizer
from cache_ingress.aws import Clients
from cache_ingress.deadletter import DeadLetterQueue
from cache_ingress.grants import Granter
from cache_ingress.models import SecurityGroupFacts
from cache_ingress.policy_source import PolicySource
from cache_ingress.settings import Settings, current_settings


def build_authorizer(settings: Settings, clients: Clients | None = None) -> Authorizer:
    """Wire the adapters; clients are only created when first used."""
    clients = clients or Clients(settings.region)

    def describe(group_ids: Sequence[str]) -> dict[str, SecurityGroupFacts]:
        from cache_ingress.security_groups import describe_groups  # noqa: PLC0415

        return describe_groups(clients.get("ec2"), group_ids, settings.region)

    @cache
    def granter() -> Granter:
        from aws_lambda_powertools.utilities.idempotency import (  # noqa: PLC0415
            DynamoDBPersistenceLayer,
        )

        from cache_ingress.cache_security_groups import authorize  # noqa: PLC0415

        persistence = DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=clients.get("dynamodb")
        )
        return Granter(
            partial(authorize, clients.get("elasticache")),
            persistence,
            expiry_seconds=settings.idempotency_expiry_seconds,
        )

    @cache
    def dead_letters() -> DeadLetterQueue:
        return DeadLetterQueue(clients.get("sqs"), settings.dead_letter_queue_url)

    policies = PolicySource(
        tag_key=settings.tag_key,
        policy_file=settings.policy_file,
        parameter=settings.policy_parameter,
        max_age_seconds=settings.policy_max_age_seconds,
        ssm_client=lambda: clients.get("ssm"),
    )
    return Authorizer(
        settings,
        policies=policies,
        describe_groups=describe,
        granter=granter,
        dead_letters=dead_letters,
    )


@cache
def current_authorizer() -> Authorizer:
    return build_authorizer(current_settings())
