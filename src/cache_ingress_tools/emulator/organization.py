"""A cache account and its member accounts in the embedded AWS, deployed from the two
templates (docs/multi-account.md).

Seeding a scenario with ``member_accounts`` calls :func:`seed_members` after the cache
account's own resources. It deploys what the stacks would, read from the templates
themselves (resolved with the local run's resolver), so what the emulator routes and trusts
is what the templates say:

- in the cache account: the two function roles, the event bus members forward to with its
  policy, and every EventBridge rule of ``template.yaml`` (the function's three on the
  default bus and the three on the bus), each targeting the ingress function;
- in each member account: its VPCs and security groups, the VPC peerings it asks for (with
  the cache account's default VPC, accepted), and ``member.yaml``'s read role (trust and
  permissions as written), forwarding role, dead-letter queue and three forwarding rules.

The function's external id is the one ``template.yaml`` gives it in a local run (the
stack's unique id, as ``sam local`` resolves AWS::StackId), and the ingress function acts
with its execution role's credentials (:func:`accounts.function_credentials`), so the read
roles' trust is evaluated against the function itself.

This module imports moto (through the emulator): the Lambda's import path never reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cache_ingress_tools.emulator import accounts

__all__ = ["FUNCTION_ROLES", "INGRESS_FUNCTION", "MemberWorld", "account_client", "seed_members"]

INGRESS_FUNCTION: Final = "IngressFunction"
# The execution roles SAM makes for the two functions, named as CloudFormation names them.
FUNCTION_ROLES: Final = {
    "IngressFunction": "cache-ingress-IngressFunctionRole-local",
    "ReconcileFunction": "cache-ingress-ReconcileFunctionRole-local",
}
FORWARD_DEAD_LETTER_QUEUE: Final = "cache-ingress-forward-dlq"
_LAMBDA_TRUST: Final = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
_ACCOUNT_HEADER: Final = "x-moto-account-id"


@dataclass(frozen=True, slots=True)
class MemberWorld:
    """What seeding the member accounts made."""

    function_arn: str
    function_role_arns: Mapping[str, str]
    function_credentials: Mapping[str, str]
    member_environment: Mapping[str, str]
    bus_arn: str
    read_role_name: str
    vpc_ids: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Per member account, the id of each of its VPCs by name (``default`` too)."""
    peerings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    forward_dead_letter_queues: Mapping[str, str] = field(default_factory=dict)

    def function_environment(self) -> dict[str, str]:
        """The ingress function's member settings and its execution role's credentials."""
        return {**self.member_environment, **self.function_credentials}


def account_client(client_for: Any, service: str, account: str) -> Any:
    """A client acting in `account` as its administrator (seeding only: moto's account
    header stands in for credentials of that account)."""
    client = client_for(service)

    def add_header(request: Any, **_: Any) -> None:
        request.headers[_ACCOUNT_HEADER] = account

    client.meta.events.register("before-sign.*.*", add_header)
    return client


def seed_members(
    scenario: Any,
    client_for: Any,
    *,
    cache_vpc_id: str,
    function_queue_arn: str,
    project: Path | None = None,
) -> MemberWorld:
    """Deploy the member accounts and the cache account's side of them.

    `client_for(service)` makes an ordinary client of the embedded AWS (the cache account);
    `function_queue_arn` is the cache stack's dead-letter queue.
    """
    from cache_ingress_tools.emulator.scenario import _next_group_id  # noqa: PLC0415
    from cache_ingress_tools.local_invoke.environment import project_root  # noqa: PLC0415
    from cache_ingress_tools.local_invoke.template import (  # noqa: PLC0415
        load_template,
        resolve_function,
        sam_pseudo_parameters,
        template_resolver,
    )

    root = project or project_root()
    cache, region = scenario.account_id, scenario.region
    pseudo = sam_pseudo_parameters(cache, region)
    function_arn = f"arn:aws:lambda:{region}:{cache}:function:{INGRESS_FUNCTION}"

    iam = client_for("iam")
    role_arns = {
        name: iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(_LAMBDA_TRUST))[
            "Role"
        ]["Arn"]
        for name, role in FUNCTION_ROLES.items()
    }
    for account in (cache, *(m.account_id for m in scenario.member_accounts)):
        accounts.set_organization(account, scenario.organization)
    for member in scenario.member_accounts:
        accounts.govern(member.account_id)

    cache_template = load_template(root / "template.yaml")
    parameters = scenario.stack_parameters()
    member_environment = {
        name: value
        for name, value in resolve_function(
            cache_template, INGRESS_FUNCTION, pseudo=pseudo, parameter_overrides=parameters
        ).environment.items()
        if name.startswith("MEMBER_")
    }
    bus_name = template_resolver(
        cache_template, pseudo=pseudo, parameter_overrides=parameters
    ).value(cache_template["Resources"]["MemberEventBus"]["Properties"]["Name"], "bus name")
    cache_side = template_resolver(
        cache_template,
        pseudo=pseudo,
        parameter_overrides=parameters,
        resource_refs={"MemberEventBus": str(bus_name)},
        resource_attributes={
            ("IngressFunction", "Arn"): function_arn,
            ("DeadLetterQueue", "Arn"): function_queue_arn,
        },
    )
    bus_arn = _deploy_cache_routes(cache_template, cache_side, client_for("events"), function_arn)

    member_template = load_template(root / "member.yaml")
    world = _MemberSeeding(scenario, client_for, cache_vpc_id, _next_group_id)
    read_role_name = ""
    for member in scenario.member_accounts:
        world.seed_network(member)
        member_side = template_resolver(
            member_template,
            pseudo=sam_pseudo_parameters(member.account_id, region),
            parameter_overrides={
                "CacheAccountId": cache,
                "CacheFunctionRoleArns": ",".join(role_arns.values()),
                # The operator's tools (reconcile, explain, replay --local) read members too.
                "OperatorRoleArns": accounts.default_principal(cache),
                "ExternalId": member_environment["MEMBER_EXTERNAL_ID"],
                "OrganizationId": scenario.organization or "",
            },
            resource_attributes={
                ("ForwardRole", "Arn"): f"arn:aws:iam::{member.account_id}:role/forward",
                ("ForwardDeadLetterQueue", "Arn"): (
                    f"arn:aws:sqs:{region}:{member.account_id}:{FORWARD_DEAD_LETTER_QUEUE}"
                ),
            },
        )
        read_role_name = world.deploy_member_stack(member, member_template, member_side)

    return MemberWorld(
        function_arn=function_arn,
        function_role_arns=role_arns,
        function_credentials=accounts.function_credentials(
            role_arns[INGRESS_FUNCTION], INGRESS_FUNCTION, region
        ),
        member_environment=member_environment,
        bus_arn=bus_arn,
        read_role_name=read_role_name,
        vpc_ids=world.vpc_ids,
        peerings=world.peerings,
        forward_dead_letter_queues=world.queues,
    )


def _rule_targets(rule: Mapping[str, Any], function_arn: str) -> list[dict[str, Any]]:
    targets = []
    for index, target in enumerate(rule.get("Targets", [])):
        entry: dict[str, Any] = {"Id": str(target.get("Id", index)), "Arn": target["Arn"]}
        for key in ("RoleArn", "DeadLetterConfig", "RetryPolicy"):
            if key in target:
                entry[key] = target[key]
        targets.append(entry)
    return targets or [{"Id": "function", "Arn": function_arn}]


def _deploy_cache_routes(
    template: Mapping[str, Any], resolver: Any, events: Any, function_arn: str
) -> str:
    """The bus, its policy and every rule that invokes the ingress function."""
    resources = template["Resources"]
    bus = resources["MemberEventBus"]
    properties = resolver.value(bus["Properties"], "MemberEventBus")
    bus_arn = events.create_event_bus(Name=properties["Name"])["EventBusArn"]
    events.put_permission(EventBusName=properties["Name"], Policy=json.dumps(properties["Policy"]))
    function = resources[INGRESS_FUNCTION]["Properties"]
    for name, spec in function.get("Events", {}).items():
        if spec.get("Type") != "EventBridgeRule":
            continue
        event = resolver.value(spec["Properties"], f"{INGRESS_FUNCTION}.Events.{name}")
        rule = f"{INGRESS_FUNCTION}{name}"
        events.put_rule(Name=rule, EventPattern=json.dumps(event["Pattern"]), State="ENABLED")
        target: dict[str, Any] = {"Id": "function", "Arn": function_arn}
        if "DeadLetterConfig" in event:
            target["DeadLetterConfig"] = event["DeadLetterConfig"]
        events.put_targets(Rule=rule, Targets=[target])
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Events::Rule":
            continue
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        rule = resolver.value(resource["Properties"], logical_id)
        bus_name = rule.get("EventBusName", "default")
        events.put_rule(
            Name=logical_id,
            EventBusName=bus_name,
            EventPattern=json.dumps(rule["EventPattern"]),
            State=rule.get("State", "ENABLED"),
        )
        events.put_targets(
            Rule=logical_id, EventBusName=bus_name, Targets=_rule_targets(rule, function_arn)
        )
    return str(bus_arn)


class _MemberSeeding:
    """The member accounts' own resources, made as each account's administrator."""

    def __init__(self, scenario: Any, client_for: Any, cache_vpc_id: str, fixed_id: Any) -> None:
        self._scenario = scenario
        self._client_for = client_for
        self._cache_vpc_id = cache_vpc_id
        self._fixed_id = fixed_id
        self._clients: dict[str, Any] = {}
        self._acting_as: str | None = None
        self.vpc_ids: dict[str, dict[str, str]] = {}
        self.peerings: dict[str, tuple[str, ...]] = {}
        self.queues: dict[str, str] = {}

    def _client(self, service: str, account: str) -> Any:
        """One client per service for every member (making a client costs more than its
        calls here); each call acts as the member account set last."""
        self._acting_as = account
        client = self._clients.get(service)
        if client is None:
            client = self._client_for(service)

            def add_header(request: Any, **_: Any) -> None:
                if self._acting_as is not None:
                    request.headers[_ACCOUNT_HEADER] = self._acting_as

            client.meta.events.register("before-sign.*.*", add_header)
            self._clients[service] = client
        return client

    def seed_network(self, member: Any) -> None:
        ec2 = self._client("ec2", member.account_id)
        default = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][
            0
        ]["VpcId"]
        vpc_ids = {"default": default}
        for vpc in member.vpcs:
            vpc_ids[vpc.name] = ec2.create_vpc(CidrBlock=vpc.cidr)["Vpc"]["VpcId"]
        for group in member.security_groups:
            with self._fixed_id(group.group_id):
                ec2.create_security_group(
                    GroupName=group.name,
                    Description=group.description,
                    VpcId=vpc_ids[group.vpc or "default"],
                    TagSpecifications=[
                        {
                            "ResourceType": "security-group",
                            "Tags": [{"Key": k, "Value": v} for k, v in group.tags.items()],
                        }
                    ]
                    if group.tags
                    else [],
                )
        peerings = []
        for name in member.peered_vpcs:
            # Asked by the cache account, accepted by the member.
            self._acting_as = None
            peering = ec2.create_vpc_peering_connection(
                VpcId=self._cache_vpc_id, PeerVpcId=vpc_ids[name], PeerOwnerId=member.account_id
            )["VpcPeeringConnection"]["VpcPeeringConnectionId"]
            self._acting_as = member.account_id
            ec2.accept_vpc_peering_connection(VpcPeeringConnectionId=peering)
            peerings.append(peering)
        self.vpc_ids[member.account_id] = vpc_ids
        self.peerings[member.account_id] = tuple(peerings)

    def deploy_member_stack(self, member: Any, template: Mapping[str, Any], resolver: Any) -> str:
        """member.yaml's roles, queue and rules in the member account; its read role's name."""
        account = member.account_id
        resources = template["Resources"]
        iam = self._client("iam", account)
        read = resolver.value(resources["ReadRole"]["Properties"], "ReadRole")
        iam.create_role(
            RoleName=read["RoleName"],
            AssumeRolePolicyDocument=json.dumps(read["AssumeRolePolicyDocument"]),
            Description=read.get("Description", ""),
        )
        for policy in read.get("Policies", []):
            iam.put_role_policy(
                RoleName=read["RoleName"],
                PolicyName=policy["PolicyName"],
                PolicyDocument=json.dumps(policy["PolicyDocument"]),
            )
        forward = resolver.value(resources["ForwardRole"]["Properties"], "ForwardRole")
        iam.create_role(
            RoleName="forward",
            AssumeRolePolicyDocument=json.dumps(forward["AssumeRolePolicyDocument"]),
        )
        self.queues[account] = self._client("sqs", account).create_queue(
            QueueName=FORWARD_DEAD_LETTER_QUEUE
        )["QueueUrl"]
        events = self._client("events", account)
        for logical_id, resource in resources.items():
            if resource.get("Type") != "AWS::Events::Rule":
                continue
            rule = resolver.value(resource["Properties"], logical_id)
            events.put_rule(
                Name=logical_id,
                EventPattern=json.dumps(rule["EventPattern"]),
                State=rule.get("State", "ENABLED"),
            )
            events.put_targets(Rule=logical_id, Targets=_rule_targets(rule, ""))
        return str(read["RoleName"])
