"""What a stack's parameters let the function do, against what a policy asks; and the
parameters as SAM CLI takes them. Pure: no template, no AWS.

The rules, from the README's parameter table and IAM's documented ARN matching: a classic
target needs its cache security group's ARN in CacheSecurityGroupArns (`*` and `?` match
as IAM matches them), a vpc_security_group target its id in CacheVpcSecurityGroupIds, and
the policy's tag_key must be TagKey.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cache_ingress.policy import parse_policy
from cache_ingress_tools.sam_config import (
    SamConfigError,
    parse_parameter_overrides,
    read_samconfig,
)
from cache_ingress_tools.stack_check import StackParameters, stack_findings

pytestmark = pytest.mark.unit

POLICY = parse_policy(
    """
version: 1
targets:
  orders: {cache_security_group: Orders-Cache-SG}
  europe: {cache_security_group: eu-cache-sg, region: eu-west-1}
  reports: {vpc_security_group: {group_id: sg-0123456789abcdef0, port: 6380}}
""",
    source="test",
)
ALL_VPC = ("sg-0123456789abcdef0",)


def problems(arns: tuple[str, ...], **kwargs: object) -> dict[str, str]:
    stack = StackParameters(
        tag_key=str(kwargs.pop("tag_key", "cache-ingress")),
        cache_security_group_arns=arns,
        vpc_security_group_ids=kwargs.pop("vpc", ALL_VPC),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    return {
        ".".join(map(str, f.path)): f.message for f in stack_findings(POLICY, stack) if f.problem
    }


def test_exact_arns_for_every_classic_target_leave_nothing_to_report() -> None:
    arns = (
        "arn:aws:elasticache:us-east-1:111122223333:securitygroup:orders-cache-sg",
        "arn:aws:elasticache:eu-west-1:111122223333:securitygroup:eu-cache-sg",
    )
    assert problems(arns, region="us-east-1", account_id="111122223333") == {}


@pytest.mark.parametrize(
    ("arn", "region", "account", "denied"),
    [
        ("arn:aws:elasticache:*:*:securitygroup:*", None, None, set()),
        ("arn:aws:elasticache:*:111122223333:securitygroup:*-cache-sg", None, None, set()),
        ("arn:aws:elasticache:*:*:securitygroup:orders-cache-s?", None, None, {"europe"}),
        # The region of a target without one is the stack's; with one, its own.
        ("arn:aws:elasticache:us-east-1:*:securitygroup:*", "us-east-1", None, {"europe"}),
        ("arn:aws:elasticache:us-east-1:*:securitygroup:*", None, None, {"europe"}),
        ("arn:aws:elasticache:eu-west-1:*:securitygroup:*", "us-east-1", None, {"orders"}),
        ("arn:aws:elasticache:*:444455556666:securitygroup:*", None, "111122223333",
         {"orders", "europe"}),
        # Another service, or another kind of ElastiCache resource, allows nothing here.
        ("arn:aws:rds:*:*:secgrp:*", None, None, {"orders", "europe"}),
        ("arn:aws:elasticache:*:*:cluster:*", None, None, {"orders", "europe"}),
    ],
)  # fmt: skip
def test_arns_match_as_iam_matches_them(
    arn: str, region: str | None, account: str | None, denied: set[str]
) -> None:
    found = problems((arn,), region=region, account_id=account)

    assert {field.split(".")[1] for field in found} == denied
    for message in found.values():
        assert "would fail with AccessDenied after deploy" in message


def test_a_vpc_security_group_not_listed_is_refused_by_iam() -> None:
    found = problems(("arn:aws:elasticache:*:*:securitygroup:*",), vpc=("sg-0fffffffffffffff0",))

    assert list(found) == ["targets.reports.vpc_security_group.group_id"]
    assert (
        "AccessDenied (UnauthorizedOperation)"
        in found["targets.reports.vpc_security_group.group_id"]
    )


def test_another_tag_key_is_reported_on_tag_key() -> None:
    found = problems(("arn:aws:elasticache:*:*:securitygroup:*",), tag_key="team")

    assert list(found) == ["tag_key"]
    assert "differs from the stack's TagKey 'team'" in found["tag_key"]


def test_a_listed_value_that_is_no_arn_is_reported() -> None:
    found = problems(("orders-cache-sg", "arn:aws:elasticache:*:*:securitygroup:*"))

    assert list(found) == [""]
    assert "'orders-cache-sg', which is not a cache security group ARN" in found[""]


def test_parameters_from_a_template_value_list() -> None:
    stack = StackParameters.from_values(
        {"TagKey": "k", "CacheSecurityGroupArns": [""], "CacheVpcSecurityGroupIds": "a, b"},
        region=None,
        account_id=None,
    )

    assert (stack.tag_key, stack.cache_security_group_arns, stack.vpc_security_group_ids) == (
        "k",
        (),
        ("a", "b"),
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["DryRun=true LogLevel=WARNING"], {"DryRun": "true", "LogLevel": "WARNING"}),
        (["DryRun=true", "LogLevel=WARNING"], {"DryRun": "true", "LogLevel": "WARNING"}),
        (['Arns="a,b" Email="ops team@x"'], {"Arns": "a,b", "Email": "ops team@x"}),
        (["ParameterKey=TagKey,ParameterValue=team"], {"TagKey": "team"}),
        (["Empty="], {"Empty": ""}),
        (["A=1 A=2"], {"A": "2"}),
    ],
)
def test_overrides_as_sam_takes_them(values: list[str], expected: dict[str, str]) -> None:
    assert parse_parameter_overrides(values) == expected


@pytest.mark.parametrize("value", ["DryRun", "=true", 'A="unclosed'])
def test_an_override_sam_would_refuse_is_an_error(value: str) -> None:
    with pytest.raises(SamConfigError, match="--parameter-overrides"):
        parse_parameter_overrides([value])


def test_samconfig_merges_global_under_the_commands_table(tmp_path: Path) -> None:
    path = tmp_path / "samconfig.toml"
    path.write_text(
        'version = 0.1\n[default.global.parameters]\nregion = "eu-west-1"\nstack_name = "s"\n'
        '[default.deploy.parameters]\nregion = "us-east-1"\n'
        "parameter_overrides = ['TagKey=team', 'CacheVpcSecurityGroupIds=sg-1,sg-2']\n",
        encoding="utf-8",
    )

    config = read_samconfig(path)

    assert (config.region, config.stack_name) == ("us-east-1", "s")
    assert config.parameter_overrides == {"TagKey": "team", "CacheVpcSecurityGroupIds": "sg-1,sg-2"}


def test_samconfig_in_yaml_and_overrides_as_a_table(tmp_path: Path) -> None:
    path = tmp_path / "samconfig.yaml"
    path.write_text(
        "version: 0.1\nprod:\n  deploy:\n    parameters:\n"
        "      parameter_overrides: {TagKey: team, DryRun: true}\n",
        encoding="utf-8",
    )

    assert read_samconfig(path, "prod").parameter_overrides == {"TagKey": "team", "DryRun": "true"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = [", "cannot be parsed"),
        ("version = 0.1\n[default]\nx = 1\n[default.deploy]\nparameters = 3\n", "must be a table"),
        (
            "version = 0.1\n[default.deploy.parameters]\nparameter_overrides = 3\n",
            "parameter_overrides must be a string",
        ),
    ],
)
def test_a_samconfig_sam_would_refuse_names_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "samconfig.toml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(SamConfigError, match=message) as raised:
        read_samconfig(path)

    assert str(raised.value).startswith(f"config file {path}: ")
