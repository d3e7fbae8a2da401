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
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from cache_ingress.authorizer import Authorizer
from cache_ingress.aws import Clients
from cache_ingress.deadletter import DeadLetterQueue
from cache_ingress.decisions import named_vpc_destinations
from cache_ingress.errors import AwsCallError
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
from cache_ingress.observability import logger
from cache_ingress.policy import Policy
from cache_ingress.policy_source import PolicySource
from cache_ingress.settings import ReconcileOptions, Settings, current_settings
from cache_ingress.vpc_peering import ReadPeerings, with_peerings

if TYPE_CHECKING:
    from cache_ingress.granted_state import IngressRule, Pairs
    from cache_ingress.ledger import Ledger
    from cache_ingress.member_accounts import MemberAccounts
    from cache_ingress.reconcile.accounts import AccountsSweep
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
    resolve_destinations = build_destination_resolver(
        settings, clients, build_group_describer(settings, clients)
    )
    peerings = build_peering_reader(clients)

    @cache
    def dead_letters() -> DeadLetterQueue:
        return DeadLetterQueue(clients.get("sqs"), settings.dead_letter_queue_url)

    member_accounts = build_member_accounts(settings, clients)
    describe_member_groups = None
    if member_accounts is not None:
        describe_in_member = build_member_group_describer(settings, member_accounts)

        def describe_member_groups(
            account: str, group_ids: Sequence[str]
        ) -> dict[str, SecurityGroupFacts]:
            """A member's groups read through its role, with the caches their tag names
            looked up in this (the cache) account."""
            policy = policies.last or policies.current()
            groups = describe_in_member(account, group_ids)
            return with_named_destinations(
                groups, policy, settings.region, resolve_destinations, peerings
            )

    ledger = _ledger(settings, clients)
    return Authorizer(
        settings,
        policies=policies,
        describe_groups=describe,
        granter=cache(lambda: build_granter(settings, clients)),
        dead_letters=dead_letters,
        verify_principal=build_principal_verifier(clients, member_accounts),
        describe_member_groups=describe_member_groups,
        ledger=ledger,
        revoker=cache(partial(build_revoker, settings, clients)) if ledger is not None else None,
    )


def build_member_accounts(settings: Settings, clients: Clients) -> MemberAccounts | None:
    """The member accounts' read roles (None for a single-account deployment); the STS
    adapter is imported only by a deployment that serves members."""
    if settings.members is None:
        return None
    from cache_ingress.member_accounts import MemberAccounts  # noqa: PLC0415

    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "").strip()
    return MemberAccounts(
        settings.members,
        clients,
        session_name=(function or "cache-ingress")[:64],
        partition=_partition(settings.region),
    )


def build_member_group_describer(
    settings: Settings, member_accounts: MemberAccounts
) -> Callable[[str, Sequence[str]], dict[str, SecurityGroupFacts]]:
    """A member's groups by id, as they are now, read through its read role; each carries
    the account STS says the credentials act in (rule account-agreement)."""

    def describe(account: str, group_ids: Sequence[str]) -> dict[str, SecurityGroupFacts]:
        from cache_ingress.security_groups import describe_groups  # noqa: PLC0415

        ec2 = member_accounts.client(account, "ec2")
        read_as = member_accounts.credentials(account).account
        groups = describe_groups(ec2, group_ids, settings.region)
        return {
            group_id: replace(group, read_account=read_as) for group_id, group in groups.items()
        }

    return describe


def _describer_with_destinations(
    settings: Settings, clients: Clients, policies: _RememberingPolicySource
) -> DescribeGroups:
    """Groups by id as they are now, each with the VPC caches its tag names (looked up)."""
    describe_security_groups = build_group_describer(settings, clients)
    resolve_destinations = build_destination_resolver(settings, clients, describe_security_groups)
    peerings = build_peering_reader(clients)

    def describe(group_ids: Sequence[str]) -> dict[str, SecurityGroupFacts]:
        """The tagged groups as they are now, each with the VPC caches its tag names.

        The caller reads the policy just before it calls this, so the lookups follow the
        very policy the decision will use.
        """
        policy = policies.last or policies.current()
        groups = describe_security_groups(group_ids)
        return with_named_destinations(
            groups, policy, settings.region, resolve_destinations, peerings
        )

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
    peerings = build_peering_reader(clients)

    def describe(group_ids: Sequence[str], policy: Policy) -> dict[str, SecurityGroupFacts]:
        groups = describe_security_groups(group_ids)
        return with_named_destinations(
            groups, policy, settings.region, resolve_destinations, peerings
        )

    member_accounts = build_member_accounts(settings, clients)
    describe_member = None
    if member_accounts is not None:
        describe_in_member = build_member_group_describer(settings, member_accounts)

        def describe_member(
            account: str, group_ids: Sequence[str], policy: Policy
        ) -> dict[str, SecurityGroupFacts]:
            groups = describe_in_member(account, group_ids)
            return with_named_destinations(
                groups, policy, settings.region, resolve_destinations, peerings
            )

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
        members=settings.members.admits if settings.members is not None else None,
        describe_member_groups=describe_member,
    )


def _find_rule(clients: Clients, grant: Grant) -> FoundRule | None:
    from cache_ingress.vpc_ingress import find_rule  # noqa: PLC0415

    return find_rule(clients.get("ec2"), grant)


def _rule_description(grant: Grant) -> str:
    from cache_ingress.vpc_ingress import rule_description  # noqa: PLC0415

    return rule_description(grant)


def build_peering_reader(clients: Clients) -> ReadPeerings:
    """The active peering connections of the caches' VPCs, as the cache account sees them."""

    def read(cache_vpcs: Sequence[str]) -> dict[tuple[str, str], str]:
        from cache_ingress.vpc_peering import active_peerings  # noqa: PLC0415

        return active_peerings(clients.get("ec2"), cache_vpcs)

    return read


def build_principal_verifier(
    clients: Clients, member_accounts: MemberAccounts | None = None
) -> Callable[[TagRequest], Provenance]:
    """CloudTrail's answer about a replayed event's principal (`provenance.verify`): looked
    up in the event's own account, a member's through its read role."""

    def verify_principal(request: TagRequest) -> Provenance:
        # Imported when first needed: only replayed events of gated targets ever get here.
        from cache_ingress.cloudtrail import lookup_record  # noqa: PLC0415
        from cache_ingress.provenance import verify  # noqa: PLC0415

        account = request.account
        if member_accounts is None or not member_accounts.members.admits(account):
            return verify(request, partial(lookup_record, clients.get("cloudtrail")))

        def lookup_in_member(event_id: str) -> str | None:
            # The role is assumed inside the lookup: a refusal is CloudTrail unavailable.
            return lookup_record(member_accounts.client(account, "cloudtrail"), event_id)

        return verify(request, lookup_in_member)

    return verify_principal


def build_reconciler(
    settings: Settings,
    options: ReconcileOptions | None = None,
    clients: Clients | None = None,
    *,
    member: SweepParts | None = None,
) -> Reconciler:
    """Wire the sweep's adapters; clients are only created when first used. The policy, the
    cache lookups and the grants come from the same builders as the event path's.

    With `member`, the sweep of one member account: its groups listed through its read role,
    its own resume token, the policy and the granter shared with the other accounts' sweeps.
    """
    from cache_ingress.granted_state import (  # noqa: PLC0415
        read_cache_security_group,
        read_ingress_rules,
    )
    from cache_ingress.reconcile.cursor import CURSOR_KEY, CursorStore  # noqa: PLC0415
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

    cursor_key = (member.cursor_key if member is not None else None) or CURSOR_KEY

    def cursors() -> CursorStore:
        return CursorStore(clients.get("dynamodb"), settings.idempotency_table, key=cursor_key)

    members = settings.members

    def ledger_cursors() -> CursorStore:
        return CursorStore(
            clients.get("dynamodb"), settings.idempotency_table, key=LEDGER_CURSOR_KEY
        )

    return Reconciler(
        settings,
        options,
        policies=member.policies if member is not None else build_policy_source(settings, clients),
        list_groups=(member.list_groups if member is not None else None) or list_groups,
        read_granted=read_granted,
        read_rules=read_rules,
        resolve_destinations=build_destination_resolver(
            settings, clients, build_group_describer(settings, clients)
        ),
        granter=member.granter
        if member is not None
        else cache(partial(build_granter, settings, clients)),
        cursors=cursors,
        account=member.account if member is not None else None,
        members=members.admits if members is not None else None,
        peerings=build_peering_reader(clients),
        ledger=ledger,
        # The revocation phase judges the whole ledger: in the cache account's sweep only.
        revoker=cache(partial(build_revoker, settings, clients))
        if ledger is not None and (member is None or member.account is None)
        else None,
        ledger_cursors=ledger_cursors,
    )


class SweepParts(NamedTuple):
    """What one account's sweep has of its own (a member account, its listing through the
    read role, its resume token; None: the function's own) and shares with the other
    accounts' sweeps of the run (the policy, the granter)."""

    account: str | None
    list_groups: Callable[[str | None], GroupPage] | None
    cursor_key: str | None
    policies: PolicySource
    granter: Callable[[], Granter]


def build_accounts_sweep(
    settings: Settings, options: ReconcileOptions | None = None, clients: Clients | None = None
) -> AccountsSweep:
    """The sweep of a stack that serves member accounts: its own account, then each
    member's through its read role (reconcile/accounts.py)."""
    from cache_ingress.reconcile.accounts import (  # noqa: PLC0415
        ROTATION_KEY,
        AccountsSweep,
        member_cursor_key,
    )
    from cache_ingress.reconcile.cursor import CursorStore  # noqa: PLC0415
    from cache_ingress.reconcile.listing import tagged_group_page  # noqa: PLC0415

    clients = clients or Clients(settings.region)
    options = options or ReconcileOptions()
    member_accounts = build_member_accounts(settings, clients)
    if member_accounts is None or settings.members is None:
        raise ValueError("a sweep across accounts needs member settings (MEMBER_ROLE_NAME)")
    accounts = member_accounts
    members = settings.members
    policies = build_policy_source(settings, clients)
    granter = cache(partial(build_granter, settings, clients))

    def member(account: str) -> Reconciler:
        def list_groups(token: str | None) -> GroupPage:
            ec2 = accounts.client(account, "ec2")
            read_as = accounts.credentials(account).account
            page = tagged_group_page(
                ec2, settings.tag_key, settings.region, page_size=options.page_size, token=token
            )
            groups = tuple(replace(group, read_account=read_as) for group in page.groups)
            return replace(page, groups=groups)

        parts = SweepParts(account, list_groups, member_cursor_key(account), policies, granter)
        return build_reconciler(settings, options, clients, member=parts)

    def member_list() -> tuple[list[str], str | None]:
        listed = list(members.accounts)
        if members.organization is None:
            return listed, None
        from cache_ingress.organization_accounts import active_accounts  # noqa: PLC0415

        try:
            return sorted({*listed, *active_accounts(clients.get("organizations"))}), None
        except AwsCallError as exc:
            problem = (
                f"the organization's accounts could not be listed ({exc}); only "
                "MEMBER_ACCOUNTS were swept (ListAccounts answers only in the management "
                "account or a delegated administrator)"
            )
            logger.warning("member accounts not listed", extra={"error": str(exc)})
            return listed, problem

    own = build_reconciler(
        settings, options, clients, member=SweepParts(None, None, None, policies, granter)
    )
    return AccountsSweep(
        settings,
        options,
        own=own,
        member=member,
        accounts=member_list,
        assume_role_calls=lambda: accounts.assumed,
        rotation=lambda: CursorStore(
            clients.get("dynamodb"), settings.idempotency_table, key=ROTATION_KEY
        ),
    )


def with_named_destinations(
    groups: Mapping[str, SecurityGroupFacts],
    policy: Policy,
    region: str,
    resolve: ResolveDestinations,
    peerings: ReadPeerings | None = None,
) -> dict[str, SecurityGroupFacts]:
    """The groups, each with the VPC caches its tag names looked up (once each), as
    `decide` needs them. Policies without VPC targets make no ElastiCache call here.

    With `peerings`, a group outside a cache's VPC, whose tag names a target that admits
    peered VPCs, also gets the active peering connections joining its VPC to the caches'
    (one lookup for all the groups; none if no group needs it).
    """
    named = {
        group_id: named_vpc_destinations(group, policy, region)
        for group_id, group in groups.items()
    }
    wanted = [destination for destinations in named.values() for destination in destinations]
    if not wanted:
        return dict(groups)
    found = resolve(wanted)
    looked_up = {
        group_id: _with_destinations(group, {d: found[d] for d in named[group_id]})
        for group_id, group in groups.items()
    }
    if peerings is None:
        return looked_up
    return with_peerings(looked_up, policy, peerings)


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


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


@cache
def current_authorizer() -> Authorizer:
    return build_authorizer(current_settings())


@cache
def current_reconciler() -> Reconciler | AccountsSweep:
    """The reconciler of this execution environment, built once from its environment: the
    sweep across accounts in a stack that serves member accounts."""
    settings = current_settings()
    options = ReconcileOptions.from_environ(os.environ)
    if settings.members is not None:
        return build_accounts_sweep(settings, options)
    return build_reconciler(settings, options)
