"""The two templates of a multi-account deployment (docs/multi-account.md), read as
CloudFormation reads them: member.yaml is StackSets-ready and grants only reads; the cache
stack's bus admits only the organization or the listed accounts, for AWS's own tagging
events; every rule matches only the sources AWS alone emits; and a single-account stack
(the defaults) has none of it.

Patterns are matched by moto's implementation of EventBridge's matching (with the embedded
AWS's fix for arrays of objects, emulator/event_buses.py), and resource policies evaluated
by the embedded AWS's evaluator (emulator/policies.py), so the tests read the templates' own
documents, not a restatement of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_file
from moto.events.models import EventPattern

from cache_ingress_tools.emulator import event_buses
from cache_ingress_tools.emulator.policies import Caller, refusal
from cache_ingress_tools.local_invoke.template import (
    Resolver,
    load_template,
    sam_pseudo_parameters,
    template_resolver,
)
from tests.support.events import create_tags, load_event, tag_change

pytestmark = pytest.mark.template
event_buses.install()

ROOT = Path(__file__).resolve().parents[2]
CACHE_TEMPLATE = ROOT / "template.yaml"
MEMBER_TEMPLATE = ROOT / "member.yaml"
CACHE = "123456789012"
MEMBER = "111122223333"
OTHER_MEMBER = "444455556666"
OUTSIDER = "210987654321"
REGION = "us-east-1"
ORGANIZATION = "o-a1b2c3d4e5"
FUNCTION_ROLES = (
    f"arn:aws:iam::{CACHE}:role/cache-ingress-IngressFunctionRole-AbC",
    f"arn:aws:iam::{CACHE}:role/cache-ingress-ReconcileFunctionRole-DeF",
)
# The parameters a stack set gives every account alike; every other one has a default.
STACK_SET_WIDE = {"CacheAccountId", "CacheFunctionRoleArns", "ExternalId"}
MEMBER_PARAMETERS = {
    "CacheAccountId": CACHE,
    "CacheFunctionRoleArns": ",".join(FUNCTION_ROLES),
    "ExternalId": "51af3dc0-da77-11e4-872e-1234567db123",
}


@cache
def _template(path: Path) -> dict[str, Any]:
    return load_template(path)


def member(account: str = MEMBER, **parameters: str) -> tuple[dict[str, Any], Resolver]:
    template = _template(MEMBER_TEMPLATE)
    return template, template_resolver(
        template,
        pseudo=sam_pseudo_parameters(account, REGION),
        parameter_overrides={**MEMBER_PARAMETERS, **parameters},
        resource_attributes={
            ("ForwardRole", "Arn"): f"arn:aws:iam::{account}:role/forward",
            ("ForwardDeadLetterQueue", "Arn"): f"arn:aws:sqs:{REGION}:{account}:dlq",
            **{(rule, "Arn"): f"<{rule}>" for rule in _rules(template)},
        },
    )


def cache_stack(**parameters: str) -> tuple[dict[str, Any], Resolver]:
    template = _template(CACHE_TEMPLATE)
    attributes = {
        (name, attribute): f"<{name}.{attribute}>"
        for name in (*template["Resources"], "IngressFunctionRole", "ReconcileFunctionRole")
        for attribute in ("Arn", "QueueName")
    }
    for function in ("IngressFunction",):
        for event in template["Resources"][function]["Properties"]["Events"]:
            attributes[(f"{function}{event}", "Arn")] = f"<{function}{event}.Arn>"
    return template, template_resolver(
        template,
        pseudo=sam_pseudo_parameters(CACHE, REGION),
        parameter_overrides=parameters,
        resource_refs={"MemberEventBus": "cache-ingress"},
        resource_attributes=attributes,
    )


def _rules(template: Mapping[str, Any]) -> list[str]:
    return [n for n, r in template["Resources"].items() if r["Type"] == "AWS::Events::Rule"]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- member.yaml: lint clean and StackSets-ready ------------------------------------------


def test_both_templates_lint_clean() -> None:
    assert lint_file(MEMBER_TEMPLATE) == []
    assert lint_file(CACHE_TEMPLATE) == []


def test_member_stack_takes_only_values_that_are_the_same_for_every_account() -> None:
    parameters = _template(MEMBER_TEMPLATE)["Parameters"]

    without_default = {name for name, spec in parameters.items() if "Default" not in spec}
    assert without_default == STACK_SET_WIDE
    # None of them is an account's own: the account and region come from pseudo parameters.
    for name in parameters:
        assert not re.search(r"member|own|this", name, re.IGNORECASE), name


def test_member_stack_names_no_account_and_its_names_are_per_region() -> None:
    text = MEMBER_TEMPLATE.read_text(encoding="utf-8")
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert re.findall(r"(?<![0-9])[0-9]{12}(?![0-9])", code) == []
    template, resolver = member()
    # IAM names are global to the account and a stack set deploys to several regions.
    for name, resource in template["Resources"].items():
        given = resource["Properties"].get("RoleName")
        if given is not None:
            assert resolver.value(given, name).endswith(f"-{REGION}"), name
    assert "Export" not in json.dumps(template.get("Outputs", {}))


def _statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(_listed(document["Statement"]))


def test_the_read_role_trusts_only_the_cache_functions_with_the_external_id() -> None:
    template, resolver = member()
    role = resolver.value(template["Resources"]["ReadRole"]["Properties"], "ReadRole")
    trust = role["AssumeRolePolicyDocument"]
    [statement] = _statements(trust)

    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{CACHE}:root"}
    assert statement["Condition"] == {
        "StringEquals": {"sts:ExternalId": MEMBER_PARAMETERS["ExternalId"]},
        "ArnEquals": {"aws:PrincipalArn": list(FUNCTION_ROLES)},
    }
    function = Caller(FUNCTION_ROLES[0], CACHE)
    external_id = {"sts:ExternalId": MEMBER_PARAMETERS["ExternalId"]}
    assert refusal(trust, "sts:AssumeRole", function, external_id) is None
    assert refusal(trust, "sts:AssumeRole", function, {"sts:ExternalId": "guess"}) is not None
    assert refusal(trust, "sts:AssumeRole", function, {"sts:ExternalId": None}) is not None
    for other in (
        Caller(f"arn:aws:iam::{CACHE}:role/Admin", CACHE),
        Caller(f"arn:aws:iam::{OUTSIDER}:role/cache-ingress-IngressFunctionRole-AbC", OUTSIDER),
        Caller(f"arn:aws:iam::{OTHER_MEMBER}:root", OTHER_MEMBER),
    ):
        assert refusal(trust, "sts:AssumeRole", other, external_id) is not None, other


def test_operators_named_may_read_too_still_with_the_external_id() -> None:
    operator = f"arn:aws:iam::{CACHE}:role/oncall"
    template, resolver = member(OperatorRoleArns=operator)
    trust = resolver.value(
        template["Resources"]["ReadRole"]["Properties"]["AssumeRolePolicyDocument"], "trust"
    )
    external_id = {"sts:ExternalId": MEMBER_PARAMETERS["ExternalId"]}
    wrong = {"sts:ExternalId": "guess"}

    for principal in (*FUNCTION_ROLES, operator):
        assert refusal(trust, "sts:AssumeRole", Caller(principal, CACHE), external_id) is None
        assert refusal(trust, "sts:AssumeRole", Caller(principal, CACHE), wrong) is not None
    admin = Caller(f"arn:aws:iam::{CACHE}:role/Admin", CACHE)
    assert refusal(trust, "sts:AssumeRole", admin, external_id) is not None


def test_with_an_organization_the_caller_must_belong_to_it() -> None:
    template, resolver = member(OrganizationId=ORGANIZATION)
    trust = resolver.value(
        template["Resources"]["ReadRole"]["Properties"]["AssumeRolePolicyDocument"], "trust"
    )
    external_id = {"sts:ExternalId": MEMBER_PARAMETERS["ExternalId"]}

    inside = Caller(FUNCTION_ROLES[0], CACHE, ORGANIZATION)
    outside = Caller(FUNCTION_ROLES[0], CACHE, "o-zzzzzzzzzz")
    assert refusal(trust, "sts:AssumeRole", inside, external_id) is None
    assert refusal(trust, "sts:AssumeRole", outside, external_id) is not None


@pytest.mark.parametrize(
    ("verify", "actions"),
    [
        ("true", {"ec2:DescribeSecurityGroups", "cloudtrail:LookupEvents"}),
        ("false", {"ec2:DescribeSecurityGroups"}),
    ],
)
def test_the_read_role_can_only_read(verify: str, actions: set[str]) -> None:
    template, resolver = member(VerifyReplayedPrincipals=verify)
    role = resolver.value(template["Resources"]["ReadRole"]["Properties"], "ReadRole")

    allowed = set()
    for policy in role["Policies"]:
        for statement in _statements(policy["PolicyDocument"]):
            assert statement["Effect"] == "Allow"
            allowed.update(_listed(statement["Action"]))
    assert allowed == actions
    assert "ManagedPolicyArns" not in role
    assert "PermissionsBoundary" not in role or role["PermissionsBoundary"]
    assert role["MaxSessionDuration"] <= 3600


def test_only_eventbridge_of_the_member_may_forward_and_only_to_the_cache_bus() -> None:
    template, resolver = member()
    role = resolver.value(template["Resources"]["ForwardRole"]["Properties"], "ForwardRole")
    [trust] = _statements(role["AssumeRolePolicyDocument"])
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": MEMBER}}
    [policy] = role["Policies"]
    [statement] = _statements(policy["PolicyDocument"])
    bus = f"arn:aws:events:{REGION}:{CACHE}:event-bus/cache-ingress"
    assert (statement["Action"], statement["Resource"]) == ("events:PutEvents", bus)
    for name in _rules(template):
        rule = resolver.value(template["Resources"][name]["Properties"], name)
        [target] = rule["Targets"]
        assert target["Arn"] == bus, name
        assert target["RoleArn"] == f"arn:aws:iam::{MEMBER}:role/forward", name
        assert target["DeadLetterConfig"]["Arn"] == f"arn:aws:sqs:{REGION}:{MEMBER}:dlq", name


# --- the patterns: the same everywhere, AWS's sources only ---------------------------------


def _cache_patterns(resolver: Resolver, template: Mapping[str, Any]) -> dict[str, Any]:
    function = template["Resources"]["IngressFunction"]["Properties"]
    patterns = {
        f"default/{name}": resolver.value(event["Properties"]["Pattern"], name)
        for name, event in function["Events"].items()
        if event["Type"] == "EventBridgeRule"
    }
    for name in _rules(template):
        resource = template["Resources"][name]
        if resolver.condition(resource["Condition"]):
            patterns[f"bus/{name}"] = resolver.value(resource["Properties"]["EventPattern"], name)
    return patterns


@pytest.mark.parametrize("tag_key", ["cache-ingress", "team:cache"])
def test_members_forward_exactly_what_the_cache_stack_listens_for(tag_key: str) -> None:
    cache_template, cache_resolver = cache_stack(TagKey=tag_key, MemberAccountIds=MEMBER)
    member_template, member_resolver = member(TagKey=tag_key)

    cache_patterns = _cache_patterns(cache_resolver, cache_template)
    forwarded = [
        member_resolver.value(member_template["Resources"][n]["Properties"]["EventPattern"], n)
        for n in _rules(member_template)
    ]
    # The three tagging events and the deletion of a group (revocation).
    default = sorted(
        json.dumps(p, sort_keys=True) for k, p in cache_patterns.items() if "default/" in k
    )
    on_bus = sorted(json.dumps(p, sort_keys=True) for k, p in cache_patterns.items() if "bus/" in k)
    assert len(default) == 4
    assert on_bus == default
    assert sorted(json.dumps(p, sort_keys=True) for p in forwarded) == default


def _every_pattern() -> Iterator[tuple[str, Any]]:
    cache_template, cache_resolver = cache_stack(MemberAccountIds=MEMBER)
    yield from _cache_patterns(cache_resolver, cache_template).items()
    member_template, member_resolver = member()
    for name in _rules(member_template):
        pattern = member_template["Resources"][name]["Properties"]["EventPattern"]
        yield f"member/{name}", member_resolver.value(pattern, name)


MATCHING_EVENTS = {
    "tag change": tag_change(),
    "CreateTags": create_tags(["sg-0a1b2c3d4e5f60718"]),
    "DeleteTags": load_event("cloudtrail-delete-tags.json"),
    "CreateSecurityGroup": load_event("cloudtrail-create-security-group.json"),
    "DeleteSecurityGroup": load_event("cloudtrail-delete-security-group.json"),
}
LOOK_ALIKE_SOURCES = ["com.example.tag", "aws.tagging", "aws.ec2.forged", "AWS.EC2", "aws.ec2 ", ""]


@pytest.mark.parametrize(("name", "pattern"), list(_every_pattern()))
def test_every_rule_matches_only_the_sources_aws_alone_emits(name: str, pattern: Any) -> None:
    matcher = EventPattern.load(json.dumps(pattern))
    matched = [kind for kind, event in MATCHING_EVENTS.items() if matcher.matches_event(event)]

    # Each rule matches one kind of tagging event, and only with AWS's own source: an
    # event with any other source (which is all PutEvents may send) matches no rule.
    assert matched, name
    assert set(pattern["source"]) <= {"aws.tag", "aws.ec2"}, name
    for kind in matched:
        for source in LOOK_ALIKE_SOURCES:
            assert not matcher.matches_event({**MATCHING_EVENTS[kind], "source": source}), (
                name,
                source,
            )


# --- the cache account's bus ---------------------------------------------------------------


def _bus_policy(**parameters: str) -> dict[str, Any] | None:
    template, resolver = cache_stack(**parameters)
    bus = template["Resources"]["MemberEventBus"]
    if not resolver.condition(bus["Condition"]):
        return None
    return resolver.value(bus["Properties"]["Policy"], "MemberEventBus.Policy")


def _admits(policy: Any, account: str, organization: str | None, source: str) -> bool:
    detail_type = "Tag Change on Resource" if source == "aws.tag" else "AWS API Call via CloudTrail"
    caller = Caller(f"arn:aws:iam::{account}:root", account, organization)
    context = {"events:source": source, "events:detail-type": detail_type}
    return refusal(policy, "events:PutEvents", caller, context) is None


@pytest.mark.parametrize(
    ("parameters", "admitted", "refused"),
    [
        (
            {"MemberOrganizationId": ORGANIZATION},
            [(MEMBER, ORGANIZATION), (OUTSIDER, ORGANIZATION)],
            [(MEMBER, None), (OUTSIDER, "o-zzzzzzzzzz")],
        ),
        (
            {"MemberAccountIds": f"{MEMBER},{OTHER_MEMBER}"},
            [(MEMBER, None), (OTHER_MEMBER, ORGANIZATION)],
            [(OUTSIDER, None), (OUTSIDER, ORGANIZATION)],
        ),
        (
            {"MemberOrganizationId": ORGANIZATION, "MemberAccountIds": OUTSIDER},
            [(MEMBER, ORGANIZATION), (OUTSIDER, None)],
            [(OTHER_MEMBER, None)],
        ),
    ],
)
def test_the_bus_admits_only_the_organization_or_the_listed_accounts(
    parameters: dict[str, str],
    admitted: list[tuple[str, str | None]],
    refused: list[tuple[str, str | None]],
) -> None:
    policy = _bus_policy(**parameters)

    for account, organization in admitted:
        for source in ("aws.tag", "aws.ec2"):
            assert _admits(policy, account, organization, source), (account, organization)
        # Not even an admitted account may put anything but AWS's tagging events there.
        assert not _admits(policy, account, organization, "com.example.forged")
    for account, organization in refused:
        assert not _admits(policy, account, organization, "aws.tag"), (account, organization)


def test_a_single_account_stack_has_no_bus_no_member_rule_and_no_assume_role() -> None:
    template, resolver = cache_stack()

    assert _bus_policy() is None
    for name, resource in template["Resources"].items():
        if resource.get("Condition") in {"ServesMembers", "HasMemberOrganization"}:
            assert not resolver.condition(resource["Condition"]), name
    text = json.dumps(
        [
            resolver.value(template["Resources"][f]["Properties"]["Policies"], f)
            for f in ("IngressFunction", "ReconcileFunction")
        ]
    )
    assert "sts:AssumeRole" not in text
    assert "organizations:" not in text
    environment = resolver.value(
        template["Resources"]["IngressFunction"]["Properties"]["Environment"], "environment"
    )["Variables"]
    assert environment["MEMBER_ROLE_NAME"] == ""
    assert environment["MEMBER_EXTERNAL_ID"] == ""


@pytest.mark.parametrize(
    ("parameters", "condition"),
    [
        ({"MemberOrganizationId": ORGANIZATION}, {"aws:ResourceOrgID": ORGANIZATION}),
        (
            {"MemberAccountIds": f"{MEMBER},{OTHER_MEMBER}"},
            {"aws:ResourceAccount": [MEMBER, OTHER_MEMBER]},
        ),
    ],
)
def test_the_functions_may_assume_only_the_members_read_role(
    parameters: dict[str, str], condition: dict[str, Any]
) -> None:
    template, resolver = cache_stack(**parameters)

    for function in ("IngressFunction", "ReconcileFunction"):
        policies = resolver.value(
            template["Resources"][function]["Properties"]["Policies"], function
        )
        assuming = [
            s
            for entry in policies
            for s in entry["Statement"]
            if "sts:AssumeRole" in _listed(s["Action"])
        ]
        [statement] = assuming
        assert _listed(statement["Action"]) == ["sts:AssumeRole"]
        assert statement["Resource"] == "arn:aws:iam::*:role/cache-ingress-read-us-east-1"
        assert statement["Condition"] == {"StringEquals": condition}
        environment = resolver.value(
            template["Resources"][function]["Properties"]["Environment"], function
        )["Variables"]
        assert environment["MEMBER_ROLE_NAME"] == "cache-ingress-read-us-east-1"
        # The external id the stack generates: its own unique id.
        assert environment["MEMBER_EXTERNAL_ID"] == "51af3dc0-da77-11e4-872e-1234567db123"


def test_only_the_sweep_lists_the_organizations_accounts() -> None:
    template, resolver = cache_stack(MemberOrganizationId=ORGANIZATION)
    listing = {
        function
        for function in ("IngressFunction", "ReconcileFunction")
        for entry in resolver.value(
            template["Resources"][function]["Properties"]["Policies"], function
        )
        for statement in entry["Statement"]
        if any(a.startswith("organizations:") for a in _listed(statement["Action"]))
    }
    assert listing == {"ReconcileFunction"}


def test_the_member_rules_invoke_the_function_and_dead_letter_into_its_queue() -> None:
    template, resolver = cache_stack(MemberAccountIds=MEMBER)
    queue_policy = resolver.value(
        template["Resources"]["DeadLetterQueuePolicy"]["Properties"]["PolicyDocument"], "queue"
    )
    [allow] = [s for s in queue_policy["Statement"] if s["Effect"] == "Allow"]
    senders = set(allow["Condition"]["ArnEquals"]["aws:SourceArn"])
    permissions = {
        resolver.value(r["Properties"]["SourceArn"], n)
        for n, r in template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Permission"
    }

    for name in ("MemberTagChange", "MemberTaggingCall", "MemberCreateTaggedGroup"):
        rule = resolver.value(template["Resources"][name]["Properties"], name)
        assert rule["EventBusName"] == "cache-ingress"
        [target] = rule["Targets"]
        assert target["Arn"] == "<IngressFunction.Arn>"
        assert target["DeadLetterConfig"]["Arn"] == "<DeadLetterQueue.Arn>"
        assert f"<{name}.Arn>" in senders
        assert f"<{name}.Arn>" in permissions
        assert (
            resolver.value(
                template["Resources"][f"{name}Permission"]["Properties"]["Principal"], name
            )
            == "events.amazonaws.com"
        )


# --- what docs/multi-account.md tells an operator to run -----------------------------------

DOC = (ROOT / "docs" / "multi-account.md").read_text(encoding="utf-8")


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.DOTALL)


def test_the_documented_stack_set_parameters_fit_member_yaml() -> None:
    [parameters_file] = [b for b in _code_blocks("json") if "ParameterKey" in b]
    given = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(parameters_file)}
    declared = _template(MEMBER_TEMPLATE)["Parameters"]

    assert set(given) <= set(declared)
    assert set(given) >= STACK_SET_WIDE
    # The values resolve the template as CloudFormation would (patterns, lists).
    template, resolver = member(**given)
    role = resolver.value(template["Resources"]["ReadRole"]["Properties"], "ReadRole")
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["ArnEquals"] == {
        "aws:PrincipalArn": given["CacheFunctionRoleArns"].split(",")
    }


def test_the_documented_commands_ask_for_what_member_yaml_needs() -> None:
    [shell] = [b for b in _code_blocks("sh") if "create-stack-set" in b]
    # The read role has a name: CloudFormation requires CAPABILITY_NAMED_IAM for it.
    assert "RoleName" in json.dumps(_template(MEMBER_TEMPLATE)["Resources"]["ReadRole"])
    assert "--capabilities CAPABILITY_NAMED_IAM" in shell
    assert "--template-body file://member.yaml" in shell
    assert "--parameters file://member-parameters.json" in shell


def test_the_documented_parameter_tables_name_real_parameters_and_defaults() -> None:
    member_parameters = _template(MEMBER_TEMPLATE)["Parameters"]
    cache_parameters = _template(CACHE_TEMPLATE)["Parameters"]
    rows = re.findall(r"^\| `([A-Za-z]+)` \|(.*)$", DOC, flags=re.MULTILINE)
    named = {name for name, _ in rows}

    assert set(member_parameters) <= named
    assert {name for name in cache_parameters if name.startswith("Member")} <= named
    for name, rest in rows:
        assert name in member_parameters or name in cache_parameters, name
        if name in member_parameters and "Default" in member_parameters[name]:
            default = member_parameters[name]["Default"]
            cell = rest.split("|")[0].strip()
            assert cell == (f"`{default}`" if default else "empty"), name
