"""Builds the Authorizer and the Reconciler from settings and clients, once per execution
environment.

Both are wired from the same pieces (`build_policy_source`, `build_granter`, the group
describer and the VPC-cache resolver), so every path reads the same policy, looks caches up
the same way and makes grants, classic or VPC, through the same idempotency records. Modules
only one of the two functions needs are imported when it is built: the ingress function's
cold start never loads the sweep.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cache, partial
from typing import TYPE_CHECKING, TypeVar

from cache_ingress.authorizer import Authorizer
from cache_ingress.aws import Clients
from cache_ingress.deadletter import DeadLetterQueue
from cache_ingress.decisions import named_vpc_destinations
from cache_ingress.grants import Granter, Recorder
from cache_ingress.models import (
    Authorized,
    DestinationFacts,
    FoundRule,
    Grant,
    Outcome,
    Provenance,
    SecurityGroupFacts,
    TagRequest,
    VpcDestination,
)
from cache_ingress.policy import Policy
from cache_ingress.policy_source import PolicySource
from cache_ingress.settings import ReconcileOptions, Settings, current_settings

if TYPE_CHECKING:
    from cache_ingress.granted_state import IngressRule, Pairs
    from cache_ingress.ledger import Ledger
    from cache_ingress.reconcile.cursor import CursorStore
    from cache_ingress.reconcile.listing import GroupPage
    from cache_ingress.reconcile.sweep import Reconciler
    from cache_ingress.revocations import Revoker

_Source = TypeVar("_Source", bound=PolicySource)
DescribeGroups = Callable[[Sequence[str]], dict[str, SecurityGroupFacts]]
ResolveDestinations = Callable[[Sequence[VpcDestination]], dict[VpcDestination, DestinationFacts]]


def build_authorizer(settings: Settings, clients: Clients | None = None) -> Authorizer:
    """Wire the adapters; clients are only created when first used."""
    clients = clients or Clients(settings.region)
    policies = _policy_source(_RememberingPolicySource, settings, clients)
    describe = _describer_with_destinations(settings, clients, policies)

    @cache
    def dead_letters() -> DeadLetterQueue:
        return DeadLetterQueue(clients.get("sqs"), settings.dead_letter_queue_url)

    ledger = _ledger(settings, clients)
    return Authorizer(
        settings,
        policies=policies,
        describe_groups=describe,
        granter=cache(lambda: build_granter(settings, clients)),
        dead_letters=dead_letters,
        verify_principal=build_principal_verifier(clients),
        ledger=ledger,
        revoker=cache(partial(build_revoker, settings, clients)) if ledger is not None else None,
    )


def _describer_with_destinations(
    settings: Settings, clients: Clients, policies: _RememberingPolicySource
) -> DescribeGroups:
    """Groups by id as they are now, each with the VPC caches its tag names (looked up)."""
    describe_security_groups = build_group_describer(settings, clients)
    resolve_destinations = build_destination_resolver(settings, clients, describe_security_groups)

    def describe(group_ids: Sequence[str]) -> dict[str, SecurityGroupFacts]:
        """The tagged groups as they are now, each with the VPC caches its tag names.

        The caller reads the policy just before it calls this, so the lookups follow the
        very policy the decision will use.
        """
        policy = policies.last or policies.current()
        groups = describe_security_groups(group_ids)
        return with_named_destinations(groups, policy, settings.region, resolve_destinations)

    return describe


def _ledger(settings: Settings, clients: Clients) -> Callable[[], Ledger] | None:
    """The ledger, built on first use; None when the settings name no ledger table."""
    table = settings.ledger_table
    if table is None:
        return None

    @cache
    def ledger() -> Ledger:
        from cache_ingress.ledger import Ledger  # noqa: PLC0415

        return Ledger(clients.get("dynamodb"), table)

    return ledger


def build_revoker(settings: Settings, clients: Clients) -> Revoker:
    """Revocation (only built when a policy revokes): the ledger, the two revoke adapters,
    and idempotency records beside the grants'. Groups are read as the decision reads them,
    with the VPC caches their tags name under the policy the entries are judged by."""
    from aws_lambda_powertools.utilities.idempotency import (  # noqa: PLC0415
        DynamoDBPersistenceLayer,
    )

    from cache_ingress.ledger import Ledger  # noqa: PLC0415
    from cache_ingress.revocations import Revoker  # noqa: PLC0415
    from cache_ingress.vpc_ingress import rule_description  # noqa: PLC0415

    if settings.ledger_table is None:
        raise ValueError("revocation needs the ledger: LEDGER_TABLE is not set")

    def revoke_rule(grant: Grant, rule_id: str | None) -> bool:
        if grant.is_vpc:
            from cache_ingress.vpc_ingress import revoke as remove_rule  # noqa: PLC0415

            if rule_id is None:
                raise ValueError(f"a VPC rule is revoked by its id only: {grant}")
            return remove_rule(clients.get("ec2"), grant, rule_id)
        from cache_ingress.cache_security_groups import revoke  # noqa: PLC0415

        return revoke(clients.get("elasticache"), grant)

    describe_security_groups = build_group_describer(settings, clients)
    resolve_destinations = build_destination_resolver(settings, clients, describe_security_groups)

    def describe(group_ids: Sequence[str], policy: Policy) -> dict[str, SecurityGroupFacts]:
        groups = describe_security_groups(group_ids)
        return with_named_destinations(groups, policy, settings.region, resolve_destinations)

    return Revoker(
        Ledger(clients.get("dynamodb"), settings.ledger_table),
        revoke_rule,
        describe,
        DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=clients.get("dynamodb")
        ),
        expiry_seconds=settings.idempotency_expiry_seconds,
        account_id=settings.account_id,
        region=settings.region,
        find_rule=partial(_find_rule, clients),
        description=rule_description,
    )


def _find_rule(clients: Clients, grant: Grant) -> FoundRule | None:
    from cache_ingress.vpc_ingress import find_rule  # noqa: PLC0415

    return find_rule(clients.get("ec2"), grant)


def _rule_description(grant: Grant) -> str:
    from cache_ingress.vpc_ingress import rule_description  # noqa: PLC0415

    return rule_description(grant)


def build_principal_verifier(clients: Clients) -> Callable[[TagRequest], Provenance]:
    """CloudTrail's answer about a replayed event's principal (`provenance.verify`)."""

    def verify_principal(request: TagRequest) -> Provenance:
        # Imported when first needed: only replayed events of gated targets ever get here.
        from cache_ingress.cloudtrail import lookup_record  # noqa: PLC0415
        from cache_ingress.provenance import verify  # noqa: PLC0415

        return verify(request, partial(lookup_record, clients.get("cloudtrail")))

    return verify_principal


def build_reconciler(
    settings: Settings, options: ReconcileOptions | None = None, clients: Clients | None = None
) -> Reconciler:
    """Wire the sweep's adapters; clients are only created when first used. The policy, the
    cache lookups and the grants come from the same builders as the event path's.
    """
    from cache_ingress.granted_state import (  # noqa: PLC0415
        read_cache_security_group,
        read_ingress_rules,
    )
    from cache_ingress.reconcile.cursor import CursorStore  # noqa: PLC0415
    from cache_ingress.reconcile.listing import tagged_group_page  # noqa: PLC0415
    from cache_ingress.reconcile.revoking import LEDGER_CURSOR_KEY  # noqa: PLC0415
    from cache_ingress.reconcile.sweep import Reconciler  # noqa: PLC0415

    clients = clients or Clients(settings.region)
    options = options or ReconcileOptions()
    ledger = _ledger(settings, clients)

    def list_groups(token: str | None) -> GroupPage:
        return tagged_group_page(
            clients.get("ec2"),
            settings.tag_key,
            settings.region,
            page_size=options.page_size,
            token=token,
        )

    def read_granted(name: str) -> Pairs | None:
        return read_cache_security_group(clients.get("elasticache"), name)

    def read_rules(group_ids: Sequence[str]) -> dict[str, tuple[IngressRule, ...]]:
        return read_ingress_rules(clients.get("ec2"), group_ids)

    def cursors() -> CursorStore:
        return CursorStore(clients.get("dynamodb"), settings.idempotency_table)

    def ledger_cursors() -> CursorStore:
        return CursorStore(
            clients.get("dynamodb"), settings.idempotency_table, key=LEDGER_CURSOR_KEY
        )

    return Reconciler(
        settings,
        options,
        policies=build_policy_source(settings, clients),
        list_groups=list_groups,
        read_granted=read_granted,
        read_rules=read_rules,
        resolve_destinations=build_destination_resolver(
            settings, clients, build_group_describer(settings, clients)
        ),
        granter=cache(partial(build_granter, settings, clients)),
        cursors=cursors,
        ledger=ledger,
        revoker=cache(partial(build_revoker, settings, clients)) if ledger is not None else None,
        ledger_cursors=ledger_cursors,
    )


def with_named_destinations(
    groups: Mapping[str, SecurityGroupFacts],
    policy: Policy,
    region: str,
    resolve: ResolveDestinations,
) -> dict[str, SecurityGroupFacts]:
    """The groups, each with the VPC caches its tag names looked up (once each), as
    `decide` needs them. Policies without VPC targets make no ElastiCache call here.
    """
    named = {
        group_id: named_vpc_destinations(group, policy, region)
        for group_id, group in groups.items()
    }
    wanted = [destination for destinations in named.values() for destination in destinations]
    if not wanted:
        return dict(groups)
    found = resolve(wanted)
    return {
        group_id: _with_destinations(group, {d: found[d] for d in named[group_id]})
        for group_id, group in groups.items()
    }


def build_group_describer(settings: Settings, clients: Clients) -> DescribeGroups:
    """Security groups by id, as they are now (EC2 adapter)."""

    def describe(group_ids: Sequence[str]) -> dict[str, SecurityGroupFacts]:
        from cache_ingress.security_groups import describe_groups  # noqa: PLC0415

        return describe_groups(clients.get("ec2"), group_ids, settings.region)

    return describe


def build_destination_resolver(
    settings: Settings, clients: Clients, describe: DescribeGroups
) -> ResolveDestinations:
    """The VPC caches a policy names, looked up: their security group, port and VPC."""

    def resolve(
        destinations: Sequence[VpcDestination],
    ) -> dict[VpcDestination, DestinationFacts]:
        from cache_ingress.vpc_targets import resolve_destinations  # noqa: PLC0415

        return resolve_destinations(
            clients.get("elasticache"), describe, destinations, settings.region
        )

    return resolve


def build_policy_source(settings: Settings, clients: Clients) -> PolicySource:
    """The policy as the settings name it: the bundled file or the SSM parameter."""
    return _policy_source(PolicySource, settings, clients)


def _policy_source(kind: type[_Source], settings: Settings, clients: Clients) -> _Source:
    return kind(
        tag_key=settings.tag_key,
        policy_file=settings.policy_file,
        parameter=settings.policy_parameter,
        max_age_seconds=settings.policy_max_age_seconds,
        ssm_client=lambda: clients.get("ssm"),
    )


def build_granter(settings: Settings, clients: Clients) -> Granter:
    """A Granter that sends each grant to the adapter of its destination kind."""
    from aws_lambda_powertools.utilities.idempotency import (  # noqa: PLC0415
        DynamoDBPersistenceLayer,
    )

    def authorize(grant: Grant) -> Outcome | Authorized:
        if grant.is_vpc:
            from cache_ingress.vpc_ingress import authorize_rule  # noqa: PLC0415

            return authorize_rule(clients.get("ec2"), grant)
        from cache_ingress.cache_security_groups import authorize as classic  # noqa: PLC0415

        return classic(clients.get("elasticache"), grant)

    persistence = DynamoDBPersistenceLayer(
        table_name=settings.idempotency_table, boto3_client=clients.get("dynamodb")
    )
    ledger = _ledger(settings, clients)
    recorder = (
        Recorder(ledger(), find_rule=partial(_find_rule, clients), description=_rule_description)
        if ledger is not None
        else None
    )
    return Granter(
        authorize,
        persistence,
        expiry_seconds=settings.idempotency_expiry_seconds,
        recorder=recorder,
    )


class _RememberingPolicySource(PolicySource):
    """The policy source that also remembers the policy it last returned, so the lookups
    before the decision neither read SSM a second time nor follow a newer policy than the
    one the decision is given.
    """

    last: Policy | None = None

    def current(self) -> Policy:
        self.last = super().current()
        return self.last


def _with_destinations(
    group: SecurityGroupFacts, destinations: Mapping[VpcDestination, DestinationFacts]
) -> SecurityGroupFacts:
    return replace(group, destinations=destinations) if destinations else group


@cache
def current_authorizer() -> Authorizer:
    return build_authorizer(current_settings())


@cache
def current_reconciler() -> Reconciler:
    """The reconciler of this execution environment, built once from its environment."""
    return build_reconciler(current_settings(), ReconcileOptions.from_environ(os.environ))
